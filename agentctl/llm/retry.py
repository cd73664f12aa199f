"""When a failed call is tried again, and after how long.

Exponential backoff with full jitter, unless the provider said when to come back
(Retry-After, x-ratelimit-reset-*): then that, up to `max_delay`. A Retry-After far past any
wait a batch run can sit through (`max_retry_after`: a daily quota, a maintenance window) is
not waited out at all: the call fails as an exhausted quota, which stops the run with one
message, rather than freezing it for hours in silence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentctl.errors import ProviderError, QuotaExceeded


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 60.0          # no wait before a retry is longer, jitter included
    fallback_after: int = 2   # consecutive retryable failures before trying the fallback alias
    max_retry_after: float = 600.0   # a longer Retry-After is refused, not waited out

    def delay(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # up to 10% jitter, so the calls one Retry-After answered do not all come back at
            # once; at the cap it goes below the cap instead of past it
            base = min(self.max_delay, max(retry_after, 0.0))
            jitter = random.uniform(0, 0.1 * max(base, 0.1))
            return base + jitter if base + jitter <= self.max_delay else self.max_delay - jitter
        cap = min(self.max_delay, self.base_delay * (2 ** (failures - 1)))
        return random.uniform(0, cap)

    def refuse_long_wait(self, error: ProviderError, model: str, run_id: str) -> ProviderError:
        """`error`, or, when it is retryable with a Retry-After past `max_retry_after`, a quota
        error that stops the run: retrying sooner would only be refused again."""
        asked = error.retry_after
        if not error.retryable or asked is None or asked <= self.max_retry_after:
            return error
        told = f"{error.status} reply" if error.status else "reply"
        refused = QuotaExceeded(
            f"{model}: the provider asked for a {_duration(asked)} wait before the next request "
            f"(Retry-After on a {told}), more than the {_duration(self.max_retry_after)} "
            f"agentctl waits; taking it as an exhausted quota and stopping the run; "
            f"`agentctl resume {run_id}` once the provider accepts requests again",
            status=error.status, retry_after=asked)
        refused.__cause__ = error
        return refused


def _duration(seconds: float) -> str:
    """86400 -> '86400 s (24.0 h)': the number the provider sent, and what it means."""
    if seconds >= 3600:
        return f"{seconds:.0f} s ({seconds / 3600:.1f} h)"
    if seconds >= 120:
        return f"{seconds:.0f} s ({seconds / 60:.0f} min)"
    return f"{seconds:.0f} s"
