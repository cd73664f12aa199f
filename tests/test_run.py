"""The engine end to end, measured at the fake LLM server and in the run log.

Runs go through the real CLI app in-process (litellm imported once) against `FakeLLM` on
loopback; each test asserts what the server saw and what the log recorded, not what the
code meant to do.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply, default_reply
from tests.helpers import (RUN_ID, account_id, cell_counts, db_rows, default_stages,
                           first_line, last_user_text, run_cli, run_inproc, run_status, stage_of,
                           write_accounts, write_spec)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def mentions(body: dict, item: str, stage: str) -> bool:
    """Whether a request belongs to (item, stage): its first user prompt carries the markers.

    Repair requests end with the repair instruction, so look at every message, not the last."""
    return f"[[item:{item}]] [[stage:{stage}]]" in json.dumps(body.get("messages"))


def calls_of(db: Path, run_id: str, item: str, stage: str) -> list[dict]:
    return db_rows(db, "SELECT * FROM llm_calls WHERE run_id = ? AND item_key = ? AND stage_id = ? "
                       "ORDER BY attempt", [run_id, item, stage])


def outputs(db: Path, run_id: str) -> dict[tuple[str, str], dict | None]:
    rows = db_rows(db, "SELECT item_key, stage_id, output FROM cells WHERE run_id = ?", [run_id])
    return {(r["item_key"], r["stage_id"]): json.loads(r["output"]) if r["output"] else None
            for r in rows}


# --- the happy path -----------------------------------------------------------------------

def test_happy_path_select_top_k(llm, tmp_path, db):
    spec = write_spec(tmp_path, llm.base_url)  # select top 3
    accounts = write_accounts(tmp_path, 12)

    res = run_inproc("run", spec, accounts)

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert re.fullmatch(RUN_ID, run_id), res.stdout
    # the summary follows the run id: status, every stage, and where to look next
    assert "completed" in res.stdout
    for stage in ("research", "score", "select", "write"):
        assert stage in res.stdout
    assert f"agentctl inspect {run_id}" in res.stdout
    assert run_status(db, run_id) == "completed"
    assert cell_counts(db, run_id) == {
        "research": {"ok": 12}, "score": {"ok": 12},
        "select": {"ok": 3, "filtered": 9}, "write": {"ok": 3, "filtered": 9}}

    # the three kept are the three best scores (ties: input order), and only they were written
    out = outputs(db, run_id)
    order = sorted(range(12), key=lambda i: (-out[(account_id(i), "score")]["score"], i))
    top = {account_id(i) for i in order[:3]}
    selected = {k for (k, s), o in out.items() if s == "select" and o and o.get("selected")}
    assert selected == top
    ranks = sorted(out[(k, "select")]["rank"] for k in top)
    assert ranks == [1, 2, 3]
    written = [r["_meta"]["item"] for r in llm.requests if stage_of(r) == "write"]
    assert sorted(written) == sorted(top)
    assert Counter(stage_of(r) for r in llm.requests) == {"research": 12, "score": 12, "write": 3}
    # items table: every input row, in input order
    items = db_rows(db, "SELECT item_key, seq, input FROM items WHERE run_id = ? ORDER BY seq",
                    [run_id])
    assert [r["item_key"] for r in items] == [account_id(i) for i in range(12)]
    assert json.loads(items[5]["input"])["name"] == "Company 5"


def test_run_log_matches_what_the_server_saw(llm, tmp_path, db):
    import litellm

    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 12))
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    calls = db_rows(db, "SELECT * FROM llm_calls WHERE run_id = ?", [run_id])

    assert len(calls) == len(llm.requests) == 27
    assert all(r["_status"] == 200 for r in llm.requests)
    assert sum(c["input_tokens"] for c in calls) == sum(r["_usage"]["prompt_tokens"] for r in llm.requests)
    assert sum(c["output_tokens"] for c in calls) == sum(r["_usage"]["completion_tokens"] for r in llm.requests)

    # every request's messages are stored as sent
    requests = [json.loads(c["request"]) for c in calls]
    assert sorted(last_user_text(r["messages"]) for r in requests) == \
        sorted(last_user_text(r["messages"]) for r in llm.requests)
    assert sorted(json.dumps(r["messages"], sort_keys=True) for r in requests) == \
        sorted(json.dumps(r["messages"], sort_keys=True) for r in llm.requests)
    # and the response: content is the schema-valid JSON the cell's output came from
    for c in calls:
        assert c["status"] == "ok" and c["purpose"] == "initial" and c["attempt"] == 1
        assert json.loads(json.loads(c["response"])["content"])
        assert c["model"] and "gpt-4o-mini" in c["model"]

    # cost: gpt-4o-mini per-token prices from litellm's local map, per call
    price = litellm.model_cost["gpt-4o-mini"]
    for c in calls:
        expected = (c["input_tokens"] * price["input_cost_per_token"]
                    + c["output_tokens"] * price["output_cost_per_token"])
        assert c["cost_usd"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    total = sum(c["cost_usd"] for c in calls)
    assert total > 0
    # the cells' cost is the sum of their calls', the run's totals the sum of everything
    cells = db_rows(db, "SELECT sum(cost_usd) AS c, sum(input_tokens) AS i FROM cells WHERE run_id = ?",
                    [run_id])[0]
    assert cells["c"] == pytest.approx(total, rel=1e-9)
    assert cells["i"] == sum(c["input_tokens"] for c in calls)
    totals = json.loads(db_rows(db, "SELECT totals FROM runs WHERE run_id = ?", [run_id])[0]["totals"])
    assert totals["llm_calls"] == 27
    assert totals["cost_usd"] == pytest.approx(total, abs=1e-6)


def test_an_alias_organization_reaches_the_provider(llm, tmp_path, db):
    """`params: {organization: ...}` is sent as OpenAI-Organization (litellm's own HTTP handler,
    which agentctl uses, would drop the parameter)."""
    extra = {"models": {"fast": {"params": {"organization": "org-alias"}}}}
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, extra=extra),
                     write_accounts(tmp_path, 2))
    assert res.exit_code == 0, res.output
    assert llm.requests and {r["_org"] for r in llm.requests} == {"org-alias"}


def test_an_organization_in_the_environment_reaches_the_provider(llm, tmp_path):
    """With OPENAI_ORG_ID set, agentctl keeps litellm's SDK path, which sends it."""
    proc = run_cli("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 2),
                   "--db", tmp_path / "org.duckdb",
                   env={"OPENAI_ORG_ID": "org-env", "EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER": None})
    assert proc.returncode == 0, proc.stderr
    assert llm.requests and {r["_org"] for r in llm.requests} == {"org-env"}


def test_a_reply_with_half_a_character_pair_is_logged_not_a_lost_run(llm, tmp_path, db):
    """A model's JSON may escape half an emoji ("\\ud83d" alone): valid JSON, not valid text.
    It used to crash the run-log writer, losing every account's rows, at every resume."""
    def cut_emoji(body: dict) -> Reply | None:
        if mentions(body, "acct-001", "research"):
            return Reply(content='{"summary": "Great fit \\ud83d and more"}')
        return None

    llm.responder = cut_emoji
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages()[:2])
    res = run_inproc("run", spec, write_accounts(tmp_path, 4))

    assert res.exit_code == 0, (res.output, db_rows(db, "SELECT error FROM cells WHERE status <> 'ok'"))
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 4}, "score": {"ok": 4}}
    assert outputs(db, run_id)[("acct-001", "research")] == {"summary": "Great fit \ufffd and more"}
    assert len(db_rows(db, "SELECT 1 FROM llm_calls WHERE run_id = ?", [run_id])) == len(llm.requests)


# --- output validation and repair ---------------------------------------------------------

def test_invalid_reply_is_repaired_with_the_validation_error(llm, tmp_path, db):
    target = account_id(4)
    bad_sent = []

    def responder(body):
        if mentions(body, target, "score") and not bad_sent:
            bad_sent.append(body)
            return Reply(content='{"score": 250, "reason": "out of bounds"}')
        return None

    llm.responder = responder
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 8))

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    cell = db_rows(db, "SELECT * FROM cells WHERE run_id = ? AND item_key = ? AND stage_id = 'score'",
                   [run_id, target])[0]
    assert cell["status"] == "ok" and cell["attempts"] == 2
    assert 0 <= json.loads(cell["output"])["score"] <= 100
    calls = calls_of(db, run_id, target, "score")
    assert [c["status"] for c in calls] == ["invalid", "ok"]
    assert [c["purpose"] for c in calls] == ["initial", "repair"]
    assert calls[0]["error_type"] == "OutputInvalid"
    assert "score" in calls[0]["error"] and "100" in calls[0]["error"]
    # the repair request, as the server got it: the bad reply, then the validation error
    repairs = [r for r in llm.requests if mentions(r, target, "score")]
    assert len(repairs) == 2
    messages = repairs[1]["messages"]
    assert messages[-2] == {"role": "assistant", "content": '{"score": 250, "reason": "out of bounds"}'}
    assert calls[0]["error"] in last_user_text(messages)
    # and the log stored that same repair request
    assert json.loads(calls[1]["request"])["messages"] == messages
    assert cell_counts(db, run_id)["score"] == {"ok": 8}


def test_a_cell_that_never_validates_fails_alone(llm, tmp_path, db):
    target = account_id(2)
    llm.responder = lambda body: Reply(content="not json") if mentions(body, target, "score") else None
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 10))

    assert res.exit_code == 1, res.output
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "completed_with_errors"
    calls = calls_of(db, run_id, target, "score")
    assert len(calls) == 1 + 2  # initial + max_repairs
    assert [c["status"] for c in calls] == ["invalid"] * 3
    assert [c["purpose"] for c in calls] == ["initial", "repair", "repair"]
    assert "not valid JSON" in calls[0]["error"]
    cells = {r["stage_id"]: r for r in db_rows(
        db, "SELECT * FROM cells WHERE run_id = ? AND item_key = ?", [run_id, target])}
    assert cells["research"]["status"] == "ok"
    assert cells["score"]["status"] == "failed"
    assert cells["score"]["error_type"] == "OutputInvalid" and cells["score"]["attempts"] == 3
    assert cells["select"]["status"] == "skipped" and cells["write"]["status"] == "skipped"
    assert "score" in cells["select"]["error"]
    # the other nine accounts carry on; top 3 still selected among them
    assert cell_counts(db, run_id) == {
        "research": {"ok": 10}, "score": {"ok": 9, "failed": 1},
        "select": {"ok": 3, "filtered": 6, "skipped": 1},
        "write": {"ok": 3, "filtered": 6, "skipped": 1}}
    assert not any(mentions(r, target, "write") for r in llm.requests)


def test_a_server_error_is_retried_and_logged(llm, tmp_path, db):
    target, failed = account_id(1), []

    def responder(body):
        if mentions(body, target, "research") and not failed:
            failed.append(body)
            return Reply(status=500, error_type="server_error")
        return None

    llm.responder = responder
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 4))
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    calls = calls_of(db, run_id, target, "research")
    assert [(c["status"], c["purpose"], c["attempt"]) for c in calls] == \
        [("error", "initial", 1), ("ok", "retry", 2)]
    assert calls[0]["error_type"] == "ServerError" and calls[0]["response"] is None
    assert calls[0]["wait_ms"] is not None and calls[0]["input_tokens"] is None
    cell = db_rows(db, "SELECT status, attempts FROM cells WHERE run_id = ? AND item_key = ? "
                       "AND stage_id = 'research'", [run_id, target])[0]
    assert cell == {"status": "ok", "attempts": 2}
    assert len(llm.requests) == len(db_rows(db, "SELECT 1 FROM llm_calls")) == 4 + 4 + 3 + 1


def test_when_filters_before_any_call(llm, tmp_path, db):
    stages = default_stages(top=10)
    stages[1]["when"] = "account.industry != 'retail'"  # accounts 1, 5, 9 of 12
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, stages=stages),
                     write_accounts(tmp_path, 12))
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {
        "research": {"ok": 12}, "score": {"ok": 9, "filtered": 3},
        "select": {"ok": 9, "filtered": 3}, "write": {"ok": 9, "filtered": 3}}
    retail = {account_id(i) for i in (1, 5, 9)}
    scored = {r["_meta"]["item"] for r in llm.requests if stage_of(r) == "score"}
    assert len(scored) == 9 and not scored & retail


# --- concurrency, measured at the server --------------------------------------------------

@pytest.mark.parametrize("limit,n", [(5, 30), (1, 5)])
def test_concurrency_limit_measured_at_the_server(llm, tmp_path, db, limit, n):
    llm.latency = 0.2 if limit > 1 else 0.05
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, concurrency=8),
                     write_accounts(tmp_path, n), "--concurrency", str(limit))
    assert res.exit_code == 0, res.output
    assert len(llm.requests) == 2 * n + 3
    assert llm.peak_in_flight <= limit
    assert llm.peak_in_flight >= max(1, limit - 1)  # and the limit is actually used


class StageGauge:
    """An async responder that holds each request `delay` seconds and counts, per stage, how
    many the server is handling at once."""

    def __init__(self, delay: float):
        self.delay = delay
        self.lock = threading.Lock()
        self.now: Counter = Counter()
        self.peak: Counter = Counter()

    async def __call__(self, body: dict) -> Reply:
        stage = stage_of(body)
        with self.lock:
            self.now[stage] += 1
            self.peak[stage] = max(self.peak[stage], self.now[stage])
        try:
            await asyncio.sleep(self.delay)
        finally:
            with self.lock:
                self.now[stage] -= 1
        reply = default_reply(body)
        reply.delay = 0
        return reply


def test_per_stage_concurrency(llm, tmp_path, db):
    stages = default_stages()
    stages[0]["concurrency"] = 2  # research
    gauge = StageGauge(0.15)
    llm.responder = gauge
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, stages=stages, concurrency=8),
                     write_accounts(tmp_path, 12))
    assert res.exit_code == 0, res.output
    assert gauge.peak["research"] == 2
    # the global limit (8) still lets score calls run beside the two research calls
    assert llm.peak_in_flight > 2
    assert gauge.peak["score"] >= 2


def test_accounts_stream_through_stages(llm, tmp_path, db):
    """Score calls start while research is still going: no barrier between agent stages."""
    llm.latency = 0.05
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, concurrency=4),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 0, res.output
    order = [stage_of(r) for r in llm.requests]
    last_research = max(i for i, s in enumerate(order) if s == "research")
    first_score = order.index("score")
    assert first_score < last_research, order
    # and the fan-in holds: no write before every score is in
    last_score = max(i for i, s in enumerate(order) if s == "score")
    assert order.index("write") > last_score


# --- the offline mock model ---------------------------------------------------------------

def test_mock_runs_are_deterministic_and_free(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")  # never contacted
    accounts = write_accounts(tmp_path, 10)
    first = run_inproc("run", spec, accounts, "--mock", env={"OPENAI_API_KEY": None})
    second = run_inproc("run", spec, accounts, "--mock", env={"OPENAI_API_KEY": None})
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = first_line(first.stdout), first_line(second.stdout)
    assert a != b
    assert outputs(db, a) == outputs(db, b)
    assert len(outputs(db, a)) == 40
    assert "mock" in first.stdout
    calls = db_rows(db, "SELECT model, cost_usd FROM llm_calls WHERE run_id = ?", [a])
    assert calls and {c["model"] for c in calls} == {"mock"}
    assert {c["cost_usd"] for c in calls} == {0.0}
    runs = json.loads(run_inproc("runs", "--json").stdout)
    assert [(r["run_id"], r["mock"]) for r in runs] == [(b, True), (a, True)]
    assert runs[0]["cost_usd"] == 0
    view = json.loads(run_inproc("inspect", a, "--json").stdout)
    assert view["mock"] is True
    assert {m for s in view["stages"] for m in s["models"]} == {"mock"}
    assert view["totals"]["cost_usd"] == 0
