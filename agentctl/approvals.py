"""`review`, `approve` and `reject`: the human side of the action ledger."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from agentctl.errors import ConfigError, SpecError, UsageError
from agentctl.runlog import queries
from agentctl.runlog.queries import iso_utc
from agentctl.runlog.recorder import os_user
from agentctl.spec.templates import eval_condition


def review(db: Path, run_id: str, *, include_decided: bool = False) -> dict[str, Any]:
    statuses = ("pending_approval",) if not include_decided else (
        "pending_approval", "approved", "rejected", "done", "failed", "intent", "dry_run",
        "withdrawn")
    run_id, actions, context = queries.actions_for_review(db, run_id, statuses=statuses)
    if not include_decided:
        actions = _approvable(actions)
    rows = []
    for a in actions:
        ctx = context.get(a["item_key"], {})
        upstream = {k: v for k, v in ctx.items() if k not in ("account", "item", a["stage_id"])}
        rows.append({"action_id": a["idempotency_key"], "item_key": a["item_key"],
                     "stage_id": a["stage_id"], "tool": a["tool"], "status": a["status"],
                     "arguments": a["arguments"], "upstream": upstream,
                     "decided_by": a["decided_by"], "decided_at": a["decided_at"],
                     "decision_note": a["decision_note"], "created_at": a["created_at"],
                     "done_at": a["done_at"], "result": a["result"], "error": a["error"],
                     "cell_status": a["cell_status"]})
    return {"run_id": run_id, "actions": rows}


def _approvable(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending actions a human may still decide: not those of a cell that failed after asking
    for them (its output was never accepted; `retry` re-runs the cell, which asks again)."""
    return [a for a in actions if a["cell_status"] != "failed"]


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "action_id", "item_key", "stage_id", "tool", "status", "arguments",
                "upstream", "decided_by", "decided_at", "decision_note", "done_at", "error"])
    for a in doc["actions"]:
        w.writerow([doc["run_id"], a["action_id"], a["item_key"], a["stage_id"], a["tool"],
                    a["status"], json.dumps(a["arguments"], ensure_ascii=False),
                    json.dumps(a["upstream"], ensure_ascii=False, default=str),
                    a["decided_by"] or "", iso_utc(a["decided_at"]) or "", a["decision_note"] or "",
                    iso_utc(a["done_at"]) or "", a["error"] or ""])
    return buf.getvalue()


def check_condition(where: str) -> None:
    """A --where condition that cannot even be parsed is an error, pending actions or not."""
    import jinja2

    from agentctl.spec.templates import parse_expression

    try:
        parse_expression(where)
    except jinja2.TemplateSyntaxError as exc:
        raise UsageError(f"--where \"{where}\" is not a valid condition ({exc.message}); "
                         "conditions use stage outputs like score.score >= 80 or "
                         "account.<column>") from None


def _item_keys(text: str, known: set[str]) -> list[str]:
    """--items: comma-separated keys, except that the whole text (or a comma-separated part
    list that rebuilds a key) is one key when it names a pending account: a key may hold commas."""
    if text.strip() in known:
        return [text.strip()]
    parts = text.split(",")
    keys: list[str] = []
    i = 0
    while i < len(parts):  # the longest run of parts that is a known key, else one part
        for j in range(len(parts), i + 1, -1):
            joined = ",".join(parts[i:j]).strip()
            if joined in known:
                keys.append(joined)
                i = j
                break
        else:
            if parts[i].strip():
                keys.append(parts[i].strip())
            i += 1
    return keys


def _by_prefix(given: str, pending: list[dict[str, Any]], run_id: str) -> str:
    found = {a["idempotency_key"] for a in pending if a["idempotency_key"].startswith(given)}
    if len(found) == 1:
        return found.pop()
    if len(found) > 1:
        raise UsageError(f"action id {given} matches {len(found)} pending actions in run "
                         f"{run_id}; give more of it (`agentctl review {run_id} --json` lists them whole)")
    return given  # unknown: reported with the others below


def decide(db: Path, run_id: str, *, decision: str, all_: bool = False,
           items: str | None = None, where: str | None = None,
           actions: list[str] | None = None, by: str | None = None,
           note: str | None = None) -> dict[str, Any]:
    """Approve or reject pending actions chosen by --all, --items, --where or --action."""
    chosen_by = sum(bool(x) for x in (all_, items, where, actions))
    if chosen_by != 1:
        raise UsageError("say which actions: exactly one of --all, --items k1,k2, "
                         "--where \"<condition>\" or --action ID")
    if where:
        check_condition(where)
    run_id, pending, context = queries.actions_for_review(db, run_id)
    pending = _approvable(pending)
    if actions:  # a unique prefix will do, as `review` shows ids shortened
        actions = [_by_prefix(a, pending, run_id) for a in actions]
    if items:
        known = {a["item_key"] for a in pending}
        items = _item_keys(items, known)
        unknown = [k for k in items if k not in known]
        if unknown:
            raise ConfigError(f"no pending actions for item(s) {', '.join(unknown)} in run {run_id} "
                              "(none, or already decided), so nothing was changed; leave them "
                              f"out of --items (see `agentctl review {run_id} --all`)")
        keys = [a["idempotency_key"] for a in pending if a["item_key"] in items]
    elif actions:
        known = {a["idempotency_key"] for a in pending}
        unknown = [k for k in actions if k not in known]
        if unknown:
            raise ConfigError(f"no pending action {', '.join(unknown)} in run {run_id} (none, or "
                              "already decided), so nothing was changed; see `agentctl review "
                              f"{run_id} --all`")
        keys = actions
    elif where:
        keys = []
        for a in pending:
            ctx = context.get(a["item_key"], {})
            try:
                if eval_condition(where, ctx):
                    keys.append(a["idempotency_key"])
            except SpecError as exc:
                raise UsageError(f"--where \"{where}\" cannot be evaluated for item "
                                 f"{a['item_key']}: {exc.detail}; conditions use stage outputs "
                                 "like score.score >= 80 or account.<column>") from None
    else:
        keys = [a["idempotency_key"] for a in pending]
    who = by or os_user()
    changed = queries.decide_actions(db, run_id, keys, decision=decision, by=who, note=note)
    return {"run_id": run_id, "decision": decision, "by": who, "changed": changed,
            "pending_before": len(pending), "pending_after": len(pending) - changed}
