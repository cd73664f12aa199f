"""Budgets are the run's, not one process's, and are spent before a run says they are gone.

Measured at the fake server (requests it saw) and in the run log (the `llm_calls` costs):
- a plain `resume` of a `budget_exceeded` run spends nothing more than the run's limit, and
  `resume --max-cost X` is a limit for the whole run, what it spent before included;
- `retry` counts what an account spent before, so it cannot pass `per_item_usd`;
- a call whose worst case does not fit waits for the calls in flight to settle, so the run
  ends with less than one worst-case call of its budget unspent, and never past it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (account_id, cell_counts, db_rows, default_stages, first_line,
                           run_inproc, run_status, write_accounts, write_spec)

pytestmark = pytest.mark.timeout(60)

# $1 per thousand tokens: a call here costs about $0.05-0.25
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def spec(tmp_path: Path, api_base: str, budget: dict, *, max_tokens: int = 50,
         concurrency: int = 2) -> Path:
    return write_spec(tmp_path, api_base, stages=default_stages()[:2], concurrency=concurrency,
                      extra={"models": {"fast": {"price": PRICE}},
                             "defaults": {"max_tokens": max_tokens}, "budget": budget})


def costs(db: Path, run_id: str) -> list[dict]:
    return db_rows(db, "SELECT item_key, stage_id, cost_usd, request FROM llm_calls "
                       "WHERE run_id = ? ORDER BY started_at", [run_id])


def spent(db: Path, run_id: str) -> float:
    return sum(r["cost_usd"] or 0.0 for r in costs(db, run_id))


def run_error(db: Path, run_id: str) -> str:
    return db_rows(db, "SELECT error FROM runs WHERE run_id = ?", [run_id])[0]["error"]


# --- the run's limit holds across resumes ---------------------------------------------------

def test_plain_resumes_of_a_budget_exceeded_run_stay_within_its_limit(llm, tmp_path, db):
    """Five plain resumes used to spend the limit five more times (3.5x max_usd in the
    report); now the run's spending stays at or under max_usd, whatever the sessions."""
    res = run_inproc("run", spec(tmp_path, llm.base_url, {"max_usd": 2.0}),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 4, res.output
    run_id = first_line(res.stdout)
    first = spent(db, run_id)
    assert 0 < first <= 2.0
    for _ in range(3):
        res = run_inproc("resume", run_id)
        assert res.exit_code == 4, res.output
        assert run_status(db, run_id) == "budget_exceeded"
    assert spent(db, run_id) <= 2.0, spent(db, run_id)
    assert len(llm.requests) == len(costs(db, run_id))
    error = run_error(db, run_id)
    assert "before this resume" in error and "$2" in error, error


def test_resume_max_cost_is_the_limit_for_the_whole_run(llm, tmp_path, db):
    res = run_inproc("run", spec(tmp_path, llm.base_url, {"max_usd": 2.0}),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 4, res.output
    run_id = first_line(res.stdout)
    before = spent(db, run_id)

    res = run_inproc("resume", run_id, "--max-cost", "3")
    assert res.exit_code == 4, res.output
    total = spent(db, run_id)
    assert before < total <= 3.0, (before, total)  # $1 more, not $3 more
    error = run_error(db, run_id)
    assert "$3" in error and f"${before:.4f} of it before this resume" in error, error

    res = run_inproc("resume", run_id, "--max-cost", "100")
    assert res.exit_code == 0, res.output
    assert cell_counts(db, run_id) == {"research": {"ok": 20}, "score": {"ok": 20}}


def test_retry_counts_what_each_account_spent_before(llm, tmp_path, db):
    """per_item_usd leaves room for an account's research call but not for its score call.
    A retry used to forget the research spending and pass every score cell."""
    per_item = 0.16
    path = spec(tmp_path, llm.base_url, {"per_item_usd": per_item}, max_tokens=40)
    res = run_inproc("run", path, write_accounts(tmp_path, 5))
    assert res.exit_code == 1, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 5}, "score": {"failed": 5}}
    seen = len(llm.requests)
    assert seen == 5  # the score calls were refused before they were sent

    res = run_inproc("retry", run_id)
    assert res.exit_code == 1, res.output
    assert cell_counts(db, run_id) == {"research": {"ok": 5}, "score": {"failed": 5}}
    assert len(llm.requests) == seen  # nothing sent: each account had spent its share
    by_item: dict[str, float] = {}
    for r in costs(db, run_id):
        by_item[r["item_key"]] = by_item.get(r["item_key"], 0.0) + r["cost_usd"]
    assert set(by_item) == {account_id(i) for i in range(5)}
    assert all(usd <= per_item for usd in by_item.values()), by_item
    errors = db_rows(db, "SELECT error FROM cells WHERE run_id = ? AND stage_id = 'score'",
                     [run_id])
    for row in errors:
        assert "per-item budget of $0.16" in row["error"] and "before this resume" in row["error"]


# --- the budget is spent before the run says it is gone ------------------------------------

def test_budget_waits_for_calls_in_flight_before_it_stops_the_run(llm, tmp_path, db):
    """Every call reserves a 2,000-token reply (~$2) but costs ~$0.1-0.2. With $5 and four
    calls at a time, the run used to stop at the third reservation with ~$0.4 spent; now it
    spends until less than one worst-case call is left, and never past the limit."""
    llm.latency = 0.05
    limit, max_tokens = 5.0, 2000
    res = run_inproc("run", spec(tmp_path, llm.base_url, {"max_usd": limit},
                                 max_tokens=max_tokens, concurrency=4),
                     write_accounts(tmp_path, 40))
    assert res.exit_code == 4, res.output
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "budget_exceeded"
    rows = costs(db, run_id)
    total = sum(r["cost_usd"] for r in rows)
    # the worst case agentctl reserves for a call: its prompt (4 characters a token) + a reply
    worst = max((sum(len(m["content"] or "") for m in _request(r)["messages"]) // 4
                 + max_tokens) * 0.001 for r in rows)
    assert total <= limit, total
    assert limit - total < worst, (total, worst)
    assert len(rows) > 10 and len(llm.requests) == len(rows)
    assert llm.peak_in_flight >= 2  # calls still ran side by side while money allowed


def _request(row: dict) -> dict:
    import json

    req = row["request"]
    return json.loads(req) if isinstance(req, str) else req


def test_a_cancelled_call_frees_its_money_for_the_call_waiting_on_it(llm, monkeypatch):
    """A call cancelled in flight (a failed panel sibling, Ctrl-C) never settles; its hold
    must go, or a call waiting for that money would wait for ever. Here A hangs at the
    server and holds all the money B needs; B waits, A is cancelled, B is sent."""
    import asyncio

    from agentctl.llm.budget import Budget
    from agentctl.llm.caller import CellUsage, ModelCaller
    from agentctl.llm.limiter import PriorityLimiter
    from agentctl.llm.litellm_client import LiteLLMClient
    from agentctl.llm.types import LLMRequest
    from tests.fakes.llm_server import Reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm.responder = lambda body: Reply(hang=True) if body["_meta"].get("item") == "A" else None

    def request(item: str) -> LLMRequest:
        return LLMRequest(alias="fast", model="openai/gpt-4o-mini",
                          messages=[{"role": "user", "content": f"Say hi [[item:{item}]]"}],
                          params={"api_base": llm.base_url, "max_tokens": 1000, "timeout": 20},
                          meta={"item_key": item, "price": PRICE})

    def price(req, in_tok: int, out_tok: int) -> float:
        return (in_tok * PRICE["input_per_mtok"] + out_tok * PRICE["output_per_mtok"]) / 1e6

    budget = Budget(1.5, None, price=price)  # room for one worst case (~$1.01), not two

    async def main():
        client = LiteLLMClient()
        caller = ModelCaller(client=client, record=lambda row: None, run_id="r-test",
                             limiter=PriorityLimiter(4), budget=budget)
        try:
            a = asyncio.create_task(caller.call(request("A"), usage=CellUsage(), purpose="first"))
            while not llm.count(item="A"):
                await asyncio.sleep(0.01)
            b = asyncio.create_task(caller.call(request("B"), usage=CellUsage(), purpose="first"))
            await asyncio.sleep(0.3)
            assert not b.done() and llm.count(item="B") == 0  # B waits for A's money
            a.cancel()
            return await asyncio.wait_for(b, 5)
        finally:
            await client.aclose()

    resp = asyncio.run(main())
    assert llm.count(item="B") == 1 and resp.cost_usd > 0
    assert budget.spent == resp.cost_usd and budget.reserved == 0.0
