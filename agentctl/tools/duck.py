"""Opening a DuckDB database for a tool call, waiting out other processes' locks.

DuckDB allows one writing process per file, and inside one process every connection to a
file must use the same configuration; a tool that finds the file busy retries with backoff
for up to ``lock_timeout`` seconds before giving up with a ToolError. Blocking: run in a thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb

from agentctl.errors import ToolError

READ_ONLY_CONFIG = {"enable_external_access": False, "lock_configuration": True}


def is_busy_error(exc: Exception) -> bool:
    text = str(exc).lower()
    if isinstance(exc, duckdb.IOException) and "lock" in text:
        return True
    if isinstance(exc, duckdb.ConnectionException) and "different configuration" in text:
        return True  # this process has the file open with other settings right now
    return isinstance(exc, duckdb.TransactionException) and "conflict" in text


def connect(path: Path, *, read_only: bool, config: dict[str, Any] | None = None,
            lock_timeout: float = 5.0) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + lock_timeout
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=dict(config or {}))
        except duckdb.Error as exc:
            if not is_busy_error(exc):
                raise ToolError(f"cannot open database {path.name}: {exc}") from exc
            if time.monotonic() + delay > deadline:
                raise ToolError(f"database {path.name} is busy (locked by another writer); "
                                "try again later") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
