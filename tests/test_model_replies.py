"""What real models and providers send back, and what agentctl makes of it: replies cut off at
max_tokens, blocked by a content filter, refused or empty; replies without usage (or with
nonsense usage, or naming another model); error statuses whose bodies mislead; 200 replies
litellm cannot read; slow bodies; and tool calls without a name or with a shared id.

Runs go through the CLI app in-process against `FakeLLM` on loopback; the tests count the
requests the server saw and read the run log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fakes.llm_server import NO_USAGE, Reply
from tests.helpers import (account_id, db_rows, first_line, run_inproc, write_accounts,
                           write_spec)

pytestmark = pytest.mark.timeout(60)

TAG = "[[item:{{ account.id }}]] [[stage:%s]]"
STRUCTURED = {"id": "research", "agent": "researcher",
              "prompt": "Research {{ account.name }}. " + TAG % "research",
              "output": {"summary": "str", "tier": {"type": "enum", "values": ["low", "high"]}}}
FREE_TEXT = {"id": "research", "agent": "researcher",
             "prompt": "Write about {{ account.name }}. " + TAG % "research"}


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def spec(tmp_path: Path, api_base: str, stage: dict, **extra) -> Path:
    doc = {"models": {"fast": {"max_tokens": 200}},
           "defaults": {"max_repairs": 1, "max_attempts": 3}}
    for key, value in extra.items():
        doc.setdefault(key, {}).update(value)
    return write_spec(tmp_path, api_base, stages=[stage], extra=doc)


def run(spec_path: Path, accounts: Path, code: int | None = None) -> str:
    res = run_inproc("run", spec_path, accounts)
    if code is not None:
        assert res.exit_code == code, (res.stdout, res.stderr)
    return first_line(res.stdout)


def cell(db: Path, run_id: str, item: str) -> dict:
    return db_rows(db, "SELECT * FROM cells WHERE run_id = ? AND item_key = ?", [run_id, item])[0]


def calls(db: Path, run_id: str, item: str | None = None) -> list[dict]:
    where, params = ("AND item_key = ?", [item]) if item else ("", [])
    rows = db_rows(db, f"SELECT * FROM llm_calls WHERE run_id = ? {where} ORDER BY started_at",
                   [run_id, *params])
    for r in rows:
        r["response"] = json.loads(r["response"]) if r["response"] else None
    return rows


def for_item(item: str, reply: Reply):
    """A responder that answers `item`'s requests with `reply`, the rest by default."""
    return lambda body: reply if body["_meta"].get("item") == item else None


# --- 2, 3. cut off, filtered, refused, empty: a failed cell, not an ok one -----------------

REFUSAL = "I'm sorry, I can't help with that."
UNUSABLE = {
    "length": (Reply(content='{"summary": "Acme is a', finish_reason="length"), "Truncated",
               "reply cut off at max_tokens=200 (finish_reason length); "
               "raise models.fast.max_tokens"),
    "reasoning": (Reply(content="", finish_reason="length"), "Truncated", "max_tokens=200"),
    "filter": (Reply(content=None, finish_reason="content_filter"), "ContentFilter",
               "the provider's content filter blocked the reply"),
    "refusal": (Reply(content=None, refusal=REFUSAL), "Refused", f"the model refused: {REFUSAL}"),
}


@pytest.mark.parametrize("stage", [FREE_TEXT, STRUCTURED], ids=["free_text", "structured"])
@pytest.mark.parametrize("case", list(UNUSABLE))
def test_a_cut_off_filtered_or_refused_reply_fails_its_cell_without_a_repair(
        llm, tmp_path, db, stage, case):
    reply, kind, words = UNUSABLE[case]
    target = account_id(1)
    llm.responder = for_item(target, reply)
    run_id = run(spec(tmp_path, llm.base_url, stage), write_accounts(tmp_path, 3), code=1)

    failed = cell(db, run_id, target)
    assert failed["status"] == "failed" and failed["error_type"] == kind, failed
    assert words in failed["error"]
    assert "\n" not in failed["error"]
    # one request: a repair with the same max_tokens (or prompt) would get the same reply
    assert llm.count(item=target) == 1
    (row,) = calls(db, run_id, target)
    assert row["status"] == "invalid" and row["error_type"] == kind and words in row["error"]
    if case == "refusal":  # the refusal's own words stay in the log
        assert row["response"]["refusal"] == REFUSAL
    assert all(cell(db, run_id, account_id(i))["status"] == "ok" for i in (0, 2))
    # inspect says why the reply ended and what agentctl made of it, apart from the reply
    shown = run_inproc("inspect", run_id, "--item", target).stdout
    if case != "refusal":
        assert f"finish_reason {reply.finish_reason}" in shown
    else:
        assert f"refusal: {REFUSAL}" in shown
    assert "error: " in shown and ("(no content)" in shown if reply.content is None else True)


@pytest.mark.parametrize("stage", [FREE_TEXT, STRUCTURED], ids=["free_text", "structured"])
@pytest.mark.parametrize("content", [None, "", "  \n"], ids=["null", "empty", "blank"])
def test_an_empty_reply_is_asked_again_once_then_fails_its_cell(llm, tmp_path, db, stage, content):
    target = account_id(0)
    llm.responder = for_item(target, Reply(content=content))
    run_id = run(spec(tmp_path, llm.base_url, stage), write_accounts(tmp_path, 2), code=1)

    failed = cell(db, run_id, target)
    assert failed["status"] == "failed" and failed["error_type"] == "EmptyReply", failed
    assert "the model returned an empty reply" in failed["error"]
    rows = calls(db, run_id, target)
    assert [(r["purpose"], r["status"]) for r in rows] == [("initial", "invalid"), ("retry", "invalid")]
    assert llm.count(item=target) == 2


def test_an_empty_reply_then_an_answer_is_an_ok_cell(llm, tmp_path, db):
    target, sent = account_id(0), []

    def responder(body):
        sent.append(body)
        return Reply(content="") if len(sent) == 1 else None

    llm.responder = responder
    run_id = run(spec(tmp_path, llm.base_url, FREE_TEXT), write_accounts(tmp_path, 1), code=0)
    assert cell(db, run_id, target)["status"] == "ok"
    assert [r["purpose"] for r in calls(db, run_id, target)] == ["initial", "retry"]
    assert sent[0]["messages"] == sent[1]["messages"]  # the same request, asked again


# --- 4, 14. no usage, or nonsense usage: unknown and unpriced, never $0 --------------------

@pytest.mark.parametrize("usage", [NO_USAGE, {"prompt_tokens": -5, "completion_tokens": -5,
                                              "total_tokens": -10}], ids=["missing", "negative"])
def test_a_reply_without_usable_usage_is_unpriced_not_free(llm, tmp_path, db, usage):
    llm.responder = lambda body: Reply(content=json.dumps({"summary": "s", "tier": "low"}),
                                       usage=usage)
    res = run_inproc("run", spec(tmp_path, llm.base_url, STRUCTURED), write_accounts(tmp_path, 2))
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    for row in calls(db, run_id):
        assert row["status"] == "ok"
        assert row["input_tokens"] is None and row["output_tokens"] is None, row
        assert row["cost_usd"] is None, row  # unpriced, not $0 and not negative
        assert row["response"]["usage"] is None
    assert all(c["cost_usd"] is None for c in db_rows(db, "SELECT cost_usd FROM cells"))
    assert "unpriced" in res.stdout


def test_the_budget_counts_a_reply_without_usage_at_its_reserved_worst_case(llm, tmp_path, db):
    """gpt-4o-mini at $0.60/Mtok out: max_tokens 10,000 holds about $0.006 a call. Replies
    that report no usage must still use up a $0.02 budget (they used to count as $0)."""
    llm.responder = lambda body: Reply(content=json.dumps({"summary": "s", "tier": "low"}),
                                       usage=NO_USAGE)
    path = spec(tmp_path, llm.base_url, STRUCTURED, models={"fast": {"max_tokens": 10_000}},
                budget={"max_usd": 0.02}, defaults={"concurrency": 1})
    res = run_inproc("run", path, write_accounts(tmp_path, 10))
    run_id = first_line(res.stdout)
    assert res.exit_code == 4, res.output
    assert db_rows(db, "SELECT status FROM runs WHERE run_id = ?", [run_id])[0]["status"] \
        == "budget_exceeded"
    assert 2 <= len(llm.requests) <= 4


# --- 10. the configured model is priced, not the name the reply reports ---------------------

@pytest.mark.parametrize("configured", ["openai/gpt-4o-mini", "openai/fake-unpriced"])
def test_cost_is_for_the_configured_model_not_the_one_the_reply_names(llm, tmp_path, db, configured):
    from agentctl.llm.litellm_client import price_of

    llm.responder = lambda body: Reply(content=json.dumps({"summary": "s", "tier": "low"}),
                                       model="gpt-4o")
    path = spec(tmp_path, llm.base_url, STRUCTURED, models={"fast": {"model": configured}})
    run_id = run(path, write_accounts(tmp_path, 1), code=0)
    (row,) = calls(db, run_id)
    assert row["model"] == "gpt-4o"  # llm_calls.model: the name the reply reports (schema.py)
    usage = llm.requests[0]["_usage"]
    expected = price_of(configured, usage["prompt_tokens"], usage["completion_tokens"])
    if configured == "openai/fake-unpriced":
        assert expected is None and row["cost_usd"] is None
    else:
        assert row["cost_usd"] == pytest.approx(expected)
        assert row["cost_usd"] < price_of("gpt-4o", usage["prompt_tokens"],
                                          usage["completion_tokens"]) / 5


def test_an_alias_price_is_used_whatever_model_the_reply_names(llm, tmp_path, db):
    llm.responder = lambda body: Reply(content=json.dumps({"summary": "s", "tier": "low"}),
                                       model="gpt-4o")
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    path = spec(tmp_path, llm.base_url, STRUCTURED,
                models={"fast": {"model": "openai/fake-unpriced", "price": price}})
    run_id = run(path, write_accounts(tmp_path, 1), code=0)
    (row,) = calls(db, run_id)
    usage = llm.requests[0]["_usage"]
    assert row["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6)


# --- 5-8. provider errors: the status decides, the provider's words are kept ---------------

def one_failed_cell(llm, tmp_path, db, reply: Reply, *, code: int = 1) -> tuple[dict, list[dict]]:
    target = account_id(1)
    llm.responder = for_item(target, reply)
    run_id = run(spec(tmp_path, llm.base_url, STRUCTURED), write_accounts(tmp_path, 3), code=code)
    return cell(db, run_id, target), calls(db, run_id, target)


def test_a_400_that_says_timed_out_is_a_bad_request_not_a_timeout(llm, tmp_path, db):
    message = "Invalid 'messages': tool call timed out value must be a string"
    failed, rows = one_failed_cell(llm, tmp_path, db, Reply(status=400, content=message))
    assert llm.count(item=account_id(1)) == 1
    assert failed["error_type"] == "BadRequest" and "bad request" in failed["error"]
    assert message in failed["error"]


@pytest.mark.parametrize("reply", [
    Reply(status=413, raw="<html><head><title>Error</title></head><body><h1>413</h1>nginx"
                          "</body></html>", content_type="text/html"),
    Reply(status=413, content="Request too large")], ids=["html", "json"])
def test_a_413_is_permanent_whatever_its_body(llm, tmp_path, db, reply):
    failed, rows = one_failed_cell(llm, tmp_path, db, reply)
    assert llm.count(item=account_id(1)) == 1  # the oversized request is not sent again
    assert failed["error_type"] == "RequestTooLarge", failed
    assert "request too large (413" in failed["error"]
    assert rows[0]["wait_ms"] is None


def test_a_403_stops_the_run_with_the_providers_reason(llm, tmp_path, db):
    llm.responder = lambda body: Reply(status=403, raw=json.dumps({"error": {
        "message": "Country not supported", "type": "permission_denied",
        "code": "unsupported_country_region_territory"}}))
    res = run_inproc("run", spec(tmp_path, llm.base_url, STRUCTURED), write_accounts(tmp_path, 3))
    assert res.exit_code == 2, res.output
    run_id = first_line(res.stdout)
    error = db_rows(db, "SELECT error FROM runs WHERE run_id = ?", [run_id])[0]["error"]
    assert "permission denied (403: Country not supported " \
           "(unsupported_country_region_territory))" in error
    assert "OPENAI_API_KEY" in error and "region" in error


def test_a_prompt_filter_block_in_a_200_reply_is_said_and_not_retried(llm, tmp_path, db):
    body = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
                "hate": {"filtered": True, "severity": "high"}}}]}
    failed, rows = one_failed_cell(llm, tmp_path, db, Reply(raw=json.dumps(body)))
    assert llm.count(item=account_id(1)) == 1
    assert failed["error_type"] == "ContentFilter", failed
    assert "content filter blocked the prompt" in failed["error"]
    assert "prompt_filter_results" in failed["error"] and "500" not in failed["error"]


@pytest.mark.parametrize("raw", [
    json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop"}]}),
    json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": [{"type": "text", "text": "{}"}]}}]}),
    "null"], ids=["no_message", "content_parts", "null_body"])
def test_a_200_reply_litellm_cannot_read_keeps_litellms_words(llm, tmp_path, db, raw):
    failed, rows = one_failed_cell(llm, tmp_path, db, Reply(raw=raw))
    assert failed["error_type"] == "MalformedReply", failed
    assert "server error" not in failed["error"] and "500" not in failed["error"]
    assert "Invalid response object" in failed["error"]
    assert len(rows) == llm.count(item=account_id(1)) == 3  # it may heal: retried


# --- 9. no wait after the last attempt -----------------------------------------------------

def test_the_last_attempt_of_a_cell_waits_for_nothing(llm, tmp_path, db):
    target = account_id(0)
    llm.responder = lambda body: Reply(status=503, error_type="server_error",
                                       headers={"Retry-After": "2"})
    path = spec(tmp_path, llm.base_url, STRUCTURED, defaults={"max_attempts": 2})
    t0 = time.monotonic()
    run_id = run(path, write_accounts(tmp_path, 1), code=1)
    elapsed = time.monotonic() - t0
    rows = calls(db, run_id, target)
    assert [r["status"] for r in rows] == ["error", "error"]
    assert rows[0]["wait_ms"] >= 2000  # a next attempt followed: it waited
    assert rows[1]["wait_ms"] is None  # none followed: no wait
    done = cell(db, run_id, target)
    assert "gave up after 2 attempts" in done["error"]
    last_seen = rows[1]["started_at"].timestamp() + rows[1]["latency_ms"] / 1000
    assert done["ended_at"].timestamp() - last_seen < 1.0
    assert elapsed < 2 * 2.2 + 2  # one Retry-After wait, not two (start-up included)


# --- 11. the alias timeout bounds a slowly sent body --------------------------------------

def test_the_alias_timeout_bounds_a_reply_body_sent_slowly(llm, tmp_path, db):
    target = account_id(0)
    llm.responder = lambda body: Reply(content=json.dumps({"summary": "s", "tier": "low"}),
                                       dribble=0.3)  # ~300 bytes: ~11 s in all
    path = spec(tmp_path, llm.base_url, STRUCTURED, models={"fast": {"timeout": 1}},
                defaults={"max_attempts": 1})
    run_id = run(path, write_accounts(tmp_path, 1), code=1)
    (row,) = calls(db, run_id, target)
    assert row["error_type"] == "Timeout", row
    assert 900 <= row["latency_ms"] < 2500, row  # not timeout + 5 s, not the whole dribble
    assert "timed out after 1 s" in row["error"]


# --- 13. tool calls without a name, or sharing an id --------------------------------------

TOOLBOX = Path(__file__).parent / "data" / "tools" / "agentctl_test_toolbox.py"


def tool_spec(tmp_path: Path, api_base: str) -> Path:
    import shutil

    (tmp_path / "tools").mkdir(exist_ok=True)
    shutil.copy(TOOLBOX, tmp_path / "tools")
    return write_spec(tmp_path, api_base, stages=[STRUCTURED], extra={
        "tools": {"nap": {"type": "python", "function": "agentctl_test_toolbox:nap",
                          "path": "tools"}},
        "agents": {"researcher": {"tools": ["nap"]}}})


def scripted_round(calls_: list[dict]):
    def responder(body):
        if body["messages"][-1].get("role") == "tool":
            return Reply(content=json.dumps({"summary": "s", "tier": "low"}))
        return Reply(tool_calls=calls_)
    return responder


def test_a_tool_call_without_a_name_is_denied_and_no_null_name_goes_back(llm, tmp_path, db):
    llm.responder = scripted_round([{"id": "c1", "arguments": "{}"}])
    run_id = run(tool_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 1), code=0)
    _, second = llm.requests
    asked = second["messages"][-2]
    (sent,) = asked["tool_calls"]
    assert isinstance(sent["function"]["name"], str) and sent["function"]["name"], sent
    (answer,) = [m for m in second["messages"] if m["role"] == "tool"]
    assert answer["tool_call_id"] == sent["id"] == "c1"
    error = json.loads(answer["content"])["error"]
    assert "no function name" in error and "nap" in error and "None" not in error
    assert db_rows(db, "SELECT status FROM cells WHERE run_id = ?", [run_id])[0]["status"] == "ok"
    # every tool call the model made has its row, this one too
    (row,) = db_rows(db, "SELECT tool, status, error FROM tool_calls WHERE run_id = ?", [run_id])
    assert row["tool"] == "" and row["status"] == "denied" and "no function name" in row["error"]


def test_tool_calls_sharing_an_id_get_their_own_ids_and_answers(llm, tmp_path, db, monkeypatch):
    monkeypatch.setenv("TOOLBOX_DIR", str(tmp_path))  # where `nap` records its calls
    llm.responder = scripted_round([
        {"id": "same", "name": "nap", "arguments": {"tag": "one", "seconds": 0}},
        {"id": "same", "name": "nap", "arguments": {"tag": "two", "seconds": 0}}])
    run(tool_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 1), code=0)
    second = llm.requests[1]
    asked = second["messages"][-3]
    ids = [c["id"] for c in asked["tool_calls"]]
    assert len(set(ids)) == 2 and ids[0] == "same", ids
    answers = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answers] == ids
    # each answer is its own call's result
    assert "one" in answers[0]["content"] and "two" in answers[1]["content"]
