"""Spending limits, checked before every call against what is spent plus what is reserved.

A call reserves its worst-case cost (estimated prompt tokens + max_tokens of output at the
model's price) before it is sent and settles to the real cost after. A run can therefore
overshoot `max_usd` only by the difference between estimate and reality of calls already in
flight — never by calls started after the limit was reached.
"""

from __future__ import annotations

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
    spent: float = 0.0
    reserved: float = 0.0
    item_spent: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    item_reserved: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _holds: dict[Any, float] = field(default_factory=dict)
    _hold_items: dict[Any, str] = field(default_factory=dict)

    def _estimate(self, req: Any, est_tokens: int) -> float:
        """Worst case: the prompt (about 4 characters a token) plus a full reply."""
        out = int(req.params.get("max_tokens") or DEFAULT_OUTPUT_TOKENS)
        cost = self.price(req, req.prompt_tokens(), out)
        return cost or 0.0

    def reserve(self, item_key: str | None, req: Any, est_tokens: int, hold: Any = None) -> None:
        """Hold the worst case of one request; `hold` names it (default: the request)."""
        est = self._estimate(req, est_tokens)
        if self.max_usd is not None and self.spent + self.reserved + est > self.max_usd:
            raise BudgetExceeded(
                f"budget of ${self.max_usd:g} reached (spent ${self.spent:.4f}, "
                f"${self.reserved:.4f} in flight, next call ~${est:.4f}); raise budget.max_usd "
                "or --max-cost, then `agentctl resume` the run", whole_run=True)
        if item_key is not None and self.per_item_usd is not None:
            used = self.item_spent[item_key] + self.item_reserved[item_key]
            if used + est > self.per_item_usd:
                raise BudgetExceeded(
                    f"per-item budget of ${self.per_item_usd:g} reached for {item_key} "
                    f"(spent ${self.item_spent[item_key]:.4f}); raise budget.per_item_usd",
                    whole_run=False)
            self.item_reserved[item_key] += est
        self.reserved += est
        self._holds[hold if hold is not None else id(req)] = est
        if item_key is not None:
            self._hold_items[hold if hold is not None else id(req)] = item_key

    def release_hold(self, hold: Any) -> None:
        """Drop a hold that spent nothing (a cancelled hedge)."""
        est = self._holds.pop(hold, 0.0)
        self.reserved -= est
        item_key = self._hold_items.pop(hold, None)
        if item_key is not None and self.per_item_usd is not None:
            self.item_reserved[item_key] -= est

    def settle(self, item_key: str | None, req: Any, est_tokens: int, resp: Any) -> None:
        est = self._holds.pop(id(req), 0.0)
        self._hold_items.pop(id(req), None)
        self.reserved -= est
        cost = (resp.cost_usd or 0.0) if resp is not None else 0.0
        self.spent += cost
        if item_key is not None and self.per_item_usd is not None:
            self.item_reserved[item_key] -= est
            self.item_spent[item_key] += cost
