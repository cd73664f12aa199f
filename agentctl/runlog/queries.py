"""Read-side SQL: listing runs, explaining one run, and loading state to resume it.

Every function opens the log read-only for as short a time as it can (see store.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from agentctl.errors import NotFound
from agentctl.runlog import store
from agentctl.runlog.writer import utcnow


def _rows(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def list_runs(path: Path, limit: int = 20) -> list[dict[str, Any]]:
    with store.connect(path, read_only=True) as con:
        if not store.has_schema(con):
            return []
        rows = _rows(con, """
            SELECT r.run_id, r.pipeline, r.status, r.mock, r.started_at, r.ended_at, r.heartbeat_at,
                   r.input_rows, r.pid, r.host,
                   coalesce(json_extract(r.args, '$.plan_sample')::BOOLEAN, false) AS plan_sample,
                   (SELECT count(*) FROM items i WHERE i.run_id = r.run_id) AS items,
                   (SELECT count(*) FROM llm_calls c WHERE c.run_id = r.run_id) AS calls,
                   (SELECT sum(cost_usd) FROM llm_calls c WHERE c.run_id = r.run_id) AS cost_usd,
                   (SELECT count(*) FROM llm_calls c WHERE c.run_id = r.run_id
                        AND c.cost_usd IS NULL AND c.status <> 'error') AS unpriced_calls
            FROM runs r ORDER BY r.started_at DESC LIMIT ?""", [limit])
    for r in rows:
        end = r["ended_at"] or r["heartbeat_at"]
        r["duration_s"] = (end - r["started_at"]).total_seconds() if end and r["started_at"] else None
        r["stale"] = r["status"] == "running" and looks_dead(r)
    return rows


def resolve_run_id(con, run_id: str) -> str:
    if run_id in ("last", "latest"):
        row = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
        if not row:
            raise NotFound("there are no runs in this run log yet; start one with `agentctl run`")
        return row[0]
    rows = con.execute("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY started_at DESC",
                       [run_id]).fetchall()
    exact = [r[0] for r in rows if r[0] == run_id]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0][0]
    if not rows:
        raise NotFound(f"no run '{run_id}' in this run log; list runs with `agentctl runs`")
    raise NotFound(f"run id prefix '{run_id}' matches {len(rows)} runs; give more characters")


def get_run(con, run_id: str) -> dict[str, Any]:
    rows = _rows(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    run = rows[0]
    for k in ("args", "totals", "prompts"):
        run[k] = _json(run[k])
    return run


def _the_run(con, run_id: str, stage: str | None) -> tuple[str, dict[str, Any], list[str]]:
    """(full run id, run row, stage order) of a run id or prefix; a `stage` must be one of it."""
    if not store.has_schema(con):
        raise NotFound("this run log has no runs yet; start one with `agentctl run`")
    run_id = resolve_run_id(con, run_id)
    run = get_run(con, run_id)
    order = _stage_order(run)
    if stage is not None and order and stage not in order:
        raise NotFound(f"run {run_id} has no stage '{stage}'; stages: {', '.join(order)}")
    return run_id, run, order


def inspect_run(path: Path, run_id: str, *, stage: str | None = None, item: str | None = None,
                grid_limit: int = 200) -> dict[str, Any]:
    """Everything `agentctl inspect` shows, as plain data."""
    with store.connect(path, read_only=True) as con:
        run_id, run, stage_order = _the_run(con, run_id, stage)
        if item is not None and not con.execute(
                "SELECT 1 FROM items WHERE run_id = ? AND item_key = ?", [run_id, item]).fetchone():
            raise NotFound(f"run {run_id} has no item '{item}'; see `agentctl inspect {run_id}`")
        stages = _rows(con, """
            SELECT stage_id,
                   count(*) FILTER (WHERE status = 'ok') AS ok,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'skipped') AS skipped,
                   count(*) FILTER (WHERE status = 'filtered') AS filtered,
                   count(*) FILTER (WHERE status = 'awaiting_approval') AS awaiting_approval
            FROM cells WHERE run_id = ? GROUP BY stage_id""", [run_id])
        calls = _rows(con, """
            SELECT stage_id, count(*) AS llm_calls,
                   count(*) FILTER (WHERE status NOT IN ('ok', 'cancelled')) AS failed_calls,
                   count(*) FILTER (WHERE purpose = 'hedge') AS hedges,
                   coalesce(sum(input_tokens), 0) AS input_tokens,
                   coalesce(sum(output_tokens), 0) AS output_tokens,
                   sum(cost_usd) AS cost_usd,
                   count(*) FILTER (WHERE cost_usd IS NULL AND status <> 'error') AS unpriced_calls,
                   quantile_cont(latency_ms, 0.5) FILTER (WHERE status <> 'error' AND purpose <> 'hedge') AS p50_ms,
                   quantile_cont(latency_ms, 0.95) FILTER (WHERE status <> 'error' AND purpose <> 'hedge') AS p95_ms,
                   list(DISTINCT model) AS models
            FROM llm_calls WHERE run_id = ? GROUP BY stage_id""", [run_id])
        tools = _rows(con, """
            SELECT stage_id, count(*) AS tool_calls,
                   count(*) FILTER (WHERE status = 'denied') AS denied,
                   count(*) FILTER (WHERE status IN ('error', 'invalid_args')) AS errors
            FROM tool_calls WHERE run_id = ? GROUP BY stage_id""", [run_id])
        n_items = con.execute("SELECT count(*) FROM items WHERE run_id = ?", [run_id]).fetchone()[0]
        errors = _rows(con, """
            SELECT stage_id, error_type,
                   regexp_replace(CASE WHEN length(item_key) >= 3 AND NOT regexp_full_match(item_key, '[0-9]+')
                                       THEN regexp_replace(error, '(^|[^A-Za-z0-9_-])' || regexp_escape(item_key)
                                                           || '($|[^A-Za-z0-9_-])', '\\1<account>\\2', 'g')
                                       ELSE error END,
                                  '''[^'']{25,}''', '''…''', 'g') AS error,
                   count(*) AS count, min(item_key) AS example_item
            FROM cells WHERE run_id = ? AND status = 'failed'
            GROUP BY ALL ORDER BY count DESC LIMIT 10""", [run_id])
        call_errors = _rows(con, """
            SELECT stage_id, error_type, count(*) AS count
            FROM llm_calls WHERE run_id = ? AND status NOT IN ('ok', 'cancelled')
            GROUP BY ALL ORDER BY count DESC LIMIT 10""", [run_id])
        denied = _rows(con, """
            SELECT item_key, stage_id, agent, tool, arguments, error
            FROM tool_calls WHERE run_id = ? AND status = 'denied' ORDER BY started_at LIMIT 50""",
                       [run_id])
        grid_rows = _rows(con, """
            SELECT i.item_key, i.seq, c.stage_id, c.status
            FROM (SELECT * FROM items WHERE run_id = ? ORDER BY seq LIMIT ?) i
            LEFT JOIN cells c ON c.run_id = i.run_id AND c.item_key = i.item_key
            ORDER BY i.seq""", [run_id, grid_limit])
        run_outputs = _rows(con, """
            SELECT stage_id, status, output, error, error_type, items, attempts, input_tokens,
                   output_tokens, cost_usd, duration_ms
            FROM run_outputs WHERE run_id = ? ORDER BY started_at""", [run_id])
        span_counts = _rows(con, """
            SELECT stage_id, count(*) AS spans, count(DISTINCT agent) AS agents
            FROM spans WHERE run_id = ? GROUP BY stage_id""", [run_id])
        detail = None
        if stage is not None or item is not None:
            detail = _detail(con, run_id, stage, item, stage_order)
    prompts = run.get("prompts") if isinstance(run.get("prompts"), dict) else {}
    kinds = prompts.get("kinds") or {}
    by_spans = {s["stage_id"]: s for s in span_counts}
    for o in run_outputs:
        o["output"] = _json(o["output"])
    by_stage = {s["stage_id"]: s for s in stages}
    by_calls = {c["stage_id"]: c for c in calls}
    by_tools = {t["stage_id"]: t for t in tools}
    ids = stage_order or sorted(set(by_stage) | set(by_calls))
    stage_list = []
    for sid in ids:
        s = by_stage.get(sid, {})
        c = by_calls.get(sid, {})
        t = by_tools.get(sid, {})
        stage_list.append({
            "id": sid, "kind": kinds.get(sid, "agent"),
            "spans": by_spans.get(sid, {}).get("spans", 0),
            "ok": s.get("ok", 0), "failed": s.get("failed", 0), "skipped": s.get("skipped", 0),
            "filtered": s.get("filtered", 0), "awaiting_approval": s.get("awaiting_approval", 0),
            "llm_calls": c.get("llm_calls", 0), "failed_calls": c.get("failed_calls", 0),
            "hedges": c.get("hedges", 0),
            "tool_calls": t.get("tool_calls", 0), "denied_tool_calls": t.get("denied", 0),
            "tool_errors": t.get("errors", 0),
            "input_tokens": int(c.get("input_tokens", 0) or 0),
            "output_tokens": int(c.get("output_tokens", 0) or 0),
            "cost_usd": c.get("cost_usd"), "unpriced_calls": c.get("unpriced_calls", 0),
            "p50_ms": _round(c.get("p50_ms")), "p95_ms": _round(c.get("p95_ms")),
            "models": [m for m in (c.get("models") or []) if m],
        })
    grid: dict[str, dict[str, str]] = {}
    for g in grid_rows:
        grid.setdefault(g["item_key"], {})
        if g["stage_id"]:
            grid[g["item_key"]][g["stage_id"]] = g["status"]
    totals = {
        "items": n_items,
        "llm_calls": sum(s["llm_calls"] for s in stage_list),
        "tool_calls": sum(s["tool_calls"] for s in stage_list),
        "input_tokens": sum(s["input_tokens"] for s in stage_list),
        "output_tokens": sum(s["output_tokens"] for s in stage_list),
        "cost_usd": (None if all(s["cost_usd"] is None for s in stage_list)
                     and any(s["unpriced_calls"] for s in stage_list)
                     else round(sum(s["cost_usd"] or 0 for s in stage_list), 6)),
        "unpriced_calls": sum(s["unpriced_calls"] for s in stage_list),
    }
    return {
        "run_id": run_id, "pipeline": run["pipeline"], "status": run["status"],
        "mock": bool(run["mock"]),
        "started_at": iso_utc(run["started_at"]), "ended_at": iso_utc(run["ended_at"]),
        "heartbeat_at": iso_utc(run["heartbeat_at"]), "error": run["error"],
        "stale": run["status"] == "running" and looks_dead(run),
        "plan_sample": bool((run["args"] or {}).get("plan_sample")),
        "input_path": run["input_path"], "spec_path": run["spec_path"], "args": run["args"],
        "stages": stage_list, "totals": totals, "grid": grid,
        "rate_limits": (run["totals"] or {}).get("rate_limits") or [],  # the last session's
        "notes": (run["totals"] or {}).get("notes") or [],
        "grid_truncated": n_items > grid_limit, "grid_items": n_items,
        "run_outputs": run_outputs,
        "top_errors": errors, "call_errors": call_errors, "denied_tool_calls": [
            {**d, "arguments": _json(d["arguments"])} for d in denied],
        "detail": detail,
    }


DETAIL_ROWS = 500


def _detail(con, run_id: str, stage: str | None, item: str | None,
            stage_order: list[str]) -> dict[str, Any]:
    where = ["run_id = ?"]
    params: list[Any] = [run_id]
    if stage is not None:
        where.append("stage_id = ?")
        params.append(stage)
    if item is not None:
        where.append("item_key = ?")
        params.append(item)
    cond = " AND ".join(where)
    # a stage's run-level work (a reduce: item_key NULL) belongs to the stage's drill-down
    spans_cond = cond if item is not None else cond + " OR (run_id = ? AND stage_id = ? AND item_key IS NULL)"
    spans_params = params if item is not None else [*params, run_id, stage]
    # A stage's drill-down shows DETAIL_ROWS of each kind at most, what went wrong first, and
    # says how many there are (`totals`); `export` has every cell.
    problems_first = "" if item is not None else "status = 'ok', "
    cells = _rows(con, f"""SELECT item_key, stage_id, status, output, error, error_type, attempts,
                                  input_tokens, output_tokens, cost_usd, duration_ms
                           FROM cells WHERE {cond} ORDER BY {problems_first}item_key, stage_id
                           LIMIT {DETAIL_ROWS}""", params)
    calls = _rows(con, f"""SELECT call_id, item_key, stage_id, agent, alias, model, attempt, purpose,
                                  request, response, status, error, error_type, input_tokens,
                                  output_tokens, cost_usd, latency_ms, wait_ms, cache_hit, started_at,
                                  span_id
                           FROM llm_calls WHERE {cond} ORDER BY {problems_first}started_at
                           LIMIT {DETAIL_ROWS}""", params)
    totals = dict(zip(("cells", "llm_calls", "tool_calls"), con.execute(
        f"SELECT (SELECT count(*) FROM cells WHERE {cond}), (SELECT count(*) FROM llm_calls WHERE {cond}), "
        f"(SELECT count(*) FROM tool_calls WHERE {cond})", params * 3).fetchone()))
    tools = _rows(con, f"""SELECT t.tool_call_id, t.item_key, t.stage_id, t.agent, t.llm_call_id,
                                  t.tool, t.arguments, t.result, t.result_chars, t.status, t.error,
                                  t.duration_ms, t.idempotency_key, t.span_id, t.child_span_id,
                                  a.status AS action_status, a.decided_by AS action_decided_by
                           FROM (SELECT * FROM tool_calls WHERE {cond}) t
                           LEFT JOIN actions a ON a.idempotency_key = t.idempotency_key
                           ORDER BY t.started_at LIMIT {DETAIL_ROWS}""", params)
    spans = _rows(con, f"""SELECT span_id, item_key, stage_id, parent_span_id, agent, role, depth,
                                  round, task, status, output, error, attempts, input_tokens,
                                  output_tokens, cost_usd, started_at, duration_ms
                           FROM spans WHERE {spans_cond} ORDER BY started_at LIMIT 2000""",
                  spans_params)
    for sp in spans:
        sp["output"] = _json(sp["output"])
        sp["started_at"] = iso_utc(sp["started_at"])
    rank = {sid: i for i, sid in enumerate(stage_order)}
    cells.sort(key=lambda c: (item is None and c["status"] == "ok", c["item_key"] or "",
                              rank.get(c["stage_id"], len(rank)), c["stage_id"]))
    for c in cells:
        c["output"] = _json(c["output"])
    for c in calls:
        c["request"] = _json(c["request"])
        c["response"] = _json(c["response"])
        c["started_at"] = iso_utc(c["started_at"])
    for t in tools:
        t["arguments"] = _json(t["arguments"])
    return {"stage": stage, "item": item, "cells": cells, "llm_calls": calls, "tool_calls": tools,
            "spans": spans, "totals": totals,
            "truncated": any(totals[k] > DETAIL_ROWS for k in totals)}


def _stage_order(run: dict[str, Any]) -> list[str]:
    prompts = run.get("prompts") or {}
    return list(prompts.get("order") or []) if isinstance(prompts, dict) else []


def _round(v):
    return None if v is None else round(float(v), 1)


def iso_utc(v: Any) -> Any:
    """A run-log time (TIMESTAMP columns hold UTC, without a zone) as ISO 8601 with its zone,
    e.g. 2026-12-03T16:34:24.123Z: what every command's --json and text output show."""
    if not isinstance(v, datetime):
        return v
    return v.isoformat(timespec="milliseconds" if v.microsecond else "seconds") + "Z"



def live_runs_of(path: Path, spec_sha256: str, input_sha256: str) -> list[dict[str, Any]]:
    """Runs of this spec and input that are running now (not crashed), newest first."""
    with store.connect(path, read_only=True) as con:
        if not store.has_schema(con):
            return []
        rows = _rows(con, """SELECT run_id, pid, host, started_at, heartbeat_at FROM runs
                              WHERE status = 'running' AND spec_sha256 = ? AND input_sha256 = ?
                              ORDER BY started_at DESC""", [spec_sha256, input_sha256])
    return [r for r in rows if not looks_dead(r)]


def looks_dead(run: dict[str, Any], stale_s: float = 30.0) -> bool:
    """A `running` run whose process is gone (crash, SIGKILL) or stopped heartbeating."""
    import os
    import socket
    from datetime import datetime, timezone

    if run.get("host") == socket.gethostname() and run.get("pid"):
        try:
            os.kill(int(run["pid"]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        # the pid exists, but it may have been reused: trust a fresh heartbeat only
    beat = run.get("heartbeat_at") or run.get("started_at")
    if beat is None:
        return True
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return (now - beat).total_seconds() > stale_s


def load_run_state(path: Path, run_id: str):
    """Run row, final cells, ledger and stored input rows: what resume/retry need."""
    with store.connect(path, read_only=True) as con:
        if not store.has_schema(con):
            raise NotFound("this run log has no runs yet")
        run_id = resolve_run_id(con, run_id)
        run = get_run(con, run_id)
        cells = _rows(con, "SELECT item_key, stage_id, status, output, error, error_type, "
                           "attempts, input_tokens, output_tokens, cost_usd, started_at, "
                           "ended_at, duration_ms FROM cells WHERE run_id = ?", [run_id])
        actions = _rows(con, "SELECT * FROM actions WHERE run_id = ?", [run_id])
        items = _rows(con, "SELECT item_key, input FROM items WHERE run_id = ? ORDER BY seq",
                      [run_id])
        spans = _rows(con, "SELECT span_id, status, output FROM spans WHERE run_id = ? "
                           "AND status = 'ok'", [run_id])
        outputs = _rows(con, "SELECT stage_id, status, output FROM run_outputs WHERE run_id = ?",
                        [run_id])
    prior = {(c["item_key"], c["stage_id"]): {**c, "output": _json(c["output"])} for c in cells}
    ledger = {a["idempotency_key"]: {**a, "arguments": _json(a["arguments"]),
                                     "result": _json(a["result"])} for a in actions}
    rows = {i["item_key"]: _json(i["input"]) for i in items}
    done_spans = {s["span_id"]: {**s, "output": _json(s["output"])} for s in spans}
    run_outputs = {o["stage_id"]: {**o, "output": _json(o["output"])} for o in outputs}
    return run, prior, ledger, rows, done_spans, run_outputs


def usage_so_far(path: Path, run_id: str) -> dict[str, Any]:
    """What a stored run has used, for a resume or retry to go on from: LLM usage by stage
    (`stages`, the run's totals), tool calls (`tool_calls`), and USD by item key (`spent`,
    None for calls of no item such as a reduce's: where the budget starts)."""
    with store.connect(path, read_only=True) as con:
        stages = _rows(con, """
            SELECT stage_id, count(*) AS llm_calls,
                   coalesce(sum(input_tokens), 0)::BIGINT AS input_tokens,
                   coalesce(sum(output_tokens), 0)::BIGINT AS output_tokens,
                   coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd,
                   count(*) FILTER (WHERE cost_usd IS NULL AND status <> 'error') AS unpriced_calls
            FROM llm_calls WHERE run_id = ? GROUP BY stage_id""", [run_id])
        tools = con.execute("SELECT count(*) FROM tool_calls WHERE run_id = ?", [run_id]).fetchone()[0]
        spent = con.execute("SELECT item_key, sum(cost_usd) FROM llm_calls WHERE run_id = ? "
                            "AND cost_usd IS NOT NULL GROUP BY item_key", [run_id]).fetchall()
    return {"stages": {s.pop("stage_id"): s for s in stages}, "tool_calls": tools,
            "spent": {item_key: float(usd) for item_key, usd in spent if usd}}


def earlier_usage(path: Path, run_id: str, *, cells: list[tuple[str, str]],
                  stages: list[str], reduces: list[str]) -> dict[str, dict[Any, tuple]]:
    """What a run's earlier sessions spent on the rows a resume or retry may write again, whose
    attempts, tokens and cost must then cover every session: the `cells` a retry drops, every
    cell of `stages` (downstream of a retried fan-in), cells that had calls but no row (stopped
    mid-way), and the run-level work of `reduces`. Only those are read, never a big run's
    finished cells. Returns {"cells": {(item, stage): u}, "spans": {span_id: u},
    "outputs": {stage: u}}, u = (attempts, input_tokens, output_tokens, cost_usd, unpriced)."""
    with store.connect(path, read_only=True) as con:
        rows = con.execute("""
            WITH want AS (SELECT unnest(?::VARCHAR[]) AS item_key, unnest(?::VARCHAR[]) AS stage_id),
            calls AS (
                SELECT l.* FROM llm_calls l
                WHERE l.run_id = ? AND (
                    CASE WHEN l.item_key IS NULL THEN list_contains(?::VARCHAR[], l.stage_id)
                    ELSE list_contains(?::VARCHAR[], l.stage_id)
                         OR EXISTS (SELECT 1 FROM want w WHERE w.item_key = l.item_key
                                                          AND w.stage_id = l.stage_id)
                         OR NOT EXISTS (SELECT 1 FROM cells c WHERE c.run_id = l.run_id
                                        AND c.item_key = l.item_key AND c.stage_id = l.stage_id)
                    END))
            -- one scan, two groupings: by cell (item_key NULL: a reduce's run-level work), by span
            SELECT grouping(span_id) = 0 AS by_span, item_key, stage_id, span_id,
                   count(*), coalesce(sum(input_tokens), 0)::BIGINT,
                   coalesce(sum(output_tokens), 0)::BIGINT, coalesce(sum(cost_usd), 0)::DOUBLE,
                   coalesce(bool_or(cost_usd IS NULL AND status IN ('ok', 'invalid')), false)
            FROM calls GROUP BY GROUPING SETS ((item_key, stage_id), (span_id))""",
            [[c[0] for c in cells], [c[1] for c in cells], run_id, list(reduces),
             list(stages)]).fetchall()
    out: dict[str, dict[Any, tuple]] = {"cells": {}, "spans": {}, "outputs": {}}
    for by_span, item, stage, span, *sums in rows:
        usage = (int(sums[0]), int(sums[1]), int(sums[2]), float(sums[3]), bool(sums[4]))
        if by_span:
            if span is not None:
                out["spans"][span] = usage
        elif item is None:
            out["outputs"][stage] = usage
        else:
            out["cells"][(item, stage)] = usage
    return out


def actions_for_review(path: Path, run_id: str, *, statuses: tuple[str, ...] = ("pending_approval",)
                       ) -> tuple[str, list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Actions in the given states, each with its cell's status (`cell_status`), and every
    stage output of their accounts (for context and for `--where` conditions)."""
    with store.connect(path, read_only=True) as con:
        if not store.has_schema(con):
            raise NotFound("this run log has no runs yet")
        run_id = resolve_run_id(con, run_id)
        marks = ", ".join("?" for _ in statuses)
        actions = _rows(con, f"""SELECT a.*, c.status AS cell_status FROM actions a
                                 LEFT JOIN cells c ON c.run_id = a.run_id
                                   AND c.item_key = a.item_key AND c.stage_id = a.stage_id
                                 WHERE a.run_id = ? AND a.status IN ({marks})
                                 ORDER BY a.item_key, a.created_at""", [run_id, *statuses])
        cells = _rows(con, """SELECT c.item_key, c.stage_id, c.output FROM cells c
                              WHERE c.run_id = ? AND c.item_key IN
                                (SELECT item_key FROM actions WHERE run_id = ?)""", [run_id, run_id])
        items = _rows(con, """SELECT item_key, input FROM items WHERE run_id = ? AND item_key IN
                                (SELECT item_key FROM actions WHERE run_id = ?)""", [run_id, run_id])
    context: dict[str, dict[str, Any]] = {}
    for i in items:
        row = _json(i["input"])
        context[i["item_key"]] = {"account": row, "item": row}
    for c in cells:
        context.setdefault(c["item_key"], {})[c["stage_id"]] = _json(c["output"]) or {}
    for a in actions:
        a["arguments"] = _json(a["arguments"])
        a["result"] = _json(a["result"])
    return run_id, actions, context


def decide_actions(path: Path, run_id: str, keys: list[str], *, decision: str, by: str,
                   note: str | None) -> int:
    """Mark pending actions approved or rejected; returns how many changed."""
    if not keys:
        return 0
    with store.connect(path) as con:
        con.execute("BEGIN")
        marks = ", ".join("?" for _ in keys)
        changed = con.execute(
            f"""UPDATE actions SET status = ?, decided_by = ?, decided_at = ?, decision_note = ?
                WHERE run_id = ? AND status = 'pending_approval' AND idempotency_key IN ({marks})
                RETURNING idempotency_key""", [decision, by, utcnow(), note, run_id, *keys]).fetchall()
        con.execute("COMMIT")
    return len(changed)


def recorded_calls(path: Path, run_id: str | None = None, *, models: list[str] | None = None,
                   mock: bool | None = None, limit: int = 200_000):
    """The response cache: successful calls as (request_hash -> response), newest first."""
    where, params = ["status = 'ok'", "request_hash IS NOT NULL"], []
    if run_id is not None:
        with store.connect(path, read_only=True) as con:
            run_id = resolve_run_id(con, run_id)
        where.append("run_id = ?")
        params.append(run_id)
    if models:
        where.append(f"model IN ({', '.join('?' for _ in models)})")
        params.extend(models)
    if mock is not None:  # mock answers never serve real runs, nor real answers mock runs
        where.append("run_id IN (SELECT run_id FROM runs WHERE mock = ?)")
        params.append(mock)
    with store.connect(path, read_only=True) as con:
        if not store.has_schema(con):
            return run_id, {}
        rows = con.execute(f"SELECT request_hash, response, model FROM llm_calls WHERE "
                           f"{' AND '.join(where)} ORDER BY started_at DESC LIMIT ?",
                           [*params, limit]).fetchall()
    by_hash: dict[str, dict] = {}
    for request_hash, response, model in rows:
        resp = _json(response) or {}
        resp.setdefault("model", model)
        by_hash.setdefault(request_hash, resp)
    return run_id, by_hash


def recording(path: Path, run_id: str) -> tuple[str, dict[str, list[dict]], dict[tuple[str, str], list[dict]]]:
    """What `--replay RUN_ID` serves: per request hash, every reply the run got for it in order
    (the ones its stages refused too: a replay makes the same repairs), and the recorded
    requests per (item, stage), to explain a request the run never made."""
    with store.connect(path, read_only=True) as con:
        run_id = resolve_run_id(con, run_id)
        rows = con.execute("""SELECT request_hash, response, model, item_key, stage_id, request
                              FROM llm_calls WHERE run_id = ? AND request_hash IS NOT NULL
                                AND status IN ('ok', 'invalid')
                              ORDER BY started_at""", [run_id]).fetchall()
    by_hash: dict[str, list[dict]] = {}
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for request_hash, response, model, item, stage, request in rows:
        resp = _json(response) or {}
        resp.setdefault("model", model)
        by_hash.setdefault(request_hash, []).append(resp)
        req = _json(request) or {}
        req.setdefault("model", model)
        by_cell.setdefault((item, stage), []).append(req)
    return run_id, by_hash, by_cell


def export_data(path: Path, run_id: str, *, stage: str | None = None) -> dict[str, Any]:
    """What `agentctl export` writes: a reduce stage's run-level output, or one row per account
    with its stage outputs (one stage, or every stage)."""
    with store.connect(path, read_only=True) as con:
        run_id, run, order = _the_run(con, run_id, stage)
        if stage is not None:
            out = _rows(con, "SELECT status, output, error, items FROM run_outputs "
                             "WHERE run_id = ? AND stage_id = ?", [run_id, stage])
            if out:
                return {"run_id": run_id, "stage": stage, "run_output": {**out[0], "output": _json(out[0]["output"])}}
        items = _rows(con, "SELECT item_key FROM items WHERE run_id = ? ORDER BY seq", [run_id])
        where, params = "run_id = ?", [run_id]
        if stage is not None:
            where += " AND stage_id = ?"
            params.append(stage)
        cells = _rows(con, f"SELECT item_key, stage_id, status, output FROM cells WHERE {where}", params)
    by_item: dict[str, dict[str, Any]] = {}
    for c in cells:
        by_item.setdefault(c["item_key"], {})[c["stage_id"]] = {"status": c["status"],
                                                                "output": _json(c["output"])}
    stages = [stage] if stage is not None else order
    # (not the input rows: the export has none of their columns, and at 100k wide rows
    # reading them took more memory than the run)
    rows = [{"item_key": i["item_key"],
             "stages": {s: by_item.get(i["item_key"], {}).get(s) for s in stages}} for i in items]
    return {"run_id": run_id, "stage": stage, "stages": stages, "rows": rows}
