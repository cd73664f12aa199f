"""`agentctl export`: a run's outputs as JSON Lines, CSV or (for a reduce stage) one JSON
document. Pure formatting of what `queries.export_data` read."""

from __future__ import annotations

import csv
import io
import json
from typing import Any


def render(data: dict[str, Any], fmt: str) -> str:
    if "run_output" in data:  # a reduce stage: one run-level output
        out = data["run_output"]
        if out["status"] != "ok":
            from agentctl.errors import NotFound

            raise NotFound(f"stage '{data['stage']}' of {data['run_id']} has no output: "
                           f"{out['status']} ({out['error'] or 'not finished'})")
        return json.dumps(out["output"], ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return _csv(data)
    lines = []
    for row in data["rows"]:
        doc = {"item_key": row["item_key"], **{
            s: (cell["output"] if cell and cell["status"] in ("ok", "awaiting_approval") else None)
            for s, cell in row["stages"].items()}}
        doc["status"] = {s: cell["status"] if cell else None for s, cell in row["stages"].items()}
        lines.append(json.dumps(doc, ensure_ascii=False, default=str))
    return "\n".join(lines) + ("\n" if lines else "")


def _csv(data: dict[str, Any]) -> str:
    """One row per account: key, each stage's status and its output fields as `stage.field`."""
    columns: list[str] = ["item_key"]
    for s in data["stages"]:
        columns.append(f"{s}.status")
        fields: list[str] = []
        for row in data["rows"]:
            cell = row["stages"].get(s)
            for k in (cell or {}).get("output") or {}:
                if k not in fields:
                    fields.append(k)
        columns += [f"{s}.{f}" for f in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for row in data["rows"]:
        flat: dict[str, Any] = {"item_key": row["item_key"]}
        for s, cell in row["stages"].items():
            flat[f"{s}.status"] = cell["status"] if cell else ""
            for k, v in ((cell or {}).get("output") or {}).items():
                flat[f"{s}.{k}"] = v if isinstance(v, (str, int, float, bool)) or v is None \
                    else json.dumps(v, ensure_ascii=False)
        w.writerow(flat)
    return buf.getvalue()
