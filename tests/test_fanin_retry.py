"""`retry` (and `resume`) across fan-in stages, measured in the run log and at the fake server.

A retried cell can change what a fan-in decides for *other* accounts: a select ranks again, a
reduce is recomputed. Everything downstream of a changed fan-in output is then recomputed or
filtered, for every account it affects, and an account that is no longer let through never
takes an action. After any retry or resume, the rows' attempts, tokens and cost cover every
session's `llm_calls`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import (agent_of, cell_counts, db_rows, first_line, last_user, run_inproc,
                           write_spec)

pytestmark = pytest.mark.timeout(90)
TAG = "[[item:{{ account.id }}]]"
AGENTS = {"g": {"system": "Grader. [[agent:g]]"}, "w": {"system": "Writer. [[agent:w]]"},
          "r": {"system": "Reporter. [[agent:r]]"}}


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"


def spec_of(tmp_path: Path, api_base: str, stages: list[dict], **extra) -> Path:
    return write_spec(tmp_path, api_base, stages=stages, extra={
        "agents": AGENTS, "input": {"key": "id", "required": ["name", "s"]}, **extra})


def accounts(tmp_path: Path, rows: list[tuple[str, int]]) -> Path:
    path = tmp_path / "accounts.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "domain", "industry", "employees", "s"])
        for key, s in rows:
            w.writerow([key, f"Company {key}", f"{key.lower()}.example.com", "software", 10, s])
    return path


def run(*args, code: int | None = None) -> str:
    res = run_inproc(*map(str, args))
    if code is not None:
        assert res.exit_code == code, (res.exit_code, res.stdout[-3000:], res.stderr[-3000:])
    return first_line(res.stdout)


def schema_name(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


class Grader:
    """Grades come from the CSV (`GRADE:n` in the prompt); accounts in `failing` get a 400."""

    def __init__(self, failing: set[str]):
        self.failing = failing

    def __call__(self, body: dict) -> Reply | None:
        text = last_user(body)
        if schema_name(body) == "grade_output":
            item = body["_meta"].get("item")
            if item in self.failing:
                return Reply(status=400, error_type="invalid_request_error")
            return Reply(content=json.dumps({"s": int(text.split("GRADE:")[1].split()[0])}))
        return None


GRADE = {"id": "grade", "agent": "g", "prompt": "Grade {{ account.name }} GRADE:{{ account.s }} " + TAG,
         "output": {"s": "int"}}


def usage_agrees(db: Path, run_id: str) -> None:
    """cells + run_outputs cover every llm_calls row of the run, cell by cell and in total."""
    per_cell = db_rows(db, """
        SELECT c.item_key, c.stage_id, c.attempts, c.cost_usd, c.input_tokens,
               l.n, l.cost, l.tin
        FROM cells c FULL JOIN (SELECT item_key, stage_id, count(*) AS n, sum(cost_usd) AS cost,
                                       sum(coalesce(input_tokens, 0)) AS tin
                                FROM llm_calls WHERE run_id = ? AND item_key IS NOT NULL
                                GROUP BY ALL) l USING (item_key, stage_id)
        WHERE c.run_id = ?""", [run_id, run_id])
    for r in per_cell:
        assert (r["attempts"] or 0) == (r["n"] or 0), r
        assert abs((r["cost_usd"] or 0) - (r["cost"] or 0)) < 1e-12, r
        assert (r["input_tokens"] or 0) == (r["tin"] or 0), r
    (tot,) = db_rows(db, """SELECT (SELECT coalesce(sum(cost_usd), 0) FROM cells WHERE run_id = $1)
                                 + (SELECT coalesce(sum(cost_usd), 0) FROM run_outputs WHERE run_id = $1) AS rows,
                                   (SELECT sum(cost_usd) FROM llm_calls WHERE run_id = $1) AS calls""",
                     [run_id])
    assert tot["calls"] > 0 and abs(tot["rows"] - tot["calls"]) < 1e-12, tot


# --- 1. a retried select ranks again; what it no longer lets through is filtered --------------

def sel_spec(tmp_path: Path, api_base: str, *, write_extra: dict | None = None, **extra) -> Path:
    stages = [GRADE,
              {"id": "top", "type": "select", "needs": ["grade"], "by": "grade.s", "top": 2},
              {"id": "write", "agent": "w", "needs": ["top", "grade"],
               "prompt": "Write for {{ account.name }} " + TAG, **(write_extra or {})},
              {"id": "rep", "type": "reduce", "needs": ["write"], "agent": "r",
               "prompt": "Report:{% for it in items %} <{{ it.key }}>{% endfor %}"}]
    return spec_of(tmp_path, api_base, stages, defaults={"max_attempts": 1}, **extra)


def test_retry_reranks_a_select_and_redoes_downstream_for_every_account(llm, tmp_path, db):
    grader = Grader({"K4"})
    llm.responder = grader
    rows = [("K1", 50), ("K2", 40), ("K3", 10), ("K4", 90)]
    run_id = run("run", sel_spec(tmp_path, llm.base_url), accounts(tmp_path, rows), code=1)
    assert {r["item_key"] for r in db_rows(db, "SELECT item_key FROM cells WHERE run_id = ? AND "
                                              "stage_id = 'write' AND status = 'ok'", [run_id])} == {"K1", "K2"}

    grader.failing.clear()
    sent = len(llm.requests)
    run("retry", run_id, "--stage", "grade", code=0)

    cells = {(r["item_key"], r["stage_id"]): r for r in db_rows(
        db, "SELECT * FROM cells WHERE run_id = ?", [run_id])}
    passed = {k for (k, s), r in cells.items() if s == "top" and r["status"] == "ok"}
    assert passed == {"K4", "K1"}  # exactly top: 2, K4 in at rank 1, K2 out
    assert {k: json.loads(cells[(k, "top")]["output"])["rank"] for k in passed} == {"K4": 1, "K1": 2}
    # every downstream cell agrees with the select, the retried account's and the others'
    assert {k: cells[(k, "write")]["status"] for k in ("K1", "K2", "K3", "K4")} == {
        "K1": "ok", "K2": "filtered", "K3": "filtered", "K4": "ok"}
    assert cell_counts(db, run_id)["rep"] == {"ok": 2, "filtered": 2}
    (out,) = db_rows(db, "SELECT * FROM run_outputs WHERE run_id = ?", [run_id])
    assert out["items"] == 2
    (report,) = [b for b in llm.requests[sent:] if agent_of(b) == "r"]
    assert "<K1>" in last_user(report) and "<K4>" in last_user(report) and "<K2>" not in last_user(report)
    new = [b for b in llm.requests[sent:] if schema_name(b) == "write_output"]
    assert [b["_meta"]["item"] for b in new] == ["K4"]  # K1's write kept: its select did not change
    usage_agrees(db, run_id)


def test_a_deselected_account_never_takes_its_approved_action(llm, tmp_path, db):
    grader = Grader({"K4"})

    def responder(body: dict) -> Reply | None:
        if schema_name(body) == "write_output" and body["messages"][-1]["role"] == "user":
            item = body["_meta"]["item"]
            return Reply(tool_calls=[{"name": "email", "arguments": {
                "to": f"ceo@{item.lower()}.example.com", "subject": "Hi", "body": "Hello."}}])
        return grader(body)

    llm.responder = responder
    agents = {**AGENTS, "w": {**AGENTS["w"], "tools": ["email"]}}
    path = sel_spec(tmp_path, llm.base_url, agents=agents,
                    tools={"email": {"type": "send_email", "outbox": "outbox", "from": "bot@example.com"}})
    rows = [("K1", 50), ("K2", 40), ("K3", 10), ("K4", 90)]
    run_id = run("run", path, accounts(tmp_path, rows), code=3)
    assert run_inproc("approve", run_id, "--all").exit_code == 0
    assert {a["item_key"]: a["status"] for a in db_rows(
        db, "SELECT item_key, status FROM actions WHERE run_id = ?", [run_id])} == {
        "K1": "approved", "K2": "approved"}

    grader.failing.clear()
    res = run_inproc("retry", run_id, "--stage", "grade", "--json")
    assert res.exit_code == 3, res.stdout  # K4, newly selected, waits for its own approval

    acts = {a["item_key"]: a for a in db_rows(db, "SELECT * FROM actions WHERE run_id = ?", [run_id])}
    assert acts["K1"]["status"] == "done"                 # still selected: approved, executed once
    assert acts["K2"]["status"] == "withdrawn"            # deselected: never executed
    assert "K2" in acts["K2"]["decision_note"] and "filtered" in acts["K2"]["decision_note"]
    assert acts["K4"]["status"] == "pending_approval"
    mails = {p.read_text().split("To: ")[1].split("\n")[0].strip()
             for p in (tmp_path / "outbox").glob("*.eml")}
    assert mails == {"ceo@k1.example.com"}
    status = {r["item_key"]: r["status"] for r in db_rows(
        db, "SELECT item_key, status FROM cells WHERE run_id = ? AND stage_id = 'write'", [run_id])}
    assert status == {"K1": "ok", "K2": "filtered", "K3": "filtered", "K4": "awaiting_approval"}
    notes = json.loads(res.stdout)["totals"]["notes"]
    assert any("K2" in n and "withdrawn" in n for n in notes)
    shown = " ".join(run_inproc("inspect", run_id).stdout.split())
    assert "note: " in shown and "withdrawn" in shown
    trail = json.loads(run_inproc("review", run_id, "--all", "--json").stdout)["actions"]
    assert {a["item_key"]: a["status"] for a in trail}["K2"] == "withdrawn"
    # a later resume does not bring the withdrawn action back
    assert run_inproc("approve", run_id, "--all").exit_code == 0
    assert run_inproc("resume", run_id).exit_code == 0
    mails = {p.read_text().split("To: ")[1].split("\n")[0].strip()
             for p in (tmp_path / "outbox").glob("*.eml")}
    assert mails == {"ceo@k1.example.com", "ceo@k4.example.com"}
    # the reduce, which K4 reaches only now, is recomputed over the two selected accounts
    (out,) = db_rows(db, "SELECT items FROM run_outputs WHERE run_id = ?", [run_id])
    assert out["items"] == 2
    usage_agrees(db, run_id)


# --- 2. a recomputed reduce: everything that read it is redone ---------------------------------

def test_cells_that_read_a_recomputed_reduce_are_redone(llm, tmp_path, db):
    grader = Grader({"K3"})
    llm.responder = grader
    stages = [GRADE,
              {"id": "rep", "type": "reduce", "needs": ["grade"], "agent": "r",
               "prompt": "Report:{% for it in items %} <{{ it.key }}:{{ it.grade.s }}>{% endfor %}",
               "output": {"headline": "str"}},
              {"id": "per", "agent": "w", "needs": ["rep"],
               "prompt": "Given {{ rep.headline }} for {{ account.name }} " + TAG}]
    path = spec_of(tmp_path, llm.base_url, stages, defaults={"max_attempts": 1})
    run_id = run("run", path, accounts(tmp_path, [(f"K{i}", i) for i in range(1, 6)]), code=1)
    (old,) = db_rows(db, "SELECT output, cost_usd FROM run_outputs WHERE run_id = ?", [run_id])
    old_headline = json.loads(old["output"])["headline"]

    grader.failing.clear()
    sent = len(llm.requests)
    run("retry", run_id, "--stage", "grade", code=0)
    (new,) = db_rows(db, "SELECT output, items, cost_usd FROM run_outputs WHERE run_id = ?", [run_id])
    headline = json.loads(new["output"])["headline"]
    assert headline != old_headline and new["items"] == 5
    assert new["cost_usd"] > old["cost_usd"]  # both reduce calls count: the run paid for both
    per = [b for b in llm.requests[sent:] if schema_name(b) == "per_output"]
    assert sorted(b["_meta"]["item"] for b in per) == [f"K{i}" for i in range(1, 6)]
    assert all(headline in last_user(b) for b in per)
    assert cell_counts(db, run_id)["per"] == {"ok": 5}
    usage_agrees(db, run_id)


# --- 3. a `where` that raises fails that account only ------------------------------------------

def test_a_where_that_raises_fails_only_its_account_and_names_it(tmp_path, db):
    stages = [{"id": "grade", "agent": "g", "prompt": "Grade {{ account.id }}", "output": {"s": "int"}},
              {"id": "keep", "type": "select", "needs": ["grade"], "where": "100 / (account.s | int) > 1"},
              {"id": "after", "agent": "g", "needs": ["keep"], "prompt": "x {{ account.id }}"}]
    path = spec_of(tmp_path, "http://127.0.0.1:9/v1", stages)
    run_id = run("run", path, accounts(tmp_path, [("K1", 5), ("K2", 0), ("K3", 7)]), "--mock", code=1)
    cells = {(r["item_key"], r["stage_id"]): r for r in db_rows(
        db, "SELECT * FROM cells WHERE run_id = ?", [run_id])}
    assert {k: cells[(k, "keep")]["status"] for k in ("K1", "K2", "K3")} == {
        "K1": "ok", "K2": "failed", "K3": "ok"}
    assert "account K2" in cells[("K2", "keep")]["error"]
    assert "division by zero" in cells[("K2", "keep")]["error"]
    assert cells[("K2", "after")]["status"] == "skipped"
    assert cells[("K1", "after")]["status"] == "ok"


# --- 4/5. after retry or resume, the rows cover every session's calls --------------------------

def test_cells_cover_every_session_after_retry(llm, tmp_path, db):
    """The log report's repro: invalid replies fail paid cells; the retry's cells count them."""
    bad = {"on": True}
    def responder(body: dict) -> Reply | None:  # the account's tag is in its first message
        first = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if bad["on"] and ("[[item:K2]]" in first or "[[item:K4]]" in first):
            return Reply(content="not json")
        return None

    llm.responder = responder
    stages = [{"id": "s1", "agent": "g", "prompt": "Research {{ account.name }} " + TAG,
               "output": {"summary": "str"}},
              {"id": "s2", "agent": "w", "needs": ["s1"], "prompt": "Score {{ account.name }} " + TAG,
               "output": {"score": "int"}}]
    path = spec_of(tmp_path, llm.base_url, stages, defaults={"max_repairs": 1, "max_attempts": 1})
    run_id = run("run", path, accounts(tmp_path, [(f"K{i}", i) for i in range(1, 6)]), code=1)
    assert cell_counts(db, run_id)["s1"] == {"ok": 3, "failed": 2}
    bad["on"] = False
    run("retry", run_id, code=0)
    (k2,) = db_rows(db, "SELECT attempts FROM cells WHERE run_id = ? AND item_key = 'K2' "
                        "AND stage_id = 's1'", [run_id])
    assert k2["attempts"] == 3  # 2 paid in the first session (initial + repair), 1 in the retry
    usage_agrees(db, run_id)


def test_a_retried_map_reduce_keeps_the_cost_of_the_maps_it_reused(llm, tmp_path, db):
    broken = {"on": True}

    def responder(body: dict) -> Reply | None:
        if broken["on"] and agent_of(body) == "r" and "<K07>" in last_user(body):
            return Reply(status=400, error_type="invalid_request_error")
        return None

    llm.responder = responder
    stages = [{"id": "s1", "agent": "g", "prompt": "Research {{ account.name }} " + TAG,
               "output": {"summary": "str"}},
              {"id": "rep", "type": "reduce", "needs": ["s1"], "agent": "r", "batch_size": 3,
               "max_input_tokens": 60, "output": {"summary": "str"},
               "prompt": "Report:{% for it in items %} <{{ it.key }}> {{ it.s1.summary }}{% endfor %}"}]
    path = spec_of(tmp_path, llm.base_url, stages, defaults={"max_attempts": 1})
    run_id = run("run", path, accounts(tmp_path, [(f"K{i:02d}", i) for i in range(1, 13)]), code=1)
    broken["on"] = False
    run("retry", run_id, "--stage", "rep", code=0)

    (out,) = db_rows(db, "SELECT * FROM run_outputs WHERE run_id = ?", [run_id])
    (calls,) = db_rows(db, "SELECT count(*) AS n, sum(cost_usd) AS cost FROM llm_calls "
                           "WHERE run_id = ? AND stage_id = 'rep'", [run_id])
    assert out["status"] == "ok" and out["attempts"] == calls["n"]
    assert abs(out["cost_usd"] - calls["cost"]) < 1e-12
    # a map paid in the first session and replayed from the cache keeps its cost on its span
    per_span = db_rows(db, """SELECT s.span_id, s.role, s.cost_usd, s.attempts, l.cost, l.n FROM spans s
                              JOIN (SELECT span_id, sum(cost_usd) AS cost, count(*) AS n FROM llm_calls
                                    WHERE run_id = ? GROUP BY span_id) l USING (span_id)
                              WHERE s.run_id = ?""", [run_id, run_id])
    maps = [s for s in per_span if s["role"] == "map"]
    assert len(maps) == 4 and all(s["cost_usd"] > 0 for s in maps)
    assert all(abs(s["cost_usd"] - s["cost"]) < 1e-12 and s["attempts"] == s["n"] for s in per_span)
    usage_agrees(db, run_id)
