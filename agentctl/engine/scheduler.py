"""The scheduler: every (account, stage) cell is a task that starts when its needs are done.

Accounts flow through the stage graph independently; the only barriers are fan-in stages
(select, reduce), which wait for every account to arrive. What a cell *does* is its stage
type's business (``agentctl/stages``); here are the graph, admission, priority, `when`,
upstream failures, resume and the cell's log row. A failed cell is a record, never an
exception: its downstream cells are marked skipped and the other accounts carry on.
Nothing here touches DuckDB, litellm or the terminal: it is handed a caller, a recorder and
a tool runner.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable

from agentctl.agents import CellFailed, ToolRunner
from agentctl.engine.carry import Carried
from agentctl.engine.cell import STOPPED, CellResult, CellRun
from agentctl.engine.fanin import FanIn
from agentctl.engine.plan import StagePlan
from agentctl.engine.progress import RunProgress
from agentctl.errors import AgentctlError, ProviderError
from agentctl.llm.caller import CellUsage, ModelCaller, RunStopped
from agentctl.runlog.writer import utcnow
from agentctl.spec.templates import eval_condition

FINAL = {"ok", "failed", "skipped", "filtered"}
TAIL_ROUNDS = 4  # the tail: input exhausted and at most this many rounds of cells per stage left
REUSABLE = FINAL | {"awaiting_approval"}  # prior cells a resumed run keeps as they are
OPEN_ACTIONS = ("pending_approval", "approved")  # actions that have not run and still may

__all__ = ["CellResult", "Engine", "STOPPED"]


class Engine:
    def __init__(self, plans: list[StagePlan], *, run_id: str, pipeline_name: str,
                 key_column: str, caller: ModelCaller,
                 record_cell: Callable[[dict], None], record_item: Callable[[dict], None],
                 progress: RunProgress, tools: ToolRunner | None = None,
                 prior: dict[tuple[str, str], CellResult] | None = None,
                 max_active_items: int = 256, approval_for: Callable[[StagePlan], str] | None = None,
                 record_span: Callable[[dict], None] | None = None,
                 record_run_output: Callable[[dict], None] | None = None,
                 record_tool_call: Callable[[dict], None] | None = None,
                 prior_spans: dict[str, dict] | None = None,
                 prior_run_outputs: dict[str, dict] | None = None,
                 log_backlog: Callable[[], int] | None = None, max_log_backlog: int = 5000,
                 carried: Carried | None = None):
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
        self.record_span = record_span or (lambda row: None)
        self.record_run_output = record_run_output or (lambda row: None)
        self._record_tool_call = record_tool_call or (lambda row: None)
        self.prior_spans = prior_spans or {}
        self.prior_run_outputs = prior_run_outputs or {}
        self.carried = carried or Carried()
        self._open_actions: dict[tuple[str, str], list[str]] | None = None
        self.log_backlog = log_backlog or (lambda: 0)
        self.max_log_backlog = max_log_backlog
        self.barriers = {p.id: FanIn(p, self) for p in plans if p.type.fan_in}
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
                if self.log_backlog() > self.max_log_backlog:
                    await self._log_caught_up()
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
        finally:
            pending = [b._task for b in self.barriers.values() if b._task and not b._task.done()]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _log_caught_up(self) -> None:
        """Backpressure: admit no new account until the run log has written most of what it
        was handed (memory stays flat however fast the model answers)."""
        while self.log_backlog() > self.max_log_backlog // 2 and not self.stop_reason:
            await asyncio.sleep(0.02)

    def log_tool_call(self, row: dict) -> None:
        """A tool call a stage type runs itself (orchestrate's spawn)."""
        self._record_tool_call(row)
        self.progress.tool_calls += 1

    def priority(self, plan: StagePlan, seq: int) -> float:
        """The deepest stage goes first (results early, memory flat), except in the tail:
        there the stage with the most work left after it goes first (Hu's rule for chains),
        so the run does not end on a serial research -> score -> write tail."""
        return (plan.depth if self._in_tail() else -plan.depth) * 1e9 + seq

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
            except AgentctlError as exc:  # e.g. a `when` that fails on this account's values
                result = CellResult("failed", error=exc.one_line(), error_type=type(exc).__name__)
                self._record(plan, key, result, CellUsage(), None, None)
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
        if (prior is not None and prior.status in REUSABLE and not plan.type.fan_in
                and not self._inputs_changed(deps) and (key, plan.id) not in self.carried.rerun):
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
                    barrier.arrive(seq, key, None, changed=self._arrival_changed(plan, key, deps, False))
                return self._record(plan, key, result, CellUsage(), None, None)
        if barrier is not None:
            live = blocked is None
            decided = await barrier.arrive(seq, key, context if live else None,
                                           changed=self._arrival_changed(plan, key, deps, live))
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
        return await self._run_cell(plan, seq, key, row, context)

    def _arrival_changed(self, plan: StagePlan, key: str, deps: dict[str, CellResult],
                         live: bool) -> bool:
        """Whether this account changes what a fan-in decides over, against what an earlier
        session stored: it reaches the fan-in now and did not then (or the reverse), or it
        reaches it with changed inputs. A reduce reuses its stored output only when no
        account's arrival changed."""
        prior = self.prior.get((key, plan.id))
        if live:
            return prior is None or prior.status != "ok" or self._inputs_changed(deps)
        return prior is not None and prior.status == "ok"

    @staticmethod
    def _inputs_changed(deps: dict[str, CellResult]) -> bool:
        """Whether a need's result differs from what an earlier session of the run stored, so a
        stored cell that read it is stale. Within one account only retried cells change (and
        `retry` drops everything downstream of them); across accounts a fan-in does: a select
        that ranks again after a retry, a reduce recomputed over changed inputs."""
        return any(d.changed for d in deps.values() if d.status in REUSABLE)

    def _compare_with_prior(self, plan: StagePlan, key: str, result: CellResult) -> None:
        """Mark a result decided in this session `changed` unless it equals the stored one,
        and settle the stored cell's actions when the cell was decided anew."""
        prior = self.prior.get((key, plan.id))
        if result is prior or result.status not in REUSABLE:
            return
        if prior is not None:
            if result.log_output:
                same = prior.status == result.status and prior.output == result.output
            else:  # a reduce: its cells keep no copy; compare with the run-level output before
                before = (self.prior_run_outputs.get(plan.id)
                          or self.carried.superseded.get(plan.id))
                same = (prior.status == result.status and before is not None
                        and before.get("output") == result.output)
            result.changed = not same
            if not plan.type.fan_in:
                self._settle_stale_actions(plan, key, result)

    def _settle_stale_actions(self, plan: StagePlan, key: str, result: CellResult) -> None:
        """A stored cell that ran again (its inputs changed after a retry) or became filtered or
        skipped: the actions it had asked for and that have not run must never run on its old
        reasons. Those the new run of the cell did not ask for again are `withdrawn` (a later
        run that asks for the same action needs a new approval); actions that already ran cannot
        be undone, and the cell and the run's notes say so."""
        ledger = getattr(self.tools, "ledger", None)
        if ledger is None:
            return
        if self._open_actions is None:  # built once, on the first stored cell decided anew
            self._open_actions = {}
            for k, a in ledger.rows.items():
                self._open_actions.setdefault((a["item_key"], a["stage_id"]), []).append(k)
        keys = self._open_actions.pop((key, plan.id), None)
        if not keys or result.status == "failed":  # a failed cell's actions wait for its retry
            return
        done = []
        for k in keys:
            action = ledger.rows.get(k)
            if action is None:
                continue
            if action["status"] in ("done", "intent"):
                if result.status in ("filtered", "skipped"):
                    done.append(f"{action['tool']} {k} ({action['status']})")
                continue
            if action["status"] not in OPEN_ACTIONS or k in ledger.touched:
                continue
            why = (f"not executed: after a retry, {plan.id} of {key} is {result.status}"
                   + (f" ({result.error})" if result.error else "")
                   if result.status in ("filtered", "skipped") else
                   f"not executed: after a retry, {plan.id} of {key} ran again on changed "
                   "inputs and did not ask for this action again")
            ledger.put_soon({**action, "status": "withdrawn", "decided_by": "agentctl",
                             "decided_at": utcnow(), "decision_note": why})
            self.progress.note(f"action {k} ({action['tool']}) of {key} withdrawn, {why}")
        if done:
            what = (f"{len(done)} action(s) it took before the retry cannot be undone: "
                    + ", ".join(done))
            result.error = f"{result.error}; {what}" if result.error else what
            self.progress.note(f"{key}: {plan.id} is now {result.status}, but {what}")

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

    async def _run_cell(self, plan: StagePlan, seq: int, key: str, row: dict,
                        context: dict[str, Any]) -> CellResult:
        counters = self.progress.stages[plan.id]
        counters.in_flight += 1
        started_at = utcnow()
        t0 = time.perf_counter()
        cell = CellRun(self, plan, seq, key, row, context)
        try:
            output = await plan.type.run_item(cell)
            if isinstance(output, CellResult):
                result = output
            elif cell.awaiting:
                result = CellResult("awaiting_approval", output,
                                    error="side-effect actions wait for approval",
                                    error_type="AwaitingApproval")
            else:
                result = CellResult("ok", output)
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
        return self._record(plan, key, result, cell.usage, started_at, t0)

    def _record(self, plan: StagePlan, key: str, result: CellResult, usage: CellUsage,
                started_at, t0: float | None) -> CellResult:
        self._compare_with_prior(plan, key, result)
        self.progress.count(plan.id, result.status)
        usage = self.carried.cell(key, plan.id, usage)  # earlier sessions' calls for this cell
        now = utcnow()
        self.record_cell({
            "run_id": self.run_id, "item_key": key, "stage_id": plan.id,
            "status": result.status, "output": result.output if result.log_output else None,
            "error": result.error,
            "error_type": result.error_type, "attempts": usage.attempts,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_or_none, "started_at": started_at or now, "ended_at": now,
            "duration_ms": (time.perf_counter() - t0) * 1000 if t0 is not None else 0.0,
        })
        return result
