"""What a resumed or retried run carries over from its earlier sessions into the rows it
writes again.

A cell, an agent turn (span) or a reduce's run-level output that runs again after `resume` or
`retry` is written again, and its attempts, tokens and cost must cover every session of the
run, not only the last one: the calls paid before a crash, the failed attempts before a
retry, the sub-agents whose outputs were reused. `resume` reads those sums from the run's
`llm_calls` for the rows that may be written again (never for every cell of a big run) and
hands them over here; the engine adds each one once, to the row it writes.

It also says which stored cells must run again whatever their inputs (`rerun`: cells waiting on an
action downstream of a fan-in a retry decides again: the action may have to be withdrawn), and what a retried reduce had produced before
(`superseded`), so that the engine can tell whether a recomputed fan-in output changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentctl.llm.caller import CellUsage

# (attempts, input_tokens, output_tokens, cost_usd, unpriced)
Usage = tuple[int, int, int, float, bool]


@dataclass
class Carried:
    cells: dict[tuple[str, str], Usage] = field(default_factory=dict)   # (item, stage)
    spans: dict[str, Usage] = field(default_factory=dict)               # span id
    outputs: dict[str, Usage] = field(default_factory=dict)             # reduce stage id
    rerun: set[tuple[str, str]] = field(default_factory=set)
    superseded: dict[str, Any] = field(default_factory=dict)            # stage id -> old output

    def cell(self, key: str | None, stage_id: str, usage: CellUsage) -> CellUsage:
        return with_earlier(usage, self.cells.pop((key, stage_id), None) if key is not None else None)

    def span(self, span_id: str | None, usage: CellUsage) -> CellUsage:
        return with_earlier(usage, self.spans.pop(span_id, None) if span_id else None)

    def output(self, stage_id: str, usage: CellUsage) -> CellUsage:
        return with_earlier(usage, self.outputs.pop(stage_id, None))


def with_earlier(usage: CellUsage, earlier: Usage | None) -> CellUsage:
    """`usage` of this session plus what earlier sessions spent on the same row."""
    if earlier is None:
        return usage
    attempts, tin, tout, cost, unpriced = earlier
    total = CellUsage(attempts=attempts, input_tokens=tin, output_tokens=tout,
                      cost_usd=cost, unpriced=unpriced)
    total.merge(usage)
    return total
