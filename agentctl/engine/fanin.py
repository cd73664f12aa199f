"""A fan-in barrier: collects every account at one stage, then lets its stage type decide once.

Accounts arrive with their context, or with None when their own upstream (or `when`) has
already decided their cell. Once every admitted account has arrived and the input is
exhausted, the stage type's `decide` runs over the live ones (select ranks them; reduce calls
its agent) and each account's future gets its result.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from agentctl.agents import CellFailed
from agentctl.engine.cell import STOPPED, CellResult, FanInRun
from agentctl.errors import AgentctlError
from agentctl.llm.caller import RunStopped

if TYPE_CHECKING:
    from agentctl.engine.plan import StagePlan
    from agentctl.engine.scheduler import Engine


class FanIn:
    def __init__(self, plan: "StagePlan", engine: "Engine"):
        self.plan = plan
        self.engine = engine
        self.arrived: dict[str, tuple[int, dict | None]] = {}
        self.results: dict[str, asyncio.Future] = {}
        self.total: int | None = None
        self.stopped = False
        self.inputs_changed = False   # an arrival differs from what an earlier session stored
        self._task: asyncio.Task | None = None

    def arrive(self, seq: int, key: str, context: dict | None, *,
               changed: bool = True) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.inputs_changed = self.inputs_changed or changed
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
        if (self.stopped or self._task is not None or self.total is None
                or len(self.arrived) < self.total):
            return
        self._task = asyncio.get_running_loop().create_task(self._decide())

    async def _decide(self) -> None:
        live = sorted(((seq, key, ctx) for key, (seq, ctx) in self.arrived.items() if ctx is not None),
                      key=lambda c: c[0])
        counters = self.engine.progress.stages[self.plan.id]
        counters.in_flight += 1
        try:
            run = FanInRun(self.engine, self.plan, live, inputs_changed=self.inputs_changed)
            decided: dict[str, Any] = await self.plan.type.decide(run)
        except RunStopped:
            decided = {key: STOPPED for _, key, _ in live}
        except CellFailed as exc:
            decided = {key: CellResult("failed", error=exc.message, error_type=exc.kind)
                       for _, key, _ in live}
        except AgentctlError as exc:  # e.g. a `where` that fails on a value
            decided = {key: CellResult("failed", error=exc.message, error_type=type(exc).__name__)
                       for _, key, _ in live}
        except Exception as exc:  # a bug must not hang every account at the barrier
            decided = {key: CellResult("failed", error=f"internal error: {exc!r}",
                                       error_type="InternalError") for _, key, _ in live}
        finally:
            counters.in_flight -= 1
        for key, fut in self.results.items():
            if fut.done():
                continue
            if self.arrived[key][1] is None:
                fut.set_result(None)  # decided by its own upstream status
            else:
                fut.set_result(decided.get(key) or CellResult(
                    "failed", error=f"stage '{self.plan.id}' decided nothing for this item",
                    error_type="InternalError"))
