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
        if fmt == "csv":
            from agentctl.errors import UsageError

            raise UsageError(f"stage '{data['stage']}' is a reduce: its output is one JSON "
                             "document, not a row per account; drop --format csv")
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
        # an output field called `status` must not take the cell status's column
        columns += [_field_column(s, f) for f in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for row in data["rows"]:
        flat: dict[str, Any] = {"item_key": row["item_key"]}
        for s, cell in row["stages"].items():
            flat[f"{s}.status"] = cell["status"] if cell else ""
            for k, v in ((cell or {}).get("output") or {}).items():
                flat[_field_column(s, k)] = _csv_value(v)
        w.writerow(flat)
    return buf.getvalue()


def _field_column(stage: str, field: str) -> str:
    return f"{stage}.output.status" if field == "status" else f"{stage}.{field}"


def _csv_value(v: Any) -> Any:
    if isinstance(v, bool):  # as in JSON, not Python's True/False
        return "true" if v else "false"
    if isinstance(v, (str, int, float)) or v is None:
        return v
    return json.dumps(v, ensure_ascii=False)
