"""One model call as the engine sees it: limits, retries, fallbacks, budget, and a log row per
attempt. The engine hands every LLM request to `ModelCaller.call`; the client underneath
(litellm or the mock) only ever sends one request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from agentctl.errors import BudgetExceeded, OutputInvalid, ProviderError, RetryableProviderError
from agentctl.llm.hedge import PRIORITY as HEDGE_PRIORITY, Hedge, LatencyWindow, max_share, race
from agentctl.llm.limiter import PriorityLimiter
from agentctl.llm.replies import unusable_reply
from agentctl.llm.retry import RetryPolicy
from agentctl.llm.types import LLMClient, LLMRequest, LLMResponse
from agentctl.runlog.writer import utcnow


@dataclass
class CellUsage:
    """What one cell spent; summed into its `cells` row."""
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: bool = False

    def add(self, resp: LLMResponse | None) -> None:
        self.attempts += 1
        if resp is None:
            return
        self.input_tokens += resp.input_tokens
        self.output_tokens += resp.output_tokens
        if resp.cost_usd is None:
            self.unpriced = True
        else:
            self.cost_usd += resp.cost_usd

    def merge(self, other: "CellUsage") -> None:
        """Add another usage (one agent turn of a multi-agent cell) to this one."""
        self.attempts += other.attempts
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.unpriced = self.unpriced or other.unpriced

    @property
    def cost_or_none(self) -> float | None:
        return None if self.unpriced else self.cost_usd


@dataclass
class Route:
    """Where a call can go: the alias, its litellm model string and request parameters."""
    alias: str
    model: str
    params: dict[str, Any]
    price: dict[str, float] | None = None
    hedge_after_p: float | None = None    # percentile after which a duplicate is sent


class RunStopped(Exception):
    """Raised inside a cell when the run stops scheduling (fatal provider error, budget)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ModelCaller:
    client: LLMClient
    record: Callable[[dict], None]            # writes one llm_calls row
    run_id: str
    limiter: PriorityLimiter
    stage_limiters: dict[str, PriorityLimiter] = field(default_factory=dict)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    routes: dict[str, Route] = field(default_factory=dict)          # alias -> route
    fallbacks: dict[str, list[str]] = field(default_factory=dict)    # alias -> fallback aliases
    governor: Any = None         # RateGovernor-like: async acquire(alias, tokens) / feedback
    budget: Any = None           # Budget-like: reserve / settled / settle / release_hold / wake
    on_usage: Callable[[str, LLMResponse | None], None] | None = None  # progress counters
    stop_reason: str | None = None
    latencies: dict[str, LatencyWindow] = field(default_factory=dict)  # alias -> recent ok latencies
    hedges: int = 0       # duplicates sent
    calls_sent: int = 0   # calls that could have been hedged (hedging on, percentile known)

    stop_status: str | None = None

    def stop(self, reason: str, status: str = "failed") -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_status = status
        if self.budget is not None:
            self.budget.wake()  # calls waiting for money learn that the run stopped

    async def call(self, request: LLMRequest, *, usage: CellUsage, purpose: str,
                   priority: float = 0.0,
                   check: Callable[[LLMResponse], Any] | None = None) -> LLMResponse:
        """Send `request`, retrying what may heal. `check` validates a reply before it is
        logged, so a reply that fails the output schema is logged as `invalid`; its
        OutputInvalid propagates to the caller (which repairs). `resp.call_id` names the row."""
        meta = request.meta
        stage_id = meta.get("stage_id")
        chain = [request.alias] + [a for a in self.fallbacks.get(request.alias, []) if a in self.routes]
        route_index = 0
        failures = 0
        consecutive = 0
        last_error: ProviderError | None = None
        for attempt_index in range(self.policy.max_attempts):
            final = attempt_index == self.policy.max_attempts - 1
            if self.stop_reason:
                raise RunStopped(self.stop_reason)
            alias = chain[route_index]
            req = request if alias == request.alias else self._reroute(request, self.routes[alias])
            est_tokens = _estimate_tokens(req)
            started_at = utcnow()
            resp: LLMResponse | None = None
            error: ProviderError | None = None
            hedges: list[Hedge] = []
            t0 = time.perf_counter()
            stage_limiter = self.stage_limiters.get(stage_id)
            if stage_limiter is not None:
                await stage_limiter.acquire(priority)
            try:
                if self.governor is not None:
                    await self.governor.acquire(alias, est_tokens, priority)
                try:
                    await self.limiter.acquire(priority)
                    t0 = time.perf_counter()
                    started_at = utcnow()
                    held = sent = False
                    try:
                        if self.stop_reason:  # the run stopped while this call waited for a slot
                            raise RunStopped(self.stop_reason)
                        # reserve only now: calls queued for a slot hold no money
                        await self._reserve(meta.get("item_key"), req, est_tokens)
                        held = self.budget is not None
                        t0 = time.perf_counter()  # a wait for money is not the call's latency
                        started_at = utcnow()
                        sent = True
                        resp, hedges = await self._send_hedged(req, alias, stage_id, est_tokens)
                    except ProviderError as exc:
                        error = self.policy.refuse_long_wait(exc, req.model, self.run_id)
                        hedges = getattr(exc, "hedges", [])
                    except BaseException as exc:
                        # cancelled (a failed sibling, Ctrl-C): no settle follows, and a hold
                        # left behind would keep calls waiting for money that never frees
                        if held:
                            self.budget.release_hold(id(req))
                        if sent and isinstance(exc, asyncio.CancelledError):
                            self._log_stopped(req, alias, usage, purpose, started_at,
                                              (time.perf_counter() - t0) * 1000)
                        raise
                    finally:
                        self.limiter.release()
                finally:
                    if self.governor is not None:
                        self.governor.release(alias, est_tokens, resp, error)
            finally:
                if stage_limiter is not None:
                    stage_limiter.release()
            latency_ms = (time.perf_counter() - t0) * 1000
            usage.add(resp)
            if self.budget is not None:
                self.budget.settle(meta.get("item_key"), req, est_tokens, resp)
            if self.on_usage:
                self.on_usage(stage_id, resp)
            wait = 0.0
            invalid: Exception | None = None
            if error is None:
                # cut off, filtered, refused or empty: no stage's check can use it
                invalid = unusable_reply(resp, req)  # type: ignore[arg-type]
                if invalid is None and check is not None:
                    try:
                        resp.checked = check(resp)  # type: ignore[union-attr]
                    except OutputInvalid as exc:
                        invalid = exc
            if error is not None:
                failures += 1
                consecutive += 1
                if error.retryable and not final:  # no wait (nor wait_ms) after the last attempt
                    wait = self.policy.delay(failures, error.retry_after)
            call_id = self._log(req, alias, usage.attempts, purpose, started_at, resp, error,
                                # a hedged attempt held its slot until the first answer:
                                # its row says so, not the winning copy's own latency
                                latency_ms if resp is None or hedges
                                else resp.latency_ms or latency_ms,
                                wait, invalid)
            for hedge in hedges:  # after the attempt's own row: a hedge takes the next number
                self._log_hedge(req, alias, usage, hedge)
            if error is None:
                resp.call_id = call_id  # type: ignore[union-attr]
                if invalid is not None:
                    invalid.call_id = call_id  # type: ignore[attr-defined]
                    invalid.reply_text = resp.content  # type: ignore[attr-defined]
                    raise invalid
                return resp  # type: ignore[return-value]
            last_error = error
            if error.stops_run:
                self.stop(error.message)
                raise error
            if not error.retryable:
                raise error
            # switch after `fallback_after` failures, or sooner when that would leave the
            # fallback no attempt at all
            switch_after = max(1, min(self.policy.fallback_after, self.policy.max_attempts - 1))
            if consecutive >= switch_after and route_index + 1 < len(chain):
                route_index += 1
                consecutive = 0
            purpose = "retry"
            if wait:
                await asyncio.sleep(wait)
        assert last_error is not None
        raise RetryableProviderError(
            f"gave up after {self.policy.max_attempts} attempts: {last_error.message}",
            status=last_error.status, kind=last_error.kind)

    async def _reserve(self, item_key: str | None, req: LLMRequest, est_tokens: int) -> None:
        """Hold the call's worst-case cost. While it would fit once the calls in flight settle
        (their real cost is mostly far below what they hold), wait for them, keeping this
        call's slot; stop the run (or fail the cell, per item) only when it cannot fit with
        nothing else in flight."""
        if self.budget is None:
            return
        while True:
            if self.stop_reason:
                raise RunStopped(self.stop_reason)
            try:
                if self.budget.reserve(item_key, req, est_tokens, may_wait=True):
                    return
            except BudgetExceeded as exc:
                if exc.whole_run:
                    self.stop(exc.message, status="budget_exceeded")
                    raise RunStopped(exc.message) from None
                raise
            await self.budget.settled()


    async def _send_hedged(self, req: LLMRequest, alias: str, stage_id: str | None,
                           est_tokens: int) -> tuple[LLMResponse, list[Hedge]]:
        """`_send`, with duplicates past the alias's `hedge_after_p` latency (see hedge.py)."""
        p = self._hedge_p(alias)
        if not p:
            return await self._send(req), []
        window = self.latencies.get(alias)
        if window is None:
            window = self.latencies[alias] = LatencyWindow()
        after = window.percentile(p)  # None: too few answers yet to know what slow is
        t0 = time.perf_counter()
        if after is None:
            resp, hedges = await self._send(req), []
        else:
            resp, hedges = await self._race(req, alias, stage_id, est_tokens, p, after)
        if not resp.cache_hit:
            # When a duplicate won, the original's own latency is unknown beyond "over
            # `after`": it counts as `after`, censored. Counting the time to the first answer
            # instead (after + the duplicate's latency) fed the percentile values above its
            # own threshold, which then rose run after run (0.5 s to 2 s in the heavy-tail
            # bench) and let stragglers through again.
            duplicate_won = any(h.won for h in hedges)
            window.add(after if duplicate_won else time.perf_counter() - t0)
        return resp, hedges

    async def _race(self, req: LLMRequest, alias: str, stage_id: str | None, est_tokens: int,
                    p: float, after: float) -> tuple[LLMResponse, list[Hedge]]:
        """One attempt against its duplicates; each duplicate takes its slot through every
        limit the attempt passed, and its budget hold, or is not sent."""
        taken: list[Callable[[], None]] = []
        self.calls_sent += 1

        async def take_slot(n: int) -> bool:
            if self.hedges >= max(1, self.calls_sent * max_share(p)):
                return False
            stage_limiter = self.stage_limiters.get(stage_id)
            if stage_limiter is not None:
                await stage_limiter.acquire(HEDGE_PRIORITY)
                taken.append(stage_limiter.release)
            if self.governor is not None:
                await self.governor.acquire(alias, est_tokens, HEDGE_PRIORITY)
                taken.append(lambda: self.governor.release(alias, est_tokens, None, None,
                                                           cancelled=True))
            await self.limiter.acquire(HEDGE_PRIORITY)
            taken.append(self.limiter.release)
            if self.stop_reason:
                return self._give(taken)
            if self.budget is not None:
                try:
                    self.budget.reserve(req.meta.get("item_key"), req, est_tokens,
                                        hold=("hedge", id(req), n))
                except BudgetExceeded:  # no money for a duplicate: no duplicate
                    return self._give(taken)
                taken.append(lambda: self.budget.release_hold(("hedge", id(req), n)))
            self.hedges += 1
            return True

        return await race(lambda: self._send(req), after=after, take_slot=take_slot,
                          give_slot=lambda: self._give(taken), now=utcnow,
                          clock=time.perf_counter)

    def _hedge_p(self, alias: str) -> float | None:
        route = self.routes.get(alias)
        return route.hedge_after_p if route is not None else None

    @staticmethod
    def _give(taken: list[Callable[[], None]]) -> bool:
        while taken:
            taken.pop()()
        return False

    def _log_stopped(self, req: LLMRequest, alias: str, usage: "CellUsage", purpose: str,
                     started_at, latency_ms: float) -> None:
        """A request in flight when its cell was cancelled (Ctrl-C, SIGTERM, a failed panel
        sibling): the provider may have received and billed it, so it gets a row too."""
        self._log_no_reply(
            req, alias, usage, purpose=purpose, request=req.loggable(), status="cancelled",
            error="stopped while in flight (no reply was read; the provider may still bill it)",
            error_type="Cancelled", latency_ms=latency_ms, started_at=started_at)

    def _log_hedge(self, req: LLMRequest, alias: str, usage: "CellUsage", hedge: Hedge) -> None:
        """The duplicate's own row (the attempt's row has the reply, tokens and cost)."""
        self._log_no_reply(
            req, alias, usage, purpose="hedge", request=None,
            status="ok" if hedge.won else "cancelled",
            error="answered first: its reply is the attempt's" if hedge.won else hedge.error,
            error_type=None if hedge.won else "HedgeCancelled", latency_ms=hedge.latency_ms,
            started_at=hedge.started_at)

    def _log_no_reply(self, req: LLMRequest, alias: str, usage: "CellUsage", **row: Any) -> None:
        """A row with no reply, no tokens and no cost; it counts as one of the cell's attempts."""
        usage.attempts += 1
        if self.on_usage:
            self.on_usage(req.meta.get("stage_id"), None)
        self.record({
            "call_id": uuid.uuid4().hex, "run_id": self.run_id,
            "item_key": req.meta.get("item_key"), "stage_id": req.meta.get("stage_id"),
            "agent": req.meta.get("agent"), "alias": alias, "model": req.model,
            "attempt": usage.attempts, "response": None, "input_tokens": 0, "output_tokens": 0,
            "cost_usd": 0.0, "wait_ms": None, "cache_hit": False,
            "request_hash": req.cache_key(), "span_id": req.meta.get("span_id"), **row})

    async def _send(self, req: LLMRequest) -> LLMResponse:
        timeout = req.params.get("timeout")
        if timeout:
            # The alias timeout bounds the whole request. litellm's (httpx's) timeout is per
            # read, so a body dribbled a few bytes at a time would never trip it: this
            # deadline does, at the same limit.
            try:
                return await asyncio.wait_for(self.client.complete(req), timeout=float(timeout))
            except asyncio.TimeoutError as exc:
                raise RetryableProviderError(
                    f"{req.model}: request timed out after {float(timeout):g} s (the alias "
                    f"timeout, reply included); raise models.{req.alias}.timeout if the model "
                    "needs longer", kind="Timeout") from exc
        return await self.client.complete(req)

    def _reroute(self, request: LLMRequest, route: Route) -> LLMRequest:
        params = dict(route.params)
        for key in ("temperature", "max_tokens"):
            if key in request.params and key not in params:
                params[key] = request.params[key]
        meta = dict(request.meta)
        meta["price"] = route.price
        return LLMRequest(alias=route.alias, model=route.model, messages=request.messages,
                          params=params, response_format=request.response_format,
                          tools=request.tools, meta=meta)

    def _log(self, req: LLMRequest, alias: str, attempt: int, purpose: str, started_at,
             resp: LLMResponse | None, error: ProviderError | None, latency_ms: float,
             wait: float, invalid: Exception | None) -> str:
        meta = req.meta
        call_id = uuid.uuid4().hex
        status = "error" if error is not None else ("invalid" if invalid is not None else "ok")
        self.record({
            "call_id": call_id,
            "run_id": self.run_id,
            "item_key": meta.get("item_key"),
            "stage_id": meta.get("stage_id"),
            "agent": meta.get("agent"),
            "alias": alias,
            "model": resp.model if resp is not None and resp.model else req.model,
            "attempt": attempt,
            "purpose": purpose,
            "request": req.loggable(),
            "response": resp.loggable() if resp is not None else None,
            "status": status,
            "error": error.message if error is not None else (str(invalid) if invalid else None),
            "error_type": error.kind if error is not None else (
                getattr(invalid, "kind", "OutputInvalid") if invalid is not None else None),
            # NULL: no reply, or a reply that did not report its tokens (unknown, not 0)
            "input_tokens": resp.input_tokens if resp and resp.usage_known else None,
            "output_tokens": resp.output_tokens if resp and resp.usage_known else None,
            "cost_usd": resp.cost_usd if resp else None,
            "latency_ms": latency_ms,
            "wait_ms": wait * 1000 if wait else None,
            "cache_hit": bool(resp and resp.cache_hit),
            "started_at": started_at,
            "request_hash": req.cache_key(),
            "span_id": meta.get("span_id"),
        })
        return call_id


def _estimate_tokens(req: LLMRequest) -> int:
    return req.prompt_tokens() + int(req.params.get("max_tokens") or 256)
