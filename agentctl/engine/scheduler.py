"""The scheduler: every (account, stage) cell is a task that starts when its needs are done.

Accounts flow through the stage graph independently; the only barriers are fan-in stages
(`select`), which wait for every account to arrive. A failed cell is a record, never an
exception: its downstream cells are marked skipped and the other accounts carry on.
Nothing here touches DuckDB, litellm or the terminal: it is handed a caller, a recorder and
a tool runner.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from agentctl.agents import AgentTask, CellFailed, ToolRunner, run_agent
from agentctl.engine.plan import StagePlan
from agentctl.engine.progress import RunProgress
from agentctl.errors import AgentctlError, ProviderError
from agentctl.llm.caller import CellUsage, ModelCaller, RunStopped
from agentctl.runlog.writer import utcnow
from agentctl.spec.templates import eval_condition

FINAL = {"ok", "failed", "skipped", "filtered"}
TAIL_ROUNDS = 4  # the tail: input exhausted and at most this many rounds of cells per stage left
REUSABLE = FINAL | {"awaiting_approval"}  # prior cells a resumed run keeps as they are


@dataclass
class CellResult:
    status: str                    # ok | failed | skipped | filtered | awaiting_approval | stopped
    output: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None


STOPPED = CellResult("stopped")


class SelectBarrier:
    """Fan-in: collects every account's upstream outputs, then keeps the top K / matching."""

    def __init__(self, plan: StagePlan):
        self.plan = plan
        self.arrived: dict[str, tuple[int, dict | None]] = {}
        self.results: dict[str, asyncio.Future] = {}
        self.total: int | None = None
        self.stopped = False

    def arrive(self, seq: int, key: str, context: dict | None) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.arrived[key] = (seq, context)
        self.results[key] = fut
        if self.stopped:
            fut.set_result(STOPPED)
        self._maybe_decide()
        return fut

    def set_total(self, total: int) -> None:
        self.total = total
        self._maybe_decide()

    def stop(self) -> None:
        self.stopped = True
        for fut in self.results.values():
            if not fut.done():
                fut.set_result(STOPPED)

    def _maybe_decide(self) -> None:
        if self.stopped or self.total is None or len(self.arrived) < self.total:
            return
        stage = self.plan.stage
        candidates = []
        for key, (seq, ctx) in self.arrived.items():
            if ctx is None:
                continue
            if stage.where and not eval_condition(stage.where, ctx):
                continue
            candidates.append((seq, key, ctx))
        if stage.by:
            sid, _, fld = stage.by.partition(".")

            def rank_key(c):
                value = (c[2].get(sid) or {}).get(fld)
                missing = value is None
                if isinstance(value, bool):
                    value = int(value)
                if stage.order == "desc" and isinstance(value, (int, float)):
                    value = -value
                return (missing, value if not missing else 0, c[0])

            try:
                candidates.sort(key=rank_key)
            except TypeError:  # mixed types: compare as text
                candidates.sort(key=lambda c: (str((c[2].get(sid) or {}).get(fld)), c[0]),
                                reverse=stage.order == "desc")
        else:
            candidates.sort(key=lambda c: c[0])
        keep = candidates[: stage.top] if stage.top else candidates
        chosen = {key: rank for rank, (_, key, _) in enumerate(keep, start=1)}
        for key, fut in self.results.items():
            if fut.done():
                continue
            if self.arrived[key][1] is None:
                fut.set_result(None)  # decided by its own upstream status
            elif key in chosen:
                fut.set_result(CellResult("ok", {"selected": True, "rank": chosen[key]}))
            else:
                fut.set_result(CellResult("filtered", {"selected": False, "rank": None},
                                          error=f"not selected by '{self.plan.id}'"))


class Engine:
    def __init__(self, plans: list[StagePlan], *, run_id: str, pipeline_name: str,
                 key_column: str, caller: ModelCaller,
                 record_cell: Callable[[dict], None], record_item: Callable[[dict], None],
                 progress: RunProgress, tools: ToolRunner | None = None,
                 prior: dict[tuple[str, str], CellResult] | None = None,
                 max_active_items: int = 256, approval_for: Callable[[StagePlan], str] | None = None):
        self.plans = plans
        self.by_id = {p.id: p for p in plans}
        self.run_id = run_id
        self.pipeline_name = pipeline_name
        self.key_column = key_column
        self.caller = caller
        self.record_cell = record_cell
        self.record_item = record_item
        self.progress = progress
        self.tools = tools
        self.prior = prior or {}
        self.max_active_items = max_active_items
        # the run decides each stage's approval mode (CLI flags over the spec); see runner
        self.approval_for = approval_for or (lambda plan: plan.approval or "required")
        self.barriers = {p.id: SelectBarrier(p) for p in plans if p.kind == "select"}
        self.draining = False  # every input row has been admitted
        self.cells_total = 0    # cells of the admitted accounts
        self.cells_done = 0
        for p in plans:
            progress.add_stage(p.id, p.kind)

    @property
    def stop_reason(self) -> str | None:
        return self.caller.stop_reason

    def stop(self, reason: str) -> None:
        self.caller.stop(reason)
        for b in self.barriers.values():
            b.stop()

    async def run(self, rows: Iterable[dict[str, Any]], *, record_items: bool = True) -> None:
        admission = asyncio.Semaphore(self.max_active_items)
        tasks: set[asyncio.Task] = set()
        seq = 0
        try:
            for row in rows:
                if self.stop_reason:
                    break
                await admission.acquire()
                key = str(row[self.key_column])
                if record_items:
                    self.record_item({"run_id": self.run_id, "item_key": key, "seq": seq, "input": row})
                self.progress.items_admitted += 1
                task = asyncio.create_task(self._run_item(seq, key, row, admission))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
                if seq % 64 == 0:
                    await asyncio.sleep(0)  # let running cells breathe while reading input
            self.draining = True
            for b in self.barriers.values():
                b.set_total(seq)
            if self.stop_reason:
                for b in self.barriers.values():
                    b.stop()
            while tasks:
                await asyncio.gather(*list(tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _run_item(self, seq: int, key: str, row: dict, admission: asyncio.Semaphore) -> None:
        self.cells_total += len(self.plans)
        await self._run_item_cells(seq, key, row, admission)

    def _in_tail(self) -> bool:
        """All input is admitted and what is left is a few rounds of work for the slots: from
        here on, the order of the stages decides how long the run's serial tail is."""
        left = self.cells_total - self.cells_done
        return self.draining and left <= TAIL_ROUNDS * self.caller.limiter.limit * len(self.plans)

    async def _run_item_cells(self, seq: int, key: str, row: dict, admission: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        futures = {p.id: loop.create_future() for p in self.plans}
        before_barrier = sum(1 for p in self.plans if not p.after_barrier)
        released = before_barrier == 0
        if released:
            admission.release()

        async def cell(plan: StagePlan) -> None:
            nonlocal before_barrier, released
            try:
                deps = {n: await futures[n] for n in plan.needs}
                result = await self._cell(plan, seq, key, row, deps)
            except Exception as exc:  # a bug must not hang the other cells of this item
                result = CellResult("failed", error=f"internal error: {exc!r}", error_type="InternalError")
                self._record(plan, key, result, CellUsage(), None, None)
            finally:
                if not plan.after_barrier:
                    before_barrier -= 1
                    if before_barrier == 0 and not released:
                        released = True
                        admission.release()
            self.cells_done += 1
            futures[plan.id].set_result(result)

        try:
            await asyncio.gather(*(cell(p) for p in self.plans))
        finally:
            if not released:
                admission.release()

    async def _cell(self, plan: StagePlan, seq: int, key: str, row: dict,
                    deps: dict[str, CellResult]) -> CellResult:
        prior = self.prior.get((key, plan.id))
        if prior is not None and prior.status in REUSABLE and plan.kind != "select":
            self.progress.count(plan.id, prior.status)
            return prior
        barrier = self.barriers.get(plan.id)
        blocked = self._blocked_by(deps)
        context = None
        if blocked is None and not self.stop_reason:
            context = self._context(row, deps)
            if plan.when and not eval_condition(plan.when, context):
                result = CellResult("filtered", error=f"when: {plan.when.strip()} is false")
                if barrier is not None:
                    barrier.arrive(seq, key, None)
                return self._record(plan, key, result, CellUsage(), None, None)
        if barrier is not None:
            decided = await barrier.arrive(seq, key, context if blocked is None else None)
            if decided is not None:
                if decided.status == "stopped":
                    return decided
                return self._record(plan, key, decided, CellUsage(), None, None)
        if self.stop_reason:
            return STOPPED
        if blocked is not None:
            if blocked.status in ("stopped", "waiting"):
                return blocked
            return self._record(plan, key, blocked, CellUsage(), None, None)
        return await self._agent_cell(plan, seq, key, row, context)

    def _blocked_by(self, deps: dict[str, CellResult]) -> CellResult | None:
        for name, dep in deps.items():
            if dep.status == "stopped":
                return STOPPED
        for name, dep in deps.items():
            if dep.status == "awaiting_approval":
                return CellResult("waiting")
        for name, dep in deps.items():
            if dep.status in ("failed", "skipped"):
                return CellResult("skipped", error=f"upstream '{name}' {dep.status}",
                                  error_type="UpstreamNotOk")
        for name, dep in deps.items():
            if dep.status == "filtered":
                return CellResult("filtered", error=f"upstream '{name}' filtered")
        return None

    def _context(self, row: dict, deps: dict[str, CellResult]) -> dict[str, Any]:
        ctx: dict[str, Any] = {"account": row, "item": row,
                               "run": {"id": self.run_id, "pipeline": self.pipeline_name}}
        for name, dep in deps.items():
            ctx[name] = dep.output or {}
        return ctx

    async def _agent_cell(self, plan: StagePlan, seq: int, key: str, row: dict,
                          context: dict[str, Any]) -> CellResult:
        counters = self.progress.stages[plan.id]
        counters.in_flight += 1
        started_at = utcnow()
        t0 = time.perf_counter()
        usage = CellUsage()
        try:
            try:
                prompt = plan.template.render(**context)
            except Exception as exc:  # e.g. a value the static checks could not foresee
                raise CellFailed(f"prompt template of stage '{plan.id}' failed to render: "
                                 f"{type(exc).__name__}: {exc}", "TemplateError") from exc
            task = AgentTask(
                stage_id=plan.id, agent=plan.agent or "", system=plan.system, prompt=prompt,
                route=plan.route, schema=plan.schema, parse=plan.parse,  # type: ignore[arg-type]
                max_repairs=plan.max_repairs, max_tool_rounds=plan.max_tool_rounds,
                approval=self.approval_for(plan),
                meta={"run_id": self.run_id, "item_key": key, "stage_id": plan.id,
                      "agent": plan.agent, "account": row, "price": plan.route.price})  # type: ignore[union-attr]
            # The deepest stage goes first (results early, memory flat), except in the tail:
            # there the stage with the most work left after it goes first (Hu's rule for
            # chains), so the run does not end on a serial research -> score -> write tail.
            priority = (plan.depth if self._in_tail() else -plan.depth) * 1e9 + seq
            output = await run_agent(task, caller=self.caller, usage=usage, tools=self.tools,
                                     priority=priority)
            result = CellResult("ok", output)
            if task.meta.get("awaiting_approval"):
                result = CellResult("awaiting_approval", output,
                                    error="side-effect actions wait for approval",
                                    error_type="AwaitingApproval")
        except RunStopped:
            return STOPPED
        except CellFailed as exc:
            result = CellResult("failed", error=exc.message, error_type=exc.kind)
        except ProviderError as exc:
            if exc.stops_run:
                self.stop(exc.message)
            result = CellResult("failed", error=exc.message, error_type=exc.kind)
        except AgentctlError as exc:
            result = CellResult("failed", error=exc.message, error_type=type(exc).__name__)
        finally:
            counters.in_flight -= 1
        return self._record(plan, key, result, usage, started_at, t0)

    def _record(self, plan: StagePlan, key: str, result: CellResult, usage: CellUsage,
                started_at, t0: float | None) -> CellResult:
        self.progress.count(plan.id, result.status)
        now = utcnow()
        self.record_cell({
            "run_id": self.run_id, "item_key": key, "stage_id": plan.id,
            "status": result.status, "output": result.output, "error": result.error,
            "error_type": result.error_type, "attempts": usage.attempts,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_or_none, "started_at": started_at or now, "ended_at": now,
            "duration_ms": (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0,
        })
        return result
