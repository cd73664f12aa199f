"""The tool loop end to end: a model asks for tools, the runner checks and runs them, the
results go back to the model, and every call lands in the run log.

Runs go through the CLI app in-process against `FakeLLM` on loopback (litellm with api_base
and a fake key) or `--mock`. A responder scripts each cell's tool rounds; the tests then
count what the server saw and what `tool_calls` recorded.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import (account_id, cell_counts, db_rows, first_line, run_inproc,
                           stage_of, write_accounts, write_spec)

pytestmark = pytest.mark.timeout(30)

TOOLBOX = Path(__file__).parent / "data" / "tools" / "agentctl_test_toolbox.py"
MCP_DEMO = Path(__file__).parent / "fakes" / "mcp_server_demo.py"
TAG = "[[item:{{ account.id }}]] [[stage:%s]]"


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


@pytest.fixture
def toolbox_dir(tmp_path) -> Path:
    path = tmp_path / "toolbox"
    path.mkdir()
    return path


# --- scripting the model -------------------------------------------------------------------

Plan = Callable[[str, str, int, dict], "list[dict] | None"]


class Script:
    """A FakeLLM responder: ``plan(item, stage, n, body)`` gives the tool calls of a cell's
    n-th request (n = tool rounds already in the conversation); None lets the default
    answer (schema-valid JSON) through."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def __call__(self, body: dict) -> Reply | None:
        calls = self.plan(body["_meta"].get("item", ""), stage_of(body), rounds_in(body), body)
        return Reply(tool_calls=calls) if calls else None


def rounds_in(body: dict) -> int:
    return sum(1 for m in body["messages"] if m.get("role") == "assistant" and m.get("tool_calls"))


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m.get("role") == "tool"]


def requests_of(llm, item: str) -> list[dict]:
    return [r for r in llm.requests if r["_meta"].get("item") == item]


def python_tool(function: str, **extra: Any) -> dict:
    return {"type": "python", "function": f"agentctl_test_toolbox:{function}", "path": "tools", **extra}


def tool_pipeline(tmp_path: Path, api_base: str, *, tools: dict, grants: list[str],
                  agent_extra: dict | None = None, stages: list[dict] | None = None) -> Path:
    """One `research` stage whose agent holds ``grants`` (plus whatever ``stages`` add)."""
    (tmp_path / "tools").mkdir(exist_ok=True)  # python tools live beside the spec, like a user's
    shutil.copy(TOOLBOX, tmp_path / "tools")
    stages = stages or [{"id": "research", "agent": "researcher",
                         "prompt": "Research {{ account.name }}. " + TAG % "research",
                         "output": {"summary": "str"}}]
    return write_spec(tmp_path, api_base, stages=stages, extra={
        "tools": tools, "agents": {"researcher": {"tools": grants, **(agent_extra or {})}}})


def make_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "acme.md").write_text("# Acme\n\nAcme builds rockets and anvils for road runners.\n")
    (corpus / "globex.md").write_text("# Globex\n\nGlobex sells enterprise software to utilities.\n")
    return corpus


def tool_rows(db: Path, run_id: str, **where: str) -> list[dict]:
    cond = "".join(f" AND {k} = ?" for k in where)
    rows = db_rows(db, f"SELECT * FROM tool_calls WHERE run_id = ?{cond} ORDER BY started_at",
                   [run_id, *where.values()])
    for r in rows:
        r["arguments"] = json.loads(r["arguments"]) if r["arguments"] else None
    return rows


def run_ok(*args: Any, env: dict | None = None, code: int = 0) -> str:
    res = run_inproc("run", *args, env=env)
    assert res.exit_code == code, (res.stdout, res.stderr)
    return first_line(res.stdout)


# --- 1. one granted tool, one round -----------------------------------------------------------

def test_granted_tool_runs_and_its_result_goes_back_to_the_model(llm, tmp_path, db):
    make_corpus(tmp_path)
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"kb": {"type": "kb_search", "corpus": "corpus"}},
                         grants=["kb"])
    llm.responder = Script(lambda item, stage, n, body:
                           [{"name": "kb", "arguments": {"query": "rockets anvils"}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1))

    # the model was offered the tool, asked for it, and got its result in a `tool` message
    first, second = llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["kb"]
    assert not tool_messages(first)
    asked = second["messages"][-2]
    assert asked["role"] == "assistant" and asked["tool_calls"][0]["function"]["name"] == "kb"
    (answer,) = tool_messages(second)
    assert answer["tool_call_id"] == asked["tool_calls"][0]["id"]
    hits = json.loads(answer["content"])
    assert hits[0]["source"] == "acme.md" and "rockets" in hits[0]["snippet"]
    assert cell_counts(db, run_id) == {"research": {"ok": 1}}

    # the log: tool, arguments, result, status, duration, and the LLM call that asked for it
    (row,) = tool_rows(db, run_id)
    assert (row["tool"], row["agent"], row["item_key"], row["stage_id"], row["status"]) == \
        ("kb", "researcher", account_id(0), "research", "ok")
    assert row["arguments"] == {"query": "rockets anvils"}
    assert row["result"] == answer["content"]
    assert row["result_chars"] == len(answer["content"])
    assert row["error"] is None and row["duration_ms"] > 0
    calls = db_rows(db, "SELECT call_id, purpose, response FROM llm_calls WHERE run_id = ? "
                        "ORDER BY attempt", [run_id])
    assert [c["purpose"] for c in calls] == ["initial", "tool_round"]
    assert row["llm_call_id"] == calls[0]["call_id"]
    assert json.loads(calls[0]["response"])["tool_calls"][0]["name"] == "kb"


# --- 2. several calls in one reply ------------------------------------------------------------

def test_calls_in_one_reply_all_run_and_run_concurrently(llm, tmp_path, db, toolbox_dir):
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"nap": python_tool("nap")}, grants=["nap"])
    llm.responder = Script(lambda item, stage, n, body: [
        {"name": "nap", "arguments": {"tag": t, "seconds": 0.3}} for t in ("a", "b", "c")] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1), env={"TOOLBOX_DIR": str(toolbox_dir)})

    naps = [json.loads(line) for line in (toolbox_dir / "naps.jsonl").read_text().splitlines()]
    assert sorted(n["tag"] for n in naps) == ["a", "b", "c"]
    # concurrently: every nap started before any ended, and three 0.3 s naps took ~0.3 s, not 0.9 s
    assert max(n["start"] for n in naps) < min(n["end"] for n in naps)
    assert max(n["end"] for n in naps) - min(n["start"] for n in naps) < 0.6
    rows = tool_rows(db, run_id)
    assert sorted(r["arguments"]["tag"] for r in rows) == ["a", "b", "c"]
    assert {r["status"] for r in rows} == {"ok"}
    assert len({r["llm_call_id"] for r in rows}) == 1
    assert all(r["duration_ms"] >= 290 for r in rows)
    # results go back in the order the model asked, each under its own tool_call_id
    last = llm.requests[-1]
    ids = [c["id"] for c in last["messages"][-4]["tool_calls"]]
    results = tool_messages(last)
    assert [m["tool_call_id"] for m in results] == ids
    assert [json.loads(m["content"])["tag"] for m in results] == ["a", "b", "c"]


# --- 3. permissions --------------------------------------------------------------------------

def test_tools_not_granted_are_denied_logged_and_shown_by_inspect(llm, tmp_path, db, toolbox_dir):
    make_corpus(tmp_path)
    tools = {"kb": {"type": "kb_search", "corpus": "corpus"}, "nap": python_tool("nap")}
    spec = tool_pipeline(tmp_path, llm.base_url, tools=tools, grants=["kb"])  # nap is not granted
    llm.responder = Script(lambda item, stage, n, body: [
        {"name": "nap", "arguments": {"tag": "sneaky"}},
        {"name": "rm_rf", "arguments": {"path": "/"}},
        {"name": "kb", "arguments": {"query": "rockets"}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1), env={"TOOLBOX_DIR": str(toolbox_dir)})

    assert [t["function"]["name"] for t in llm.requests[0]["tools"]] == ["kb"]
    assert not (toolbox_dir / "naps.jsonl").exists()  # never executed
    answers = [json.loads(m["content"]) for m in tool_messages(llm.requests[-1])]
    assert "'nap'" in answers[0]["error"] and "agent 'researcher'" in answers[0]["error"]
    assert "not permitted" in answers[0]["error"] and "allowed: kb" in answers[0]["error"]
    assert "'rm_rf'" in answers[1]["error"] and "not permitted" in answers[1]["error"]
    assert isinstance(answers[2], list)  # the granted call in the same reply still ran
    by_tool = {r["tool"]: r for r in tool_rows(db, run_id)}
    assert {t: r["status"] for t, r in by_tool.items()} == {"nap": "denied", "rm_rf": "denied", "kb": "ok"}
    assert by_tool["rm_rf"]["arguments"] == {"path": "/"}
    assert cell_counts(db, run_id) == {"research": {"ok": 1}}

    res = run_inproc("inspect", run_id, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    denied = doc["denied_tool_calls"]
    assert sorted(d["tool"] for d in denied) == ["nap", "rm_rf"]
    assert {(d["item_key"], d["stage_id"], d["agent"]) for d in denied} == \
        {(account_id(0), "research", "researcher")}
    (stage,) = doc["stages"]
    assert (stage["tool_calls"], stage["denied_tool_calls"]) == (3, 2)


@pytest.mark.parametrize("declared", [True, False], ids=["tools-declared", "no-tools-at-all"])
def test_tool_call_from_an_agent_without_tools_is_logged_as_denied(llm, tmp_path, db, declared):
    make_corpus(tmp_path)
    tools = {"kb": {"type": "kb_search", "corpus": "corpus"}} if declared else {}
    spec = tool_pipeline(tmp_path, llm.base_url, tools=tools, grants=[])
    # the model was offered no tools at all, and asks for one anyway
    llm.responder = Script(lambda item, stage, n, body:
                           [{"name": "kb", "arguments": {"query": "x"}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1))

    assert "tools" not in llm.requests[0]
    (answer,) = tool_messages(llm.requests[-1])
    assert "'kb'" in answer["content"] and "not available" in answer["content"]
    assert [(r["tool"], r["status"]) for r in tool_rows(db, run_id)] == [("kb", "denied")]
    assert cell_counts(db, run_id) == {"research": {"ok": 1}}


# --- 4. argument validation ------------------------------------------------------------------

def test_invalid_arguments_are_refused_before_the_tool_runs(llm, tmp_path, db, toolbox_dir):
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"nap": python_tool("nap")}, grants=["nap"])
    bad = [{"name": "nap", "arguments": {"tag": 5}},                       # wrong type
           {"name": "nap", "arguments": {"seconds": 0.01}},                # required `tag` missing
           {"name": "nap", "arguments": {"tag": "x", "volume": 11}},       # unknown argument
           {"name": "nap", "arguments": '{"tag": "unterminated'},          # not JSON at all
           {"name": "nap", "arguments": {"tag": "fine", "seconds": 0.01}}]
    llm.responder = Script(lambda item, stage, n, body: bad if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1), env={"TOOLBOX_DIR": str(toolbox_dir)})

    naps = [json.loads(line) for line in (toolbox_dir / "naps.jsonl").read_text().splitlines()]
    assert [n["tag"] for n in naps] == ["fine"]  # only the valid call executed
    answers = [json.loads(m["content"]) for m in tool_messages(llm.requests[-1])]
    assert "tag" in answers[0]["error"] and "string" in answers[0]["error"]
    assert "tag" in answers[1]["error"] and "required" in answers[1]["error"]
    assert "volume" in answers[2]["error"]
    assert "not valid JSON" in answers[3]["error"]
    assert answers[4] == {"tag": "fine", "slept": 0.01}
    rows = tool_rows(db, run_id)
    assert [r["status"] for r in rows].count("invalid_args") == 4
    raw = next(r for r in rows if r["arguments"] and "_raw" in r["arguments"])
    assert raw["arguments"]["_raw"] == '{"tag": "unterminated' and raw["status"] == "invalid_args"
    assert all(r["error"] for r in rows if r["status"] == "invalid_args")
    assert cell_counts(db, run_id) == {"research": {"ok": 1}}


# --- 5. a raising tool -------------------------------------------------------------------------

def test_raising_tool_becomes_the_tool_result_and_the_cell_completes(llm, tmp_path, db):
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"explode": python_tool("explode")},
                         grants=["explode"])
    llm.responder = Script(lambda item, stage, n, body:
                           [{"name": "explode", "arguments": {"reason": "tuesdays"}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 2))

    for i in range(2):
        (answer,) = tool_messages(requests_of(llm, account_id(i))[-1])
        assert json.loads(answer["content"]) == {"error": "ValueError: cannot handle tuesdays"}
    rows = tool_rows(db, run_id)
    assert [(r["status"], r["error"]) for r in rows] == [("error", "ValueError: cannot handle tuesdays")] * 2
    assert cell_counts(db, run_id) == {"research": {"ok": 2}}


# --- 6. the round limit -------------------------------------------------------------------------

def test_endless_tool_calls_stop_at_max_tool_rounds(llm, tmp_path, db, toolbox_dir):
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"nap": python_tool("nap")}, grants=["nap"],
                         agent_extra={"max_tool_rounds": 2})
    looping = account_id(1)

    def plan(item, stage, n, body):
        if item == looping or n == 0:  # acct-001 never stops asking; the others ask once
            return [{"name": "nap", "arguments": {"tag": f"{item}-{n}", "seconds": 0.01}}]
        return None

    llm.responder = Script(plan)

    run_id = run_ok(spec, write_accounts(tmp_path, 3), env={"TOOLBOX_DIR": str(toolbox_dir)}, code=1)

    assert len(requests_of(llm, looping)) == 2 + 1  # max_tool_rounds answered rounds + the one refused
    assert len(tool_rows(db, run_id, item_key=looping)) == 2
    (cell,) = db_rows(db, "SELECT * FROM cells WHERE run_id = ? AND item_key = ?", [run_id, looping])
    assert cell["status"] == "failed" and cell["error_type"] == "ToolRoundsExceeded"
    assert "max_tool_rounds=2" in cell["error"]
    for other in (account_id(0), account_id(2)):
        assert len(requests_of(llm, other)) == 2
    assert cell_counts(db, run_id) == {"research": {"ok": 2, "failed": 1}}


# --- 7. large results ---------------------------------------------------------------------------

def test_large_result_is_truncated_and_its_size_recorded(llm, tmp_path, db):
    spec = tool_pipeline(tmp_path, llm.base_url, tools={"big": python_tool("big")}, grants=["big"])
    llm.responder = Script(lambda item, stage, n, body:
                           [{"name": "big", "arguments": {"chars": 50_000}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1))

    (answer,) = tool_messages(llm.requests[-1])
    assert len(answer["content"]) <= 8000
    assert answer["content"].startswith("0123456789")
    assert "truncated" in answer["content"] and "50000" in answer["content"]
    (row,) = tool_rows(db, run_id)
    assert row["status"] == "ok" and row["result_chars"] == 50_000
    assert row["result"] == answer["content"]


# --- 8. MCP servers ------------------------------------------------------------------------------

def test_mcp_tools_are_offered_called_and_logged(llm, tmp_path, db):
    tools = {"time": {"type": "mcp", "command": [sys.executable, "-m", "mcp_server_time"]},
             "demo": {"type": "mcp", "command": [sys.executable, str(MCP_DEMO)]}}
    spec = tool_pipeline(tmp_path, llm.base_url, tools=tools, grants=["time", "demo.add"])
    llm.responder = Script(lambda item, stage, n, body: [
        {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}},
        {"name": "demo__add", "arguments": {"a": 2, "b": 40}},
        {"name": "demo__explode", "arguments": {}}] if n == 0 else None)

    run_id = run_ok(spec, write_accounts(tmp_path, 1))

    offered = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert {"time__get_current_time", "demo__add"} <= offered
    assert "demo__explode" not in offered and "demo__lookup_company" not in offered
    now, total, refused = (m["content"] for m in tool_messages(llm.requests[-1]))
    assert "UTC" in now and "datetime" in now
    assert "42" in total
    assert "not permitted" in refused
    by_tool = {r["tool"]: r for r in tool_rows(db, run_id)}
    assert by_tool["time.get_current_time"]["status"] == "ok"
    assert by_tool["time.get_current_time"]["arguments"] == {"timezone": "UTC"}
    assert by_tool["time.get_current_time"]["result"] == now
    assert by_tool["demo.add"]["status"] == "ok"
    assert by_tool["demo__explode"]["status"] == "denied"
    assert cell_counts(db, run_id) == {"research": {"ok": 1}}


def test_mcp_server_that_fails_to_start_stops_the_run_before_any_model_call(llm, tmp_path, db):
    tools = {"demo": {"type": "mcp", "command": [sys.executable, str(MCP_DEMO), "--fail-on-start"]}}
    spec = tool_pipeline(tmp_path, llm.base_url, tools=tools, grants=["demo"])

    res = run_inproc("run", spec, write_accounts(tmp_path, 2))

    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error:") and "demo" in lines[0]
    assert "Traceback" not in res.stderr
    assert llm.requests == []
    if db.exists():
        assert db_rows(db, "SELECT count(*) AS n FROM runs")[0]["n"] == 0


# --- 9. --mock exercises tools ----------------------------------------------------------------

@pytest.fixture
def crm_db(tmp_path) -> Path:
    path = tmp_path / "crm.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE companies (domain VARCHAR PRIMARY KEY, name VARCHAR, tier INTEGER)")
    con.execute("INSERT INTO companies VALUES ('company0.example.com', 'Company 0', 1)")
    con.close()
    return path


def mock_tools_pipeline(tmp_path: Path) -> Path:
    make_corpus(tmp_path)
    tools = {"kb": {"type": "kb_search", "corpus": "corpus"},
             "crm": {"type": "sql", "database": "crm.duckdb"}}
    stages = [{"id": "research", "agent": "researcher", "prompt": "Research {{ account.name }}",
               "output": {"summary": "str"}},
              {"id": "score", "agent": "scorer", "needs": ["research"],
               "prompt": "Score {{ account.name }}: {{ research.summary }}",
               "output": {"score": {"type": "int", "min": 0, "max": 100}}}]
    return tool_pipeline(tmp_path, "http://127.0.0.1:9/v1", tools=tools, grants=["kb", "crm"],
                         stages=stages)


def test_mock_run_calls_every_granted_tool_once_per_cell(tmp_path, db, crm_db):
    spec = mock_tools_pipeline(tmp_path)

    run_id = run_ok(spec, write_accounts(tmp_path, 3), "--mock")

    rows = tool_rows(db, run_id)
    # the researcher holds kb + crm; the scorer holds nothing
    assert Counter((r["item_key"], r["stage_id"], r["tool"]) for r in rows) == Counter(
        {(account_id(i), "research", t): 1 for i in range(3) for t in ("kb", "crm")})
    # and the mock's arguments are ones the tools accept and can answer
    assert {r["status"] for r in rows} == {"ok"}, [r["result"] for r in rows]
    assert all(r["llm_call_id"] for r in rows)
    assert cell_counts(db, run_id) == {"research": {"ok": 3}, "score": {"ok": 3}}
