"""Spending limits of a run, checked before every call against what is spent plus what is
reserved.

A call reserves its worst-case cost (estimated prompt tokens + max_tokens of output at the
model's price) before it is sent and settles to the real cost after. The worst case is
usually several times the real cost, so a call that does not fit while other calls are in
flight waits for them to settle (`reserve(..., may_wait=True)` then `settled()`) rather than
ending the run with most of the budget unspent; the run stops only when the call would not
fit even with nothing else in flight. A run can therefore overshoot `max_usd` only by the
difference between estimate and reality of calls in flight — never by calls started after
the limit was reached.

The limits are the run's, not one process's: a resumed or retried run starts from what its
earlier sessions spent (`before`, summed from the run log), in total and per item.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from agentctl.errors import BudgetExceeded

DEFAULT_OUTPUT_TOKENS = 1024


@dataclass
class Budget:
    max_usd: float | None
    per_item_usd: float | None
    price: Callable[[Any, int, int], float | None]   # (request, in_tokens, out_tokens) -> USD
    # USD the run's earlier sessions (before a resume or retry) spent, by item key (None: calls
    # that belong to no item, such as a reduce stage's)
    before: dict[str | None, float] = field(default_factory=dict)
    spent: float = 0.0           # `before` included
    reserved: float = 0.0
    item_spent: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    item_reserved: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    spent_before: float = field(default=0.0, init=False)
    _holds: dict[Any, float] = field(default_factory=dict)
    _hold_items: dict[Any, str] = field(default_factory=dict)
    _changed: asyncio.Event | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.spent_before = sum(self.before.values())
        self.spent += self.spent_before
        for item_key, usd in self.before.items():
            if item_key is not None:
                self.item_spent[item_key] += usd

    def _estimate(self, req: Any, est_tokens: int) -> float:
        """Worst case: the prompt (about 4 characters a token) plus a full reply."""
        out = int(req.params.get("max_tokens") or DEFAULT_OUTPUT_TOKENS)
        cost = self.price(req, req.prompt_tokens(), out)
        return cost or 0.0

    def reserve(self, item_key: str | None, req: Any, est_tokens: int, hold: Any = None, *,
                may_wait: bool = False) -> bool:
        """Hold the worst case of one request; `hold` names it (default: the request).

        Raises BudgetExceeded when the request does not fit. With `may_wait`, a request that
        would fit once the holds in flight settle (at no cost) is not refused: nothing is held,
        False comes back, and the caller awaits `settled()` and asks again."""
        est = self._estimate(req, est_tokens)
        if self.max_usd is not None and self.spent + self.reserved + est > self.max_usd:
            if may_wait and self._holds and self.spent + est <= self.max_usd:
                return False
            raise BudgetExceeded(self._run_refusal(est), whole_run=True)
        if item_key is not None and self.per_item_usd is not None:
            used = self.item_spent[item_key] + self.item_reserved[item_key]
            if used + est > self.per_item_usd:
                in_flight = item_key in self._hold_items.values()
                if may_wait and in_flight and self.item_spent[item_key] + est <= self.per_item_usd:
                    return False
                raise BudgetExceeded(self._item_refusal(item_key, est), whole_run=False)
            self.item_reserved[item_key] += est
        key = hold if hold is not None else id(req)
        self.reserved += est
        self._holds[key] = est
        if item_key is not None:
            self._hold_items[key] = item_key
        return True

    async def settled(self) -> None:
        """Return at the next settle or released hold (or `wake`): the moment a request that
        `reserve` sent away may fit."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def wake(self) -> None:
        """Wake every request waiting in `settled` (money freed, or the run stopped)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def release_hold(self, hold: Any) -> None:
        """Drop a hold that spent nothing we can see (a cancelled hedge or call)."""
        self._drop(hold)
        self.wake()

    def settle(self, item_key: str | None, req: Any, est_tokens: int, resp: Any) -> None:
        held = self._holds.get(id(req), 0.0)
        self._drop(id(req))
        cost = (resp.cost_usd or 0.0) if resp is not None else 0.0
        if resp is not None and not getattr(resp, "usage_known", True):
            # a reply that did not say what it used is logged unpriced (NULL), but it was not
            # free: the limits count its worst case, what it held. (A resume sums the run
            # log's costs, where it is NULL: only this session counts it.)
            cost = held
        self.spent += cost
        if item_key is not None and self.per_item_usd is not None:
            self.item_spent[item_key] += cost
        self.wake()

    def _drop(self, hold: Any) -> None:
        est = self._holds.pop(hold, 0.0)
        self.reserved -= est
        item_key = self._hold_items.pop(hold, None)
        if item_key is not None and self.per_item_usd is not None:
            self.item_reserved[item_key] -= est
            if item_key not in self._hold_items.values():
                self.item_reserved[item_key] = 0.0  # no float residue to wait on
        if not self._holds:
            self.reserved = 0.0

    def _run_refusal(self, est: float) -> str:
        in_flight = f", ${self.reserved:.4f} held by calls in flight" if self._holds else ""
        return (f"budget of ${self.max_usd:g} reached: spent ${self.spent:.4f} of "
                f"${self.max_usd:g}{self._before_note(self.spent_before)}{in_flight}, and the next "
                f"call may cost up to ${est:.4f}; raise budget.max_usd, or `agentctl resume` the run "
                "with --max-cost USD (a limit for the whole run, what it has spent included)")

    def _item_refusal(self, item_key: str, est: float) -> str:
        held = self.item_reserved[item_key] if item_key in self._hold_items.values() else 0.0
        in_flight = f", ${held:.4f} held by its calls in flight" if held else ""
        return (f"per-item budget of ${self.per_item_usd:g} reached for {item_key}: spent "
                f"${self.item_spent[item_key]:.4f}"
                f"{self._before_note(self.before.get(item_key, 0.0))}{in_flight}, and the next "
                f"call may cost up to ${est:.4f}; raise budget.per_item_usd in the spec of a new "
                "run (resume and retry keep the run's stored spec)")

    @staticmethod
    def _before_note(usd: float) -> str:
        return f" (${usd:.4f} of it before this resume or retry)" if usd else ""
