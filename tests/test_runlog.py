"""The DuckDB run log: migrations, bad paths, sharing the file under a lock, batched writes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from agentctl.runlog import schema, store
from agentctl.runlog.writer import COLUMNS, LogWriter, utcnow
from tests.helpers import db_rows, first_line, run_inproc, write_accounts, write_spec

pytestmark = pytest.mark.timeout(20)

TABLES = {"runs", "items", "cells", "llm_calls", "tool_calls", "actions"}


def one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def mock_run(tmp_path: Path, *extra: str) -> str:
    res = run_inproc("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"),
                     write_accounts(tmp_path, 4), "--mock", *extra)
    assert res.exit_code == 0, res.output
    return first_line(res.stdout)


# --- schema -------------------------------------------------------------------------------

def test_migrations_create_the_schema_and_record_the_version(tmp_path):
    path = tmp_path / "fresh.duckdb"
    store.ensure_schema(path)
    tables = {r["table_name"] for r in db_rows(path, "SELECT table_name FROM information_schema.tables")}
    assert TABLES | {"agentctl_migrations"} <= tables
    latest = max(n for n, _, _ in schema.MIGRATIONS)
    recorded = db_rows(path, "SELECT version, name, applied_at FROM agentctl_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in recorded] == [(n, name) for n, name, _ in schema.MIGRATIONS]
    assert recorded[-1]["applied_at"] is not None

    # migrating again is a no-op that reports the same version
    import duckdb

    con = duckdb.connect(str(path))
    try:
        assert store.migrate(con) == latest
        assert con.execute("SELECT count(*) FROM agentctl_migrations").fetchone()[0] == len(schema.MIGRATIONS)
    finally:
        con.close()


def test_writer_columns_match_the_schema(tmp_path):
    """writer.COLUMNS is a second copy of the schema; this keeps the two from drifting."""
    path = tmp_path / "fresh.duckdb"
    store.ensure_schema(path)
    for table, cols in COLUMNS.items():
        actual = db_rows(path, "SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_name = ? ORDER BY ordinal_position", [table])
        assert [r["column_name"] for r in actual] == list(cols), table
        for r in actual:
            assert r["data_type"] == cols[r["column_name"]], (table, r)


# --- bad paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"this is a text file, not a database\n" * 4, b"hi\n"],
                         ids=["text", "tiny"])
def test_a_file_that_is_not_duckdb_is_refused(tmp_path, content):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(content)
    for args in (["runs", "--db", path], ["inspect", "last", "--db", path]):
        res = run_inproc(*args)
        assert res.exit_code == 2, res.output
        assert str(path) in one_line_error(res)
    res = run_inproc("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"), write_accounts(tmp_path, 2),
                     "--mock", "--db", path)
    assert res.exit_code == 2, res.output
    assert str(path) in one_line_error(res)
    assert path.read_bytes() == content  # never overwritten


def test_a_db_in_a_missing_folder_is_refused(tmp_path):
    path = tmp_path / "no" / "such" / "folder" / "log.duckdb"
    res = run_inproc("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"), write_accounts(tmp_path, 2),
                     "--mock", "--db", path)
    assert res.exit_code == 2, res.output
    assert "does not exist" in one_line_error(res)
    assert not (tmp_path / "no").exists()
    res = run_inproc("runs", "--db", path)
    assert res.exit_code == 2
    assert "no run log" in one_line_error(res)


def test_runs_on_an_empty_log_is_an_empty_list(tmp_path):
    store.ensure_schema(tmp_path / "agentctl.duckdb")
    res = run_inproc("runs", "--json")
    assert res.exit_code == 0 and res.stdout.strip() == "[]"


# --- sharing the file ---------------------------------------------------------------------

def test_inspect_waits_for_a_writer_in_this_process(tmp_path):
    run_id = mock_run(tmp_path)
    path = tmp_path / "agentctl.duckdb"
    holding = threading.Event()

    def hold() -> None:
        with store.connect(path):  # what the run's writer does while it flushes
            holding.set()
            time.sleep(1.0)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(5)
    t0 = time.monotonic()
    res = run_inproc("inspect", "last", "--json")
    waited = time.monotonic() - t0
    thread.join()
    assert res.exit_code == 0, res.output
    assert run_id in res.stdout
    assert waited > 0.5


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])          # a write connection: locks the file
    con.execute("SELECT count(*) FROM runs").fetchall()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def test_another_programs_duckdb_file_is_refused_and_left_alone(tmp_path, monkeypatch):
    path = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE runs (x INTEGER)")
    con.close()
    monkeypatch.setenv("AGENTCTL_DB", str(path))
    for args in (["runs"], ["inspect", "last"]):
        res = run_inproc(*args)
        assert res.exit_code == 2, res.output
        assert "not an agentctl run log" in one_line_error(res)
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    res = run_inproc("run", spec, write_accounts(tmp_path, 2), "--mock")
    assert res.exit_code == 2 and "not an agentctl run log" in res.stderr
    con = duckdb.connect(str(path), read_only=True)
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["runs"]
    con.close()


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_lock_wait_setting_is_one_line(tmp_path, monkeypatch, value):
    mock_run(tmp_path)
    monkeypatch.setenv("AGENTCTL_DB_LOCK_WAIT", value)
    res = run_inproc("runs")
    assert res.exit_code == 2, res.output
    assert "AGENTCTL_DB_LOCK_WAIT" in one_line_error(res)


def test_inspect_waits_for_another_process_holding_the_file(tmp_path, monkeypatch):
    run_id = mock_run(tmp_path)
    path = tmp_path / "agentctl.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # with a very short lock wait, the reader gives up with one line, not a traceback
        monkeypatch.setenv("AGENTCTL_DB_LOCK_WAIT", "0.2")
        res = run_inproc("inspect", "last", "--json")
        assert res.exit_code == 2, res.output
        assert "locked" in one_line_error(res)
        # with the default wait, it waits for the lock to go and succeeds
        monkeypatch.setenv("AGENTCTL_DB_LOCK_WAIT", "30")
        t0 = time.monotonic()
        res = run_inproc("inspect", "last", "--json")
        waited = time.monotonic() - t0
    finally:
        holder.wait(10)
    assert res.exit_code == 0, res.output
    assert run_id in res.stdout
    assert waited > 0.3


# --- the batched writer -------------------------------------------------------------------

def test_log_writer_batches_rows(tmp_path):
    path = tmp_path / "batch.duckdb"
    writer = LogWriter(path, interval=0.5).start()
    now = utcnow()
    writer.execute("INSERT INTO runs (run_id, pipeline, status, started_at) VALUES (?, ?, 'running', ?)",
                   ["r-1", "p", now])
    for i in range(1000):
        writer.add("cells", {"run_id": "r-1", "item_key": f"k{i:04d}", "stage_id": "s",
                             "status": "ok", "output": {"i": i, "text": "é ✓"}, "attempts": 1,
                             "input_tokens": i, "output_tokens": 1, "cost_usd": 0.001,
                             "started_at": now, "ended_at": now, "duration_ms": 1.5})
    writer.flush()
    # durable after flush(): another connection sees every row
    assert db_rows(path, "SELECT count(*) AS n FROM cells")[0]["n"] == 1000
    writer.execute("UPDATE runs SET status = 'completed' WHERE run_id = ?", ["r-1"])
    writer.close()
    assert writer.rows_written == 1000
    assert writer.flushes <= 4, writer.flushes  # batches, not a write per row
    rows = db_rows(path, "SELECT sum(input_tokens) AS t, min(item_key) AS lo, max(item_key) AS hi, "
                         "any_value(output) AS out FROM cells")[0]
    assert rows["t"] == sum(range(1000)) and (rows["lo"], rows["hi"]) == ("k0000", "k0999")
    assert "✓" in rows["out"]
    assert db_rows(path, "SELECT status FROM runs")[0]["status"] == "completed"


def test_log_writer_keeps_the_last_version_of_a_cell(tmp_path):
    """cells replace by key: a cell recorded twice in one batch (e.g. retried) keeps the last."""
    path = tmp_path / "replace.duckdb"
    writer = LogWriter(path, interval=5).start()
    for status in ("failed", "ok"):
        writer.add("cells", {"run_id": "r-1", "item_key": "a", "stage_id": "s", "status": status})
    writer.flush()
    writer.add("cells", {"run_id": "r-1", "item_key": "a", "stage_id": "s", "status": "skipped"})
    writer.close()
    assert db_rows(path, "SELECT status FROM cells") == [{"status": "skipped"}]


def test_log_writer_stores_an_oversized_value_truncated_not_a_failed_run(tmp_path):
    """A prompt far past any context window must not make DuckDB's JSON reader fail the run."""
    from agentctl.runlog.writer import MAX_VALUE_CHARS

    path = tmp_path / "big.duckdb"
    writer = LogWriter(path, interval=5).start()
    huge = "x" * (MAX_VALUE_CHARS + 10)
    writer.add("llm_calls", {"call_id": "c1", "run_id": "r-1", "status": "ok",
                             "request": {"messages": [{"role": "user", "content": huge}]}})
    writer.add("llm_calls", {"call_id": "c2", "run_id": "r-1", "status": "ok",
                             "request": {"messages": [{"role": "user", "content": "small"}]}})
    writer.close()
    rows = {r["call_id"]: r for r in db_rows(path, "SELECT call_id, request FROM llm_calls")}
    import json

    big = json.loads(rows["c1"]["request"])
    assert big["_truncated"] is True and big["chars"] > MAX_VALUE_CHARS
    assert json.loads(rows["c2"]["request"])["messages"][0]["content"] == "small"


def test_log_writer_reports_its_backlog(tmp_path):
    """The engine's backpressure reads this: rows handed over but not written yet."""
    path = tmp_path / "backlog.duckdb"
    writer = LogWriter(path, interval=30).start()
    for i in range(50):
        writer.add("cells", {"run_id": "r", "item_key": str(i), "stage_id": "s", "status": "ok"})
    deadline = time.monotonic() + 5
    while writer.backlog() != 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.backlog() == 50
    writer.flush()
    assert writer.backlog() == 0
    writer.close()


def test_log_writer_keeps_every_line_under_the_json_reader_limit(tmp_path):
    """Several large values in one row (request, response) still load: the row is shrunk."""
    import json

    from agentctl.runlog.writer import MAX_VALUE_CHARS

    path = tmp_path / "wide.duckdb"
    writer = LogWriter(path, interval=5).start()
    quoted = '"' * (MAX_VALUE_CHARS - 10)  # each quote doubles when the value is escaped
    writer.add("llm_calls", {"call_id": "c1", "run_id": "r-1", "status": "ok",
                             "request": {"content": quoted}, "response": {"content": quoted}})
    writer.close()
    (row,) = db_rows(path, "SELECT request, response FROM llm_calls")
    assert json.loads(row["request"])["_truncated"] and json.loads(row["response"])["_truncated"]


# --- a run log held by another process, and durable flushes -------------------------------

GRABBER = textwrap.dedent("""
    import sys, time, duckdb
    deadline = time.monotonic() + 30
    while True:                                # take the file between two of the run's writes
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    print("locked", con.execute("SELECT count(*) FROM llm_calls").fetchone()[0], flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def cell_row(key: str, status: str = "ok") -> dict:
    return {"run_id": "r-1", "item_key": key, "stage_id": "s", "status": status}


@pytest.mark.timeout(90)
def test_a_run_log_locked_past_the_lock_wait_mid_run_loses_no_row(tmp_path):
    """Another process holds the file for 3 s, six times AGENTCTL_DB_LOCK_WAIT, while a
    --mock run is writing: the batches that could not be written wait and land afterwards,
    so every cell and call of the run is in the log and the run ends `completed`."""
    from tests.helpers import popen_cli

    path = tmp_path / "agentctl.duckdb"
    n = 1500
    run = popen_cli("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"),
                    write_accounts(tmp_path, n), "--mock", env={"AGENTCTL_DB_LOCK_WAIT": "0.5"})
    holder = None
    try:
        run_id = run.stdout.readline().strip()  # printed once the run row is written
        holder = subprocess.Popen([sys.executable, "-c", GRABBER, str(path), "3"],
                                  stdout=subprocess.PIPE, text=True)
        word, logged_at_lock = holder.stdout.readline().split()
        assert word == "locked"
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        if holder is not None:
            holder.wait(30)
    assert run.returncode == 0, err
    (row,) = db_rows(path, "SELECT status, totals FROM runs WHERE run_id = ?", [run_id])
    import json

    calls = json.loads(row["totals"])["llm_calls"]
    assert int(logged_at_lock) < calls  # the lock was taken before the run had written it all
    assert row["status"] == "completed"
    assert db_rows(path, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ?", [run_id])[0]["n"] == calls
    cells = db_rows(path, "SELECT count(DISTINCT (item_key, stage_id)) AS n, "
                          "count(*) FILTER (WHERE status NOT IN ('ok', 'filtered')) AS bad "
                          "FROM cells WHERE run_id = ?", [run_id])[0]
    assert (cells["n"], cells["bad"]) == (n * 4, 0)
    assert db_rows(path, "SELECT count(*) AS n FROM items WHERE run_id = ?", [run_id])[0]["n"] == n


def writer_on_a_held_file(path: Path, monkeypatch, *, lock_wait: str, hold_s: float):
    """A LogWriter on `path` while another process holds the file for `hold_s` seconds."""
    monkeypatch.setenv("AGENTCTL_DB_LOCK_WAIT", lock_wait)
    writer = LogWriter(path, interval=0.1).start()
    holder = subprocess.Popen([sys.executable, "-c", GRABBER, str(path), str(hold_s)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().startswith("locked")
    return path, writer, holder


def test_log_writer_keeps_a_batch_it_could_not_write_and_lands_it_in_order(tmp_path, monkeypatch):
    """Rows handed over while the file is locked (0.2 s lock wait, held 2 s) stay queued in
    order: a durable flush waits for the lock to go instead of failing, and a cell recorded
    again after a failed attempt keeps its newer version."""
    path, writer, holder = writer_on_a_held_file(tmp_path / "held.duckdb", monkeypatch,
                                                 lock_wait="0.2", hold_s=2)
    try:
        for i in range(10):
            writer.add("cells", cell_row(f"k{i}", "failed"))
        time.sleep(0.6)  # a few attempts fail meanwhile
        for i in range(10):
            writer.add("cells", cell_row(f"k{i}"))
        writer.add("cells", cell_row("k10"))
        t0 = time.monotonic()
        writer.flush()  # waits for the lock to go, then writes everything
        waited = time.monotonic() - t0
    finally:
        holder.wait(30)
    writer.close()
    assert waited > 0.2
    assert writer.rows_written == 21
    rows = db_rows(path, "SELECT item_key, status FROM cells ORDER BY item_key")
    assert len(rows) == 11 and {r["status"] for r in rows} == {"ok"}


def test_log_writer_gives_up_at_the_end_of_a_run_and_says_what_was_not_written(tmp_path, monkeypatch):
    """A file locked for good: closing waits ten lock waits (2 s here, not the holder's 30 s),
    then says how many rows were not written and that `agentctl resume` redoes them."""
    from agentctl.errors import RunLogError

    monkeypatch.setenv("AGENTCTL_DB_LOCK_WAIT", "0.2")
    path = tmp_path / "stuck.duckdb"
    writer = LogWriter(path, interval=0.1).start()
    writer.add("cells", cell_row("written"))
    writer.flush()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for i in range(7):
            writer.add("cells", cell_row(f"lost{i}"))
        writer.execute("UPDATE runs SET status = 'completed' WHERE run_id = ?", ["r-1"])
        t0 = time.monotonic()
        with pytest.raises(RunLogError) as caught:
            writer.close()
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait(10)
    message = caught.value.one_line()
    assert "7 rows" in message and "agentctl resume" in message and "locked" in message
    assert 1.5 < waited < 15, waited
    assert db_rows(path, "SELECT item_key FROM cells") == [{"item_key": "written"}]


def test_log_writer_stops_admission_once_the_file_has_been_locked_too_long(tmp_path, monkeypatch):
    """Mid-run, a lock held past ten lock waits makes backlog() and a durable flush raise (the
    engine stops admitting accounts) instead of spending on work that cannot be logged; the
    rows stay queued and land if the lock goes before the end."""
    from agentctl.errors import RunLogError

    path, writer, holder = writer_on_a_held_file(tmp_path / "stuck.duckdb", monkeypatch,
                                                 lock_wait="0.1", hold_s=5)
    try:
        writer.add("cells", cell_row("a"))
        assert writer.backlog() == 1  # not stuck yet: rows wait
        with pytest.raises(RunLogError, match="1 rows? (is|are) waiting"):
            writer.flush()  # after 10 x 0.1 s
        with pytest.raises(RunLogError, match="locked"):
            writer.backlog()
    finally:
        holder.wait(30)
    writer.close()  # the lock went: everything lands
    assert db_rows(path, "SELECT item_key FROM cells") == [{"item_key": "a"}]


def test_concurrent_durable_flushes_share_writes(tmp_path):
    """Group commit: 40 actions flushing an intent and then a done row at the same time cost a
    handful of writes, not 80, and each flush returns with its row on disk, without waiting for
    the periodic write (30 s here)."""
    import asyncio

    path = tmp_path / "group.duckdb"
    writer = LogWriter(path, interval=30).start()
    missing: list[str] = []

    def on_disk(key: str, status: str) -> bool:
        with store.connect(path, read_only=True) as con:
            return con.execute("SELECT count(*) FROM actions WHERE idempotency_key = ? AND "
                               "status = ?", [key, status]).fetchone()[0] == 1

    async def action(i: int) -> None:
        key = f"act-{i}"
        for status in ("intent", "done"):
            writer.add("actions", {"idempotency_key": key, "run_id": "r-1", "item_key": str(i),
                                   "stage_id": "act", "tool": "send_email", "status": status,
                                   "created_at": utcnow()})
            await writer.aflush()
            if i % 10 == 0 and not await asyncio.to_thread(on_disk, key, status):
                missing.append(f"{key} {status}")

    async def main() -> float:
        t0 = time.monotonic()
        await asyncio.gather(*(action(i) for i in range(40)))
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    writer.close()
    assert missing == []
    assert writer.flushes <= 16, writer.flushes  # one write per request: 80 (34-41 with the old thread pool)
    assert elapsed < 15, elapsed
    assert db_rows(path, "SELECT count(*) AS n FROM actions WHERE status = 'done'")[0]["n"] == 40


# --- inspect's answers ---------------------------------------------------------------------

def _failed_cells(path: Path, failures: list[tuple[str, str]]) -> str:
    """A run whose cells (key, error) failed at stage s1, written through the recorder."""
    from agentctl.runlog.recorder import RunRecorder

    rec = RunRecorder(path, "r-test").open()
    rec.start_run(pipeline="p", spec_path="p.yaml", spec_text="", spec_sha256="", prompts={},
                  input_path="a.csv", input_sha256="", input_rows=len(failures), args={},
                  mock=True, version="test")
    for seq, (key, error) in enumerate(failures):
        rec.item({"run_id": "r-test", "item_key": key, "seq": seq, "data": {}, "status": "failed"})
        rec.cell({"run_id": "r-test", "item_key": key, "stage_id": "s1", "status": "failed",
                  "error_type": "OutputInvalid", "error": error, "attempts": 1})
    rec.finish_run("completed_with_errors", {})
    rec.close()
    return "r-test"


def test_top_errors_group_by_error_and_keep_its_text_whatever_the_keys(tmp_path):
    """Account keys in an error are written <account> so one error is one group, but only a
    whole key of 3+ characters that is not a number: keys '0'..'9' or 'a' used to be replaced
    inside the words and digits of every error ("output inv<account>lid")."""
    from agentctl.runlog.queries import inspect_run

    same = "output invalid after 0 repair(s): score: field required"
    keys = [str(i) for i in range(10)] + ["a", "ACC-001", "ACC-002"]
    run_id = _failed_cells(tmp_path / "log.duckdb", [(k, same) for k in keys[:11]] + [
        ("ACC-001", "no CRM row for ACC-001."), ("ACC-002", "no CRM row for ACC-002.")])
    errors = inspect_run(tmp_path / "log.duckdb", run_id)["top_errors"]
    assert [(e["error"], e["count"]) for e in errors] == [
        (same, 11), ("no CRM row for <account>.", 2)]


def test_a_stage_drill_down_says_when_it_shows_only_part_and_shows_failures_first(tmp_path):
    from agentctl.runlog.queries import DETAIL_ROWS, inspect_run

    failures = [(f"A{i:04d}", "boom") for i in range(DETAIL_ROWS + 20)]
    run_id = _failed_cells(tmp_path / "log.duckdb", failures)
    detail = inspect_run(tmp_path / "log.duckdb", run_id, stage="s1")["detail"]
    assert detail["totals"]["cells"] == DETAIL_ROWS + 20 and detail["truncated"]
    assert len(detail["cells"]) == DETAIL_ROWS
    res = run_inproc("inspect", run_id, "--stage", "s1", "--db", str(tmp_path / "log.duckdb"))
    assert res.exit_code == 0, res.output
    assert f"showing {DETAIL_ROWS} of {DETAIL_ROWS + 20} cells" in " ".join(res.stdout.split())


def test_a_run_starts_when_its_id_was_made_not_when_the_log_let_it_write(tmp_path, monkeypatch):
    """A run that waited for another process's lock was recorded as starting after it, so
    `runs`, `last` and the run ids disagreed on the order."""
    from agentctl.runlog import recorder

    db = tmp_path / "agentctl.duckdb"
    real_start = recorder.RunRecorder.start_run

    def after_a_lock_wait(self, **kw):
        time.sleep(1.2)
        return real_start(self, **kw)

    monkeypatch.setattr(recorder.RunRecorder, "start_run", after_a_lock_wait)
    run_id = mock_run(tmp_path)
    (row,) = db_rows(db, "SELECT started_at FROM runs")
    assert row["started_at"].strftime("r-%Y%m%d-%H%M%S") == run_id[:17]
