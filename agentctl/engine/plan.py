"""Compile a loaded spec into what the scheduler needs per stage: its type, its place in the
graph, and whatever its stage type compiled (agents with their routes, prompts, schemas).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from agentctl.llm.caller import Route
from agentctl.spec.base import OutputField
from agentctl.spec.loader import LoadedSpec
from agentctl.spec.models import Pipeline
from agentctl.spec.outputs import TEXT_FIELDS, output_json_schema, output_model, parse_output
from agentctl.spec.templates import compile_prompt
from agentctl.stages import StageType, stage_type


@dataclass
class AgentProfile:
    """One agent as a stage calls it: system prompt, model route, tool-round and repair caps."""
    name: str
    system: str
    route: Route
    max_tool_rounds: int
    max_repairs: int


@dataclass
class OutputSpec:
    """An output schema as sent to the model (`schema`, named `name`) and checked (`parse`)."""
    name: str
    fields: dict[str, OutputField]
    schema: dict[str, Any]
    parse: Callable[[str], dict]


def output_spec(name: str, fields: dict[str, OutputField] | None) -> OutputSpec:
    fields = fields or TEXT_FIELDS
    output_model(fields, name)  # built once, here, not on the first reply
    return OutputSpec(name=name, fields=fields, schema=output_json_schema(fields),
                      parse=lambda text, _f=fields: parse_output(_f, text))


@dataclass
class StagePlan:
    id: str
    kind: str
    type: StageType
    needs: list[str]
    depth: int                                 # longest path from a root; later stages go first
    after_barrier: bool                        # downstream of (or is) a fan-in stage
    stage: Any                                 # the spec model
    when: str | None = None
    approval: str | None = None
    concurrency: int | None = None             # a per-stage limit on LLM calls in flight
    runtime: Any = None                        # what the stage type compiled
    templates: dict[str, Any] = field(default_factory=dict)   # prompt slot key -> template


def build_routes(pipeline: Pipeline) -> dict[str, Route]:
    """Alias -> Route with the alias's parameters layered over the defaults."""
    d = pipeline.defaults
    routes = {}
    for alias, m in pipeline.models.items():
        params: dict[str, Any] = dict(m.params)
        for key, default in (("temperature", d.temperature), ("max_tokens", d.max_tokens),
                             ("timeout", d.timeout)):
            value = getattr(m, key)
            if value is None:
                value = default
            if value is not None:
                params[key] = value
        if m.api_base:
            params["api_base"] = m.api_base
        routes[alias] = Route(alias=alias, model=m.model, params=params,
                              price=m.price.model_dump() if m.price else None,
                              hedge_after_p=m.hedge_after_p if m.hedge_after_p is not None
                              else d.hedge_after_p)
    return routes


class PlanBuilder:
    """What a stage type's `compile` may ask for: agent profiles, templates, output specs."""

    def __init__(self, loaded: LoadedSpec, routes: dict[str, Route]):
        self.loaded = loaded
        self.pipeline = loaded.pipeline
        self.routes = routes

    def profile(self, agent_name: str, *, model: str | None = None,
                temperature: float | None = None, max_tokens: int | None = None,
                timeout: float | None = None, max_repairs: int | None = None,
                min_tool_rounds: int = 0) -> AgentProfile:
        p = self.pipeline
        agent = p.agents[agent_name]
        alias = model or agent.model or p.defaults.model
        assert alias is not None  # checks.py guarantees one
        base = self.routes[alias]
        params = dict(base.params)
        for key, stage_value in (("temperature", temperature), ("max_tokens", max_tokens)):
            value = stage_value if stage_value is not None else getattr(agent, key, None)
            if value is not None:
                params[key] = value
        if timeout is not None:
            params["timeout"] = timeout
        rounds = agent.max_tool_rounds if agent.max_tool_rounds is not None else p.defaults.max_tool_rounds
        return AgentProfile(
            name=agent_name, system=self.loaded.systems.get(agent_name, ""),
            route=Route(alias=alias, model=base.model, params=params, price=base.price,
                        hedge_after_p=base.hedge_after_p),
            max_tool_rounds=max(rounds, min_tool_rounds),
            max_repairs=max_repairs if max_repairs is not None else p.defaults.max_repairs)

    def template(self, key: str) -> Any:
        text = self.loaded.prompts.get(key)
        return compile_prompt(text) if text is not None else None

    def output(self, name: str, fields: dict[str, OutputField] | None) -> OutputSpec:
        return output_spec(name, fields)


def compile_plan(loaded: LoadedSpec) -> list[StagePlan]:
    p = loaded.pipeline
    build = PlanBuilder(loaded, build_routes(p))
    depth: dict[str, int] = {}
    after: dict[str, bool] = {}
    plans = []
    for sid in loaded.order:
        s = p.stage(sid)
        kind = stage_type(s)
        depth[sid] = 1 + max((depth[n] for n in s.needs), default=-1)
        after[sid] = kind.fan_in or any(after[n] for n in s.needs)
        plan = StagePlan(id=sid, kind=kind.kind, type=kind, needs=list(s.needs), depth=depth[sid],
                         after_barrier=after[sid], stage=s, when=s.when,
                         approval=getattr(s, "approval", None),
                         concurrency=getattr(s, "concurrency", None))
        plan.templates = {slot.key: build.template(slot.key) for slot in kind.prompt_slots(s)
                          if slot.key in loaded.prompts}
        plan.runtime = kind.compile(s, build)
        plans.append(plan)
    return plans
