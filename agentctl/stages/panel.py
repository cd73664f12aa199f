"""`type: panel`: per account, N agents answer, read each other's answers and revise for up to
`rounds` rounds (stopping early once nobody changes their answer), then a moderator agent
turns the discussion into the stage's structured output.

Every turn is a span (role `panelist` with its round, or `moderator`) and each of its model
calls an `llm_calls` row attributed to its agent, so `inspect --item` replays the discussion
in order and prices each voice.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentctl.engine.cell import all_or_cancel
from agentctl.spec.base import (
    APPROVAL, Ident, OutputField, StageBase, Strict, approval_field, check_one_prompt,
    output_block, prompt_file_field)
from agentctl.spec.outputs import TEXT_FIELDS
from agentctl.spec.problems import Problem
from agentctl.stages.base import AgentRef, Fields, PromptSlot, StageType



class Panelist(Strict):
    agent: str
    prompt: str | None = Field(default=None, description="this panelist's own question (else the stage's)")
    prompt_file: str | None = prompt_file_field()

    @model_validator(mode="after")
    def _one_prompt(self) -> "Panelist":
        check_one_prompt(self, what="a panelist", required=False)
        return self


class PanelStage(StageBase):
    type: Literal["panel"]
    panelists: list[Panelist] = Field(min_length=2, description=(
        "two or more agents (names, or {agent, prompt}) who each answer, then discuss"))
    rounds: int = Field(default=2, ge=1, le=10, description=(
        "answer rounds; from the second on each panelist sees the others' last answers"))
    moderator: str = Field(description="the agent that turns the discussion into `output`")
    prompt: str | None = Field(default=None, description="Jinja2 template: the question for the panel")
    prompt_file: str | None = prompt_file_field()
    moderator_prompt: str | None = Field(default=None, description=(
        "Jinja2 template of the moderator's instructions (the transcript is appended)"))
    moderator_prompt_file: str | None = prompt_file_field()
    panelist_output: dict[Ident, OutputField] = Field(default_factory=dict, description=(
        "each panelist's answer schema; empty means free text"))
    output: dict[Ident, OutputField] = Field(default_factory=dict, description="the moderator's output schema")
    approval: APPROVAL | None = approval_field()

    @field_validator("output", "panelist_output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return output_block(v)

    @field_validator("panelists", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [{"agent": p} if isinstance(p, str) else p for p in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _prompts(self) -> "PanelStage":
        check_one_prompt(self, what="a panel stage")
        check_one_prompt(self, what="a panel stage", text="moderator_prompt", required=False)
        return self

    def members(self) -> list[Panelist]:
        return list(self.panelists)


def _answer_text(answer: dict[str, Any]) -> str:
    if set(answer) == {"text"}:
        return str(answer["text"])
    return json.dumps(answer, ensure_ascii=False)


def transcript_text(transcript: list[dict[str, Any]]) -> str:
    return "\n".join(f"[round {t['round']}] {t['agent']}: {_answer_text(t['answer'])}"
                     for t in transcript)


class PanelType(StageType):
    kind = "panel"
    model = PanelStage
    summary = ("Per account, N agents answer, then see each other's answers for up to `rounds` "
               "rounds; a moderator agent produces the stage's output.")

    def agents(self, stage: PanelStage) -> list[AgentRef]:
        refs = [AgentRef(f"panelists[{i}]", p.agent) for i, p in enumerate(stage.panelists)]
        return refs + [AgentRef("moderator", stage.moderator)]

    def prompt_slots(self, stage: PanelStage) -> list[PromptSlot]:
        slots = [PromptSlot(stage.id, "prompt", "prompt_file", stage.prompt, stage.prompt_file)]
        for i, p in enumerate(stage.members()):
            if p.prompt is not None or p.prompt_file is not None:
                slots.append(PromptSlot(f"{stage.id}.panelist{i}", f"panelists[{i}].prompt",
                                        f"panelists[{i}].prompt_file", p.prompt, p.prompt_file,
                                        what="panelist prompt"))
        slots.append(PromptSlot(f"{stage.id}.moderator", "moderator_prompt", "moderator_prompt_file",
                                stage.moderator_prompt, stage.moderator_prompt_file,
                                names=("transcript",), what="moderator prompt"))
        return slots

    def output_fields(self, stage: PanelStage) -> Fields:
        return stage.output or TEXT_FIELDS

    def check(self, stage: PanelStage, here: str, pipeline) -> list[Problem]:
        names = [p.agent for p in stage.members()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            return [Problem(f"{here}.panelists", f"panelist '{dupes[0]}' is listed twice",
                            "each panelist is a different agent; declare another agent")]
        return []

    def compile(self, stage: PanelStage, build) -> Any:
        members = [build.profile(p.agent) for p in stage.members()]
        return (members, build.profile(stage.moderator),
                build.output(f"{stage.id}_panelist_output", stage.panelist_output or TEXT_FIELDS),
                build.output(f"{stage.id}_output", self.output_fields(stage)))

    async def run_item(self, cell) -> dict[str, Any]:
        stage: PanelStage = cell.plan.stage
        members, moderator, answer_spec, output = cell.plan.runtime
        questions = []
        for i, _ in enumerate(members):
            slot = f"{stage.id}.panelist{i}"
            questions.append(cell.render(slot) if cell.has_template(slot) else cell.render(stage.id))
        transcript: list[dict[str, Any]] = []
        last: list[dict[str, Any] | None] = [None] * len(members)
        for rnd in range(1, stage.rounds + 1):
            prompts = [questions[i] if rnd == 1 else _revise_prompt(questions[i], i, members, last)
                       for i in range(len(members))]
            answers = await all_or_cancel(*(
                cell.agent(m, prompts[i], answer_spec, role="panelist", round=rnd,
                           span=cell.span("panelist", i, m.name, rnd))
                for i, m in enumerate(members)))
            changed = any(a != last[i] for i, a in enumerate(answers))
            transcript += [{"round": rnd, "agent": m.name, "answer": a}
                           for m, a in zip(members, answers)]
            last = list(answers)
            if rnd > 1 and not changed:
                break  # converged: nobody revised their answer
        slot = f"{stage.id}.moderator"
        head = (cell.render(slot, transcript=transcript) if cell.has_template(slot)
                else f"Question put to the panel:\n{cell.render(stage.id)}\n\n"
                     "Summarise the panel's conclusion in the required output.")
        prompt = f"{head}\n\nPanel discussion, in order:\n{transcript_text(transcript)}"
        return await cell.agent(moderator, prompt, output, role="moderator",
                                span=cell.span("moderator", moderator.name))

    def span_label(self, span: dict[str, Any]) -> str:
        if span.get("role") == "moderator":
            return f"moderator {span['agent']}"
        return f"round {span.get('round')} · {span['agent']}"


def _revise_prompt(question: str, me: int, members: list, last: list) -> str:
    mine = _answer_text(last[me] or {})
    others = "\n".join(f"- {m.name}: {_answer_text(last[i] or {})}"
                       for i, m in enumerate(members) if i != me)
    return (f"{question}\n\nYour previous answer:\n{mine}\n\nThe other panelists answered:\n"
            f"{others}\n\nConsider their points. Keep your answer if you still hold it, or "
            "revise it; answer in the same format.")
