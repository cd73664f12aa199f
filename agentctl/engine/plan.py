"""Compile a loaded spec into what the scheduler needs per stage: routes, schemas, templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from agentctl.llm.caller import Route
from agentctl.spec.loader import LoadedSpec
from agentctl.spec.models import AgentStage, Pipeline, SelectStage
from agentctl.spec.outputs import output_json_schema, parse_output
from agentctl.spec.templates import compile_prompt


@dataclass
class StagePlan:
    id: str
    kind: str                                  # agent | select
    needs: list[str]
    depth: int                                 # longest path from a root; later stages go first
    after_barrier: bool                        # downstream of (or is) a fan-in stage
    stage: Any                                 # the spec model
    when: str | None = None
    # agent stages
    agent: str | None = None
    system: str = ""
    template: Any = None                       # compiled Jinja2 template
    route: Route | None = None
    schema: dict[str, Any] = field(default_factory=dict)
    parse: Callable[[str], dict] | None = None
    max_repairs: int = 2
    max_tool_rounds: int = 5
    approval: str | None = None


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
                              price=m.price.model_dump() if m.price else None)
    return routes


def compile_plan(loaded: LoadedSpec) -> list[StagePlan]:
    p = loaded.pipeline
    routes = build_routes(p)
    depth: dict[str, int] = {}
    after: dict[str, bool] = {}
    plans = []
    for sid in loaded.order:
        s = p.stage(sid)
        depth[sid] = 1 + max((depth[n] for n in s.needs), default=-1)
        after[sid] = isinstance(s, SelectStage) or any(after[n] for n in s.needs)
        plan = StagePlan(id=sid, kind=s.type, needs=list(s.needs), depth=depth[sid],
                         after_barrier=after[sid], stage=s, when=s.when)
        if isinstance(s, AgentStage):
            agent = p.agents[s.agent]
            alias = s.model or agent.model or p.defaults.model
            base = routes[alias]
            params = dict(base.params)
            for key in ("temperature", "max_tokens"):
                value = getattr(s, key, None)
                if value is None:
                    value = getattr(agent, key, None)
                if value is not None:
                    params[key] = value
            if s.timeout is not None:
                params["timeout"] = s.timeout
            plan.agent = s.agent
            plan.system = loaded.systems.get(s.agent, "")
            plan.template = compile_prompt(loaded.prompts[sid])
            plan.route = Route(alias=alias, model=base.model, params=params, price=base.price)
            plan.schema = output_json_schema(s)
            plan.parse = (lambda text, _s=s: parse_output(_s, text))
            plan.max_repairs = s.max_repairs if s.max_repairs is not None else p.defaults.max_repairs
            plan.max_tool_rounds = (agent.max_tool_rounds if agent.max_tool_rounds is not None
                                    else p.defaults.max_tool_rounds)
            plan.approval = s.approval
        plans.append(plan)
    return plans
