"""What a run writes: the run row, items, cells, calls. Methods name events, not tables."""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from agentctl.runlog.writer import LogWriter, utcnow


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "unknown")


def claim_run(path: Path, run: dict[str, Any]) -> bool:
    """Mark a stored run as taken by this process, if it is still as `run` saw it.

    A compare-and-set in one statement: of two `resume`/`retry` processes that both read the
    run as stopped, only the first gets the row; the other sees no match and must not go
    on (it would execute the same approved actions)."""
    from agentctl.runlog import store

    now = utcnow()
    with store.connect(path) as con:
        taken = con.execute(
            "UPDATE runs SET status = 'running', ended_at = NULL, heartbeat_at = ?, pid = ?, "
            "host = ? WHERE run_id = ? AND status = ? AND pid IS NOT DISTINCT FROM ? "
            "RETURNING run_id",
            [now, os.getpid(), socket.gethostname(), run["run_id"], run["status"], run["pid"]],
        ).fetchall()
    return bool(taken)


class RunRecorder:
    def __init__(self, path: Path, run_id: str, *, interval: float = 1.0):
        self.path = path
        self.run_id = run_id
        self.writer = LogWriter(path, interval=interval)

    def open(self) -> "RunRecorder":
        self.writer.start()
        return self

    # -- the run row ---------------------------------------------------------------------
    def start_run(self, *, pipeline: str, spec_path: str, spec_text: str, spec_sha256: str,
                  prompts: dict, input_path: str, input_sha256: str, input_rows: int,
                  args: dict, mock: bool, version: str, started_at: datetime | None = None) -> None:
        now = started_at or utcnow()
        self.writer.execute(
            """INSERT INTO runs (run_id, pipeline, spec_path, spec_text, spec_sha256, prompts,
                   input_path, input_sha256, input_rows, args, status, mock, started_at,
                   heartbeat_at, pid, host, os_user, agentctl_version)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)""",
            [self.run_id, pipeline, spec_path, spec_text, spec_sha256, json.dumps(prompts),
             input_path, input_sha256, input_rows, json.dumps(args), mock, now, now,
             os.getpid(), socket.gethostname(), os_user(), version])
        self.writer.flush()

    def mark_running(self) -> None:
        """A resumed or retried run becomes live again."""
        now = utcnow()
        self.writer.execute(
            "UPDATE runs SET status = 'running', ended_at = NULL, error = NULL, heartbeat_at = ?, "
            "pid = ? WHERE run_id = ?", [now, os.getpid(), self.run_id])
        self.writer.flush()

    def heartbeat(self, totals: dict) -> None:
        self.writer.execute_latest("heartbeat", "UPDATE runs SET heartbeat_at = ?, totals = ? WHERE run_id = ?",
                            [utcnow(), json.dumps(totals), self.run_id])

    def finish_run(self, status: str, totals: dict, error: str | None = None) -> None:
        self.writer.execute(
            "UPDATE runs SET status = ?, ended_at = ?, heartbeat_at = ?, totals = ?, error = ? "
            "WHERE run_id = ?",
            [status, utcnow(), utcnow(), json.dumps(totals), error, self.run_id])
        self.writer.flush()

    # -- rows ----------------------------------------------------------------------------
    def item(self, row: dict[str, Any]) -> None:
        self.writer.add("items", row)

    def cell(self, row: dict[str, Any]) -> None:
        self.writer.add("cells", row)

    def llm_call(self, row: dict[str, Any]) -> None:
        self.writer.add("llm_calls", row)

    def tool_call(self, row: dict[str, Any]) -> None:
        self.writer.add("tool_calls", row)

    def action(self, row: dict[str, Any]) -> None:
        self.writer.add("actions", row)

    def span(self, row: dict[str, Any]) -> None:
        self.writer.add("spans", row)

    def run_output(self, row: dict[str, Any]) -> None:
        self.writer.add("run_outputs", row)

    def backlog(self) -> int:
        return self.writer.backlog()

    def flush(self) -> None:
        self.writer.flush()

    async def aflush(self) -> None:
        await self.writer.aflush()

    def close(self) -> None:
        self.writer.close()


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"r-{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"
