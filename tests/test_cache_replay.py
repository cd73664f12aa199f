"""Answers from the run log instead of the model (`--replay`, `--cache`, resume), and `plan`'s
projection from a sample, measured by what reaches the fake server and what the log records.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import (account_id, cell_counts, db_rows, default_stages, first_line,
                           run_inproc, run_status, stage_of, write_accounts, write_spec)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def outputs(db: Path, run_id: str) -> dict[tuple[str, str], tuple[str, dict | None]]:
    rows = db_rows(db, "SELECT item_key, stage_id, status, output FROM cells WHERE run_id = ?",
                   [run_id])
    return {(r["item_key"], r["stage_id"]): (r["status"], json.loads(r["output"]) if r["output"] else None)
            for r in rows}


def calls(db: Path, run_id: str) -> list[dict]:
    return db_rows(db, "SELECT * FROM llm_calls WHERE run_id = ?", [run_id])


def server_down(body: dict) -> Reply:
    return Reply(status=500, error_type="server_error")


@pytest.fixture
def recorded(llm, tmp_path, db) -> tuple[Path, Path, str]:
    """(spec, accounts, run id) of a completed 6-account run through the fake server."""
    spec = write_spec(tmp_path, llm.base_url)  # research -> score -> select top 3 -> write
    accounts = write_accounts(tmp_path, 6)
    res = run_inproc("run", spec, accounts)
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert len(llm.requests) == 6 + 6 + 3
    return spec, accounts, run_id


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# --- --replay -----------------------------------------------------------------------------

def test_replay_gives_the_recorded_outputs_without_the_model(llm, db, recorded):
    spec, accounts, source = recorded
    llm.responder = server_down  # any real call would fail
    sent = len(llm.requests)

    res = run_inproc("run", spec, accounts, "--replay", source, env={"OPENAI_API_KEY": None})

    assert res.exit_code == 0, res.output
    replay = first_line(res.stdout)
    assert replay != source and run_status(db, replay) == "completed"
    assert len(llm.requests) == sent  # nothing reached the server
    assert outputs(db, replay) == outputs(db, source)
    rows = calls(db, replay)
    assert len(rows) == 15
    assert all(r["cache_hit"] and r["cost_usd"] == 0 and r["status"] == "ok" for r in rows)
    assert sorted(r["request_hash"] for r in rows) == sorted(r["request_hash"] for r in calls(db, source))
    view = json.loads(run_inproc("inspect", replay, "--json").stdout)
    assert view["totals"]["cost_usd"] == 0 and view["totals"]["llm_calls"] == 15


def test_replay_makes_the_recorded_repairs_and_retries(llm, tmp_path, db):
    """A run whose replies the stage refused (not JSON: a repair followed; empty: the same
    request was asked again) replays exactly: it used to stop with "no call for this cell"."""
    seen: dict[str, int] = {}

    def flaky(body: dict) -> Reply | None:
        item = re.search(r"\[\[item:([^\]]+)\]\] \[\[stage:research", json.dumps(body["messages"]))
        if item is None:
            return None
        item = item.group(1)
        seen[item] = seen.get(item, 0) + 1
        if seen[item] == 1:
            return Reply(content="Sure! Here is the research." if item.endswith("1") else "")
        return None

    llm.responder = flaky
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages()[:2])
    accounts = write_accounts(tmp_path, 3)
    first = run_inproc("run", spec, accounts)
    assert first.exit_code == 0, first.output
    source = first_line(first.stdout)
    statuses = sorted(r["status"] for r in calls(db, source))
    assert statuses.count("invalid") == 3 and statuses.count("ok") == 6, statuses
    llm.responder = server_down
    sent = len(llm.requests)

    res = run_inproc("run", spec, accounts, "--replay", source, env={"OPENAI_API_KEY": None})

    assert res.exit_code == 0, res.output
    replay = first_line(res.stdout)
    assert len(llm.requests) == sent
    assert outputs(db, replay) == outputs(db, source)
    assert sorted(r["status"] for r in calls(db, replay)) == statuses


def test_replay_of_a_changed_prompt_names_what_differs(llm, db, recorded):
    spec, accounts, source = recorded
    llm.responder = server_down
    sent = len(llm.requests)
    text = spec.read_text()
    assert text.count("Score {{ account.name }} for fit") == 1
    spec.write_text(text.replace("Score {{ account.name }} for fit", "Rate {{ account.name }} for fit"))

    res = run_inproc("run", spec, accounts, "--replay", source)

    assert res.exit_code == 2, res.output
    line = one_line_error(res.stderr)
    assert source in line and "stage score" in line and "messages[1]" in line, line
    assert any(f"item {account_id(i)}" in line for i in range(6)), line
    assert "Rate" in line and "Score" in line  # what it is now, and what was recorded
    replay = first_line(res.stdout)
    assert run_status(db, replay) == "failed"
    assert len(llm.requests) == sent


def test_replay_of_an_unknown_run_is_refused(llm, recorded):
    spec, accounts, _ = recorded
    res = run_inproc("run", spec, accounts, "--replay", "r-19990101-000000-000000")
    assert res.exit_code == 2
    assert "r-19990101-000000-000000" in one_line_error(res.stderr)


# --- --cache and resume -------------------------------------------------------------------


def test_cache_answers_an_identical_run_without_requests(llm, db, recorded):
    spec, accounts, source = recorded
    sent = len(llm.requests)

    res = run_inproc("run", spec, accounts, "--cache")

    assert res.exit_code == 0, res.output
    cached = first_line(res.stdout)
    assert len(llm.requests) == sent
    assert outputs(db, cached) == outputs(db, source)
    rows = calls(db, cached)
    assert len(rows) == 15
    assert all(r["cache_hit"] and r["cost_usd"] == 0 and r["status"] == "ok" for r in rows)
    # a changed score prompt misses the cache from that stage on; research still hits
    spec.write_text(spec.read_text().replace("Score {{ account.name }} for fit",
                                             "Rate {{ account.name }} for fit"))
    res = run_inproc("run", spec, accounts, "--cache")
    assert res.exit_code == 0, res.output
    new = Counter(stage_of(r) for r in llm.requests[sent:])
    assert new["research"] == 0 and new["score"] == 6 and new["write"] <= 3, new
    hits = Counter(r["stage_id"] for r in calls(db, first_line(res.stdout)) if r["cache_hit"])
    assert hits["research"] == 6 and hits["score"] == 0


def test_cache_hits_are_logged_free(tmp_path, db):
    """The cache path itself, with the offline mock model (whose logged model name is the one
    the cache looks up)."""
    spec, accounts = write_spec(tmp_path, "http://127.0.0.1:9/v1"), write_accounts(tmp_path, 4)
    first = first_line(run_inproc("run", spec, accounts, "--mock").stdout)
    res = run_inproc("run", spec, accounts, "--mock", "--cache")
    assert res.exit_code == 0, res.output
    second = first_line(res.stdout)
    assert outputs(db, second) == outputs(db, first)
    rows = calls(db, second)
    assert len(rows) == 4 + 4 + 3
    assert all(r["cache_hit"] and r["cost_usd"] == 0 for r in rows)
    assert not any(r["cache_hit"] for r in calls(db, first))


def test_cache_never_serves_mock_answers_to_a_real_run(llm, tmp_path, db):
    spec, accounts = write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 3)
    res = run_inproc("run", spec, accounts, "--mock")
    assert res.exit_code == 0, res.output
    res = run_inproc("run", spec, accounts, "--cache")
    assert res.exit_code == 0, res.output
    assert len(llm.requests) == 3 + 3 + 3
    assert not any(r["cache_hit"] for r in calls(db, first_line(res.stdout)))


def test_resume_reuses_answers_already_in_the_run(llm, db, recorded):
    """A crash after a call's row was flushed but before its cell's was: the resumed cell gets
    the logged answer (cache hit, no cost) instead of paying for the call again."""
    _, _, run_id = recorded
    lost = account_id(0)
    con = duckdb.connect(str(db))
    try:
        con.execute("DELETE FROM cell_log WHERE run_id = ? AND item_key = ?", [run_id, lost])
        con.execute("UPDATE runs SET status = 'interrupted' WHERE run_id = ?", [run_id])
    finally:
        con.close()
    before = outputs(db, run_id)
    answered = {(r["stage_id"]) for r in calls(db, run_id) if r["item_key"] == lost}
    assert {"research", "score"} <= answered
    sent = len(llm.requests)
    llm.responder = server_down

    res = run_inproc("resume", run_id)

    assert res.exit_code == 0, res.output
    assert len(llm.requests) == sent
    assert run_status(db, run_id) == "completed"
    assert cell_counts(db, run_id)["research"] == {"ok": 6}
    after = outputs(db, run_id)
    assert {k: v for k, v in after.items() if k[0] != lost} == before
    hits = [r for r in calls(db, run_id) if r["cache_hit"]]
    assert sorted(r["stage_id"] for r in hits) == sorted(answered)
    assert all(r["item_key"] == lost and r["cost_usd"] == 0 for r in hits)


# --- plan ---------------------------------------------------------------------------------

def plan_json(*args) -> dict:
    res = run_inproc("plan", *args, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_plan_projects_the_whole_input_from_a_sample(llm, tmp_path, db):
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=5))
    accounts = write_accounts(tmp_path, 30)

    doc = plan_json(spec, accounts, "--sample", "3")

    assert len(llm.requests) == 3 + 3 + 3  # only the sample ran: 3 accounts, all in the top 5
    assert doc["sample_items"] == 3 and doc["total_items"] == 30 and doc["mock"] is False
    sample = {s["id"]: s for s in json.loads(run_inproc(
        "inspect", doc["sample_run_id"], "--json").stdout)["stages"]}
    stages = {s["id"]: s for s in doc["stages"]}
    for sid in ("research", "score"):
        assert stages[sid]["items"] == 30
        assert stages[sid]["llm_calls"] == 30 * sample[sid]["llm_calls"] // 3
        assert stages[sid]["input_tokens"] == pytest.approx(10 * sample[sid]["input_tokens"], rel=0.01)
        assert stages[sid]["cost_usd"] == pytest.approx(10 * sample[sid]["cost_usd"], rel=0.01, abs=1e-4)
        assert stages[sid]["cost_usd"] > 0
    assert stages["select"]["items"] == 5  # top 5 caps everything downstream
    assert stages["write"]["items"] == 5 and stages["write"]["llm_calls"] == 5
    assert doc["totals"]["llm_calls"] == 30 + 30 + 5
    assert doc["totals"]["cost_usd"] == pytest.approx(
        sum(s["cost_usd"] for s in doc["stages"] if s["kind"] == "agent"), abs=1e-3)
    # the sample run is in the log, its side effects only recorded
    assert run_status(db, doc["sample_run_id"]) == "completed"


def test_plan_caps_downstream_at_top_k_when_the_sample_is_larger(llm, tmp_path, db):
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages(top=2))
    doc = plan_json(spec, write_accounts(tmp_path, 30), "--sample", "3")
    stages = {s["id"]: s for s in doc["stages"]}
    assert stages["select"]["items"] == 2
    assert stages["write"]["items"] == 2 and stages["write"]["llm_calls"] == 2


def test_plan_mock_gives_structure_without_cost(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=default_stages(top=5))
    doc = plan_json(spec, write_accounts(tmp_path, 30), "--sample", "3", "--mock")
    assert doc["mock"] is True
    stages = {s["id"]: s for s in doc["stages"]}
    assert [s["id"] for s in doc["stages"]] == ["research", "score", "select", "write"]
    assert stages["research"]["llm_calls"] == 30 and stages["write"]["items"] == 5
    assert doc["totals"]["llm_calls"] == 65
    assert not doc["totals"]["cost_usd"]
    assert all(not s.get("cost_usd") for s in doc["stages"])
    # the sample is a run of its own in the log, tagged as plan's
    runs = json.loads(run_inproc("runs", "--json").stdout)
    assert [(r["run_id"], r["plan_sample"]) for r in runs] == [(doc["sample_run_id"], True)]
    assert "(plan sample)" in run_inproc("runs").stdout
    assert "[agentctl plan's sample]" in run_inproc("inspect", doc["sample_run_id"]).stdout
