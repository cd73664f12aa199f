"""Opening the DuckDB run log: path resolution, lock-aware connections, migrations.

DuckDB lets one process write a file, and while it holds the file no other process can open
it, not even read-only. So nobody holds it for long: the run's writer opens a connection only
to flush a batch (tens of milliseconds, about once a second) and closes it; readers (`runs`, `inspect`, a second
`run`) open, query and close. Whoever finds the file locked waits and tries again, with a
bounded, jittered backoff. That is what lets cron jobs, people and live runs share one file.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from agentctl.errors import ConfigError, RunLogError
from agentctl.runlog.schema import MIGRATIONS

DEFAULT_DB = "agentctl.duckdb"
def _lock_wait_s() -> float:
    raw = os.environ.get("AGENTCTL_DB_LOCK_WAIT", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise ConfigError(f"AGENTCTL_DB_LOCK_WAIT must be a number of seconds, got {raw!r}; "
                          "unset it or set e.g. AGENTCTL_DB_LOCK_WAIT=60")
    return value


ROW_GROUP_SIZE = 4096
_migrated: set[str] = set()
_ours: set[str] = set()  # files seen to be run logs (or empty)
_process_lock = threading.RLock()  # one connection per file per process at a time


def resolve_db_path(cli_value: str | None) -> Path:
    raw = cli_value or os.environ.get("AGENTCTL_DB") or DEFAULT_DB
    return Path(raw).expanduser().resolve()


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text or "lock on file" in text


def check_file(path: Path, *, for_write: bool) -> None:
    if path.is_dir():
        raise ConfigError(f"run log {path} is a directory; pass a file path with --db or AGENTCTL_DB")
    if path.exists():
        with open(path, "rb") as fh:
            head = fh.read(16)
        if len(head) >= 12 and head[8:12] != b"DUCK":
            raise ConfigError(f"run log {path} is not a DuckDB database; "
                              "point --db / AGENTCTL_DB at another file")
        if for_write and not os.access(path, os.W_OK):
            raise ConfigError(f"run log {path} is not writable; fix its permissions or pass --db")
    elif for_write:
        parent = path.parent
        if not parent.exists():
            raise ConfigError(f"cannot create run log {path}: folder {parent} does not exist; "
                              "create it or pass another --db")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"cannot create run log {path}: folder {parent} is not writable; "
                              "pass --db with a writable path")


@contextlib.contextmanager
def connect(path: Path, *, read_only: bool = False, wait_s: float | None = None) -> Iterator[Any]:
    """Open the run log, waiting (bounded) while another process holds it."""
    import duckdb

    check_file(path, for_write=not read_only)
    if read_only and not path.exists():
        raise ConfigError(f"no run log at {path}; run a pipeline first or pass --db / AGENTCTL_DB")
    lock_wait = _lock_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + lock_wait
    delay = 0.01
    with _process_lock:
        while True:
            try:
                con = _open(duckdb, path, read_only)
                break
            except duckdb.Error as exc:
                if _is_lock_error(exc) and time.monotonic() < deadline:
                    time.sleep(random.uniform(0, delay) + 0.005)
                    delay = min(delay * 2, 0.25)
                    continue
                if _is_lock_error(exc):
                    raise RunLogError(f"run log {path} stayed locked by another process for "
                                      f"{lock_wait:g}s; try again, or set AGENTCTL_DB_LOCK_WAIT") from exc
                raise RunLogError(f"cannot open run log {path}: {exc}") from exc
        try:
            if str(path) not in _ours:  # once per file: the writer opens it for every batch
                _check_ours(con, path)
                _ours.add(str(path))
            if not read_only and str(path) not in _migrated:
                migrate(con)
                _migrated.add(str(path))
            yield con
        finally:
            con.close()


def _open(duckdb: Any, path: Path, read_only: bool) -> Any:
    """The file attached to an in-memory session, with small row groups: DuckDB rewrites a
    table's last, partly filled row group at every checkpoint (every close), so with the
    default 122,880-row groups of large JSON requests a writer's memory would grow with the
    log for the first hundred thousand calls. Too small costs too: the flush spikes grow
    with the number of groups (per-group metadata read at every open, I believe; not
    confirmed inside DuckDB). 4,096-row groups keep a `--mock` run's peak at ~200 MB for
    10,000 accounts and ~218 MB for 100,000 (2,048: 168 and 200, a growth of 10-20%; 8,192
    spiked by ~60 MB whenever a group of requests filled up and was compressed)."""
    con = duckdb.connect(":memory:")
    try:
        quoted = str(path).replace("'", "''")
        options = "READ_ONLY" if read_only else f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}"
        con.execute(f"ATTACH '{quoted}' AS runlog ({options})")
        con.execute("USE runlog")
        if not read_only:  # the writer's batches are small; one thread leaves the CPU to the run
            con.execute("SET threads = 1")
    except BaseException:
        con.close()
        raise
    return con


def _check_ours(con, path: Path) -> None:
    """A DuckDB file with tables but no agentctl migrations is someone else's: never touch it."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'runlog'").fetchall()}
    if tables and "agentctl_migrations" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(f"{path} is a DuckDB database of something else (tables: {shown}), "
                          "not an agentctl run log; pass --db (or set AGENTCTL_DB) to a new "
                          "file or to a run log")


def migrate(con) -> int:
    """Apply pending migrations; returns the schema version."""
    con.execute("""CREATE TABLE IF NOT EXISTS agentctl_migrations (
        version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP DEFAULT now())""")
    done = {row[0] for row in con.execute("SELECT version FROM agentctl_migrations").fetchall()}
    version = max(done, default=0)
    for number, name, sql in MIGRATIONS:
        if number in done:
            continue
        con.execute("BEGIN")
        try:
            con.execute(sql)
            con.execute("INSERT INTO agentctl_migrations (version, name) VALUES (?, ?)", [number, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        version = number
    return version


def ensure_schema(path: Path) -> None:
    with connect(path) as _:
        pass


def has_schema(con) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'runlog' "
        "AND table_name = 'agentctl_migrations'").fetchone()
    return bool(rows and rows[0])
