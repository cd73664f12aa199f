"""Hedged requests (`hedge_after_p`): a slow call gets a duplicate into a free slot, the first
answer wins, the loser is cancelled, and nothing is counted twice. Measured at the loopback
server (requests seen, peak in flight) and in the run log (rows, costs)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import db_rows, first_line, run_inproc, write_accounts, write_spec

pytestmark = pytest.mark.timeout(60)
ONE_STAGE = [{"id": "score", "agent": "scorer",
              "prompt": "Score {{ account.name }}. [[item:{{ account.id }}]] [[stage:score]]",
              "output": {"score": {"type": "int", "min": 0, "max": 100}}}]


def slow_first_time(slow_items: set[str], delay: float):
    """Each listed account's FIRST request hangs for `delay`; a duplicate answers at once."""
    seen: Counter = Counter()

    def responder(body: dict) -> Reply | None:
        item = body["_meta"].get("item")
        seen[item] += 1
        if item in slow_items and seen[item] == 1:
            return Reply(content=json.dumps({"score": 1}), delay=delay)
        return None

    return responder


def test_hedges_cut_the_tail_and_are_never_double_counted(llm, tmp_path):
    db = tmp_path / "agentctl.duckdb"
    llm.latency = 0.05
    slow = {f"acct-{i:03d}" for i in (57, 58, 59)}  # the last accounts: the run's tail
    llm.responder = slow_first_time(slow, delay=20)
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=6,
                      extra={"defaults": {"hedge_after_p": 90}})

    t0 = time.monotonic()
    res = run_inproc("run", spec, write_accounts(tmp_path, 60))
    wall = time.monotonic() - t0

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert wall < 15  # without hedging the three slow calls alone would take 20 s
    rows = db_rows(db, "SELECT item_key, purpose, status, cost_usd, input_tokens, response "
                       "FROM llm_calls WHERE run_id = ?", [run_id])
    hedges = [r for r in rows if r["purpose"] == "hedge"]
    assert {h["item_key"] for h in hedges} == slow
    assert {h["status"] for h in hedges} == {"ok"}  # each duplicate answered first
    assert all(h["cost_usd"] == 0 and h["input_tokens"] == 0 and h["response"] is None for h in hedges)
    # one priced reply per account: the attempt row carries it, the duplicate carries nothing
    priced = Counter(r["item_key"] for r in rows if r["purpose"] != "hedge")
    assert set(priced.values()) == {1} and len(priced) == 60
    cells = db_rows(db, "SELECT sum(cost_usd) AS usd, sum(attempts) AS n FROM cells WHERE run_id = ?", [run_id])[0]
    calls = db_rows(db, "SELECT sum(cost_usd) AS usd FROM llm_calls WHERE run_id = ?", [run_id])[0]
    assert abs(cells["usd"] - calls["usd"]) < 1e-12 and cells["n"] == len(rows)
    # the server saw exactly the logged requests, and never more than the limit at once
    assert len(llm.requests) == len(rows) == 63
    assert llm.peak_in_flight <= 6


def test_no_hedging_unless_asked(llm, tmp_path):
    db = tmp_path / "agentctl.duckdb"
    llm.responder = slow_first_time({"acct-039"}, delay=1.5)
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=6)
    res = run_inproc("run", spec, write_accounts(tmp_path, 40))
    assert res.exit_code == 0
    assert db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE purpose = 'hedge'")[0]["n"] == 0
    assert len(llm.requests) == 40


def test_a_hedge_never_takes_a_slot_queued_work_is_waiting_for(llm, tmp_path):
    """Mid-run every slot is wanted: a slow call there is not hedged; only idle capacity is."""
    db = tmp_path / "agentctl.duckdb"
    llm.latency = 0.05
    llm.responder = slow_first_time({"acct-040"}, delay=1.0)  # mid-run, queue still full
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=2,
                      extra={"defaults": {"hedge_after_p": 90}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 100))
    assert res.exit_code == 0
    run_id = first_line(res.stdout)
    hedged = db_rows(db, "SELECT item_key FROM llm_calls WHERE run_id = ? AND purpose = 'hedge'", [run_id])
    assert hedged == []
    assert llm.peak_in_flight <= 2
