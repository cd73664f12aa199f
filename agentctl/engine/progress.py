"""Live counters per stage, read by the progress display and the final summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class StageCounters:
    stage_id: str
    kind: str = "agent"
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    filtered: int = 0
    awaiting: int = 0
    in_flight: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped + self.filtered + self.awaiting


@dataclass
class RunProgress:
    stages: dict[str, StageCounters] = field(default_factory=dict)
    items_admitted: int = 0
    items_total: int | None = None
    started: float = field(default_factory=time.monotonic)
    tool_calls: int = 0
    mock: bool = False
    prior_usage: dict[str, dict] = field(default_factory=dict)  # a resumed run's, by stage
    rate_limits: Callable[[], list[dict[str, Any]]] | None = None  # the rate governor's pushback
    held_back: Callable[[], dict[str, int]] | None = None  # calls waiting for a rate limit, by lane
    # what a retry did that a reader must know: actions withdrawn, or taken and not undoable,
    # for accounts a fan-in no longer lets through (in `totals` as `notes`, when there are any)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.notes) < 1000:
            self.notes.append(text)

    def add_stage(self, stage_id: str, kind: str) -> None:
        c = self.stages[stage_id] = StageCounters(stage_id, kind)
        before = self.prior_usage.get(stage_id)
        if before:  # calls made before this resume count in the run's totals
            c.calls, c.input_tokens, c.output_tokens = (
                before["llm_calls"], before["input_tokens"], before["output_tokens"])
            c.cost_usd, c.unpriced_calls = before["cost_usd"], before["unpriced_calls"]

    def count(self, stage_id: str, status: str) -> None:
        c = self.stages[stage_id]
        if status == "awaiting_approval":
            c.awaiting += 1
        else:
            setattr(c, status, getattr(c, status) + 1)

    def usage(self, stage_id: str | None, resp) -> None:
        if stage_id not in self.stages:
            return
        c = self.stages[stage_id]
        c.calls += 1
        if resp is None:
            return
        c.input_tokens += resp.input_tokens
        c.output_tokens += resp.output_tokens
        if resp.cost_usd is None:
            c.unpriced_calls += 1
        else:
            c.cost_usd += resp.cost_usd

    def waiting_note(self) -> str:
        """'3 calls wait for openai's rate limit' while calls are held back, else ''."""
        lanes = self.held_back() if self.held_back else {}
        if not lanes:
            return ""
        n = sum(lanes.values())
        return (f"{n} call{'s' if n != 1 else ''} wait{'' if n != 1 else 's'} for the rate limit"
                f" of {', '.join(sorted(lanes))}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def totals(self) -> dict:
        s = self.stages.values()
        return {
            "items": self.items_admitted,
            "cells": sum(c.done for c in s),
            "ok": sum(c.ok for c in s),
            "failed": sum(c.failed for c in s),
            "skipped": sum(c.skipped for c in s),
            "filtered": sum(c.filtered for c in s),
            "awaiting_approval": sum(c.awaiting for c in s),
            "llm_calls": sum(c.calls for c in s),
            "tool_calls": self.tool_calls,
            "input_tokens": sum(c.input_tokens for c in s),
            "output_tokens": sum(c.output_tokens for c in s),
            "cost_usd": round(sum(c.cost_usd for c in s), 6),
            "unpriced_calls": sum(c.unpriced_calls for c in s),
            "rate_limits": self.rate_limits() if self.rate_limits else [],
            **({"notes": list(self.notes)} if self.notes else {}),
        }
