"""One cell while it runs, as a stage type sees it: its context, its usage, and agent turns.

A stage type's `run_item` gets a :class:`CellRun` and calls :meth:`CellRun.agent` once (an
`agent` stage) or many times (a panel's rounds, an orchestrator's sub-agents); a fan-in
type's `decide` gets a :class:`FanInRun` (no single item). Every agent turn of a multi-agent
stage is a *span*: a row in the `spans` table with its parent, role, depth and round, and
the `span_id` on each of its `llm_calls` and `tool_calls` rows, so `inspect` can show the
discussion or the tree and what each branch cost. Spans have deterministic ids, so a resumed
run finds the sub-agents that had already finished and does not run them again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentctl.agents import AgentTask, CellFailed, ExtraTool, run_agent
from agentctl.errors import AgentctlError, BudgetExceeded, ProviderError
from agentctl.llm.caller import CellUsage
from agentctl.runlog.writer import utcnow

if TYPE_CHECKING:
    from agentctl.engine.plan import AgentProfile, OutputSpec, StagePlan
    from agentctl.engine.scheduler import Engine


@dataclass
class CellResult:
    status: str                    # ok | failed | skipped | filtered | awaiting_approval | stopped
    output: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    log_output: bool = True        # False: the cell row stores no copy (a reduce's run output)
    usage: dict[str, Any] | None = None  # a stored cell's attempts, tokens, cost and times (resume)
    # False when this result is what an earlier session of the run stored (or equals it): the
    # cells that read it may keep what they stored too. True for anything decided anew.
    changed: bool = True


STOPPED = CellResult("stopped")


async def all_or_cancel(*aws: Any) -> list[Any]:
    """`asyncio.gather`, except that the first failure cancels the others (a failed panelist
    must not leave its siblings calling models for a cell that is already recorded)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def span_id_for(run_id: str, span_key: str) -> str:
    return "sp-" + hashlib.sha256(f"{run_id}\x1f{span_key}".encode()).hexdigest()[:20]


@dataclass
class Span:
    """A handle on one agent turn, for stage types that build trees (parent of sub-agents)."""
    key: str
    id: str | None
    depth: int = 0
    agent: str | None = None


class CellRun:
    """(item, stage) while it runs. `key`/`row` are None for a fan-in stage's run-level work."""

    def __init__(self, engine: "Engine", plan: "StagePlan", seq: int, key: str | None,
                 row: dict | None, context: dict[str, Any]):
        self.engine = engine
        self.plan = plan
        self.seq = seq
        self.key = key
        self.row = row
        self.context = context
        self.usage = CellUsage()
        self.awaiting = False
        self.spans = 0

    @property
    def approval(self) -> str:
        return self.engine.approval_for(self.plan)

    def render(self, slot: str, **extra: Any) -> str:
        """Render one of the stage's prompt templates with the cell's context (plus `extra`)."""
        template = self.plan.templates[slot]
        try:
            return template.render(**self.context, **extra)
        except Exception as exc:  # e.g. a value the static checks could not foresee
            raise CellFailed(f"prompt template '{slot}' of stage '{self.plan.id}' failed to "
                             f"render: {type(exc).__name__}: {exc}", "TemplateError") from exc

    def has_template(self, slot: str) -> bool:
        return self.plan.templates.get(slot) is not None

    def span(self, *parts: Any, parent: Span | None = None, depth: int = 0,
             agent: str | None = None) -> Span:
        """A deterministic span handle from its place in the stage (role, agent, round...)."""
        base = parent.key if parent else f"{self.plan.id}\x1f{self.key or '*'}"
        key = base + "\x1f" + "\x1f".join(str(p) for p in parts)
        return Span(key=key, id=span_id_for(self.engine.run_id, key), depth=depth, agent=agent)

    def finished(self, span: Span) -> dict[str, Any] | None:
        """The output of this span if a previous process of this run already finished it."""
        done = self.engine.prior_spans.get(span.id or "")
        return done if done is not None and done.get("status") == "ok" else None

    def priority(self) -> float:
        return self.engine.priority(self.plan, self.seq)

    async def agent(self, profile: "AgentProfile", prompt: str, output: "OutputSpec", *,
                    role: str, span: Span | None = None, parent: Span | None = None,
                    round: int | None = None, task: str | None = None,
                    extra_tools: list[ExtraTool] | None = None,
                    max_tool_rounds: int | None = None, refusable: bool = False) -> dict[str, Any]:
        """One agent turn (its tool rounds and repairs included); returns its validated output.

        With a `span`, the turn is logged as one: failures are recorded on it and re-raised.
        `refusable` (a sub-agent): the item's budget refusing it is a bound, not a failure;
        its span says `refused`, and is not written at all when it never got to call a model
        (like a spawn refused by `max_subagents`, which has no span either)."""
        meta = {"run_id": self.engine.run_id, "item_key": self.key, "stage_id": self.plan.id,
                "agent": profile.name, "account": self.row or {}, "price": profile.route.price,
                "kind": self.plan.kind, "role": role,
                "span_id": span.id if span else None,
                "extra_tools": [t.name for t in extra_tools or ()]}
        agent_task = AgentTask(
            stage_id=self.plan.id, agent=profile.name, system=profile.system, prompt=prompt,
            route=profile.route, schema=output.schema, parse=output.parse,
            max_repairs=profile.max_repairs,
            max_tool_rounds=max_tool_rounds if max_tool_rounds is not None else profile.max_tool_rounds,
            approval=self.approval, meta=meta, output_name=output.name,
            extra_tools=list(extra_tools or ()))
        usage = CellUsage()
        started_at, t0 = utcnow(), time.perf_counter()
        status, result, error, error_type = "ok", None, None, None
        try:
            result = await run_agent(agent_task, caller=self.engine.caller, usage=usage,
                                     tools=self.engine.tools, priority=self.priority())
            if meta.get("failed_actions"):  # as after approve + resume: the cell failed
                raise CellFailed(f"action failed: {meta['failed_actions'][0]}", "ActionFailed")
            return result
        except CellFailed as exc:
            status, error, error_type = "failed", exc.message, exc.kind
            raise
        except ProviderError as exc:
            status, error, error_type = "failed", exc.message, exc.kind
            raise
        except BudgetExceeded as exc:
            status, error, error_type = ("refused" if refusable and not exc.whole_run else "failed",
                                         exc.message, type(exc).__name__)
            raise
        except AgentctlError as exc:
            status, error, error_type = "failed", exc.message, type(exc).__name__
            raise
        except BaseException:
            status = "stopped"
            raise
        finally:
            self.usage.merge(usage)
            if meta.get("awaiting_approval"):
                self.awaiting = True
                if status == "ok":
                    status = "awaiting_approval"
            unborn = status == "refused" and usage.attempts == 0
            if span is not None and status != "stopped" and not unborn:
                self.spans += 1
                usage = self.engine.carried.span(span.id, usage)  # earlier sessions' calls too
                self.engine.record_span({
                    "span_id": span.id, "run_id": self.engine.run_id, "item_key": self.key,
                    "stage_id": self.plan.id, "parent_span_id": parent.id if parent else None,
                    "agent": profile.name, "role": role, "depth": span.depth, "round": round,
                    "task": task, "status": status, "output": result, "error": error,
                    "error_type": error_type, "attempts": usage.attempts,
                    "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                    "cost_usd": usage.cost_or_none, "started_at": started_at, "ended_at": utcnow(),
                    "duration_ms": (time.perf_counter() - t0) * 1000})


class FanInRun(CellRun):
    """A fan-in stage deciding once over every item that reached it: `items` holds
    (seq, key, context) of each, in input order."""

    def __init__(self, engine: "Engine", plan: "StagePlan",
                 items: list[tuple[int, str, dict[str, Any]]], *, inputs_changed: bool = True):
        run = {"id": engine.run_id, "pipeline": engine.pipeline_name}
        super().__init__(engine, plan, seq=-1, key=None, row=None, context={"run": run})
        self.items = items
        self.inputs_changed = inputs_changed

    def prior_output(self) -> dict[str, Any] | None:
        """A run-level output this run already produced (resume), if it finished and its
        inputs are the same now: no account reaches it that did not before, or the reverse,
        nor with changed inputs (a retry upstream)."""
        if self.inputs_changed:
            return None
        done = self.engine.prior_run_outputs.get(self.plan.id)
        return done if done is not None and done.get("status") == "ok" else None

    def record_output(self, status: str, output: dict | None, *, items: int, error: str | None = None,
                      error_type: str | None = None, started_at=None, t0: float | None = None) -> None:
        # what the stage cost over the whole run: calls of earlier sessions (maps paid before a
        # crash, a reduce a retry replaced) count, their cache-hit replays here add $0
        usage = self.engine.carried.output(self.plan.id, self.usage)
        self.engine.record_run_output({
            "run_id": self.engine.run_id, "stage_id": self.plan.id, "status": status,
            "output": output, "error": error, "error_type": error_type, "items": items,
            "attempts": usage.attempts, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens, "cost_usd": usage.cost_or_none,
            "started_at": started_at, "ended_at": utcnow(),
            "duration_ms": (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0})
