"""Pydantic models of the pipeline YAML. Every model forbids unknown keys.

Cross-field checks (graph, aliases, template variables, files) live in ``checks.py``;
loading with file/YAML-path/line errors lives in ``loader.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StrictInt, StrictStr, Tag,
                      field_validator, model_validator)

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
Ident = Annotated[str, Field(pattern=IDENT)]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --- models and limits --------------------------------------------------------------------

class Price(Strict):
    """USD per million tokens; overrides litellm's price map for this alias."""
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelAlias(Strict):
    model: str = Field(min_length=1, description="litellm model string, e.g. openai/gpt-4o-mini")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    api_base: str | None = None
    price: Price | None = None
    fallbacks: list[str] = Field(default_factory=list, description="aliases tried when this one keeps failing")
    params: dict[str, Any] = Field(default_factory=dict, description="extra litellm parameters")

    @field_validator("params")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if re.search(r"(api_key|secret|token|authorization|password)", key, re.I):
                raise ValueError(f"'{key}' looks like a secret; put keys in the environment "
                                 "(e.g. OPENAI_API_KEY), never in the spec")
        return v


class Limit(Strict):
    concurrency: int | None = Field(default=None, gt=0)
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)


class Budget(Strict):
    max_usd: float | None = Field(default=None, gt=0)
    per_item_usd: float | None = Field(default=None, gt=0)


class Defaults(Strict):
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float = Field(default=120, gt=0)
    concurrency: int = Field(default=8, gt=0, le=4096)
    max_repairs: int = Field(default=2, ge=0, le=10)
    max_tool_rounds: int = Field(default=5, ge=0, le=50)
    max_attempts: int = Field(default=8, ge=1, le=50, description="attempts per LLM call, retries included")


class InputSpec(Strict):
    key: str = Field(min_length=1, description="column holding each account's unique id")
    required: list[str] = Field(default_factory=list, description="columns every row must have")
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"


# --- tools (executed by agentctl.tools) ---------------------------------------------------

class ToolSpec(Strict):
    """A tool declared once and granted to agents by name.

    ``type`` picks the implementation; the remaining keys are its settings and are
    validated by that implementation when the registry is built.
    """
    model_config = ConfigDict(extra="allow")
    type: Literal["kb_search", "sql", "http_get", "crm_upsert", "send_email", "python", "mcp"]
    description: str | None = None
    side_effects: bool | None = None


# --- agents -------------------------------------------------------------------------------

class Agent(Strict):
    description: str | None = None
    system: str | None = None
    system_file: str | None = None
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    tools: list[ToolName] = Field(default_factory=list)
    max_tool_rounds: int | None = Field(default=None, ge=0, le=50)

    @model_validator(mode="after")
    def _one_system(self) -> "Agent":
        if self.system is not None and self.system_file is not None:
            raise ValueError("give either 'system' or 'system_file', not both")
        return self


# --- output schemas -----------------------------------------------------------------------

class OutputField(Strict):
    type: Literal["str", "int", "float", "bool", "list", "enum"]
    description: str | None = None
    required: bool = True
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    # Strict so that YAML's `yes`/`no` are refused instead of silently becoming 1/0.
    values: list[StrictStr | StrictInt] | None = None
    items: Literal["str", "int", "float", "bool"] = "str"
    min_items: int | None = Field(default=None, ge=0)
    max_items: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "OutputField":
        if self.type == "enum" and not self.values:
            raise ValueError("an enum field needs 'values: [...]'")
        if self.type != "enum" and self.values is not None:
            raise ValueError("'values' is only for type enum")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError("'min'/'max' are only for int and float fields")
        if (self.min_length is not None or self.max_length is not None) and self.type != "str":
            raise ValueError("'min_length'/'max_length' are only for str fields")
        if (self.min_items is not None or self.max_items is not None) and self.type != "list":
            raise ValueError("'min_items'/'max_items' are only for list fields")
        if "items" in self.model_fields_set and self.type != "list":
            raise ValueError("'items' is only for list fields")
        for low, high in (("min", "max"), ("min_length", "max_length"), ("min_items", "max_items")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is greater than {high} ({hi})")
        return self


OUTPUT_TYPES = ("str", "int", "float", "bool", "list", "enum")


def _coerce_field(v: Any) -> Any:
    # `summary: str` is shorthand for `summary: {type: str}`
    return {"type": v} if isinstance(v, str) else v


# --- stages -------------------------------------------------------------------------------

class StageBase(Strict):
    id: Ident
    needs: list[str] = Field(default_factory=list)
    when: str | None = Field(default=None, description="Jinja2 expression; false skips the item")
    description: str | None = None


class AgentStage(StageBase):
    type: Literal["agent"] = "agent"
    agent: str
    prompt: str | None = None
    prompt_file: str | None = None
    output: dict[Ident, OutputField] = Field(default_factory=dict)
    model: str | None = Field(default=None, description="model alias overriding the agent's")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0)
    max_repairs: int | None = Field(default=None, ge=0, le=10)
    approval: Literal["required", "auto", "dry_run"] | None = None

    @field_validator("output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: _coerce_field(f) for k, f in v.items()}
        return v

    @model_validator(mode="after")
    def _one_prompt(self) -> "AgentStage":
        if self.prompt is None and self.prompt_file is None:
            raise ValueError("an agent stage needs 'prompt' or 'prompt_file'")
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("give either 'prompt' or 'prompt_file', not both")
        return self


class SelectStage(StageBase):
    """Fan-in over all items: keep the top K by a field, and/or those matching ``where``."""
    type: Literal["select"]
    by: str | None = Field(default=None, description="stage.field to rank by, e.g. score.score")
    top: int | None = Field(default=None, gt=0)
    order: Literal["desc", "asc"] = "desc"
    where: str | None = Field(default=None, description="Jinja2 expression an item must satisfy")

    @model_validator(mode="after")
    def _something(self) -> "SelectStage":
        if self.top is None and self.where is None:
            raise ValueError("a select stage needs 'top' (with 'by') and/or 'where'")
        if self.top is not None and self.by is None:
            raise ValueError("'top' needs 'by: <stage>.<field>' to rank on")
        return self


def _stage_kind(v: Any) -> str:
    if isinstance(v, dict):
        return v.get("type", "agent")
    return getattr(v, "type", "agent")


Stage = Annotated[
    Union[Annotated[AgentStage, Tag("agent")], Annotated[SelectStage, Tag("select")]],
    Discriminator(_stage_kind),
]
STAGE_TYPES = ("agent", "select")


# --- the pipeline -------------------------------------------------------------------------

class Pipeline(Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    version: int = 1
    input: InputSpec
    models: dict[str, ModelAlias] = Field(min_length=1)
    defaults: Defaults = Field(default_factory=Defaults)
    limits: dict[str, Limit] = Field(default_factory=dict)
    budget: Budget | None = None
    allow_paths: list[str] = Field(default_factory=list, description=(
        "folders outside the spec's own folder that its files (prompts, corpora, databases, "
        "outboxes) may live in; relative to the spec"))
    tools: dict[Ident, ToolSpec] = Field(default_factory=dict)
    agents: dict[Ident, Agent] = Field(min_length=1)
    stages: list[Stage] = Field(min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _alias_shorthand(cls, v: Any) -> Any:
        # `fast: openai/gpt-4o-mini` is shorthand for `fast: {model: openai/gpt-4o-mini}`
        if isinstance(v, dict):
            return {k: ({"model": m} if isinstance(m, str) else m) for k, m in v.items()}
        return v

    def stage(self, stage_id: str) -> AgentStage | SelectStage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)
