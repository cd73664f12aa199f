"""Pydantic models of the pipeline YAML. Every model forbids unknown keys.

Cross-field checks (graph, aliases, template variables, files) live in ``checks.py``;
loading with file/YAML-path/line errors lives in ``loader.py``. The stage models live with
their stage types in ``agentctl/stages`` (one module per `type:`); ``Stage`` is their union.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from agentctl.spec.base import (
    IDENT, OUTPUT_TYPES, Ident, OutputField, StageBase, Strict, ToolName,
)
from agentctl.stages import (
    STAGE_TYPES, AgentStage, OrchestrateStage, PanelStage, ReduceStage, RouteStage, SelectStage,
    Stage,
)

__all__ = [  # the spec's public names, the stage models re-exported from their stage types
    "IDENT", "OUTPUT_TYPES", "STAGE_TYPES", "Agent", "AgentStage", "Budget", "Defaults", "Ident",
    "InputSpec", "Limit", "ModelAlias", "OrchestrateStage", "OutputField", "PanelStage",
    "Pipeline", "Price", "ReduceStage", "RouteStage", "SelectStage", "Stage", "StageBase",
    "Strict", "ToolName", "ToolSpec",
]


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
    hedge_after_p: float | None = Field(default=None, ge=50, le=99.9, description=(
        "send a duplicate of a call still unanswered after this percentile of the alias's "
        "recent latencies, in the next free slot (ahead of queued work, within every limit, "
        "at most 2x the percentile's share of calls); first answer wins (default: defaults')"))
    params: dict[str, Any] = Field(default_factory=dict, description="extra litellm parameters")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlparse

        url = urlparse(v)
        if url.scheme not in ("http", "https") or not url.hostname:
            hint = (" (${VAR} is not expanded here: the spec takes the URL itself, e.g. "
                    "http://localhost:8000/v1; OPENAI_API_BASE in the environment also sets it "
                    "for openai/ models)" if "$" in v else ", e.g. http://localhost:8000/v1")
            raise ValueError(f"'{v}' is not an http(s) URL{hint}")
        return v

    @field_validator("params")
    @classmethod
    def _no_secrets(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if re.search(r"(api_key|secret|token|authorization|password)", key, re.I):
                raise ValueError(f"'{key}' looks like a secret; put keys in the environment "
                                 "(e.g. OPENAI_API_KEY), never in the spec")
        return v


class Limit(Strict):
    concurrency: int | None = Field(default=None, gt=0, description="calls in flight at most")
    rpm: float | None = Field(default=None, gt=0, description="requests per minute, spaced evenly")
    tpm: float | None = Field(default=None, gt=0, description=(
        "tokens per minute: a call reserves its prompt + max_tokens (256 when unset) and gives "
        "back what it did not use when it settles"))


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
    hedge_after_p: float | None = Field(default=None, ge=50, le=99.9, description=(
        "hedged requests for every alias (e.g. 95); off by default"))


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

    def stage(self, stage_id: str) -> Any:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)
