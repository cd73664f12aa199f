"""`type: route`: per account, one of several specialist agents answers.

The choice comes from a condition table (`cases: [{when, agent}]`, first match wins, else
`default`, else the account is `filtered`) or from a router agent whose output is an enum of
the `choices`. Every specialist answers the same `prompt` with the same `output` schema; the
cell's output is the chosen specialist's, plus `route: {agent, by, case, reason}`, so later
stages read `{{ score.score }}` and `{{ score.route.agent }}`. The router's turn and the
specialist's are logged as spans, so `inspect` shows who was chosen and why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentctl.engine.cell import CellResult
from agentctl.spec.base import (
    APPROVAL, Ident, OutputField, StageBase, Strict, approval_field, check_one_prompt,
    output_block, prompt_file_field)
from agentctl.spec.outputs import TEXT_FIELDS
from agentctl.spec.problems import Problem
from agentctl.stages.base import AgentRef, Fields, PromptSlot, StageType

ROUTE_FIELD = OutputField(type="str", description="{agent, by, case, reason}: who answered and why")


class Case(Strict):
    when: str = Field(description="Jinja2 expression over the account and needed stages")
    agent: str = Field(description="the specialist that answers when `when` is true")


class Router(Strict):
    agent: str = Field(description="the agent that chooses; its output is {agent: <one of choices>, reason}")
    prompt: str | None = Field(default=None, description="Jinja2 template asking it to choose")
    prompt_file: str | None = prompt_file_field()

    @model_validator(mode="after")
    def _one_prompt(self) -> "Router":
        check_one_prompt(self, what="a router")
        return self


class RouteStage(StageBase):
    type: Literal["route"]
    cases: list[Case] | None = Field(default=None, description="condition table, first match wins")
    default: str | None = Field(default=None, description="the specialist when no case matches")
    router: Router | None = Field(default=None, description="an agent that picks one of `choices`")
    choices: list[str] | None = Field(default=None, description="the specialists a router may pick")
    prompt: str | None = Field(default=None, description="Jinja2 template every specialist answers")
    prompt_file: str | None = prompt_file_field()
    output: dict[Ident, OutputField] = Field(default_factory=dict, description=(
        "the specialists' shared output schema; the stage adds `route`"))
    approval: APPROVAL | None = approval_field()

    @field_validator("output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return output_block(v)

    @model_validator(mode="after")
    def _one_way(self) -> "RouteStage":
        check_one_prompt(self, what="a route stage")
        if (self.cases is None) == (self.router is None):
            raise ValueError("a route stage needs either 'cases' (a condition table) or "
                             "'router' (an agent that chooses), "
                             + ("not both" if self.cases is not None else "and has neither"))
        if self.router is not None:
            if not self.choices or len(self.choices) < 2:
                raise ValueError("a router needs 'choices': the two or more specialists it picks from")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError("'choices' lists a specialist twice")
        elif not self.cases:
            raise ValueError("'cases' must not be empty")
        elif self.choices is not None:
            raise ValueError("'choices' is for a router; with cases, the agents are in the cases")
        if "route" in self.output:
            raise ValueError("'route' is added by the stage (who answered and why); rename the field")
        return self


class RouteType(StageType):
    kind = "route"
    model = RouteStage
    summary = ("Per account, one of several specialist agents answers: chosen by a condition "
               "table (`cases`, `default`) or by a router agent picking one of `choices`.")

    def agents(self, stage: RouteStage) -> list[AgentRef]:
        refs = []
        for i, case in enumerate(stage.cases or []):
            refs.append(AgentRef(f"cases[{i}].agent", case.agent))
        if stage.default is not None:
            refs.append(AgentRef("default", stage.default))
        if stage.router is not None:
            refs.append(AgentRef("router.agent", stage.router.agent))
            refs += [AgentRef(f"choices[{i}]", name) for i, name in enumerate(stage.choices or [])]
        return refs

    def prompt_slots(self, stage: RouteStage) -> list[PromptSlot]:
        slots = [PromptSlot(stage.id, "prompt", "prompt_file", stage.prompt, stage.prompt_file)]
        if stage.router is not None:
            slots.append(PromptSlot(f"{stage.id}.router", "router.prompt", "router.prompt_file",
                                    stage.router.prompt, stage.router.prompt_file,
                                    what="router prompt"))
        return slots

    def conditions(self, stage: RouteStage) -> list[tuple[str, str, str]]:
        return [(f"cases[{i}].when", c.when, "'when'") for i, c in enumerate(stage.cases or [])]

    def output_fields(self, stage: RouteStage) -> Fields:
        return {**(stage.output or TEXT_FIELDS), "route": ROUTE_FIELD}

    def check(self, stage: RouteStage, here: str, pipeline) -> list[Problem]:
        return []

    def compile(self, stage: RouteStage, build) -> Any:
        names = [c.agent for c in stage.cases or []] + [stage.default] + list(stage.choices or [])
        specialists = {n: build.profile(n) for n in names if n is not None}
        output = build.output(f"{stage.id}_output", stage.output or TEXT_FIELDS)
        router = None
        if stage.router is not None:
            fields = {"agent": OutputField(type="enum", values=list(stage.choices or []),
                                           description="the specialist who should answer"),
                      "reason": OutputField(type="str", max_length=500,
                                            description="why, in one sentence")}
            router = (build.profile(stage.router.agent),
                      build.output(f"{stage.id}_router_output", fields))
        return specialists, output, router

    async def run_item(self, cell) -> dict[str, Any] | CellResult:
        from agentctl.spec.templates import eval_condition

        stage: RouteStage = cell.plan.stage
        specialists, output, router = cell.plan.runtime
        choice: dict[str, Any]
        if router is None:
            choice = {"agent": stage.default, "by": "default", "case": None,
                      "reason": "no case matched"}
            for i, case in enumerate(stage.cases or []):
                if eval_condition(case.when, cell.context, stage=stage.id):
                    choice = {"agent": case.agent, "by": "case", "case": i,
                              "reason": f"when: {case.when.strip()}"}
                    break
            if choice["agent"] is None:
                return CellResult("filtered", error=f"no case of route '{stage.id}' matched "
                                                    "and it has no default")
        else:
            profile, router_output = router
            picked = await cell.agent(profile, cell.render(f"{stage.id}.router"), router_output,
                                      role="router", span=cell.span("router", profile.name))
            choice = {"agent": picked["agent"], "by": "router", "case": None,
                      "reason": picked.get("reason")}
        specialist = specialists[choice["agent"]]
        answer = await cell.agent(specialist, cell.render(stage.id), output, role="specialist",
                                  span=cell.span("specialist", specialist.name),
                                  task=choice["reason"])
        return {**answer, "route": choice}

    def span_label(self, span: dict[str, Any]) -> str:
        if span.get("role") == "router":
            out = span.get("output") or {}
            return f"router {span['agent']} → {out.get('agent', '?')}: {out.get('reason') or ''}".strip()
        return f"specialist {span['agent']}" + (f" ({span['task']})" if span.get("task") else "")
