"""Crash, resume and retry, measured at the fake server and in the run log.

A run is SIGKILLed (a real process, so nothing gets to clean up), then resumed: the log must
open, the final outputs must equal an uninterrupted run's (the fake model answers from the
request content, so equal requests get equal answers), and no cell that finished before the
kill may reach the server again. `retry` re-runs failed cells inside the same run.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from agentctl.runlog import store
from tests.fakes.llm_server import FakeLLM, Reply
from tests.helpers import (account_id, cell_counts, db_rows, default_stages, first_line,
                           popen_cli, run_inproc, run_status, stage_of, write_accounts,
                           write_spec)

pytestmark = pytest.mark.timeout(40)

N = 20


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def outputs(db: Path, run_id: str) -> dict[tuple[str, str], tuple[str, dict | None]]:
    """(item, stage) -> (status, output) for every cell of the run. Read through the store's
    lock-aware connect: another process may be writing the file right now."""
    with store.connect(db, read_only=True) as con:
        rows = con.execute("SELECT item_key, stage_id, status, output FROM cells "
                           "WHERE run_id = ?", [run_id]).fetchall()
    return {(item, stage): (status, json.loads(output) if output else None)
            for item, stage, status, output in rows}


CELL = re.compile(r"\[\[item:([^\]]+)\]\] \[\[stage:([\w-]+)\]\]")


def cell_of(request: dict) -> tuple[str, str]:
    """(item, stage) of a server request, from the markers of its first prompt (a repair
    request ends with the repair instruction, so look at every message)."""
    found = CELL.search(json.dumps(request["messages"]))
    assert found, request["messages"]
    return found.group(1), found.group(2)


def reference_outputs(tmp_path: Path, accounts: Path, db: Path) -> dict:
    """The same pipeline, uninterrupted, against a server of its own (the answers depend only
    on the request content, so any server gives the same ones)."""
    with FakeLLM() as other:
        spec = write_spec(tmp_path, other.base_url, stages=default_stages(top=3),
                          name="reference.yaml")
        res = run_inproc("run", spec, accounts)
    assert res.exit_code == 0, res.output
    expected = outputs(db, first_line(res.stdout))
    assert len(expected) == 4 * N
    return expected


def kill_when(proc, ready, what: str, timeout: float = 25) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"never reached: {what}"
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no handler, no final flush
        proc.wait(timeout=10)


def crash_and_resume(llm, tmp_path: Path, db: Path, ready, what: str, *,
                     edit_spec: bool = False) -> None:
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=3), concurrency=4)
    accounts = write_accounts(tmp_path, N)
    llm.latency = 0.1
    proc = popen_cli("run", spec, accounts)
    try:
        expected = reference_outputs(tmp_path, accounts, db)  # while the process starts up
        run_id = proc.stdout.readline().strip()  # printed as soon as the run row exists
        kill_when(proc, lambda: ready(llm), what)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # the log opens cleanly and tells the truth: running, but nobody is running it
    view = run_inproc("inspect", run_id, "--json")
    assert view.exit_code == 0, view.output
    view = json.loads(view.stdout)
    assert view["status"] == "running" and view["stale"] is True
    assert run_status(db, run_id) == "running"
    done_before = {k for k, (status, _) in outputs(db, run_id).items() if status == "ok"}
    agent_done = {k for k in done_before if k[1] != "select"}
    assert agent_done, "nothing was logged before the kill"
    assert len(agent_done) < 2 * N + 3
    sent_before = len(llm.requests)

    if edit_spec:
        spec.write_text(spec.read_text().replace("Research {{", "Investigate {{"))
    res = run_inproc("resume", run_id)

    assert res.exit_code == 0, res.output
    assert first_line(res.stdout) == run_id
    assert run_status(db, run_id) == "completed"
    assert outputs(db, run_id) == expected
    resent = [cell_of(r) for r in llm.requests[sent_before:]]
    assert resent, "resume sent nothing"
    assert not set(resent) & agent_done, sorted(set(resent) & agent_done)
    assert all(n == 1 for n in Counter(resent).values()), Counter(resent)
    if edit_spec:
        assert "changed since the run started" in res.stderr and "stored spec" in res.stderr
        assert not any("Investigate" in json.dumps(r["messages"]) for r in llm.requests)
    # and resuming again finds nothing left to do
    sent = len(llm.requests)
    res = run_inproc("resume", run_id)
    assert res.exit_code == 0, res.output
    assert len(llm.requests) == sent


def logged_ok_cells(db: Path) -> int:
    """Agent cells the crashing run (not the reference run beside it, which uses
    reference.yaml) has flushed to the log so far (0 while a writer holds the file)."""
    try:
        return db_rows(db, "SELECT count(*) AS n FROM cells WHERE status = 'ok' "
                           "AND stage_id <> 'select' AND run_id IN (SELECT run_id FROM runs "
                           "WHERE spec_path LIKE '%pipeline.yaml')")[0]["n"]
    except Exception:
        return 0


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(llm, tmp_path, db):
    # kill once 20 requests were answered and the writer has flushed some of their cells
    crash_and_resume(llm, tmp_path, db,
                     lambda srv: srv.count(_status=200) >= 20 and logged_ok_cells(db) > 0,
                     "20 answered requests, some cells logged")


def test_sigkill_after_select_then_resume_with_the_stored_spec(llm, tmp_path, db):
    crash_and_resume(llm, tmp_path, db,
                     lambda srv: any(stage_of(r) == "write" for r in list(srv.requests)),
                     "the first write request", edit_spec=True)


# --- retry --------------------------------------------------------------------------------

def never_valid(*cells: tuple[str, str]):
    """A responder whose replies for the given (item, stage) cells never parse."""
    def responder(body: dict) -> Reply | None:
        return Reply(content="not json") if cell_of(body) in cells else None
    return responder


def test_retry_failed_reruns_the_failed_cell_and_its_downstream(llm, tmp_path, db):
    target = account_id(2)
    llm.responder = never_valid((target, "score"))
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=10))  # select keeps all
    res = run_inproc("run", spec, write_accounts(tmp_path, 6))
    assert res.exit_code == 1, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {
        "research": {"ok": 6}, "score": {"ok": 5, "failed": 1},
        "select": {"ok": 5, "skipped": 1}, "write": {"ok": 5, "skipped": 1}}
    before = db_rows(db, "SELECT call_id FROM llm_calls WHERE run_id = ?", [run_id])
    sent = len(llm.requests)

    llm.responder = None  # the model behaves now
    res = run_inproc("retry", run_id, "--failed")

    assert res.exit_code == 0, res.output
    assert first_line(res.stdout) == run_id
    assert run_status(db, run_id) == "completed"
    assert db_rows(db, "SELECT count(*) AS n FROM runs")[0]["n"] == 1  # same run, no new one
    assert Counter(cell_of(r) for r in llm.requests[sent:]) == {(target, "score"): 1,
                                                                 (target, "write"): 1}
    assert cell_counts(db, run_id) == {"research": {"ok": 6}, "score": {"ok": 6},
                                       "select": {"ok": 6}, "write": {"ok": 6}}
    # the failed attempts stay in the log, followed by the new one
    rows = db_rows(db, "SELECT call_id, status FROM llm_calls WHERE run_id = ? AND item_key = ? "
                       "AND stage_id = 'score' ORDER BY started_at", [run_id, target])
    assert [r["status"] for r in rows] == ["invalid"] * 3 + ["ok"]
    after = {r["call_id"] for r in db_rows(db, "SELECT call_id FROM llm_calls")}
    assert {r["call_id"] for r in before} <= after and len(after) == len(before) + 2
    # the run's totals are the whole run's, not the retry's alone
    (row,) = db_rows(db, "SELECT totals FROM runs WHERE run_id = ?", [run_id])
    totals = json.loads(row["totals"])
    assert totals["llm_calls"] == len(after)
    assert totals["cost_usd"] == pytest.approx(db_rows(
        db, "SELECT sum(cost_usd) AS c FROM llm_calls")[0]["c"], abs=1e-6)


def test_retry_one_stage_then_everything_then_resume_does_nothing(llm, tmp_path, db):
    refused, invalid = account_id(1), account_id(3)

    def responder(body: dict) -> Reply | None:
        if cell_of(body) == (refused, "research"):
            return Reply(status=400, error_type="invalid_request_error")
        return never_valid((invalid, "score"))(body)

    llm.responder = responder
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=10))
    res = run_inproc("run", spec, write_accounts(tmp_path, 6))
    assert res.exit_code == 1, res.output
    run_id = first_line(res.stdout)
    llm.responder = None

    sent = len(llm.requests)
    res = run_inproc("retry", run_id, "--stage", "score")
    assert res.exit_code == 1, res.output  # the refused research cell is still failed
    assert Counter(cell_of(r) for r in llm.requests[sent:]) == {(invalid, "score"): 1,
                                                                 (invalid, "write"): 1}
    assert run_status(db, run_id) == "completed_with_errors"
    assert cell_counts(db, run_id)["research"] == {"ok": 5, "failed": 1}

    sent = len(llm.requests)
    res = run_inproc("retry", run_id)
    assert res.exit_code == 0, res.output
    assert Counter(cell_of(r) for r in llm.requests[sent:]) == {
        (refused, "research"): 1, (refused, "score"): 1, (refused, "write"): 1}
    assert run_status(db, run_id) == "completed"
    assert cell_counts(db, run_id) == {"research": {"ok": 6}, "score": {"ok": 6},
                                       "select": {"ok": 6}, "write": {"ok": 6}}

    sent, logged = len(llm.requests), len(db_rows(db, "SELECT 1 FROM llm_calls"))
    before = db_rows(db, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    res = run_inproc("resume", run_id)
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == f"run {run_id} has ended (completed): nothing to resume"
    assert len(llm.requests) == sent and len(db_rows(db, "SELECT 1 FROM llm_calls")) == logged
    # the run row is left as it was: a resume used to move ended_at and empty its totals
    assert db_rows(db, "SELECT * FROM runs WHERE run_id = ?", [run_id]) == before


def test_retry_not_ok_reruns_every_cell_that_is_not_ok(llm, tmp_path, db):
    target = account_id(2)
    llm.responder = never_valid((target, "score"))
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=10))
    run_id = first_line(run_inproc("run", spec, write_accounts(tmp_path, 6)).stdout)
    assert cell_counts(db, run_id)["write"] == {"ok": 5, "skipped": 1}
    llm.responder = None
    sent = len(llm.requests)

    res = run_inproc("retry", run_id, "--not-ok")  # no --stage: every stage

    assert res.exit_code == 0, res.output
    assert Counter(cell_of(r) for r in llm.requests[sent:]) == {(target, "score"): 1,
                                                                 (target, "write"): 1}
    assert cell_counts(db, run_id)["write"] == {"ok": 6}


def prompt_file_stages() -> list[dict]:
    stages = default_stages(top=10)
    stages[1] = {**stages[1], "prompt_file": "prompts/score.md"}
    return [{k: v for k, v in s.items() if not (s is stages[1] and k == "prompt")}
            for s in stages]


def test_retry_after_the_accounts_and_prompt_files_are_gone_uses_the_stored_ones(llm, tmp_path, db):
    target = account_id(2)
    llm.responder = never_valid((target, "score"))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "score.md").write_text(
        "Score {{ account.name }} from the file. [[item:{{ account.id }}]] [[stage:score]]")
    spec = write_spec(tmp_path, llm.base_url, stages=prompt_file_stages())
    accounts = write_accounts(tmp_path, 6)
    run_id = first_line(run_inproc("run", spec, accounts).stdout)
    assert cell_counts(db, run_id)["score"] == {"ok": 5, "failed": 1}
    llm.responder = None
    accounts.unlink()  # e.g. a cron job's temporary export
    (tmp_path / "prompts" / "score.md").unlink()
    sent = len(llm.requests)

    res = run_inproc("retry", run_id)

    assert res.exit_code == 0, res.output
    (score, write) = llm.requests[sent:]
    assert "from the file" in score["messages"][-1]["content"] and cell_of(write) == (target, "write")
    assert run_status(db, run_id) == "completed"


def test_resume_of_a_run_that_had_not_read_its_whole_input_needs_the_file(llm, tmp_path, db):
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=10))
    accounts = write_accounts(tmp_path, 4)
    run_id = first_line(run_inproc("run", spec, accounts).stdout)
    with store.connect(db) as con:  # as if it had stopped before reading the last account
        con.execute("DELETE FROM item_log WHERE run_id = ? AND item_key = ?", [run_id, account_id(3)])
        con.execute("UPDATE runs SET status = 'interrupted' WHERE run_id = ?", [run_id])
    accounts.unlink()

    res = run_inproc("resume", run_id)

    assert res.exit_code == 2
    assert f"{accounts} is gone" in res.stderr and "read 3 of its 4 accounts" in res.stderr


def test_retry_of_an_unknown_stage_is_refused(llm, tmp_path, db):
    llm.responder = never_valid((account_id(0), "score"))
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 3))
    run_id = first_line(res.stdout)
    res = run_inproc("retry", run_id, "--stage", "scor")
    assert res.exit_code == 2 and "scor" in res.stderr and "score" in res.stderr
