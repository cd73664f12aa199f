"""`type: agent` (the default): one specialist agent call per account."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentctl.spec.base import (
    APPROVAL, Ident, OutputField, StageBase, approval_field, check_one_prompt, output_block,
    prompt_file_field)
from agentctl.spec.outputs import TEXT_FIELDS
from agentctl.stages.base import AgentRef, Fields, PromptSlot, StageType



class AgentStage(StageBase):
    type: Literal["agent"] = "agent"
    agent: str = Field(description="the agent (under agents:) that answers")
    prompt: str | None = Field(default=None, description="Jinja2 template of the user message")
    prompt_file: str | None = prompt_file_field()
    output: dict[Ident, OutputField] = Field(default_factory=dict, description=(
        "output schema; empty means free text, read as `<stage>.text`"))
    model: str | None = Field(default=None, description="model alias overriding the agent's")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, gt=0, description="LLM calls of this stage in flight")
    max_repairs: int | None = Field(default=None, ge=0, le=10)
    approval: APPROVAL | None = approval_field()

    @field_validator("output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return output_block(v)

    @model_validator(mode="after")
    def _one_prompt(self) -> "AgentStage":
        check_one_prompt(self, what="an agent stage")
        return self


class AgentType(StageType):
    kind = "agent"
    model = AgentStage
    summary = "One LLM call per account (plus tool rounds and repairs)."

    def agents(self, stage: AgentStage) -> list[AgentRef]:
        return [AgentRef("agent", stage.agent, stage.model)]

    def prompt_slots(self, stage: AgentStage) -> list[PromptSlot]:
        return [PromptSlot(stage.id, "prompt", "prompt_file", stage.prompt, stage.prompt_file)]

    def output_fields(self, stage: AgentStage) -> Fields:
        return stage.output or TEXT_FIELDS

    def compile(self, stage: AgentStage, build) -> Any:
        profile = build.profile(stage.agent, model=stage.model, temperature=stage.temperature,
                                max_tokens=stage.max_tokens, timeout=stage.timeout,
                                max_repairs=stage.max_repairs)
        return profile, build.output(f"{stage.id}_output", self.output_fields(stage))

    async def run_item(self, cell) -> dict[str, Any]:
        profile, output = cell.plan.runtime
        return await cell.agent(profile, cell.render(cell.plan.id), output, role="agent")
