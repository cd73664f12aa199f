"""Hedged requests, for heavy-tailed provider latency (off unless the spec sets
`hedge_after_p`).

A call still unanswered after the p-th percentile of its alias's recent latencies gets a
duplicate, and another after each further such wait while every copy is still unanswered,
up to three (with 5% of replies slow, a straggler gets through once in 8,000 instead of
once in 400 with two). A duplicate queues for the next slot of every limit the call passed,
ahead of all other queued work (it is the call closest to done: a stuck reply holds a slot
for ten times a normal one, a duplicate usually frees it in one), so hedging fills slots
that a straggler would otherwise waste and never exceeds a concurrency or rate limit. If the
original answers while the duplicate still waits for a slot, nothing is sent. At most
`max_share` of a caller's calls are hedged, so a provider that slows down across the board
sees a few more requests, not twice as many. The first answer wins; the other requests are
cancelled. All are rows in `llm_calls`: the attempt carries the winning reply and its cost,
each duplicate is a `purpose = 'hedge'` row with no tokens and no cost (status `ok` when it
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
PRIORITY = float("-inf")  # a duplicate is served before any queued call
MAX_DUPLICATES = 3    # more when the duplicates are slow too (5% x 5% of stragglers at p95, ...)


def max_share(p: float) -> float:
    """The share of calls that may be hedged: twice what the percentile implies (10% at p95),
    at least 2%."""
    return max(0.02, 2 * (100 - p) / 100)


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
    """What happened to the duplicate of one attempt."""
    won: bool = False
    latency_ms: float = 0.0
    started_at: Any = None
    error: str | None = None
    sent_clock: float | None = None  # `clock()` when it was sent; None: it never got a slot

    def close(self, clock: float, *, won: bool = False, error: str | None = None) -> None:
        self.won, self.error = won, error
        self.latency_ms = (clock - self.sent_clock) * 1000  # type: ignore[operator]


class _NotSent(Exception):
    """The duplicate got no slot (share used up, no money, run stopping)."""


async def race(send: Callable[[], Awaitable[Any]], *, after: float,
               take_slot: Callable[[int], Awaitable[bool]], give_slot: Callable[[], None],
               now: Callable[[], Any], clock: Callable[[], float],
               copies: int = MAX_DUPLICATES) -> tuple[Any, list[Hedge]]:
    """Run `send()`; each time it (and the duplicates sent so far) stays unanswered for
    another `after` seconds, wait for `take_slot(n)` and run one more `send()`, up to `copies`
    duplicates; return the first answer and the Hedge of every duplicate that was sent. The
    others are cancelled. A failure of one copy waits for the rest; when all fail, the
    original's error is raised (carrying `.hedges`). `give_slot()` always runs at the end."""
    primary = asyncio.ensure_future(send())
    try:
        done, _ = await asyncio.wait({primary}, timeout=after)
    except BaseException:
        primary.cancel()
        raise
    if done:
        return await primary, []
    hedges: list[Hedge] = []
    tasks: dict[asyncio.Future, Hedge | None] = {primary: None}

    async def duplicate_call(n: int, info: Hedge) -> Any:
        if not await take_slot(n):
            raise _NotSent
        info.started_at = now()
        info.sent_clock = clock()
        return await send()

    def sent() -> list[Hedge]:
        return [h for h in hedges if h.sent_clock is not None]

    pending: set[asyncio.Future] = {primary}
    first_error: BaseException | None = None
    may_hedge = True
    try:
        while pending:
            more = may_hedge and len(hedges) < copies
            if more and (not hedges or hedges[-1].sent_clock is not None):
                info = Hedge()
                task = asyncio.ensure_future(duplicate_call(len(hedges), info))
                hedges.append(info)
                tasks[task] = info
                pending.add(task)
            timeout = after if may_hedge and len(hedges) < copies else None
            done, pending = await asyncio.wait(pending, timeout=timeout,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: t is not primary):  # the original first
                error = task.exception()
                if error is None:
                    winner, end = tasks[task], clock()
                    lost = ("cancelled: the original request answered first" if winner is None
                            else "cancelled: another duplicate answered first")
                    for h in sent():
                        h.close(end, won=h is winner, error=None if h is winner else lost)
                    return task.result(), sent()
                if isinstance(error, _NotSent):
                    may_hedge = False  # no share, money or run left for duplicates
                    continue
                if first_error is None or task is primary:
                    first_error = error
            if first_error is not None and not sent():
                break  # the original failed before a duplicate was sent: send none
        assert first_error is not None
        end = clock()
        for h in sent():
            h.close(end, error=f"failed too: {first_error}")
        first_error.hedges = sent()  # type: ignore[attr-defined]  (logged by the caller)
        raise first_error
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        give_slot()
