"""The orchestration stage types (route, panel, reduce, orchestrate, select) against the loopback
server, measured where it shows: the requests the server saw, and rows in the run log
(`cells`, `spans`, `llm_calls`, `tool_calls`, `run_outputs`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import (account_id, agent_of, cell_counts, db_rows, first_line, last_user,
                           popen_cli, run_cli, run_inproc, run_status, write_accounts, write_spec)

pytestmark = pytest.mark.timeout(60)
TAG = "[[item:{{ account.id }}]]"


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"


AGENTS = {name: {"system": f"You are the {name}. [[agent:{name}]]"} for name in (
    "lead", "news", "hiring", "tech", "triage", "retail_scorer", "software_scorer",
    "generic_scorer", "skeptic", "optimist", "moderator", "analyst")}


def spec(tmp_path: Path, api_base: str, stages: list[dict], **extra) -> Path:
    return write_spec(tmp_path, api_base, stages=stages,
                      extra={"agents": AGENTS, **extra})


def run_ok(*args, code: int = 0):
    res = run_inproc(*map(str, args))
    assert res.exit_code == code, (res.exit_code, res.stdout[-3000:], res.stderr[-3000:])
    return first_line(res.stdout)


def spans(db: Path, run_id: str, **where) -> list[dict]:
    cond = "".join(f" AND {k} = ?" for k in where)
    rows = db_rows(db, f"SELECT * FROM spans WHERE run_id = ?{cond} ORDER BY started_at",
                   [run_id, *where.values()])
    for r in rows:
        r["output"] = json.loads(r["output"]) if r["output"] else None
    return rows


def outputs(db: Path, run_id: str, stage: str) -> dict[str, dict]:
    rows = db_rows(db, "SELECT item_key, output FROM cells WHERE run_id = ? AND stage_id = ?",
                   [run_id, stage])
    return {r["item_key"]: json.loads(r["output"]) if r["output"] else None for r in rows}


# --- route ----------------------------------------------------------------------------------

ROUTE_CASES = {
    "id": "score", "type": "route",
    "cases": [{"when": "account.industry == 'retail'", "agent": "retail_scorer"},
              {"when": "account.industry == 'software'", "agent": "software_scorer"}],
    "default": "generic_scorer",
    "prompt": "Score {{ account.name }} " + TAG,
    "output": {"score": {"type": "int", "min": 0, "max": 100}},
}


def test_route_cases_choose_a_specialist_and_record_why(llm, tmp_path, db):
    path = spec(tmp_path, llm.base_url, [ROUTE_CASES,
                {"id": "note", "agent": "analyst", "needs": ["score"],
                 "prompt": "Chosen {{ score.route.agent }} scored {{ score.score }} " + TAG}])
    run_id = run_ok("run", path, write_accounts(tmp_path, 8))

    industry = {account_id(i): ("software", "retail", "logistics", "fintech")[i % 4] for i in range(8)}
    expected = {"retail": "retail_scorer", "software": "software_scorer"}
    got = outputs(db, run_id, "score")
    for key, out in got.items():
        want = expected.get(industry[key], "generic_scorer")
        assert out["route"]["agent"] == want
        assert out["route"]["by"] == ("case" if want != "generic_scorer" else "default")
        assert 0 <= out["score"] <= 100
    # the server saw exactly one specialist request per account, from the chosen agent
    score_reqs = [b for b in llm.requests if b["response_format"]["json_schema"]["name"] == "score_output"]
    assert Counter(b["_meta"]["item"] for b in score_reqs) == Counter({k: 1 for k in industry})
    assert {b["_meta"]["item"]: agent_of(b) for b in score_reqs} == {
        k: expected.get(v, "generic_scorer") for k, v in industry.items()}
    # spans record the specialist and why; downstream saw route.agent
    sp = spans(db, run_id, stage_id="score")
    assert len(sp) == 8 and {s["role"] for s in sp} == {"specialist"}
    assert all(s["task"] for s in sp)
    notes = [b for b in llm.requests if b["response_format"]["json_schema"]["name"] == "note_output"]
    assert all(f"Chosen {got[b['_meta']['item']]['route']['agent']}" in last_user(b) for b in notes)


def test_route_without_a_match_or_default_is_filtered(llm, tmp_path, db):
    stage = {**ROUTE_CASES, "default": None}
    stage.pop("default")
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 4))
    assert cell_counts(db, run_id)["score"] == {"ok": 2, "filtered": 2}


def test_route_router_agent_picks_and_the_log_says_why(llm, tmp_path, db):
    def responder(body: dict) -> Reply | None:
        if body["response_format"]["json_schema"]["name"] == "score_router_output":
            item = body["_meta"]["item"]
            pick = "retail_scorer" if int(item[-3:]) % 2 else "software_scorer"
            return Reply(content=json.dumps({"agent": pick, "reason": f"odd/even {item}"}))
        return None

    llm.responder = responder
    stage = {"id": "score", "type": "route",
             "router": {"agent": "triage", "prompt": "Who scores {{ account.name }}? " + TAG},
             "choices": ["retail_scorer", "software_scorer"],
             "prompt": "Score {{ account.name }} " + TAG,
             "output": {"score": {"type": "int", "min": 0, "max": 100}}}
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 6))

    got = outputs(db, run_id, "score")
    for key, out in got.items():
        pick = "retail_scorer" if int(key[-3:]) % 2 else "software_scorer"
        assert out["route"] == {"agent": pick, "by": "router", "case": None,
                                "reason": f"odd/even {key}"}
    router_reqs = [b for b in llm.requests if agent_of(b) == "triage"]
    schema = router_reqs[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["agent"]["enum"] == ["retail_scorer", "software_scorer"]
    sp = spans(db, run_id, role="router")
    assert len(sp) == 6 and all(s["output"]["reason"].startswith("odd/even") for s in sp)
    calls = db_rows(db, "SELECT agent, count(*) AS n FROM llm_calls WHERE run_id = ? GROUP BY 1", [run_id])
    assert {c["agent"]: c["n"] for c in calls} == {"triage": 6, "retail_scorer": 3, "software_scorer": 3}


# --- panel ----------------------------------------------------------------------------------

PANEL = {"id": "review", "type": "panel", "panelists": ["skeptic", "optimist"],
         "moderator": "moderator", "rounds": 3,
         "prompt": "Is {{ account.name }} a fit? " + TAG,
         "output": {"fit": "bool", "why": "str"}}


def test_panel_runs_bounded_rounds_and_logs_every_turn(llm, tmp_path, db):
    seen: Counter = Counter()

    def responder(body: dict) -> Reply | None:  # panelists never converge: a new answer each time
        if body["response_format"]["json_schema"]["name"] == "review_panelist_output":
            key = (body["_meta"]["item"], agent_of(body))
            seen[key] += 1
            return Reply(content=json.dumps({"text": f"{key[1]} take {seen[key]}"}))
        return None

    llm.responder = responder
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [PANEL]), write_accounts(tmp_path, 3))

    assert cell_counts(db, run_id)["review"] == {"ok": 3}
    assert set(seen.values()) == {3}  # rounds: 3, never more
    for key in (account_id(i) for i in range(3)):
        sp = spans(db, run_id, item_key=key)
        turns = [(s["round"], s["agent"]) for s in sp if s["role"] == "panelist"]
        assert sorted(turns) == [(r, a) for r in (1, 2, 3) for a in ("optimist", "skeptic")]
        assert [s["role"] for s in sp][-1] == "moderator"
        # from round 2 on, each panelist saw the other's previous answer
        reqs = [b for b in llm.requests if b["_meta"].get("item") == key and agent_of(b) == "skeptic"]
        assert "optimist take 1" in last_user(reqs[1]) and "optimist take 2" in last_user(reqs[2])
        mod = next(b for b in llm.requests if b["_meta"].get("item") == key and agent_of(b) == "moderator")
        assert "[round 3] skeptic: skeptic take 3" in last_user(mod)
        calls = db_rows(db, "SELECT agent, count(*) AS n FROM llm_calls WHERE run_id = ? AND item_key = ? "
                            "GROUP BY 1", [run_id, key])
        assert {c["agent"]: c["n"] for c in calls} == {"skeptic": 3, "optimist": 3, "moderator": 1}

    # inspect --item shows the discussion in order
    res = run_inproc("inspect", run_id, "--item", account_id(0), env={"COLUMNS": "250"})
    assert res.exit_code == 0
    text = res.stdout
    order = [text.index(f"round {r} · {a}") for r in (1, 2, 3) for a in ("skeptic", "optimist")]
    assert order == sorted(order) or sorted(order[:2]) == order[:2]
    assert text.index("round 3 · ") < text.index("moderator moderator")


def test_panel_stops_early_when_nobody_changes_their_answer(llm, tmp_path, db):
    llm.responder = lambda body: (Reply(content=json.dumps({"text": f"fixed view of {agent_of(body)}"}))
                                  if body["response_format"]["json_schema"]["name"] == "review_panelist_output"
                                  else None)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [{**PANEL, "rounds": 5}]), write_accounts(tmp_path, 2))
    rounds = {s["round"] for s in spans(db, run_id, role="panelist")}
    assert rounds == {1, 2}  # round 2 repeated round 1, so the panel converged


# --- select ---------------------------------------------------------------------------------

# per account: a name (a tie, a missing one), a level from an enum declared low < medium < high
# (alphabetically high < low < medium), and a bool
GRADES = [("Bravo", "medium", True), ("Alpha", "high", False), ("Charlie", "low", True),
          ("Bravo", "medium", False), (None, None, None), ("Delta", "low", False)]


@pytest.mark.parametrize("by, order, ranked", [
    ("name", "desc", [5, 2, 0, 3, 1, 4]),
    ("name", "asc", [1, 0, 3, 2, 5, 4]),
    ("level", "desc", [1, 0, 3, 2, 5, 4]),
    ("level", "asc", [2, 5, 0, 3, 1, 4]),
    ("hot", "desc", [0, 2, 1, 3, 5, 4]),
    ("hot", "asc", [1, 3, 5, 0, 2, 4]),
])
def test_select_orders_strings_enums_and_bools_both_ways(llm, tmp_path, db, by, order, ranked):
    """`order` reverses every comparable type; an enum ranks by its declared `values`; ties
    keep input order and a missing value comes last, in both orders."""
    def responder(body: dict) -> Reply | None:
        name, level, hot = GRADES[int(body["_meta"]["item"][-3:])]
        return Reply(content=json.dumps({"name": name, "level": level, "hot": hot}))

    llm.responder = responder
    optional = {"required": False}
    stages = [{"id": "grade", "agent": "analyst", "prompt": "Grade {{ account.name }} " + TAG,
               "output": {"name": {"type": "str", **optional}, "hot": {"type": "bool", **optional},
                          "level": {"type": "enum", "values": ["low", "medium", "high"], **optional}}},
              {"id": "pick", "type": "select", "needs": ["grade"], "by": f"grade.{by}",
               "order": order, "top": 2}]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 6))

    got = outputs(db, run_id, "pick")
    assert {k: o["rank"] for k, o in got.items() if o["selected"]} == {
        account_id(ranked[0]): 1, account_id(ranked[1]): 2}
    # the full ranking, past `top`: run the same select without the cut
    stages[1] = {**stages[1], "top": 6}
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 6))
    got = outputs(db, run_id, "pick")
    assert sorted(got, key=lambda k: got[k]["rank"]) == [account_id(i) for i in ranked]


# --- reduce ---------------------------------------------------------------------------------

def reduce_stage(**over) -> dict:
    return {"id": "report", "type": "reduce", "needs": ["research"], "agent": "analyst",
            "prompt": "Report on:\n{% for it in items %}- {{ it.account.name }}: {{ it.research.summary }}\n{% endfor %}",
            "output": {"summary": "str", "count": "int"}, **over}


RESEARCH = {"id": "research", "agent": "researcher",
            "prompt": "Research {{ account.name }} " + TAG, "output": {"summary": "str"}}


def test_reduce_batches_over_the_token_limit_then_merges(llm, tmp_path, db):
    stages = [RESEARCH, reduce_stage(batch_size=5, max_input_tokens=120)]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 20))

    reqs = [b for b in llm.requests if agent_of(b) == "analyst"]
    maps = [b for b in reqs if "Report on:" in last_user(b)]
    merges = [b for b in reqs if "Merge these partial results" in last_user(b)]
    assert len(maps) == 4 and len(merges) >= 1
    assert sorted(last_user(b).count("\n- ") for b in maps) == [5, 5, 5, 5]
    names = Counter(re.findall(r"- (Company \d+):", "\n".join(last_user(b) for b in maps)))
    assert names == Counter({f"Company {i}": 1 for i in range(20)})
    row = db_rows(db, "SELECT * FROM run_outputs WHERE run_id = ?", [run_id])
    assert len(row) == 1 and row[0]["status"] == "ok" and row[0]["items"] == 20
    assert set(json.loads(row[0]["output"])) == {"summary", "count"}
    assert cell_counts(db, run_id)["report"] == {"ok": 20}
    sp = spans(db, run_id, stage_id="report")
    assert Counter(s["role"] for s in sp)["map"] == 4 and any(s["role"] == "merge" for s in sp)
    assert all(s["item_key"] is None for s in sp)
    calls = db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ? AND stage_id = 'report'", [run_id])
    assert calls[0]["n"] == len(reqs)
    # the run-level output is shown by inspect and exportable
    shown = run_inproc("inspect", run_id, env={"COLUMNS": "200"}).stdout
    assert "run-level output over 20 accounts" in shown
    exported = run_inproc("export", run_id, "--stage", "report")
    assert exported.exit_code == 0 and json.loads(exported.stdout) == json.loads(row[0]["output"])
    refused = run_inproc("export", run_id, "--stage", "report", "--format", "csv")
    assert refused.exit_code == 2 and "one JSON document" in refused.stderr


def test_reduce_under_the_limit_is_one_call_and_later_stages_read_it(llm, tmp_path, db):
    stages = [RESEARCH, reduce_stage(),
              {"id": "pitch", "agent": "writer", "needs": ["report", "research"],
               "prompt": "Pitch {{ account.name }} using {{ report.summary }} " + TAG}]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 5))
    reqs = [b for b in llm.requests if agent_of(b) == "analyst"]
    assert len(reqs) == 1
    summary = json.loads(db_rows(db, "SELECT output FROM run_outputs WHERE run_id = ?", [run_id])[0]["output"])["summary"]
    pitches = [b for b in llm.requests if b["response_format"]["json_schema"]["name"] == "pitch_output"]
    assert len(pitches) == 5 and all(summary in last_user(b) for b in pitches)


def test_reduce_sees_only_accounts_that_reached_it(llm, tmp_path, db):
    stages = [RESEARCH, {"id": "top", "type": "select", "needs": ["research"], "where": "account.employees | int > 30"},
              {**reduce_stage(), "needs": ["top", "research"]}]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 6))
    (req,) = [b for b in llm.requests if agent_of(b) == "analyst"]
    assert last_user(req).count("\n- ") == 3  # employees 40, 50, 60
    assert cell_counts(db, run_id)["report"] == {"ok": 3, "filtered": 3}


# 60 accounts in batches of 5: 12 maps; 12 partials merged 5 at a time (5, 5, 2) is 3 merges;
# the final merge of those 3
@pytest.mark.parametrize("max_input_tokens, calls", [(1_000_000, 1), (120, 12 + 3 + 1)])
def test_plan_projects_a_reduce_as_one_call_or_a_batch_tree(tmp_path, db, max_input_tokens, calls):
    stages = [RESEARCH, reduce_stage(batch_size=5, max_input_tokens=max_input_tokens)]
    res = run_inproc("plan", str(spec(tmp_path, "http://127.0.0.1:9/v1", stages)),
                     str(write_accounts(tmp_path, 60)), "--sample", "3", "--mock", "--json")
    assert res.exit_code == 0, res.output
    by_id = {s["id"]: s for s in json.loads(res.stdout)["stages"]}
    assert by_id["research"]["llm_calls"] == 60
    # the prompt grows with the 60 accounts, the number of calls does not (under the limit)
    assert by_id["report"]["items"] == 60 and by_id["report"]["llm_calls"] == calls
    assert by_id["report"]["input_tokens"] > 120


MERGE_COUNTS = {
    # the built-in merge prompt: its numbered partials, and the items it says they cover
    None: lambda text: (len(re.findall(r"^\d+\. \{", text, re.M)),
                        int(re.search(r"over all (\d+) items", text).group(1))),
    "Merge {{ partials | length }} partials over {{ items_count }} items: {{ partials }}":
        lambda text: tuple(map(int, re.match(r"Merge (\d+) partials over (\d+) items", text).groups())),
}


@pytest.mark.parametrize("merge_prompt", list(MERGE_COUNTS), ids=["built-in", "merge_prompt"])
def test_reduce_tree_merges_count_their_own_items_and_never_merge_one_partial(
        llm, tmp_path, db, merge_prompt):
    """10 accounts in batches of 2: 5 maps; level 2 merges (2+2), (2+2) and passes the fifth
    partial up alone; level 3 merges (4+4) and passes (2) up; the final merge takes (8, 2)."""
    over = {"merge_prompt": merge_prompt} if merge_prompt else {}
    stages = [RESEARCH, reduce_stage(batch_size=2, max_input_tokens=40, **over)]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 10))

    reqs = [last_user(b) for b in llm.requests if agent_of(b) == "analyst"]
    maps = [t for t in reqs if t.startswith("Report on:")]
    merges = sorted(MERGE_COUNTS[merge_prompt](t) for t in reqs if t not in maps)
    assert sorted(t.count("\n- ") for t in maps) == [2] * 5
    assert merges == [(2, 4), (2, 4), (2, 8), (2, 10)]
    sp = spans(db, run_id, stage_id="report")
    assert Counter(s["role"] for s in sp) == {"map": 5, "merge": 4}
    assert db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ? AND stage_id = 'report'",
                   [run_id])[0]["n"] == 9


@pytest.mark.parametrize("accounts, batch_size, calls", [
    (10, 2, 5 + 2 + 1 + 1),     # 5 maps; (2, 2, 1) -> 2 merges; (2, 1) -> 1; the final merge
    (11, 2, 6 + 3 + 1 + 1),     # 6 maps; (2, 2, 2) -> 3 merges; (2, 1) -> 1; the final merge
    (7, 3, 3 + 1),              # 3 maps and the final merge
    (27, 3, 9 + 3 + 1),         # 9 maps; (3, 3, 3) -> 3 merges; the final merge
    (3, 5, 1),                  # one batch is the whole prompt: one call, no merge
])
def test_plan_projects_the_reduce_calls_a_run_makes(tmp_path, db, accounts, batch_size, calls):
    stages = [RESEARCH, reduce_stage(batch_size=batch_size, max_input_tokens=40)]
    path, rows = spec(tmp_path, "http://127.0.0.1:9/v1", stages), write_accounts(tmp_path, accounts)
    res = run_inproc("plan", path, rows, "--sample", "3", "--mock", "--json")
    assert res.exit_code == 0, res.output
    projected = {s["id"]: s for s in json.loads(res.stdout)["stages"]}["report"]["llm_calls"]

    run_id = run_ok("run", path, rows, "--mock")
    made = db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ? AND stage_id = 'report'",
                   [run_id])[0]["n"]
    assert projected == made == calls


# --- orchestrate ----------------------------------------------------------------------------

def spawn_markers(*pairs: tuple[str, str]) -> str:
    return " ".join(f"[[call:spawn {json.dumps({'agent': a, 'task': t})}]]" for a, t in pairs)


def orchestrate(**over) -> dict:
    return {"id": "research", "type": "orchestrate", "lead": "lead",
            "agents": ["news", "hiring", "tech"], "output": {"summary": "str"},
            "prompt": "Research {{ account.name }} " + TAG + " " + spawn_markers(
                ("news", "news on {{ account.name }}"), ("hiring", "jobs at {{ account.name }}"),
                ("tech", "stack of {{ account.name }}")), **over}


def tool_rows(db: Path, run_id: str) -> list[dict]:
    return db_rows(db, "SELECT * FROM tool_calls WHERE run_id = ? ORDER BY started_at", [run_id])


def test_orchestrate_spawns_subagents_in_parallel_and_logs_the_tree(llm, tmp_path, db):
    llm.latency = 0.3
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [orchestrate()]), write_accounts(tmp_path, 2))

    assert cell_counts(db, run_id)["research"] == {"ok": 2}
    for key in (account_id(0), account_id(1)):
        sp = spans(db, run_id, item_key=key)
        lead = [s for s in sp if s["role"] == "lead"]
        subs = [s for s in sp if s["role"] == "subagent"]
        assert len(lead) == 1 and len(subs) == 3
        assert {s["agent"] for s in subs} == {"news", "hiring", "tech"}
        assert all(s["parent_span_id"] == lead[0]["span_id"] and s["depth"] == 1 for s in subs)
        # a sub-agent gets a fresh context: its own system prompt and the task, nothing else
        sub_reqs = [b for b in llm.requests if b["_meta"].get("agent") in ("news", "hiring", "tech")
                    and f"Company {key[-1]}" in last_user(b)]
        assert all(len(b["messages"]) == 2 for b in sub_reqs)
        calls = db_rows(db, "SELECT span_id FROM llm_calls WHERE run_id = ? AND item_key = ?", [run_id, key])
        assert {c["span_id"] for c in calls} == {s["span_id"] for s in sp}
    spawns = [t for t in tool_rows(db, run_id) if t["tool"] == "spawn"]
    assert len(spawns) == 6 and {t["status"] for t in spawns} == {"ok"}
    assert llm.peak_in_flight >= 3  # the three sub-agents of an account ran at once


def test_orchestrate_refuses_spawns_past_max_subagents_and_logs_it(llm, tmp_path, db):
    stage = orchestrate(max_subagents=2)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))

    spawns = [t for t in tool_rows(db, run_id) if t["tool"] == "spawn"]
    assert Counter(t["status"] for t in spawns) == Counter({"ok": 2, "refused": 1})
    refused = next(t for t in spawns if t["status"] == "refused")
    assert "max_subagents=2" in refused["error"]
    assert len(spans(db, run_id, role="subagent")) == 2
    # the refusal went back to the lead as the tool's answer; the cell did not fail
    final = [b for b in llm.requests if agent_of(b) == "lead"][-1]
    assert any("max_subagents=2" in (m.get("content") or "") for m in final["messages"] if m["role"] == "tool")
    assert cell_counts(db, run_id)["research"] == {"ok": 1}


def test_orchestrate_max_rounds_bounds_a_lead_that_never_stops(llm, tmp_path, db):
    def responder(body: dict) -> Reply | None:
        offered = [t["function"]["name"] for t in body.get("tools") or []]
        if agent_of(body) == "lead" and "spawn" in offered \
                and sum(m["role"] == "tool" for m in body["messages"]) < limit["spawns"]:
            n = len(body["messages"])
            return Reply(tool_calls=[{"name": "spawn", "arguments": {"agent": "news", "task": f"again {n}"}}])
        return None

    limit = {"spawns": 4}
    llm.responder = responder
    stage = orchestrate(max_rounds=2, max_subagents=10)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    spawns = [t for t in tool_rows(db, run_id) if t["tool"] == "spawn"]
    assert [t["status"] for t in spawns] == ["ok", "ok", "refused", "refused"]
    assert all("max_rounds=2" in t["error"] for t in spawns[2:])
    assert len(spans(db, run_id, role="subagent")) == 2
    assert cell_counts(db, run_id)["research"] == {"ok": 1}  # the refusals answered the lead

    # a lead that ignores every refusal is stopped by its tool-round cap, and a bound never
    # fails the cell: one last lead turn without spawn, on its sub-agents' results, answers
    limit["spawns"] = 100
    sent = len(llm.requests)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    (cell,) = db_rows(db, "SELECT status, error, output FROM cells WHERE run_id = ?", [run_id])
    assert cell["status"] == "ok" and set(json.loads(cell["output"])) == {"summary"}
    assert len(spans(db, run_id, role="subagent")) == 2
    final = [b for b in llm.requests[sent:] if agent_of(b) == "lead"][-1]
    assert "spawn" not in [t["function"]["name"] for t in final.get("tools") or []]
    assert "Spawning is over" in last_user(final) and last_user(final).count("- news (again") == 2
    leads = spans(db, run_id, role="lead")
    assert [s["status"] for s in leads] == ["failed", "ok"]  # the cut-off turn, then the answer
    assert leads[1]["parent_span_id"] == leads[0]["span_id"]


def test_orchestrate_depth_lets_subagents_spawn_only_within_max_depth(llm, tmp_path, db):
    def responder(body: dict) -> Reply | None:
        tools = [t["function"]["name"] for t in body.get("tools") or []]
        if agent_of(body) == "news" and "spawn" in tools and body["messages"][-1]["role"] == "user":
            return Reply(tool_calls=[{"name": "spawn", "arguments": {"agent": "tech", "task": "deeper"}}])
        if agent_of(body) == "tech" and "spawn" in tools and body["messages"][-1]["role"] == "user":
            return Reply(tool_calls=[{"name": "spawn", "arguments": {"agent": "hiring", "task": "deepest"}}])
        return None

    llm.responder = responder
    stage = orchestrate(max_depth=2, prompt="Go " + TAG + " " + spawn_markers(("news", "look")))
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    sp = {s["agent"]: s for s in spans(db, run_id)}
    assert sp["news"]["depth"] == 1 and sp["tech"]["depth"] == 2
    assert sp["tech"]["parent_span_id"] == sp["news"]["span_id"]
    assert "hiring" not in sp  # depth 3 was not offered the tool at depth 2... 
    tech_reqs = [b for b in llm.requests if agent_of(b) == "tech"]
    assert all("spawn" not in [t["function"]["name"] for t in b.get("tools") or []] for b in tech_reqs)


def test_spawn_with_an_unknown_agent_is_answered_not_crashed(llm, tmp_path, db):
    stage = orchestrate(prompt="Go " + TAG + " [[call:spawn {\"agent\": \"lawyer\", \"task\": \"sue\"}]]")
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    (t,) = [t for t in tool_rows(db, run_id) if t["tool"] == "spawn"]
    assert t["status"] == "invalid_args" and "news, hiring, tech" in t["error"]
    assert cell_counts(db, run_id)["research"] == {"ok": 1}


@pytest.mark.timeout(150)
def test_resume_after_sigkill_inside_orchestrate_reuses_finished_subagents(llm, tmp_path, db):
    gate = {"hold": True}

    def responder(body: dict) -> Reply | None:
        if agent_of(body) == "tech" and gate["hold"]:
            return Reply(content=json.dumps({"text": "slow"}), delay=30)
        return None

    llm.responder = responder
    path = spec(tmp_path, llm.base_url, [orchestrate()])
    accounts = write_accounts(tmp_path, 3)
    proc = popen_cli("run", path, accounts)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # news + hiring of all 3 accounts finished and flushed
        try:
            done = db_rows(db, "SELECT count(*) AS n FROM spans WHERE status = 'ok' AND role = 'subagent'")[0]["n"]
        except Exception:
            done = 0
        if done >= 6:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"sub-agents did not finish: {proc.communicate(timeout=5)}")
    proc.kill()
    proc.communicate(timeout=10)
    run_id = db_rows(db, "SELECT run_id FROM runs")[0]["run_id"]
    before = Counter(agent_of(b) for b in llm.requests)
    assert before["news"] == 3 and before["hiring"] == 3

    gate["hold"] = False
    res = run_cli("resume", run_id)
    assert res.returncode == 0, res.stderr

    after = Counter(agent_of(b) for b in llm.requests) - before
    assert after["news"] == 0 and after["hiring"] == 0  # finished sub-agents were not re-run
    assert after["tech"] == 3
    assert cell_counts(db, run_id)["research"] == {"ok": 3}
    statuses = Counter(t["status"] for t in tool_rows(db, run_id) if t["tool"] == "spawn")
    assert statuses["reused"] == 6
    # cells and spans count both sessions: the reused sub-agents, the lead turn paid before
    # the kill (replayed from the cache at $0 now)
    per_cell = db_rows(db, """SELECT c.cost_usd, c.attempts, l.cost, l.n FROM cells c
                              JOIN (SELECT item_key, stage_id, sum(cost_usd) AS cost, count(*) AS n
                                    FROM llm_calls WHERE run_id = ? GROUP BY ALL) l
                              USING (item_key, stage_id) WHERE c.run_id = ?""", [run_id, run_id])
    assert len(per_cell) == 3
    assert all(abs(r["cost_usd"] - r["cost"]) < 1e-12 and r["attempts"] == r["n"] for r in per_cell)
    per_span = db_rows(db, """SELECT s.cost_usd, l.cost FROM spans s
                              JOIN (SELECT span_id, sum(cost_usd) AS cost FROM llm_calls
                                    WHERE run_id = ? GROUP BY ALL) l USING (span_id)
                              WHERE s.run_id = ?""", [run_id, run_id])
    assert len(per_span) == 12 and all(abs(r["cost_usd"] - r["cost"]) < 1e-12 for r in per_span)


# --- static validation ----------------------------------------------------------------------

@pytest.mark.parametrize("stage, message", [
    ({**ROUTE_CASES, "cases": [{"when": "true", "agent": "nobody"}]}, "unknown agent 'nobody'"),
    ({**ROUTE_CASES, "cases": [{"when": "acount.x", "agent": "retail_scorer"}]}, "unknown name 'acount'"),
    ({"id": "s", "type": "route", "router": {"agent": "triage", "prompt": "x"},
      "choices": ["retail_scorer"], "prompt": "p"}, "two or more specialists"),
    ({"id": "s", "type": "route", "prompt": "p", "cases": [{"when": "true", "agent": "triage"}],
      "router": {"agent": "triage", "prompt": "x"}, "choices": ["a", "b"]}, "not both"),
    ({**PANEL, "panelists": ["skeptic", "skeptic"]}, "listed twice"),
    ({**PANEL, "moderator": "judge"}, "unknown agent 'judge'"),
    ({**PANEL, "moderator_prompt": "{{ transcrip }}"}, "unknown name 'transcrip'"),
    ({"id": "r", "type": "reduce", "agent": "analyst", "prompt": "{{ account.name }}"},
     "sees items and run, not one account"),
    ({"id": "r", "type": "reduce", "agent": "analyst", "prompt": "x", "batch_size": 1}, "batch_size"),
    ({"id": "o", "type": "orchestrate", "lead": "lead", "agents": ["ghost"], "prompt": "x"},
     "unknown agent 'ghost'"),
    ({"id": "o", "type": "orchestrate", "lead": "lead", "agents": ["news"], "prompt": "{{ task }}"},
     "unknown name 'task'"),
    ({"id": "o", "type": "orchestrate", "lead": "lead", "agents": ["news"], "prompt": "x",
      "max_depth": 0}, "max_depth"),
    ({"id": "o", "type": "orchestrate", "lead": "lead", "agents": ["news"], "prompt": "x",
      "max_subagent": 3}, "unknown key 'max_subagent'"),
])
def test_bad_stage_keys_fail_with_path_and_line(llm, tmp_path, stage, message):
    path = spec(tmp_path, llm.base_url, [stage])
    res = run_inproc("validate", path)
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert message in err and "Traceback" not in err
    assert re.search(r"pipeline\.yaml:\d+ at stages\[0\]", err), err
    assert len(err.splitlines()) == 1


def test_subagent_prompt_may_read_task_and_account(llm, tmp_path, db):
    stage = orchestrate(subagent_prompt="For {{ account.name }} ({{ agent }}): {{ task }} " + TAG)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    subs = [b for b in llm.requests if agent_of(b) == "news"]
    assert last_user(subs[0]).startswith("For Company 0 (news): news on Company 0")
    assert run_status(db, run_id) == "completed"


# --- the mock model -------------------------------------------------------------------------

def test_mock_exercises_every_type_deterministically(tmp_path, db):
    stages = [
        {"id": "research", "type": "orchestrate", "lead": "lead", "agents": ["news", "hiring", "tech"],
         "prompt": "Research {{ account.name }}", "output": {"summary": "str"}},
        {"id": "score", "type": "route", "needs": ["research"],
         "router": {"agent": "triage", "prompt": "Who scores {{ account.name }}?"},
         "choices": ["retail_scorer", "software_scorer"], "prompt": "Score {{ research.summary }}",
         "output": {"score": {"type": "int", "min": 0, "max": 100}}},
        {**PANEL, "needs": ["score"]},
        {"id": "report", "type": "reduce", "needs": ["review", "score"], "agent": "analyst",
         "prompt": "{% for it in items %}{{ it.account.name }} {{ it.score.score }}\n{% endfor %}",
         "output": {"summary": "str"}},
    ]
    path = spec(tmp_path, "http://127.0.0.1:9/v1", stages)
    accounts = write_accounts(tmp_path, 6)
    first, second = (run_ok("run", path, accounts, "--mock") for _ in range(2))

    def snapshot(run_id: str):
        cells = db_rows(db, "SELECT item_key, stage_id, status, output FROM cells WHERE run_id = ? "
                            "ORDER BY 1, 2", [run_id])
        out = db_rows(db, "SELECT output FROM run_outputs WHERE run_id = ?", [run_id])
        return [(c["item_key"], c["stage_id"], c["status"], c["output"]) for c in cells], out

    assert snapshot(first) == snapshot(second)
    subs = Counter(s["item_key"] for s in spans(db, first, role="subagent"))
    assert set(subs) == {account_id(i) for i in range(6)} and set(subs.values()) <= {2, 3}
    assert {o["route"]["agent"] for o in outputs(db, first, "score").values()} <= {"retail_scorer", "software_scorer"}
    assert cell_counts(db, first)["review"] == {"ok": 6}


# --- the run's machinery inside the new types ---------------------------------------------------

EMAIL_TOOL = {"email": {"type": "send_email", "outbox": "outbox", "from": "bot@example.com"}}


def mailing_news_scout(body: dict) -> Reply | None:
    """The news scout emails once (a side effect), then answers."""
    if agent_of(body) == "news" and body["messages"][-1]["role"] == "user":
        item = re.search(r"Company (\d+)", last_user(body)).group(1)
        return Reply(tool_calls=[{"name": "email", "arguments": {
            "to": f"ceo@company{item}.example.com", "subject": "Hi", "body": "Hello."}}])
    return None


def test_a_subagents_side_effect_goes_through_the_ledger_and_the_gate(llm, tmp_path, db):
    llm.responder = mailing_news_scout
    agents = {**AGENTS, "news": {**AGENTS["news"], "tools": ["email"]}}
    path = write_spec(tmp_path, llm.base_url, stages=[orchestrate()],
                      extra={"agents": agents, "tools": EMAIL_TOOL})
    run_id = run_ok("run", path, write_accounts(tmp_path, 2), code=3)

    assert cell_counts(db, run_id)["research"] == {"awaiting_approval": 2}
    acts = db_rows(db, "SELECT * FROM actions WHERE run_id = ?", [run_id])
    assert len(acts) == 2 and {a["status"] for a in acts} == {"pending_approval"}
    assert not (tmp_path / "outbox").exists() or not list((tmp_path / "outbox").glob("*.eml"))
    mail_calls = db_rows(db, "SELECT t.span_id, s.agent, s.role FROM tool_calls t JOIN spans s "
                             "USING (span_id) WHERE t.run_id = ? AND t.tool = 'email'", [run_id])
    assert {(c["agent"], c["role"]) for c in mail_calls} == {("news", "subagent")}

    assert run_inproc("approve", run_id, "--all").exit_code == 0
    sent = len(llm.requests)
    assert run_inproc("resume", run_id).exit_code == 0
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2
    assert {a["status"] for a in db_rows(db, "SELECT status FROM actions WHERE run_id = ?", [run_id])} == {"done"}
    assert cell_counts(db, run_id)["research"] == {"ok": 2}
    assert len(llm.requests) == sent  # executing approved actions calls no model
    assert run_inproc("resume", run_id).exit_code == 0  # and a second resume sends nothing
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_a_lead_hears_spawn_is_allowed_and_spawn_arguments_follow_its_schema(llm, tmp_path, db):
    stage = orchestrate(prompt="Go " + TAG + ' [[call:web_search {"q": "x"}]] '
                        '[[call:spawn {"agent": "news", "task": "t", "priority": 1}]]')
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [stage]), write_accounts(tmp_path, 1))
    rows = {t["tool"]: t for t in tool_rows(db, run_id)}
    assert rows["web_search"]["status"] == "denied"
    assert rows["web_search"]["error"].endswith("allowed: spawn")
    assert rows["spawn"]["status"] == "invalid_args" and "priority" in rows["spawn"]["error"]
    assert spans(db, run_id, role="subagent") == []  # additionalProperties: false, as advertised


def test_a_spawn_refused_by_the_item_budget_is_a_refusal_like_the_others(llm, tmp_path, db):
    """No failed span for a sub-agent the budget never let call a model: a `refused` spawn
    row, as with max_subagents; the cell answers."""
    models = {"pricey": {"model": "openai/gpt-4o-mini", "api_base": llm.base_url,
                         "price": {"input_per_mtok": 100000.0, "output_per_mtok": 100000.0}}}
    agents = {**AGENTS, "news": {**AGENTS["news"], "model": "pricey"}}
    path = write_spec(tmp_path, llm.base_url, stages=[orchestrate(max_subagents=10)],
                      extra={"agents": agents, "models": models, "budget": {"per_item_usd": 0.05}})
    run_id = run_ok("run", path, write_accounts(tmp_path, 1))
    spawns = {t["arguments"] and json.loads(t["arguments"])["agent"]: t
              for t in tool_rows(db, run_id) if t["tool"] == "spawn"}
    assert spawns["news"]["status"] == "refused" and spawns["news"]["child_span_id"] is None
    assert "budget" in spawns["news"]["error"]
    assert {s["agent"] for s in spans(db, run_id, role="subagent")} == {"hiring", "tech"}
    assert {s["status"] for s in spans(db, run_id)} == {"ok"}
    assert cell_counts(db, run_id)["research"] == {"ok": 1}


def test_a_subagent_is_refused_tools_it_was_not_granted(llm, tmp_path, db):
    def responder(body: dict) -> Reply | None:
        if agent_of(body) == "hiring" and body["messages"][-1]["role"] == "user":
            return Reply(tool_calls=[{"name": "email", "arguments": {"to": "x@y.example", "subject": "s", "body": "b"}}])
        return None

    llm.responder = responder
    path = write_spec(tmp_path, llm.base_url, stages=[orchestrate()],
                      extra={"agents": AGENTS, "tools": EMAIL_TOOL})
    run_id = run_ok("run", path, write_accounts(tmp_path, 1))
    denied = db_rows(db, "SELECT t.status, s.agent FROM tool_calls t JOIN spans s USING (span_id) "
                         "WHERE t.run_id = ? AND t.tool = 'email'", [run_id])
    assert denied == [{"status": "denied", "agent": "hiring"}]
    assert db_rows(db, "SELECT count(*) AS n FROM actions")[0]["n"] == 0


def test_the_per_item_budget_makes_spawns_wait_and_stays_under_the_limit(llm, tmp_path, db):
    """While other calls of the account are in flight, a sub-agent's call that does not fit
    the account's budget at its worst case waits for them to settle (their real cost is far
    below the worst case) instead of being refused."""
    path = spec(tmp_path, llm.base_url, [orchestrate()],
                budget={"per_item_usd": 0.0012}, models={"fast": {"max_tokens": 1000}})
    run_id = run_ok("run", path, write_accounts(tmp_path, 2), code=(0, 1)[0])
    spawns = [t for t in tool_rows(db, run_id) if t["tool"] == "spawn"]
    assert len(spawns) == 6 and {t["status"] for t in spawns} == {"ok"}
    per_item = db_rows(db, "SELECT item_key, sum(cost_usd) AS usd FROM llm_calls WHERE run_id = ? "
                           "GROUP BY 1", [run_id])
    assert all(0 < r["usd"] <= 0.0012 for r in per_item)
    assert cell_counts(db, run_id)["research"] == {"ok": 2}


def test_replay_of_every_type_sends_nothing_and_matches(llm, tmp_path, db):
    stages = [orchestrate(),
              {"id": "score", "type": "route", "needs": ["research"],
               "router": {"agent": "triage", "prompt": "Who? {{ account.name }} " + TAG},
               "choices": ["retail_scorer", "software_scorer"], "prompt": "Score " + TAG,
               "output": {"score": {"type": "int", "min": 0, "max": 100}}},
              {**PANEL, "needs": ["score"]},
              {**reduce_stage(batch_size=2, max_input_tokens=40), "needs": ["research", "review"]}]
    path = spec(tmp_path, llm.base_url, stages)
    accounts = write_accounts(tmp_path, 4)
    first = run_ok("run", path, accounts)
    sent = len(llm.requests)

    second = run_ok("run", path, accounts, "--replay", first)
    assert len(llm.requests) == sent

    def snap(run_id):
        return (db_rows(db, "SELECT item_key, stage_id, status, output FROM cells WHERE run_id = ? "
                            "ORDER BY 1, 2", [run_id]) and
                [(c["item_key"], c["stage_id"], c["status"], c["output"]) for c in db_rows(
                    db, "SELECT * FROM cells WHERE run_id = ? ORDER BY item_key, stage_id", [run_id])],
                [o["output"] for o in db_rows(db, "SELECT output FROM run_outputs WHERE run_id = ?", [run_id])])

    assert snap(first) == snap(second)
    assert db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE run_id = ? AND NOT cache_hit",
                   [second])[0]["n"] == 0


def test_retry_reruns_a_failed_panel_with_cached_turns(llm, tmp_path, db):
    broken = {"on": True}
    llm.responder = lambda body: (Reply(content="no json") if broken["on"] and agent_of(body) == "moderator"
                                  else None)
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [PANEL]), write_accounts(tmp_path, 2), code=1)
    assert cell_counts(db, run_id)["review"] == {"failed": 2}
    failed = spans(db, run_id, role="moderator")
    assert {s["status"] for s in failed} == {"failed"}
    sent = Counter(agent_of(b) for b in llm.requests)

    broken["on"] = False
    res = run_inproc("retry", run_id)
    assert res.exit_code == 0, res.stdout
    assert cell_counts(db, run_id)["review"] == {"ok": 2}
    again = Counter(agent_of(b) for b in llm.requests) - sent
    assert again == Counter({"moderator": 2})  # panel turns came from the cache


def test_subagents_share_the_runs_limits(llm, tmp_path, db):
    """Sub-agents go through the same governor lane and limits as every other call."""
    llm.latency = 0.2
    path = spec(tmp_path, llm.base_url, [orchestrate()], limits={"fast": {"concurrency": 2}})
    run_id = run_ok("run", path, write_accounts(tmp_path, 3))
    assert cell_counts(db, run_id)["research"] == {"ok": 3}
    assert llm.peak_in_flight == 2
    assert len(spans(db, run_id, role="subagent")) == 9


def test_a_failed_panelist_fails_the_cell_at_once_and_stops_its_siblings(llm, tmp_path, db):
    def responder(body: dict) -> Reply | None:
        if agent_of(body) == "optimist":  # a bad request is not retried: the panelist fails
            return Reply(status=400, error_type="invalid_request_error")
        if agent_of(body) == "skeptic":
            return Reply(content=json.dumps({"text": "slow"}), delay=20)
        return None

    llm.responder = responder
    t0 = time.monotonic()
    run_id = run_ok("run", spec(tmp_path, llm.base_url, [PANEL]), write_accounts(tmp_path, 1),
                    code=1)
    assert time.monotonic() - t0 < 10  # the skeptic's 20 s call was cancelled, not awaited
    (cell,) = db_rows(db, "SELECT status, error FROM cells WHERE run_id = ?", [run_id])
    assert cell["status"] == "failed" and "bad request" in cell["error"]
    assert not any(agent_of(b) == "moderator" for b in llm.requests)


def test_a_reduce_nobody_reached_says_so(llm, tmp_path, db):
    # (not "none": templates read that as the constant None, so it is a reserved stage id)
    stages = [RESEARCH, {"id": "nobody", "type": "select", "needs": ["research"], "where": "false"},
              {**reduce_stage(), "needs": ["nobody", "research"]}]
    run_id = run_ok("run", spec(tmp_path, llm.base_url, stages), write_accounts(tmp_path, 2))
    (out,) = db_rows(db, "SELECT status, items, error FROM run_outputs WHERE run_id = ?", [run_id])
    assert out == {"status": "skipped", "items": 0, "error": "no account reached this stage"}
    assert not any(agent_of(b) == "analyst" for b in llm.requests)
    res = run_inproc("export", run_id, "--stage", "report")
    assert res.exit_code == 2 and "no account reached this stage" in res.stderr


@pytest.mark.parametrize("accounts, max_input_tokens", [(30, 400), (45, 500), (60, 700)])
def test_plan_counts_the_system_prompt_and_merge_framing_in_the_reduce_tree(
        tmp_path, db, accounts, max_input_tokens):
    """A long system prompt leaves room for fewer partials in a merge: the plan's tree is the
    run's, call for call, and its input tokens are within a quarter of the run's."""
    stages = [RESEARCH, reduce_stage(batch_size=3, max_input_tokens=max_input_tokens)]
    agents = {**AGENTS, "analyst": {"system": "You write pipeline reports. " * 30}}
    path = write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=stages, extra={"agents": agents})
    rows = write_accounts(tmp_path, accounts)
    res = run_inproc("plan", path, rows, "--sample", "4", "--mock", "--json")
    assert res.exit_code == 0, res.output
    projected = {s["id"]: s for s in json.loads(res.stdout)["stages"]}["report"]

    run_id = run_ok("run", path, rows, "--mock")
    (made,) = db_rows(db, "SELECT count(*) AS n, sum(input_tokens) AS tin FROM llm_calls "
                          "WHERE run_id = ? AND stage_id = 'report'", [run_id])
    assert projected["llm_calls"] == made["n"]
    assert abs(projected["input_tokens"] - made["tin"]) <= made["tin"] / 4, (projected, made)
