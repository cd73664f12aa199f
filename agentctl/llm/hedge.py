"""Hedged requests, for heavy-tailed provider latency (off unless the spec sets
`hedge_after_p`).

A call still unanswered after the p-th percentile of its alias's recent latencies gets one
duplicate. The duplicate only goes into a slot that is free *now* (every limit it passes
has room and nobody is queued for it), so hedging never delays queued work and never
exceeds a concurrency or rate limit. The first answer wins; the other request is cancelled.
Both are rows in `llm_calls`: the attempt carries the winning reply and its cost, the
duplicate is a `purpose = 'hedge'` row with no tokens and no cost (status `ok` when it
answered first, `cancelled` when it lost), so nothing is counted twice. A provider may still
bill a cancelled request's prompt; agentctl cannot see that and says so in the docs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

MIN_SAMPLES = 30      # no hedging until the alias has this many answered calls
WINDOW = 400          # recent latencies per alias
RECOMPUTE_EVERY = 16  # the percentile is recomputed after this many new samples


class LatencyWindow:
    def __init__(self, size: int = WINDOW):
        self.samples: deque[float] = deque(maxlen=size)
        self._fresh = 0
        self._cache: dict[float, float] = {}

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self._fresh += 1
        if self._fresh >= RECOMPUTE_EVERY:
            self._fresh = 0
            self._cache.clear()

    def percentile(self, p: float) -> float | None:
        if len(self.samples) < MIN_SAMPLES:
            return None
        value = self._cache.get(p)
        if value is None:
            # linear interpolation between the closest ranks (numpy's default): with 5% of
            # replies ten times slower, p95 falls between the fast and the slow ones instead
            # of jumping to the slow ones whenever the window holds one extra slow reply
            ordered = sorted(self.samples)
            rank = (len(ordered) - 1) * p / 100
            lo = int(rank)
            hi = min(lo + 1, len(ordered) - 1)
            value = ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)
            self._cache[p] = value
        return value


@dataclass
class Hedge:
    """What happened to the duplicate of one attempt (None fields: no duplicate was sent)."""
    won: bool = False
    latency_ms: float = 0.0
    started_at: Any = None
    error: str | None = None


async def race(send: Callable[[], Awaitable[Any]], *, after: float,
               take_slot: Callable[[], bool], give_slot: Callable[[], None],
               now: Callable[[], Any], clock: Callable[[], float]) -> tuple[Any, Hedge | None]:
    """Run `send()`; if it has not answered after `after` seconds and `take_slot()` finds a
    free slot, run a second `send()` and return the first answer. The loser is cancelled.
    A failure of one copy waits for the other; when both fail, the first error is raised."""
    primary = asyncio.ensure_future(send())
    try:
        done, _ = await asyncio.wait({primary}, timeout=after)
    except BaseException:
        primary.cancel()
        raise
    if done or not take_slot():
        return await primary, None
    hedge_info = Hedge(started_at=now())
    t0 = clock()
    duplicate = asyncio.ensure_future(send())
    pending = {primary, duplicate}
    first_error: BaseException | None = None
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    hedge_info.won = task is duplicate
                    hedge_info.latency_ms = (clock() - t0) * 1000
                    if not hedge_info.won:
                        hedge_info.error = "cancelled: the original request answered first"
                    return task.result(), hedge_info
                if first_error is None or task is primary:
                    first_error = task.exception()
        hedge_info.latency_ms = (clock() - t0) * 1000
        hedge_info.error = f"failed too: {first_error}"
        assert first_error is not None
        first_error.hedge = hedge_info  # type: ignore[attr-defined]  (logged by the caller)
        raise first_error
    finally:
        for task in (primary, duplicate):
            if not task.done():
                task.cancel()
        await asyncio.gather(primary, duplicate, return_exceptions=True)
        give_slot()
