"""The one writer: workers hand it rows, a thread flushes them to DuckDB in batches.

Rows are appended as NDJSON to a temp file and loaded with one `read_json` per table per
flush (~50x faster than row-by-row inserts). The connection is held only while flushing, so
other processes can read or write the same file between flushes (see store.py). A batch that
finds the file locked by another process stays queued and is retried, so no row is lost to a
lock. Durable flushes are group commits: every request waiting when a write starts shares it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from agentctl.errors import RunLogError
from agentctl.runlog import store
from agentctl.text import valid_text

# Column order and DuckDB types of each appendable table (must match schema.py).
COLUMNS: dict[str, dict[str, str]] = {
    "items": {"run_id": "VARCHAR", "item_key": "VARCHAR", "seq": "INTEGER", "input": "JSON"},
    "cells": {
        "run_id": "VARCHAR", "item_key": "VARCHAR", "stage_id": "VARCHAR", "status": "VARCHAR",
        "output": "JSON", "error": "VARCHAR", "error_type": "VARCHAR", "attempts": "INTEGER",
        "input_tokens": "BIGINT", "output_tokens": "BIGINT", "cost_usd": "DOUBLE",
        "started_at": "TIMESTAMP", "ended_at": "TIMESTAMP", "duration_ms": "DOUBLE",
    },
    "llm_calls": {
        "call_id": "VARCHAR", "run_id": "VARCHAR", "item_key": "VARCHAR", "stage_id": "VARCHAR",
        "agent": "VARCHAR", "alias": "VARCHAR", "model": "VARCHAR", "attempt": "INTEGER",
        "purpose": "VARCHAR", "request": "JSON", "response": "JSON", "status": "VARCHAR",
        "error": "VARCHAR", "error_type": "VARCHAR", "input_tokens": "BIGINT",
        "output_tokens": "BIGINT", "cost_usd": "DOUBLE", "latency_ms": "DOUBLE",
        "wait_ms": "DOUBLE", "cache_hit": "BOOLEAN", "started_at": "TIMESTAMP",
        "request_hash": "VARCHAR", "span_id": "VARCHAR",
    },
    "tool_calls": {
        "tool_call_id": "VARCHAR", "run_id": "VARCHAR", "item_key": "VARCHAR",
        "stage_id": "VARCHAR", "agent": "VARCHAR", "llm_call_id": "VARCHAR", "tool": "VARCHAR",
        "arguments": "JSON", "result": "VARCHAR", "result_chars": "INTEGER", "status": "VARCHAR",
        "error": "VARCHAR", "duration_ms": "DOUBLE", "idempotency_key": "VARCHAR",
        "started_at": "TIMESTAMP", "span_id": "VARCHAR", "child_span_id": "VARCHAR",
    },
    "spans": {
        "span_id": "VARCHAR", "run_id": "VARCHAR", "item_key": "VARCHAR", "stage_id": "VARCHAR",
        "parent_span_id": "VARCHAR", "agent": "VARCHAR", "role": "VARCHAR", "depth": "INTEGER",
        "round": "INTEGER", "task": "VARCHAR", "status": "VARCHAR", "output": "JSON",
        "error": "VARCHAR", "error_type": "VARCHAR", "attempts": "INTEGER",
        "input_tokens": "BIGINT", "output_tokens": "BIGINT", "cost_usd": "DOUBLE",
        "started_at": "TIMESTAMP", "ended_at": "TIMESTAMP", "duration_ms": "DOUBLE",
    },
    "run_outputs": {
        "run_id": "VARCHAR", "stage_id": "VARCHAR", "status": "VARCHAR", "output": "JSON",
        "error": "VARCHAR", "error_type": "VARCHAR", "items": "INTEGER", "attempts": "INTEGER",
        "input_tokens": "BIGINT", "output_tokens": "BIGINT", "cost_usd": "DOUBLE",
        "started_at": "TIMESTAMP", "ended_at": "TIMESTAMP", "duration_ms": "DOUBLE",
    },
    "actions": {
        "idempotency_key": "VARCHAR", "run_id": "VARCHAR", "item_key": "VARCHAR",
        "stage_id": "VARCHAR", "tool": "VARCHAR", "arguments": "JSON", "status": "VARCHAR",
        "result": "JSON", "error": "VARCHAR", "decided_by": "VARCHAR", "decided_at": "TIMESTAMP",
        "decision_note": "VARCHAR", "created_at": "TIMESTAMP", "done_at": "TIMESTAMP",
    },
}
# One NDJSON line may be at most this big: DuckDB's JSON reader sizes its buffers by it (a
# 256 MB setting cost hundreds of MB per flush). A JSON value past MAX_VALUE_CHARS (a prompt
# of millions of characters, past any model's context) is stored truncated, with its size;
# a line that could still exceed the limit has every large JSON value truncated.
MAX_OBJECT_BYTES = 16 * 1024 * 1024
MAX_VALUE_CHARS = 4 * 1024 * 1024

# Rows that are final states with a key: a newer row replaces the old one. The small tables
# keep a primary key (INSERT OR REPLACE); the big ones are append-only logs read through a
# view where the newest `version` wins (migration 4), so no index grows with the log.
REPLACING = {"cells": ("run_id", "item_key", "stage_id"), "actions": ("idempotency_key",),
             "items": ("run_id", "item_key"), "spans": ("span_id",),
             "run_outputs": ("run_id", "stage_id")}
LOGGED = {"cells": "cell_log", "items": "item_log", "spans": "span_log"}  # view -> its log
JSON_COLUMNS = {t: {c for c, ty in cols.items() if ty == "JSON"} for t, cols in COLUMNS.items()}


def _truncated(text: str, keep: int) -> str:
    """A JSON value too big to log, replaced by its size and its first `keep` characters."""
    return json.dumps({"_truncated": True, "chars": len(text), "head": text[:keep]},
                      ensure_ascii=False)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat(sep=" ")
    return str(o)


# How long the writer keeps trying while another process holds the file, in lock waits
# (AGENTCTL_DB_LOCK_WAIT, 60 s by default, so 10 minutes): until then nothing is dropped and
# durable flushes wait; after it, the run is stopped and the end of the run gives up.
GIVE_UP_LOCK_WAITS = 10

Waiter = Callable[[str | None], None]  # told None once its rows are on disk, else why not


@dataclass
class _Batch:
    rows: dict[str, list[dict]] = field(default_factory=dict)
    statements: list[tuple[str, list]] = field(default_factory=list)
    latest: dict[str, tuple[str, list]] = field(default_factory=dict)  # key -> newest statement
    waiters: list[Waiter] = field(default_factory=list)
    count: int = 0  # rows

    def empty(self) -> bool:
        return not self.rows and not self.statements and not self.latest

    def wake(self, error: str | None) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake(error)


class _StillLocked(Exception):
    """The writer gave up: another process held the file for `held` seconds."""

    def __init__(self, held: float):
        super().__init__(f"locked by another process for {_secs(held)}")
        self.held = held


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def _is_locked(exc: BaseException) -> bool:
    """store.connect gave up waiting for another process's lock (nothing was written)."""
    cause = exc.__cause__
    return isinstance(exc, RunLogError) and isinstance(cause, Exception) and store._is_lock_error(cause)


class LogWriter:
    """Thread-backed batched writer. Call ``start()``, ``add()``/``execute()`` from anywhere,
    ``flush()``/``aflush()`` to force a durable write, ``close()`` at the end (flushes).

    A batch that cannot be written because another process holds the file stays queued, with
    later rows appended behind it, and is retried every cycle; it lands once the lock goes.
    Only a lock held for GIVE_UP_LOCK_WAITS lock waits in a row gives up (see `_stuck`)."""

    def __init__(self, path: Path, *, interval: float = 0.5, max_rows: int = 5000):
        self.path = path
        self.interval = interval
        self.max_rows = max_rows
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self.flushes = 0
        self.rows_written = 0
        self.rows_lost = 0   # dropped after the writer gave up
        self._in_batch = 0   # rows taken off the queue into the batch being built or written
        self._version = 0
        self._give_up_s = 0.0
        self._locked_since: float | None = None  # start of the current run of failed attempts
        self._retry_at = 0.0

    # -- producer side ---------------------------------------------------------------------
    def start(self) -> "LogWriter":
        store.ensure_schema(self.path)
        self._give_up_s = GIVE_UP_LOCK_WAITS * store._lock_wait_s()
        self._thread = threading.Thread(target=self._loop, name="agentctl-runlog", daemon=True)
        self._thread.start()
        return self

    def add(self, table: str, row: dict) -> None:
        self._raise_if_failed()
        self._q.put(("row", table, row))

    def backlog(self) -> int:
        """Rows handed over but not yet written: the engine stops admitting accounts while
        this is high, so a fast producer (the mock model) cannot outrun the disk and grow
        memory with the input. Raises once the file has been locked for too long, which stops
        the run instead of spending on work that may never be logged."""
        self._raise_if_failed()
        if self._stuck():
            raise RunLogError(self._stuck_message())
        return self._q.qsize() + self._in_batch

    def execute(self, sql: str, params: list | None = None) -> None:
        """Queue a statement (e.g. an UPDATE of the run row); runs in order with the rows."""
        self._raise_if_failed()
        self._q.put(("sql", sql, params or []))

    def execute_latest(self, key: str, sql: str, params: list | None = None) -> None:
        """Queue a statement that only matters in its newest version (a heartbeat): it rides
        with the next flush instead of forcing one, and replaces an unflushed older one."""
        self._raise_if_failed()
        self._q.put(("latest", key, (sql, params or [])))

    def flush(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is in the database."""
        self._raise_if_failed()
        done = threading.Event()
        answer: list[str | None] = []

        def wake(error: str | None) -> None:
            answer.append(error)
            done.set()

        self._q.put(("flush", wake, None))
        if not done.wait(timeout):
            raise RunLogError(f"run log {self.path}: flush did not finish in {timeout}s")
        self._raise_if_failed()
        if answer[0] is not None:
            raise RunLogError(answer[0])

    async def aflush(self) -> None:
        """flush() for a coroutine: it waits on a future, not on a worker thread, so any
        number of concurrent actions can wait for (and share) the same write."""
        self._raise_if_failed()
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(error: str | None) -> None:
            if not future.done():  # a cancelled waiter (Ctrl-C) is gone
                future.set_result(error)

        def wake(error: str | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, error)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        self._q.put(("flush", wake, None))
        error = await future
        self._raise_if_failed()
        if error is not None:
            raise RunLogError(error)

    def close(self) -> None:
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._q.put(("stop", None, None))
        self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RunLogError(self._failure()) from self._error

    def _failure(self) -> str:
        """Why nothing more is written, and what was lost."""
        if isinstance(self._error, _StillLocked):
            return (f"run log {self.path} stayed locked by another process for "
                    f"{_secs(self._error.held)}, so the last {self.rows_lost} rows of this run were "
                    "not written; `agentctl resume` on this run redoes their work once the file "
                    "is free (close the program holding it, or raise AGENTCTL_DB_LOCK_WAIT)")
        lost = (f"; {self.rows_lost} rows of this run were not written (`agentctl resume` on "
                "this run redoes their work)") if self.rows_lost else ""
        return f"writing the run log {self.path} failed: {self._error}{lost}"

    def _stuck(self) -> bool:
        """The file has been locked by another process for the whole give-up time."""
        since = self._locked_since
        return since is not None and time.monotonic() - since >= self._give_up_s

    def _stuck_message(self) -> str:
        waiting = self._q.qsize() + self._in_batch
        held = time.monotonic() - (self._locked_since or time.monotonic())
        return (f"run log {self.path} has been locked by another process for {_secs(held)} and "
                f"{waiting} {'row is' if waiting == 1 else 'rows are'} waiting to be written; "
                "close the program holding the file (e.g. a DuckDB session), or raise "
                "AGENTCTL_DB_LOCK_WAIT")

    # -- writer thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        batch = _Batch()
        next_write = time.monotonic() + self.interval
        stopping = False
        while True:
            try:
                msg = self._q.get(timeout=max(0.0, self._write_at(batch, next_write, stopping)
                                              - time.monotonic()))
            except queue.Empty:
                msg = None
            # Group commit: take everything queued by now, so every durable flush waiting at
            # this moment shares one write; those that come during the write share the next.
            while msg is not None:
                stopping = self._take(batch, msg) or stopping
                if batch.count >= self.max_rows:
                    break
                try:
                    msg = self._q.get_nowait()
                except queue.Empty:
                    msg = None
            if time.monotonic() < self._write_at(batch, next_write, stopping):
                continue
            if self._write(batch, final=stopping):
                batch = _Batch()
                if stopping:
                    return
            next_write = time.monotonic() + self.interval

    def _write_at(self, batch: _Batch, next_write: float, stopping: bool) -> float:
        """When the batch should be written: at once for a flush, a stop or a full batch,
        else at the periodic time; after a failed attempt, not before a short pause (with a
        lock wait of 0, retrying at once would spin)."""
        urgent = stopping or batch.waiters or batch.count >= self.max_rows
        at = 0.0 if urgent else next_write
        return max(at, self._retry_at) if self._locked_since is not None else at

    def _take(self, batch: _Batch, msg: tuple) -> bool:
        """Add one queued message to the batch; True for the stop message."""
        kind, a, b = msg
        if kind == "row":
            batch.rows.setdefault(a, []).append(b)
            batch.count += 1
            self._in_batch += 1
        elif kind == "sql":  # runs after every row queued before it, in the same transaction
            batch.statements.append((a, b))
        elif kind == "latest":
            batch.latest[a] = b
        elif kind == "flush":
            batch.waiters.append(a)
        return kind == "stop"

    def _write(self, batch: _Batch, *, final: bool) -> bool:
        """Write the batch; False when it stays queued because another process holds the file."""
        if batch.empty():
            batch.wake(None)
            return True
        if self._error is not None:  # an earlier write failed for good: nothing more lands
            self._drop(batch)
            return True
        attempt = time.monotonic()
        try:
            self._write_batch(batch)
        except BaseException as exc:  # recorded, re-raised to producers
            if not _is_locked(exc):
                self._error = exc
                self._drop(batch)
                return True
            if self._locked_since is None:
                self._locked_since = attempt
            self._retry_at = time.monotonic() + min(self.interval, 1.0)
            if self._stuck():
                if final:
                    self._give_up(batch)
                    return True
                batch.wake(self._stuck_message())  # the rows stay queued
            return False
        self._locked_since = None
        self._in_batch -= batch.count
        batch.wake(None)
        return True

    def _drop(self, batch: _Batch) -> None:
        self.rows_lost += batch.count
        self._in_batch -= batch.count
        batch.wake(self._failure())

    def _give_up(self, batch: _Batch) -> None:
        """The end of the run, and the file is still locked: say what is lost and how to get it
        back. The run row still says `running`, but its pid is gone, so `runs` shows it as
        stale and `resume` takes it up."""
        self._error = _StillLocked(time.monotonic() - (self._locked_since or time.monotonic()))
        self._drop(batch)

    def _write_batch(self, batch: _Batch) -> None:
        files: list[str] = []
        try:
            with store.connect(self.path) as con:
                con.execute("BEGIN")
                for table, rows in batch.rows.items():
                    files.append(self._load(con, table, rows))
                for sql, params in [*batch.latest.values(), *batch.statements]:
                    con.execute(sql, [valid_text(p) if isinstance(p, str) and not p.isascii() else p
                                      for p in params])
                con.execute("COMMIT")
            self.flushes += 1
            self.rows_written += batch.count
        finally:
            for f in files:
                try:
                    os.remove(f)
                except OSError:
                    pass

    def _next_version(self) -> int:
        """Increasing within this process even if the clock steps back; a later process (a
        resume) writes later versions."""
        self._version = max(self._version + 1, time.time_ns())
        return self._version

    def _load(self, con, table: str, rows: list[dict]) -> str:
        cols = COLUMNS[table]
        if table in REPLACING:  # one command cannot replace the same row twice: keep the last
            pk = REPLACING[table]
            rows = list({tuple(r.get(c) for c in pk): r for r in rows}.values())
        json_cols = JSON_COLUMNS[table]
        fd, tmp = tempfile.mkstemp(prefix=f"agentctl-{table}-", suffix=".jsonl")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for row in rows:
                out = {}
                for c in cols:
                    v = row.get(c)
                    if c in json_cols and v is not None:
                        v = json.dumps(v, default=_default, ensure_ascii=False)
                        if len(v) > MAX_VALUE_CHARS:  # see MAX_OBJECT_BYTES
                            v = _truncated(v, MAX_VALUE_CHARS // 4)
                    out[c] = v
                line = json.dumps(out, default=_default, ensure_ascii=False)
                if len(line) * 4 > MAX_OBJECT_BYTES:  # UTF-8 worst case: shrink every JSON value
                    for c in json_cols:
                        if out.get(c) is not None and len(out[c]) > 4096:
                            out[c] = _truncated(out[c], 4096)
                    line = json.dumps(out, default=_default, ensure_ascii=False)
                try:
                    fh.write(line)
                except UnicodeEncodeError:  # an unpaired surrogate (a model's "\ud83d" alone)
                    fh.write(valid_text(line))
                fh.write("\n")
        # JSON columns travel as strings and are cast on insert.
        read_types = ", ".join(f"{c}: '{'VARCHAR' if t == 'JSON' else t}'" for c, t in cols.items())
        select = ", ".join(c for c in cols)
        source = (f"read_json(?, format='newline_delimited', columns={{{read_types}}}, "
                  f"maximum_object_size={MAX_OBJECT_BYTES})")
        if table in LOGGED:  # a new version; the view shows the newest
            con.execute(f"INSERT INTO {LOGGED[table]} ({select}, version) SELECT {select}, ? "
                        f"FROM {source}", [self._next_version(), tmp])
        else:
            verb = "INSERT OR REPLACE" if table in REPLACING else "INSERT"
            con.execute(f"{verb} INTO {table} ({select}) SELECT {select} FROM {source}", [tmp])
        return tmp
