"""What a run's earlier sessions spent on the rows a resume or retry may write again.

`cells`, `spans` and `run_outputs` rows are rewritten when their work runs again; their
attempts, tokens and cost must then cover every session's `llm_calls`, not only the last.
Only the rows that may run again are read (a big run's finished cells are not): the cells a
retry drops, cells of stages a retried fan-in may change, cells that had calls but no row
(stopped mid-way), and the run-level work of reduces that will run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentctl.runlog import store

_SUMS = """count(*) AS attempts, coalesce(sum(input_tokens), 0)::BIGINT AS input_tokens,
           coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens,
           coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd,
           coalesce(bool_or(cost_usd IS NULL AND status IN ('ok', 'invalid')), false) AS unpriced"""


def earlier_usage(path: Path, run_id: str, *, cells: list[tuple[str, str]],
                  stages: list[str], reduces: list[str]) -> dict[str, dict[Any, tuple]]:
    """{"cells": {(item, stage): usage}, "spans": {span_id: usage}, "outputs": {stage: usage}}
    with usage = (attempts, input_tokens, output_tokens, cost_usd, unpriced)."""
    items = [c[0] for c in cells]
    cell_stages = [c[1] for c in cells]
    chosen = f"""
        WITH want AS (SELECT unnest(?::VARCHAR[]) AS item_key, unnest(?::VARCHAR[]) AS stage_id),
        calls AS (
            SELECT l.* FROM llm_calls l
            WHERE l.run_id = ? AND l.item_key IS NOT NULL AND (
                list_contains(?::VARCHAR[], l.stage_id)
                OR EXISTS (SELECT 1 FROM want w WHERE w.item_key = l.item_key
                                                 AND w.stage_id = l.stage_id)
                OR NOT EXISTS (SELECT 1 FROM cells c WHERE c.run_id = l.run_id
                               AND c.item_key = l.item_key AND c.stage_id = l.stage_id))
            UNION ALL
            SELECT l.* FROM llm_calls l
            WHERE l.run_id = ? AND l.item_key IS NULL AND list_contains(?::VARCHAR[], l.stage_id))"""
    params = [items, cell_stages, run_id, list(stages), run_id, list(reduces)]
    with store.connect(path, read_only=True) as con:
        by_cell = con.execute(f"""{chosen}
            SELECT item_key, stage_id, {_SUMS} FROM calls WHERE item_key IS NOT NULL
            GROUP BY item_key, stage_id""", params).fetchall()
        by_span = con.execute(f"""{chosen}
            SELECT span_id, {_SUMS} FROM calls WHERE span_id IS NOT NULL GROUP BY span_id""",
                              params).fetchall()
        by_output = con.execute(f"""{chosen}
            SELECT stage_id, {_SUMS} FROM calls WHERE item_key IS NULL GROUP BY stage_id""",
                                params).fetchall()
    return {"cells": {(r[0], r[1]): _usage(r[2:]) for r in by_cell},
            "spans": {r[0]: _usage(r[1:]) for r in by_span},
            "outputs": {r[0]: _usage(r[1:]) for r in by_output}}


def _usage(r: tuple) -> tuple:
    return (int(r[0]), int(r[1]), int(r[2]), float(r[3]), bool(r[4]))
