"""`type: orchestrate`: a lead agent gets the account and a `spawn` tool; each spawn starts a
sub-agent (one of `agents`) with a fresh context (its own system prompt, tools and the task
the lead wrote), run in parallel under the run's limits. Results go back to the lead, which
may spawn again, then gives the stage's structured output.

Hard bounds, per account: `max_subagents` spawns in the whole tree, `max_depth` levels (1:
only the lead spawns), `max_rounds` spawning turns per agent, and the budget. A spawn past a
bound is refused: the refusal goes back to the agent as the tool's result and is logged as a
`refused` tool call; it never fails the cell. Sub-agents are spans whose parent is the agent
that spawned them, with deterministic ids: a resumed run gets a finished sub-agent's output
from the log instead of running it again.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentctl.agents import CellFailed, ExtraTool
from agentctl.errors import BudgetExceeded, ProviderError
from agentctl.llm.types import ToolCallRequest
from agentctl.runlog.writer import utcnow
from agentctl.engine.cell import all_or_cancel
from agentctl.spec.base import (
    APPROVAL, Ident, OutputField, StageBase, approval_field, check_one_prompt, output_block,
    prompt_file_field)
from agentctl.spec.outputs import TEXT_FIELDS
from agentctl.spec.problems import Problem
from agentctl.stages.base import AgentRef, Fields, PromptSlot, StageType

SPAWN = "spawn"


class OrchestrateStage(StageBase):
    type: Literal["orchestrate"]
    lead: str = Field(description="the lead agent: gets the prompt and the `spawn` tool")
    agents: list[str] = Field(min_length=1, description="the sub-agents the lead may spawn")
    prompt: str | None = Field(default=None, description="Jinja2 template of the lead's task")
    prompt_file: str | None = prompt_file_field()
    subagent_prompt: str | None = Field(default=None, description=(
        "Jinja2 template of a sub-agent's message; sees `task` and `agent` (default: the task)"))
    subagent_prompt_file: str | None = prompt_file_field()
    subagent_output: dict[Ident, OutputField] = Field(default_factory=dict, description=(
        "sub-agents' output schema; empty means free text"))
    output: dict[Ident, OutputField] = Field(default_factory=dict, description="the lead's output schema")
    max_subagents: int = Field(default=6, ge=1, le=1000, description="spawns per account, whole tree")
    max_depth: int = Field(default=1, ge=1, le=5, description="1: only the lead spawns; 2: its sub-agents may too")
    max_rounds: int = Field(default=3, ge=1, le=20, description="spawning turns per agent")
    approval: APPROVAL | None = approval_field()

    @field_validator("output", "subagent_output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return output_block(v)

    @model_validator(mode="after")
    def _prompts(self) -> "OrchestrateStage":
        check_one_prompt(self, what="an orchestrate stage")
        check_one_prompt(self, what="an orchestrate stage", text="subagent_prompt", required=False)
        return self


def spawn_schema(agents: list[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": SPAWN,
        "description": ("Start a sub-agent on one focused task, with a fresh context. Several "
                        "spawn calls in one reply run in parallel. Returns the sub-agent's result."),
        "parameters": {"type": "object", "properties": {
            "agent": {"type": "string", "enum": list(agents), "description": "which sub-agent"},
            "task": {"type": "string", "description": "the task, self-contained: the sub-agent sees nothing else"}},
            "required": ["agent", "task"], "additionalProperties": False}}}


class _Tree:
    """The spawn bookkeeping of one account's orchestration (shared by every level)."""

    def __init__(self) -> None:
        self.spawned = 0
        self.refused = 0
        self.seen: dict[tuple[str, str, str], int] = {}
        self.results: dict[str, list[str]] = {}   # what each spawner's sub-agents answered

    def heard(self, parent_key: str, agent: str, task: str, answer: str) -> None:
        self.results.setdefault(parent_key, []).append(
            f"- {agent} ({task}): {answer[:4000]}")


class OrchestrateType(StageType):
    kind = "orchestrate"
    model = OrchestrateStage
    summary = ("A lead agent decomposes the account's task and spawns bounded sub-agents "
               "(`spawn` tool) in parallel, then synthesises the stage's output.")

    def agents(self, stage: OrchestrateStage) -> list[AgentRef]:
        return [AgentRef("lead", stage.lead)] + [
            AgentRef(f"agents[{i}]", name) for i, name in enumerate(stage.agents)]

    def prompt_slots(self, stage: OrchestrateStage) -> list[PromptSlot]:
        return [PromptSlot(stage.id, "prompt", "prompt_file", stage.prompt, stage.prompt_file),
                PromptSlot(f"{stage.id}.subagent", "subagent_prompt", "subagent_prompt_file",
                           stage.subagent_prompt, stage.subagent_prompt_file,
                           names=("task", "agent"), what="sub-agent prompt")]

    def output_fields(self, stage: OrchestrateStage) -> Fields:
        return stage.output or TEXT_FIELDS

    def check(self, stage: OrchestrateStage, here: str, pipeline) -> list[Problem]:
        found: list[Problem] = []
        dupes = sorted({a for a in stage.agents if stage.agents.count(a) > 1})
        if dupes:
            found.append(Problem(f"{here}.agents", f"sub-agent '{dupes[0]}' is listed twice",
                                 "list each sub-agent once"))
        # A granted tool named `spawn` would be offered next to the built-in one under the same
        # name: providers refuse the request or the model can never reach the user's tool.
        spawners = [stage.lead, *(stage.agents if stage.max_depth > 1 else [])]
        for name in dict.fromkeys(spawners):
            agent = pipeline.agents.get(name)
            for i, grant in enumerate(agent.tools if agent is not None else []):
                tool = pipeline.tools.get(grant)
                if grant == SPAWN and tool is not None and tool.type != "mcp":
                    found.append(Problem(
                        f"agents.{name}.tools[{i}]",
                        f"tool '{SPAWN}' is reserved in orchestrate stages: stage '{stage.id}' gives "
                        f"agent '{name}' its own '{SPAWN}' tool",
                        f"rename the tool under tools: and in its grants, e.g. to '{SPAWN}_job'"))
        return found

    def compile(self, stage: OrchestrateStage, build) -> Any:
        lead = build.profile(stage.lead, min_tool_rounds=stage.max_rounds + 1)
        subs = {n: build.profile(n, min_tool_rounds=stage.max_rounds + 1 if stage.max_depth > 1 else 0)
                for n in stage.agents}
        return (lead, subs, build.output(f"{stage.id}_output", self.output_fields(stage)),
                build.output(f"{stage.id}_subagent_output", stage.subagent_output or TEXT_FIELDS))

    async def run_item(self, cell) -> dict[str, Any]:
        stage: OrchestrateStage = cell.plan.stage
        lead, _, output, _ = cell.plan.runtime
        tree = _Tree()
        span = cell.span("lead", lead.name, agent=lead.name)
        prompt = cell.render(stage.id)
        try:
            return await cell.agent(lead, prompt, output, role="lead", span=span,
                                    extra_tools=[self._spawn_tool(cell, stage, tree, span)])
        except CellFailed as exc:
            if exc.kind != "ToolRoundsExceeded" or not tree.refused:
                raise
        # The lead kept calling spawn past a bound until its tool rounds ran out. A bound never
        # fails the cell: one last turn, without spawn, on what its sub-agents found.
        final = cell.span("lead", lead.name, "final", agent=lead.name)
        found = "\n".join(tree.results.get(span.key, [])) or "(none)"
        return await cell.agent(
            lead, f"{prompt}\n\nYour sub-agents' results:\n{found}\n\nSpawning is over for this "
                  f"account (bounds: max_rounds={stage.max_rounds}, max_subagents="
                  f"{stage.max_subagents}). Give your final answer now, in the required format.",
            output, role="lead", span=final, parent=span,
            task="final answer: spawning refused past its bounds")

    def _spawn_tool(self, cell, stage: OrchestrateStage, tree: _Tree, parent) -> ExtraTool:
        rounds = 0

        async def handle(calls: list[ToolCallRequest], llm_call_id: str | None) -> list[str]:
            nonlocal rounds
            rounds += 1
            jobs = [self._one_spawn(cell, stage, tree, parent, c, llm_call_id, rounds) for c in calls]
            return await all_or_cancel(*jobs)

        return ExtraTool(name=SPAWN, schema=spawn_schema(stage.agents), handle=handle)

    async def _one_spawn(self, cell, stage: OrchestrateStage, tree: _Tree, parent,
                         call: ToolCallRequest, llm_call_id: str | None, rounds: int) -> str:
        _, subs, _, sub_output = cell.plan.runtime
        started_at, t0 = utcnow(), time.perf_counter()
        try:
            args = json.loads(call.arguments or "{}")
        except ValueError:
            args = None
        log = _SpawnLog(cell, parent, llm_call_id, args if isinstance(args, dict) else
                        {"_raw": call.arguments}, started_at, t0)
        extra = sorted(set(args) - {"agent", "task"}) if isinstance(args, dict) else []
        if not isinstance(args, dict) or not isinstance(args.get("task"), str) \
                or not args["task"].strip() or args.get("agent") not in subs or extra:
            msg = (f"spawn needs {{agent, task}} with agent one of: {', '.join(stage.agents)} "
                   "and a non-empty task" + (f"; unexpected argument(s): {', '.join(extra)}"
                                             if extra else ""))
            return log.finish("invalid_args", {"error": msg}, error=msg)
        agent, task = args["agent"], args["task"].strip()
        refusal = None
        if rounds > stage.max_rounds:
            refusal = (f"spawn refused: max_rounds={stage.max_rounds} spawning turns used; "
                       "give your final answer with what you have")
        elif parent.depth + 1 > stage.max_depth:
            refusal = f"spawn refused: max_depth={stage.max_depth} reached; do the task yourself"
        elif tree.spawned >= stage.max_subagents:
            refusal = (f"spawn refused: max_subagents={stage.max_subagents} for this account "
                       "reached; give your final answer with what you have")
        if refusal is not None:
            tree.refused += 1
            return log.finish("refused", {"error": refusal, "refused": True}, error=refusal)
        tree.spawned += 1
        n = tree.seen[(parent.key, agent, task)] = tree.seen.get((parent.key, agent, task), 0) + 1
        span = cell.span("sub", agent, task, n, parent=parent, depth=parent.depth + 1, agent=agent)
        done = cell.finished(span)
        if done is not None:  # finished before a crash: its output is in the log
            tree.heard(parent.key, agent, task, json.dumps(done["output"], default=str))
            return log.finish("reused", {"agent": agent, "output": done["output"]}, child=span.id)
        prompt = (cell.render(f"{stage.id}.subagent", task=task, agent=agent)
                  if cell.has_template(f"{stage.id}.subagent") else task)
        tools = []
        if span.depth < stage.max_depth:
            tools.append(self._spawn_tool(cell, stage, tree, span))
        spans_before = cell.spans
        try:
            result = await cell.agent(subs[agent], prompt, sub_output, role="subagent", span=span,
                                      parent=parent, task=task, extra_tools=tools, refusable=True)
        except BudgetExceeded as exc:  # the account's budget: a bound like the others
            if exc.whole_run:
                raise
            tree.refused += 1
            msg = f"spawn refused: {exc.message}; give your final answer with what you have"
            # a sub-agent refused before its first call has no span, like any other refusal;
            # one stopped part-way keeps its span (status refused): its calls were paid
            child = span.id if cell.spans > spans_before else None
            return log.finish("refused", {"error": msg, "refused": True}, error=msg, child=child)
        except (CellFailed, ProviderError) as exc:
            if isinstance(exc, ProviderError) and exc.stops_run:
                raise
            msg = f"sub-agent '{agent}' failed: {exc.message}"
            tree.heard(parent.key, agent, task, msg)
            return log.finish("error", {"agent": agent, "error": msg}, error=msg, child=span.id)
        tree.heard(parent.key, agent, task, json.dumps(result, default=str))
        return log.finish("ok", {"agent": agent, "output": result}, child=span.id)

    def mock_turn(self, request, seed: str) -> list[ToolCallRequest] | None:
        """The mock lead spawns two or three sub-agents on its first turn, then answers."""
        meta = request.meta
        if meta.get("role") != "lead" or any(m.get("role") == "tool" for m in request.messages):
            return None
        spawn = next((t for t in request.tools or [] if t["function"]["name"] == SPAWN), None)
        if spawn is None:
            return None
        agents = spawn["function"]["parameters"]["properties"]["agent"]["enum"]
        n = 2 + hashlib.blake2b(seed.encode(), digest_size=2).digest()[0] % 2
        label = _label(meta.get("account") or {}) or str(meta.get("item_key"))
        return [ToolCallRequest(id=f"mock_spawn_{i}", name=SPAWN, arguments=json.dumps({
            "agent": agents[i % len(agents)],
            "task": f"Find what matters about {label} from the {agents[i % len(agents)]} angle."}))
            for i in range(n)]

    def span_label(self, span: dict[str, Any]) -> str:
        if span.get("role") == "lead":
            return f"lead {span['agent']}"
        return f"sub-agent {span['agent']} (depth {span.get('depth')}): {span.get('task') or ''}"


def _label(account: dict[str, Any]) -> str:
    for key in ("name", "company", "account_name", "title"):
        if account.get(key):
            return str(account[key])
    return ""


class _SpawnLog:
    """One `spawn` call as a `tool_calls` row: status ok | refused | error | invalid_args, or
    reused (a resumed run answered it from a sub-agent that had finished before)."""

    def __init__(self, cell, parent, llm_call_id, args, started_at, t0):
        self.cell, self.parent, self.llm_call_id = cell, parent, llm_call_id
        self.args, self.started_at, self.t0 = args, started_at, t0

    def finish(self, status: str, result: dict[str, Any], *, error: str | None = None,
               child: str | None = None) -> str:
        text = json.dumps(result, ensure_ascii=False, default=str)
        cell = self.cell
        cell.engine.log_tool_call({
            "tool_call_id": uuid.uuid4().hex, "run_id": cell.engine.run_id, "item_key": cell.key,
            "stage_id": cell.plan.id, "agent": self.parent.agent, "llm_call_id": self.llm_call_id,
            "tool": SPAWN, "arguments": self.args, "result": text[:8000],
            "result_chars": len(text), "status": status, "error": error,
            "duration_ms": (time.perf_counter() - self.t0) * 1000, "idempotency_key": None,
            "started_at": self.started_at, "span_id": self.parent.id, "child_span_id": child})
        return text
