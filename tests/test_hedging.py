"""Hedged requests (`hedge_after_p`): a slow call gets a duplicate in the next free slot, the first
answer wins, the loser is cancelled, and nothing is counted twice. Measured at the loopback
server (requests seen, peak in flight) and in the run log (rows, costs)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from agentctl.llm.caller import CellUsage, ModelCaller, Route
from agentctl.llm.limiter import PriorityLimiter
from agentctl.llm.types import LLMRequest, LLMResponse
from tests.fakes.llm_server import Reply
from tests.helpers import db_rows, first_line, run_inproc, write_accounts, write_spec

pytestmark = pytest.mark.timeout(60)
ONE_STAGE = [{"id": "score", "agent": "scorer",
              "prompt": "Score {{ account.name }}. [[item:{{ account.id }}]] [[stage:score]]",
              "output": {"score": {"type": "int", "min": 0, "max": 100}}}]


def slow_first_time(slow_items: set[str], delay: float, times: int = 1):
    """Each listed account's first `times` requests hang for `delay`; the next answers at once."""
    seen: Counter = Counter()

    def responder(body: dict) -> Reply | None:
        item = body["_meta"].get("item")
        seen[item] += 1
        if item in slow_items and seen[item] <= times:
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
    rows = db_rows(db, "SELECT item_key, purpose, status, cost_usd, input_tokens, response, latency_ms "
                       "FROM llm_calls WHERE run_id = ?", [run_id])
    hedges = [r for r in rows if r["purpose"] == "hedge"]
    assert {h["item_key"] for h in hedges} == slow
    # the attempt is attempt 1 and its duplicate 2 (the duplicate used to take 1)
    numbers = db_rows(db, "SELECT purpose, attempt FROM llm_calls WHERE run_id = ? AND item_key IN "
                          "(SELECT item_key FROM llm_calls WHERE purpose = 'hedge')", [run_id])
    assert {(r["purpose"], r["attempt"]) for r in numbers} == {("initial", 1), ("hedge", 2)}
    assert {h["status"] for h in hedges} == {"ok"}  # each duplicate answered first
    assert all(h["cost_usd"] == 0 and h["input_tokens"] == 0 and h["response"] is None for h in hedges)
    # the attempt's row covers the time its slot was held: the wait before the duplicate too
    held = {r["item_key"]: r["latency_ms"] for r in db_rows(
        db, "SELECT item_key, latency_ms FROM llm_calls WHERE run_id = ? AND purpose <> 'hedge'", [run_id])}
    assert all(held[h["item_key"]] > h["latency_ms"] + 20 for h in hedges), (held, hedges)
    # one priced reply per account: the attempt row carries it, the duplicate carries nothing
    priced = Counter(r["item_key"] for r in rows if r["purpose"] != "hedge")
    assert set(priced.values()) == {1} and len(priced) == 60
    cells = db_rows(db, "SELECT sum(cost_usd) AS usd, sum(attempts) AS n FROM cells WHERE run_id = ?", [run_id])[0]
    calls = db_rows(db, "SELECT sum(cost_usd) AS usd FROM llm_calls WHERE run_id = ?", [run_id])[0]
    assert abs(cells["usd"] - calls["usd"]) < 1e-12 and cells["n"] == len(rows)
    # the server saw exactly the logged requests, and never more than the limit at once
    assert len(llm.requests) == len(rows) == 63
    assert llm.peak_in_flight <= 6


@pytest.mark.parametrize("slow_copies", [2, 3])
def test_slow_duplicates_get_another_one(llm, tmp_path, slow_copies):
    """The original and the first duplicate(s) all hang: the next duplicate answers, the others
    are cancelled, and the account is still priced once. (Late in the run, so that the share
cap, 20% of the calls sent once the window has 30 answers, allows three.)"""
    db = tmp_path / "agentctl.duckdb"
    llm.latency = 0.05
    llm.responder = slow_first_time({"acct-059"}, delay=20, times=slow_copies)
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=4,
                      extra={"defaults": {"hedge_after_p": 90}})
    t0 = time.monotonic()
    res = run_inproc("run", spec, write_accounts(tmp_path, 60))
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 < 15
    run_id = first_line(res.stdout)
    rows = db_rows(db, "SELECT purpose, status, error, cost_usd FROM llm_calls WHERE run_id = ? "
                       "AND item_key = 'acct-059' ORDER BY purpose, status", [run_id])
    assert [(r["purpose"], r["status"]) for r in rows] == (
        [("hedge", "cancelled")] * (slow_copies - 1) + [("hedge", "ok"), ("initial", "ok")]), rows
    assert "another duplicate answered first" in rows[0]["error"]
    assert rows[-1]["cost_usd"] > 0 and all(r["cost_usd"] == 0 for r in rows[:-1])
    assert llm.count(item="acct-059") == slow_copies + 1
    assert llm.peak_in_flight <= 4


def test_no_hedging_unless_asked(llm, tmp_path):
    db = tmp_path / "agentctl.duckdb"
    llm.responder = slow_first_time({"acct-039"}, delay=1.5)
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=6)
    res = run_inproc("run", spec, write_accounts(tmp_path, 40))
    assert res.exit_code == 0
    assert db_rows(db, "SELECT count(*) AS n FROM llm_calls WHERE purpose = 'hedge'")[0]["n"] == 0
    assert len(llm.requests) == 40


def test_a_hedge_goes_ahead_of_queued_work_but_never_past_the_limit(llm, tmp_path):
    """Mid-run every slot is wanted: the duplicate of a stuck call takes the next free slot
    ahead of the queued accounts, and the limit still holds."""
    db = tmp_path / "agentctl.duckdb"
    llm.latency = 0.05
    llm.responder = slow_first_time({"acct-040"}, delay=5.0)  # mid-run, queue still full
    spec = write_spec(tmp_path, llm.base_url, stages=ONE_STAGE, concurrency=2,
                      extra={"defaults": {"hedge_after_p": 90}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 100))
    assert res.exit_code == 0
    run_id = first_line(res.stdout)
    rows = db_rows(db, "SELECT item_key, status FROM llm_calls WHERE run_id = ? AND purpose = 'hedge'", [run_id])
    assert {"item_key": "acct-040", "status": "ok"} in rows
    order = [r["_meta"]["item"] for r in llm.requests]
    first = order.index("acct-040")
    again = order.index("acct-040", first + 1)
    # one slot is held by the stuck call, the other turns over every 50 ms: the duplicate
    # went out within a few requests, not behind the ~60 accounts still queued
    assert again - first <= 4, order[first:again + 1]
    assert llm.peak_in_flight <= 2
    logged = db_rows(db, "SELECT status FROM llm_calls WHERE run_id = ?", [run_id])
    # a duplicate cancelled before its bytes left may never reach the server; its row says so
    cancelled = sum(1 for r in logged if r["status"] == "cancelled")
    assert len(logged) - cancelled <= len(llm.requests) <= len(logged), (len(logged), len(llm.requests))


class StepClient:
    """An in-process LLMClient: replies after `delay` seconds and counts what it was sent."""

    def __init__(self) -> None:
        self.delay = 0.01
        self.sent = 0
        self.in_flight = 0
        self.peak = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.sent += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return LLMResponse(content="{}", input_tokens=10, output_tokens=2, cost_usd=0.001)

    async def aclose(self) -> None:
        pass


def test_hedges_are_capped_when_the_provider_slows_down_across_the_board():
    """Every call suddenly takes 20x what the latency window knows, with slots to spare: without
    a cap each of them would be duplicated. At p90 at most 20% of calls are."""
    client, rows = StepClient(), []
    caller = ModelCaller(client=client, record=rows.append, run_id="r", limiter=PriorityLimiter(100),
                         routes={"m": Route("m", "openai/m", {}, hedge_after_p=90)})

    async def one(i: int) -> None:
        req = LLMRequest(alias="m", model="openai/m", messages=[{"role": "user", "content": str(i)}],
                         meta={"item_key": f"a{i}", "stage_id": "s"})
        await caller.call(req, usage=CellUsage(), purpose="call")

    async def main() -> None:
        for i in range(40):               # the window learns ~10 ms
            await one(i)
        client.delay = 0.2                # then everything is slow, 60 calls at once
        await asyncio.gather(*(one(i) for i in range(40, 100)))

    asyncio.run(main())
    hedges = [r for r in rows if r["purpose"] == "hedge"]
    assert len([r for r in rows if r["purpose"] != "hedge"]) == 100
    # 70 calls were made once the window had its 30 samples: 20% of them is 14; uncapped, ~40
    assert 0 < len(hedges) <= 0.2 * 70
    assert client.sent == 100 + len(hedges)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(0.1)  # the duplicates cost nothing


class StragglerClient(StepClient):
    """From the 41st request on, every `every`-th one's first send takes `slow` seconds; every
    other send, including
    that request's duplicate, `delay`. Records when each send started."""

    def __init__(self, every: int, slow: float) -> None:
        super().__init__()
        self.every, self.slow = every, slow
        self.first_sent: dict[str, float] = {}
        self.resent_after: list[float] = []  # for each duplicate: seconds after its original

    async def complete(self, request: LLMRequest) -> LLMResponse:
        key = request.meta["item_key"]
        if key in self.first_sent:
            self.resent_after.append(time.perf_counter() - self.first_sent[key])
            return await super().complete(request)
        self.first_sent[key] = time.perf_counter()
        n = int(request.meta["item_key"][1:])
        if n > 40 and n % self.every == 0:  # after the window has learned the fast calls
            self.sent += 1
            await asyncio.sleep(self.slow)
            return LLMResponse(content="{}", input_tokens=10, output_tokens=2, cost_usd=0.001)
        return await super().complete(request)


def test_the_hedge_threshold_does_not_creep_up_when_duplicates_win():
    """8% of calls straggle at 100x (over p95's 5%): their duplicates win. The wait before a
    duplicate must stay near the fast calls' latency for the whole run. (Counting a hedged
    call at its time to the first answer fed the percentile its own threshold plus a bit, so
    it climbed with every straggler until hedging stopped helping.)"""
    client = StragglerClient(every=12, slow=1.0)
    client.delay = 0.02
    caller = ModelCaller(client=client, record=[].append, run_id="r", limiter=PriorityLimiter(4),
                         routes={"m": Route("m", "openai/m", {}, hedge_after_p=95)})

    async def main() -> None:
        for i in range(1, 241):  # one at a time: the waits are measured, not crowded
            req = LLMRequest(alias="m", model="openai/m", messages=[{"role": "user", "content": str(i)}],
                             meta={"item_key": f"a{i}", "stage_id": "s"})
            await caller.call(req, usage=CellUsage(), purpose="call")

    asyncio.run(main())
    waits = client.resent_after
    assert len(waits) >= 17  # every straggler (48, 60, ... 240) was duplicated, and maybe a fast one
    assert max(waits) < 1.5 * min(waits), str([round(w, 3) for w in waits])
