"""The rate governor: one per run, shared by every stage, one lane per model alias/provider.

Each lane enforces what the spec's `limits:` say (concurrency, rpm, tpm) and reacts to the
provider. A single 429 only delays its own retry (by its Retry-After). When 429s dominate the
lane's recent replies (the provider is saturated, not merely noisy), the whole lane pauses
for the Retry-After (`MAX_PAUSE` at most) and — where no limit was configured — halves its
concurrency, then recovers by one slot per window of successes: a run converges on what the
provider allows instead of storming it, and occasional 429s do not throttle a healthy run.

Requests and tokens are spaced evenly (GCRA): a lane with `rpm: 600` admits one request
every 100 ms, which keeps every 60-second window at or under the limit while still using it.
Token spacing uses an estimate before the call and is corrected from actual usage after.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentctl.errors import ProviderError, RateLimited
from agentctl.llm.limiter import PriorityLimiter


WINDOW = 40              # replies remembered per lane (at least two rounds of its concurrency)
MIN_SAMPLES = 10         # before that, a few 429s say little
SATURATION_SHARE = 0.4   # this share of 429s means the provider is pushing back, not noisy
# (with 10% random 429s, 16 of 40 happens with probability ~3e-5: noise practically never cuts)
RECHECK_S = 0.25         # seconds: how often a caller waiting for its rpm/tpm turn looks again
MAX_PAUSE = 60.0         # seconds: no lane pause is longer than the retry policy's longest wait
# (a Retry-After far beyond it is refused by the caller as an exhausted quota, not waited out)


@dataclass
class Lane:
    key: str
    limiter: PriorityLimiter
    adaptive: bool
    ceiling: int
    rpm: float | None = None
    tpm: float | None = None
    next_request_at: float = 0.0
    next_token_at: float = 0.0
    paused_until: float = 0.0
    successes: int = 0
    last_cut: float = 0.0
    rate_limited: int = 0
    cuts: int = 0
    lowest: int = 0          # the lowest concurrency the lane was cut to
    pauses: int = 0
    paused_s: float = 0.0    # seconds the whole lane stood still for the provider
    waiting: int = 0         # callers waiting now for their rpm/tpm turn or a pause's end
    recent: "deque[bool]" = field(default_factory=lambda: deque(maxlen=WINDOW))  # True = 429

    def saturated(self) -> bool:
        """429s make up a large share of the recent replies, judged over at least one round of
        the lane's concurrency (each false cut halves a healthy lane)."""
        needed = min(self.recent.maxlen or WINDOW, max(MIN_SAMPLES, self.limiter.limit))
        return (len(self.recent) >= needed
                and sum(self.recent) / len(self.recent) >= SATURATION_SHARE)

    async def wait_turn(self, est_tokens: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            wait = max(self.paused_until - now, 0.0)
            if self.rpm:
                wait = max(wait, self.next_request_at - now)
            if self.tpm:
                wait = max(wait, self.next_token_at - now)
            if wait <= 0:
                break
            # in short steps: a call that settles gives back what its token estimate
            # over-reserved (and a pause may be cut short), and waiters should see it
            self.waiting += 1
            try:
                await asyncio.sleep(min(wait, RECHECK_S))
            finally:
                self.waiting -= 1
        now = loop.time()
        if self.rpm:
            self.next_request_at = max(self.next_request_at, now) + 60.0 / self.rpm
        if self.tpm:
            self.next_token_at = max(self.next_token_at, now) + est_tokens * 60.0 / self.tpm


class RateGovernor:
    """Each alias goes through its own lane when `limits:` names the alias, AND through its
    provider's lane when `limits:` names the provider: an alias entry narrows the provider's
    limit, it does not take the alias out of it. With neither, the alias has an adaptive lane."""

    def __init__(self, limits: dict[str, Any], routes: dict[str, Any], *, default_concurrency: int):
        self.lanes: dict[str, Lane] = {}
        self.lanes_of: dict[str, list[Lane]] = {}
        for alias, route in routes.items():
            provider = route.model.split("/", 1)[0] if "/" in route.model else route.model
            keys = [k for k in dict.fromkeys((alias, provider)) if k in limits] or [alias]
            for key in keys:
                if key not in self.lanes:
                    self.lanes[key] = self._new_lane(key, limits.get(key), default_concurrency)
            # alias lanes before provider lanes, for every alias: one order, no deadlock
            self.lanes_of[alias] = [self.lanes[k] for k in keys]

    @staticmethod
    def _new_lane(key: str, limit: Any, default_concurrency: int) -> Lane:
        ceiling = getattr(limit, "concurrency", None) or default_concurrency
        return Lane(key=key, limiter=PriorityLimiter(ceiling), adaptive=limit is None,
                    ceiling=ceiling, rpm=getattr(limit, "rpm", None), tpm=getattr(limit, "tpm", None),
                    recent=deque(maxlen=max(WINDOW, 2 * ceiling)))

    def lane(self, alias: str) -> Lane:
        """The alias's narrowest lane (its own, or its provider's)."""
        return self._lanes(alias)[0]

    def _lanes(self, alias: str) -> list[Lane]:
        lanes = self.lanes_of.get(alias)
        return lanes if lanes is not None else [self.lanes[alias]]

    async def acquire(self, alias: str, est_tokens: int, priority: float = 0.0) -> None:
        taken: list[Lane] = []
        try:
            for lane in self._lanes(alias):
                await lane.limiter.acquire(priority)
                taken.append(lane)
                await lane.wait_turn(est_tokens)
        except BaseException:
            for lane in taken:
                lane.limiter.release()
            raise

    def release(self, alias: str, est_tokens: int, resp: Any, error: ProviderError | None,
                *, cancelled: bool = False) -> None:
        for lane in self._lanes(alias):
            self._settle(lane, est_tokens, resp, error, cancelled)

    @staticmethod
    def _settle(lane: Lane, est_tokens: int, resp: Any, error: ProviderError | None,
                cancelled: bool) -> None:
        lane.limiter.release()
        if cancelled:  # a hedge that lost: says nothing about the provider
            return
        now = time.monotonic()
        loop_now = asyncio.get_running_loop().time()
        if resp is not None and lane.tpm and getattr(resp, "usage_known", True):
            actual = resp.input_tokens + resp.output_tokens
            lane.next_token_at += (actual - est_tokens) * 60.0 / lane.tpm
        if isinstance(error, RateLimited):
            lane.rate_limited += 1
            lane.recent.append(True)
            if lane.saturated() and now - lane.last_cut > 1.0:
                lane.last_cut = now
                lane.recent.clear()
                if error.retry_after:
                    until = loop_now + min(error.retry_after, MAX_PAUSE)
                    if until > lane.paused_until:
                        lane.pauses += 1
                        lane.paused_s += until - max(lane.paused_until, loop_now)
                        lane.paused_until = until
                if lane.adaptive:
                    lane.cuts += 1
                    lane.successes = 0
                    lane.limiter.set_limit(max(1, lane.limiter.limit // 2))
                    lane.lowest = min(lane.lowest or lane.ceiling, lane.limiter.limit)
        elif error is None:
            lane.recent.append(False)
            if lane.adaptive and lane.limiter.limit < lane.ceiling:
                lane.successes += 1
                if lane.successes >= lane.limiter.limit:  # additive increase: +1 per window
                    lane.successes = 0
                    lane.limiter.set_limit(lane.limiter.limit + 1)

    def waiting(self) -> dict[str, int]:
        """Calls held back now, by lane: by the spec's rpm/tpm limits or a provider's pause
        (the progress display says why a run looks idle)."""
        return {k: lane.waiting for k, lane in self.lanes.items() if lane.waiting}

    def pushback(self) -> list[dict[str, Any]]:
        """What the providers' rate limits did to this session, per lane that saw a 429: the
        run's `totals.rate_limits`, shown by the run summary and `inspect`."""
        return [{"lane": k, "rate_limited": l.rate_limited, "concurrency": l.ceiling,
                 "concurrency_cuts": l.cuts, "lowest_concurrency": l.lowest or l.ceiling,
                 "concurrency_at_end": l.limiter.limit, "pauses": l.pauses,
                 "paused_s": round(l.paused_s, 1)}
                for k, l in self.lanes.items() if l.rate_limited]
