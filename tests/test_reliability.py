"""Reliability under a misbehaving provider, measured at the fake server and in the run log:
transient faults are retried (with Retry-After honoured), fatal ones are not, rate limits are
kept, concurrency adapts to 429s, fallbacks answer, budgets stop the run, and two live runs
share one run log.

Everything talks to `FakeLLM` on loopback; runs go through the CLI app in-process unless a
test needs a real process (exit codes on stderr, two writers on one file).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.llm_server import Faults, FakeLLM, Reply, default_reply
from tests.helpers import (account_id, cell_counts, db_rows, default_stages, first_line,
                           popen_cli, run_cli, run_inproc, run_status, stage_of,
                           write_accounts, write_spec)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"  # AGENTCTL_DB, set by conftest


def two_stages() -> list[dict]:
    """research -> score: no select barrier, so every account runs both stages."""
    return default_stages()[:2]


def calls(db: Path, run_id: str) -> list[dict]:
    return db_rows(db, "SELECT * FROM llm_calls WHERE run_id = ? ORDER BY started_at", [run_id])


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- transient faults are retried ---------------------------------------------------------

FAULTS = ("429", "500", "malformed", "reset", "hang", None)


class FaultScript:
    """A responder that fails the first attempt of each cell with a fault chosen by the
    account's number (so every kind occurs, whatever order requests arrive in), and the
    second attempt too for every seventh account. Remembers what it did per request."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen: Counter = Counter()
        self.injected: list[tuple[str, str, str]] = []  # (item, stage, fault)

    def __call__(self, body: dict) -> Reply | None:
        item, stage = body["_meta"]["item"], stage_of(body)
        n = int(item.rsplit("-", 1)[1]) + (3 if stage == "score" else 0)
        with self.lock:
            self.seen[(item, stage)] += 1
            attempt = self.seen[(item, stage)]
        fault = FAULTS[n % len(FAULTS)] if attempt == 1 else (
            "429" if attempt == 2 and n % 7 == 0 else None)
        if fault is None:
            return None
        with self.lock:
            self.injected.append((item, stage, fault))
        return {"429": Reply(status=429, error_type="rate_limit_exceeded",
                             headers={"Retry-After": "0.2"}, delay=0),
                "500": Reply(status=500, error_type="server_error"),
                "malformed": Reply(malformed=True), "reset": Reply(reset=True),
                "hang": Reply(hang=True)}[fault]


def test_transient_faults_are_retried_until_every_account_is_ok(llm, tmp_path, db):
    """Scripted faults on every cell's first attempt, plus the server's own random 429s and
    500s; the lane has a fixed concurrency (adaptive cuts are tested below)."""
    script = FaultScript()
    llm.responder = script
    llm.faults = Faults(rate_429=0.04, retry_after=0.2, rate_500=0.04)
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=8, extra={
        "models": {"fast": {"timeout": 1}}, "limits": {"fast": {"concurrency": 8}},
        "defaults": {"max_attempts": 6}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 30))

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 30}, "score": {"ok": 30}}
    rows = calls(db, run_id)
    random_faults = [r for r in llm.requests if r["_fault"]]
    injected = Counter(f for _, _, f in script.injected) + Counter(r["_fault"] for r in random_faults)
    assert set(injected) == {"429", "500", "malformed", "reset", "hang"}, injected
    # one log row per request the server saw, faults included
    assert len(rows) == len(llm.requests) == 60 + sum(injected.values())
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == sum(injected.values())
    for r in failed:
        assert r["status"] == "error" and r["error_type"], r
        assert r["wait_ms"] is not None and r["wait_ms"] >= 0, r
        assert r["response"] is None and r["cost_usd"] is None
    # each failure is logged on the cell it hit; 429s and hangs as what they were
    logged = Counter((r["item_key"], r["stage_id"]) for r in failed)
    assert logged == Counter([(i, s) for i, s, _ in script.injected]
                             + [(r["_meta"]["item"], stage_of(r)) for r in random_faults])
    types = Counter(r["error_type"] for r in failed)
    assert types["RateLimited"] == injected["429"], types
    assert types["Timeout"] == injected["hang"], types
    # a hang is cut at the alias timeout (1 s), not the server's hour
    for r in failed:
        if r["error_type"] == "Timeout":
            assert 900 <= r["latency_ms"] < 4000, r
    # Retry-After 0.2: the next attempt of that cell waits at least 0.2 s
    by_cell: dict[tuple, list[dict]] = {}
    for r in rows:
        by_cell.setdefault((r["item_key"], r["stage_id"]), []).append(r)
    checked = 0
    for attempts in by_cell.values():
        attempts.sort(key=lambda r: r["attempt"])
        assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[-1]["status"] == "ok"
        assert [r["purpose"] for r in attempts[1:]] == ["retry"] * (len(attempts) - 1)
        for prev, nxt in zip(attempts, attempts[1:]):
            if prev["error_type"] == "RateLimited":
                assert prev["wait_ms"] >= 200, prev
                gap = (nxt["started_at"] - prev["started_at"]).total_seconds()
                assert gap >= 0.2, (prev, nxt)
                checked += 1
    assert checked == injected["429"] > 0


def test_reset_and_malformed_reply_are_logged_as_what_they_were(llm, tmp_path, db):
    faults = {account_id(0): Reply(reset=True), account_id(1): Reply(malformed=True)}
    sent: Counter = Counter()

    def responder(body):
        item = body["_meta"]["item"]
        sent[item] += 1
        return faults.get(item) if sent[item] == 1 else None

    llm.responder = responder
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, stages=default_stages()[:1]),
                     write_accounts(tmp_path, 2))
    assert res.exit_code == 0, res.output
    errors = {r["item_key"]: r for r in calls(db, first_line(res.stdout)) if r["status"] == "error"}
    assert errors[account_id(0)]["error_type"] == "ConnectionError", errors[account_id(0)]
    assert errors[account_id(1)]["error_type"] == "MalformedReply", errors[account_id(1)]
    assert not any("500" in r["error"] for r in errors.values())


# --- fatal errors are not retried ---------------------------------------------------------

def test_bad_request_and_context_length_fail_their_cell_after_one_attempt(llm, tmp_path, db):
    refused = {account_id(1): Reply(status=400, error_type="invalid_request_error"),
               account_id(2): Reply(error_type="context_length_exceeded")}
    llm.responder = lambda body: refused.get(body["_meta"]["item"])
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(),
                      extra={"defaults": {"max_attempts": 6}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 5))

    assert res.exit_code == 1, res.output
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "completed_with_errors"
    assert cell_counts(db, run_id) == {"research": {"ok": 3, "failed": 2},
                                       "score": {"ok": 3, "skipped": 2}}
    for item, error_type in ((account_id(1), "BadRequest"), (account_id(2), "ContextLengthExceeded")):
        assert llm.count(item=item) == 1  # one request, no retry, nothing downstream
        rows = db_rows(db, "SELECT * FROM llm_calls WHERE run_id = ? AND item_key = ?", [run_id, item])
        assert [(r["attempt"], r["status"], r["error_type"]) for r in rows] == [(1, "error", error_type)]
        assert rows[0]["wait_ms"] is None  # nothing to wait for: no next attempt
        cell = db_rows(db, "SELECT * FROM cells WHERE run_id = ? AND item_key = ? AND stage_id = "
                           "'research'", [run_id, item])[0]
        assert cell["status"] == "failed" and cell["error_type"] == error_type
        assert cell["attempts"] == 1
    assert "context length" in db_rows(db, "SELECT error FROM cells WHERE item_key = ? AND "
                                           "stage_id = 'research'", [account_id(2)])[0]["error"]
    assert len(llm.requests) == 5 + 3


def test_auth_and_quota_errors_stop_the_run_early(tmp_path, db):
    """401 and insufficient_quota will not heal: the run stops after the calls in flight, exits
    2 and says why in one line on stderr. Two real processes, side by side."""
    problems = {"auth": (Reply(status=401, error_type="authentication_error"),
                         ["authentication failed", "OPENAI_API_KEY"]),
                "quota": (Reply(error_type="insufficient_quota"), ["quota", "insufficient_quota"])}
    accounts = write_accounts(tmp_path, 20)
    servers, procs = {}, {}
    try:
        for name, (reply, _) in problems.items():
            srv = servers[name] = FakeLLM(latency=0.05).start()
            srv.responder = lambda body, reply=reply: reply
            spec = write_spec(tmp_path, srv.base_url, stages=two_stages(), concurrency=2,
                              extra={"defaults": {"max_attempts": 6}}, name=f"{name}.yaml")
            procs[name] = popen_cli("run", spec, accounts, "--db", tmp_path / f"{name}.duckdb")
        for name, (_, words) in problems.items():
            out, err = procs[name].communicate(timeout=40)
            assert procs[name].returncode == 2, (name, out, err)
            line = one_line_error(err)
            assert line.startswith("error:"), line
            for word in words:
                assert word in line, (name, line)
            run_id = first_line(out)
            log = tmp_path / f"{name}.duckdb"
            assert run_status(log, run_id) == "failed"
            assert words[0] in db_rows(log, "SELECT error FROM runs")[0]["error"]
            # the calls in flight when the error came back, not one doomed call per account
            assert len(servers[name].requests) <= 4, (name, len(servers[name].requests))
            rows = db_rows(log, "SELECT attempt FROM llm_calls")
            assert len(rows) == len(servers[name].requests)
            assert {r["attempt"] for r in rows} == {1}  # never retried
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for srv in servers.values():
            srv.stop()


# --- rate limits from the spec ------------------------------------------------------------

class Arrivals:
    """A responder that notes when each request reached the server and how many the server
    was handling at that moment (itself included); then, after ``delay`` seconds, answers as
    the default model would, or with a 429 when ``too_many(in_flight)`` says so. 429s take
    as long as answers, so the server's in-flight count is the client's concurrency."""

    def __init__(self, srv: FakeLLM, delay: float = 0.0, too_many=None,
                 retry_after: str | None = None):
        self.srv, self.delay, self.too_many = srv, delay, too_many
        self.headers = {"Retry-After": retry_after} if retry_after else None
        self.lock = threading.Lock()
        self.seen: list[tuple[float, int, int]] = []  # (time, in_flight, status)

    def __call__(self, body: dict) -> Reply:
        in_flight = self.srv.in_flight
        status = 429 if self.too_many and self.too_many(in_flight) else 200
        with self.lock:
            self.seen.append((time.monotonic(), in_flight, status))
        if status == 429:
            return Reply(status=429, error_type="rate_limit_exceeded", headers=self.headers,
                         delay=self.delay)
        reply = default_reply(body)
        reply.delay = self.delay
        return reply

    def times(self) -> list[float]:
        return sorted(t for t, _, _ in self.seen)


def test_rpm_limit_is_kept_and_used(llm, tmp_path, db):
    """rpm: 120 is one request every 0.5 s. The server allows 5 per 2 s window (150/min), so a
    burst, or any window over the limit, would draw a 429."""
    llm.faults = Faults(rpm_limit=5, rpm_window=2.0)
    arrivals = llm.responder = Arrivals(llm)
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=8,
                      extra={"limits": {"fast": {"rpm": 120}}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 8))

    assert res.exit_code == 0, res.output
    assert len(llm.requests) == 16
    assert all(r["_status"] == 200 for r in llm.requests), llm.stats()
    times = arrivals.times()
    # never more than 2 requests in any 1-second window (3 with timer jitter at the edges)
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 3
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 0.9 * 2.0 <= rate <= 2.0 * 1.1, rate


def test_tpm_limit_spaces_requests_by_tokens(llm, tmp_path, db):
    arrivals = llm.responder = Arrivals(llm)
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages()[:1], concurrency=8,
                      extra={"defaults": {"max_tokens": 40}, "limits": {"fast": {"tpm": 60_000}}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 8))

    assert res.exit_code == 0, res.output
    tokens = [r["_usage"]["total_tokens"] for r in llm.requests]
    times = arrivals.times()
    # 60k tokens a minute is 1000 a second: after the first request, each later one waits
    # for the tokens of those before it
    expected = sum(tokens[:-1]) / 1000
    took = times[-1] - times[0]
    assert 0.6 * expected <= took <= 1.6 * expected + 0.3, (took, expected, tokens)


def test_tpm_waiters_use_what_a_settled_call_gave_back(llm, tmp_path, db):
    """Each call reserves its prompt + max_tokens (2,000 here) and gives back what it did not
    use when it settles. Callers already waiting used to sleep out the full reservation: with
    concurrency above 1 a tpm limit ran at a third of its value."""
    arrivals = llm.responder = Arrivals(llm)
    spec = write_spec(tmp_path, llm.base_url, stages=default_stages()[:1], concurrency=8,
                      extra={"defaults": {"max_tokens": 2000}, "limits": {"fast": {"tpm": 60_000}}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 8))

    assert res.exit_code == 0, res.output
    times = arrivals.times()
    took = times[-1] - times[0]
    reserved = 7 * 2000 / 1000  # 14 s if every waiter slept out the reservation before it
    used = sum(r["_usage"]["total_tokens"] for r in llm.requests[:-1]) / 1000
    assert used <= took <= 0.3 * reserved, (took, used)


def test_a_provider_limit_holds_for_an_alias_with_its_own_limit(llm, tmp_path, db):
    """`limits: {openai: {rpm: 120}, fast: {concurrency: 4}}`: the alias entry narrows the
    provider's limit; it used to replace it (16 requests in a burst)."""
    arrivals = llm.responder = Arrivals(llm)
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=8,
                      extra={"limits": {"openai": {"rpm": 120}, "fast": {"concurrency": 4}}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 8))

    assert res.exit_code == 0, res.output
    times = arrivals.times()
    assert len(times) == 16
    assert max(sum(1 for u in times if t <= u < t + 1.0) for t in times) <= 3
    assert llm.peak_in_flight <= 4


# --- adaptive concurrency -----------------------------------------------------------------

def test_adaptive_concurrency_converges_on_what_the_server_allows(llm, tmp_path, db):
    """No `limits:` for the alias, --concurrency 12, and a server that 429s (Retry-After 0.2)
    whenever more than 3 requests are in flight: the lane halves its concurrency while 429s
    dominate instead of keeping 12 in flight, and every account still completes."""
    arrivals = llm.responder = Arrivals(llm, delay=0.2, too_many=lambda n: n > 3,
                                        retry_after="0.2")
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=4,
                      extra={"defaults": {"max_attempts": 10}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 20), "--concurrency", "12")

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 20}, "score": {"ok": 20}}
    seen = sorted(arrivals.seen)
    rejected = [t for t, _, status in seen if status == 429]
    assert len(seen) == len(llm.requests) == 40 + len(rejected)
    assert len(db_rows(db, "SELECT 1 FROM llm_calls WHERE error_type = 'RateLimited'")) == len(rejected)
    # the storm did start: all 12 at once
    assert llm.peak_in_flight == 12
    # after the first cuts, the client keeps far fewer in flight (the limit is halved while
    # 429s dominate and creeps back up one slot per window of successes)
    later = [(n, status) for t, n, status in seen if t > rejected[0] + 1.2]
    assert later and max(n for n, _ in later) <= 8, later
    assert sum(status == 429 for _, status in later) <= 0.5 * len(later), later
    # a client that kept 12 in flight would draw 3 rejections per success (120 here)
    assert len(rejected) <= 60, len(rejected)
    # the run says how it gave way: in runs.totals, the run summary and inspect
    (run,) = db_rows(db, "SELECT totals FROM runs WHERE run_id = ?", [run_id])
    (lane,) = json.loads(run["totals"])["rate_limits"]
    assert lane["lane"] == "fast" and lane["rate_limited"] == len(rejected)
    assert lane["concurrency"] == 12 and lane["concurrency_cuts"] >= 1
    assert lane["lowest_concurrency"] <= 6 and lane["pauses"] >= 1 and lane["paused_s"] > 0
    line = f"rate limits, fast: {len(rejected)} 429 replies, concurrency cut {lane['concurrency_cuts']}x"
    assert line in res.output
    shown = run_inproc("inspect", run_id)
    assert shown.exit_code == 0 and line in shown.stdout, shown.output


# --- fallbacks ----------------------------------------------------------------------------

def fallback_spec(tmp_path: Path, api_base: str, *, max_attempts: int) -> Path:
    return write_spec(tmp_path, api_base, stages=two_stages(), extra={
        "models": {"strong": {"model": "openai/gpt-4o", "api_base": api_base, "timeout": 10,
                              "fallbacks": ["fast"]}},
        "defaults": {"model": "strong", "max_attempts": max_attempts}})


def strong_is_down(body: dict) -> Reply | None:
    return Reply(status=500, error_type="server_error") if body["model"] == "gpt-4o" else None


def test_fallback_alias_answers_when_the_primary_keeps_failing(llm, tmp_path, db):
    llm.responder = strong_is_down
    res = run_inproc("run", fallback_spec(tmp_path, llm.base_url, max_attempts=4),
                     write_accounts(tmp_path, 4))

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 4}, "score": {"ok": 4}}
    assert Counter(r["model"] for r in llm.requests) == {"gpt-4o": 2 * 8, "gpt-4o-mini": 8}
    for cell in db_rows(db, "SELECT DISTINCT item_key, stage_id FROM llm_calls"):
        rows = db_rows(db, "SELECT * FROM llm_calls WHERE item_key = ? AND stage_id = ? "
                           "ORDER BY attempt", [cell["item_key"], cell["stage_id"]])
        assert [(r["alias"], r["status"]) for r in rows] == \
            [("strong", "error"), ("strong", "error"), ("fast", "ok")]
        assert "gpt-4o-mini" not in rows[0]["model"] and "gpt-4o" in rows[0]["model"]
        assert "gpt-4o-mini" in rows[-1]["model"]
        assert rows[-1]["cost_usd"] > 0  # priced as the model that answered


def test_fallback_is_tried_even_with_few_attempts(llm, tmp_path, db):
    llm.responder = strong_is_down
    res = run_inproc("run", fallback_spec(tmp_path, llm.base_url, max_attempts=2),
                     write_accounts(tmp_path, 2))
    assert res.exit_code == 0, res.output
    assert llm.count(_status=200) == 4


# --- budgets ------------------------------------------------------------------------------

# $1 per thousand tokens: a call here costs about $0.15-0.25, so a few dollars buys a few calls
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


def budget_spec(tmp_path: Path, api_base: str, *, budget: float | None = None,
                model: str | None = None, price: dict | None = PRICE) -> Path:
    fast: dict = {"price": price} if price else {}
    if model:
        fast["model"] = model
    extra: dict = {"models": {"fast": fast}, "defaults": {"max_tokens": 50}}
    if budget is not None:
        extra["budget"] = {"max_usd": budget}
    return write_spec(tmp_path, api_base, stages=two_stages(), concurrency=2, extra=extra)


def assert_stopped_by_budget(db: Path, run_id: str, limit: float, concurrency: int = 2) -> list[dict]:
    assert run_status(db, run_id) == "budget_exceeded"
    rows = calls(db, run_id)
    costs = [r["cost_usd"] for r in rows]
    assert all(c is not None and c > 0 for c in costs)
    # spending stops at the limit, give or take the calls that were already in flight
    assert sum(costs) <= limit + concurrency * max(costs), (sum(costs), limit)
    assert 0 < len(rows) < 40
    return rows


def test_budget_stops_the_run_with_exit_4(llm, tmp_path, db):
    proc = run_cli("run", budget_spec(tmp_path, llm.base_url, budget=2.0),
                   write_accounts(tmp_path, 20))
    assert proc.returncode == 4, proc.stderr
    run_id = first_line(proc.stdout)
    rows = assert_stopped_by_budget(db, run_id, 2.0)
    assert len(llm.requests) == len(rows)
    error = db_rows(db, "SELECT error FROM runs")[0]["error"]
    assert "budget" in error and "$2" in error


def test_max_cost_flag_then_resume_with_more(llm, tmp_path, db):
    spec, accounts = budget_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 20)
    res = run_inproc("run", spec, accounts, "--max-cost", "2")
    assert res.exit_code == 4, res.output
    run_id = first_line(res.stdout)
    first = assert_stopped_by_budget(db, run_id, 2.0)

    res = run_inproc("resume", run_id, "--max-cost", "100")
    assert res.exit_code == 0, res.output
    assert run_status(db, run_id) == "completed"
    assert cell_counts(db, run_id) == {"research": {"ok": 20}, "score": {"ok": 20}}
    # nothing that finished before the stop ran again: one call per cell, all from the server
    rows = calls(db, run_id)
    assert Counter((r["item_key"], r["stage_id"]) for r in rows) == \
        {(account_id(i), s): 1 for i in range(20) for s in ("research", "score")}
    assert not any(r["cache_hit"] for r in rows)
    assert len(llm.requests) == 40 and len(first) < 40


def test_budget_is_spent_up_to_the_limit(llm, tmp_path, db):
    res = run_inproc("run", budget_spec(tmp_path, llm.base_url, budget=2.0),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 4, res.output
    costs = [r["cost_usd"] for r in calls(db, first_line(res.stdout))]
    assert sum(costs) >= 2.0 - 2 * max(costs), costs


def test_resume_with_max_cost_raises_a_spec_budget(llm, tmp_path, db):
    res = run_inproc("run", budget_spec(tmp_path, llm.base_url, budget=2.0),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 4, res.output
    run_id = first_line(res.stdout)
    assert "--max-cost" in db_rows(db, "SELECT error FROM runs")[0]["error"]  # the advice
    res = run_inproc("resume", run_id, "--max-cost", "100")
    assert res.exit_code == 0, res.output
    assert cell_counts(db, run_id) == {"research": {"ok": 20}, "score": {"ok": 20}}


def test_budget_with_an_unpriced_model_is_refused_before_any_call(llm, tmp_path, db):
    spec = budget_spec(tmp_path, llm.base_url, budget=1.0, model="openai/some-unknown-model",
                       price=None)
    for args in ([], ["--max-cost", "1"]):
        res = run_inproc("run", spec, write_accounts(tmp_path, 3), *args)
        assert res.exit_code == 2, res.output
        line = one_line_error(res.stderr)
        assert "unpriced" in line and "price" in line.replace("unpriced", "") and "fast" in line
        assert res.stdout == ""
    assert llm.requests == []
    assert not db.exists() or db_rows(db, "SELECT count(*) AS n FROM runs")[0]["n"] == 0


def test_unpriced_runs_say_unpriced_not_zero(llm, tmp_path, db):
    spec = budget_spec(tmp_path, llm.base_url, model="openai/some-unknown-model", price=None)
    res = run_inproc("run", spec, write_accounts(tmp_path, 3))
    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert {r["cost_usd"] for r in calls(db, run_id)} == {None}
    view = json.loads(run_inproc("inspect", run_id, "--json").stdout)
    for stage in view["stages"]:
        assert stage["cost_usd"] is None and stage["unpriced_calls"] == 3, stage
    assert view["totals"]["unpriced_calls"] == view["totals"]["llm_calls"] == 6
    listed = json.loads(run_inproc("runs", "--json").stdout)[0]
    assert listed["cost_usd"] is None and listed["unpriced_calls"] == 6
    for text in (res.stdout, run_inproc("inspect", run_id).stdout, run_inproc("runs").stdout):
        assert "unpriced" in text and "$0" not in text, text


def test_unpriced_inspect_totals_are_null(llm, tmp_path, db):
    spec = budget_spec(tmp_path, llm.base_url, model="openai/some-unknown-model", price=None)
    run_id = first_line(run_inproc("run", spec, write_accounts(tmp_path, 2)).stdout)
    assert json.loads(run_inproc("inspect", run_id, "--json").stdout)["totals"]["cost_usd"] is None


# --- one run log, many processes ----------------------------------------------------------

def test_two_live_runs_and_readers_share_one_run_log(llm, tmp_path, db):
    """Two runs write the same file while `inspect` and `runs` read it: nobody waits for
    long, nobody fails, nobody sees DuckDB's lock error."""
    llm.latency = 0.3
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=4)
    accounts = write_accounts(tmp_path, 20)
    procs = [popen_cli("run", spec, accounts, "--json") for _ in range(2)]
    readers = []
    try:
        # --json: the run id on stderr (after a warning that the other run of this spec and
        # input is live, for the one that starts second)
        run_ids = [next(line.strip() for line in iter(p.stderr.readline, "")
                        if not line.startswith("warning: ")) for p in procs]
        deadline = time.monotonic() + 20
        while len(llm.requests) < 12:
            assert time.monotonic() < deadline, "the runs never got going"
            time.sleep(0.05)
        commands = [argv for run_id in run_ids
                    for argv in (("inspect", run_id, "--json"), ("runs", "--json"))]
        with ThreadPoolExecutor(len(commands)) as pool:  # four more processes, side by side
            readers = list(pool.map(lambda argv: run_cli(*argv), commands))
        live = [json.loads(r.stdout) for r in readers if r.returncode == 0]
        results = [p.communicate(timeout=40) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r in readers:
        assert r.returncode == 0, r.stderr
        assert "Could not set lock" not in r.stderr and "lock" not in r.stderr.lower()
    assert len(live) == 4
    assert live[0]["run_id"] == run_ids[0] and live[2]["run_id"] == run_ids[1]
    assert {r["run_id"] for r in live[1]} >= set(run_ids)
    assert "running" in {live[0]["status"], live[2]["status"]}  # read while the runs were live
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert "Could not set lock" not in err and "Traceback" not in err
        assert json.loads(out)["status"] == "completed"
    for run_id in run_ids:
        assert run_status(db, run_id) == "completed"
        assert cell_counts(db, run_id) == {"research": {"ok": 20}, "score": {"ok": 20}}
    assert len(llm.requests) == 80 == len(db_rows(db, "SELECT 1 FROM llm_calls"))


# --- a Retry-After far past any sane wait ---------------------------------------------------

def test_a_day_long_retry_after_stops_the_run_as_an_exhausted_quota(llm, tmp_path, db):
    """A 429 saying "come back in 24 h" used to freeze the run without a word (a 977 s wait,
    the lane paused for the whole day). It is an exhausted quota in all but name: the run
    stops at once, exit 2, with one line that says what the provider asked for."""
    lock, seen = threading.Lock(), []

    def one_day_429(body: dict) -> Reply | None:
        with lock:
            seen.append(body)
            n = len(seen)
        if n == 3:
            return Reply(status=429, error_type="rate_limit_exceeded",
                         headers={"Retry-After": "86400"}, delay=0)
        return None

    llm.responder = one_day_429
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=2,
                      extra={"defaults": {"max_attempts": 4}})
    started = time.monotonic()
    proc = run_cli("run", spec, write_accounts(tmp_path, 10), timeout=25)
    assert time.monotonic() - started < 20
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr)
    assert "86400 s (24.0 h)" in line and "Retry-After" in line and "quota" in line, line
    run_id = first_line(proc.stdout)
    assert run_status(db, run_id) == "failed"
    rows = calls(db, run_id)
    assert len(rows) == len(llm.requests) <= 4  # the calls in flight, and nothing after
    refused = [r for r in rows if r["status"] == "error"]
    assert [r["error_type"] for r in refused] == ["QuotaExceeded"], refused
    assert refused[0]["wait_ms"] is None  # no retry was scheduled
    assert "86400" in db_rows(db, "SELECT error FROM runs")[0]["error"]


def test_no_retry_wait_passes_the_sixty_second_cap():
    """Retry-After up to the cap is honoured with up to 10% jitter; past it, the jitter goes
    below the cap instead of above (it used to add 10% of the Retry-After on top of 60 s)."""
    from agentctl.llm.retry import RetryPolicy

    policy = RetryPolicy()
    for retry_after in (0.0, 1.0, 30.0, 59.0, 60.0, 61.0, 300.0, 599.0, 86400.0):
        waits = [policy.delay(1, retry_after) for _ in range(400)]
        assert max(waits) <= 60.0, (retry_after, max(waits))
        assert min(waits) >= min(retry_after, 54.0), (retry_after, min(waits))
        assert len({round(w, 3) for w in waits}) > 1  # still jittered, at the cap too


def test_a_saturated_lane_pauses_for_sixty_seconds_at_most():
    import asyncio

    from agentctl.errors import RateLimited
    from agentctl.llm.caller import Route
    from agentctl.llm.governor import RateGovernor

    async def pause_after_a_storm() -> float:
        gov = RateGovernor({}, {"fast": Route("fast", "openai/x", {})}, default_concurrency=4)
        lane = gov.lane("fast")
        while not lane.cuts:  # 429s until the lane judges itself saturated, and pauses
            await gov.acquire("fast", 10)
            gov.release("fast", 10, None, RateLimited("429", status=429, retry_after=86400))
            assert lane.rate_limited <= 40
        return lane.paused_until - asyncio.get_running_loop().time()

    assert 50 < asyncio.run(pause_after_a_storm()) <= 60


def test_progress_says_when_calls_wait_for_a_rate_limit():
    """Under its own rpm limit a run looks idle: the progress line says what holds it back."""
    import asyncio

    from agentctl.engine.progress import RunProgress
    from agentctl.llm.caller import Route
    from agentctl.llm.governor import RateGovernor
    from agentctl.spec.models import Limit

    async def three_calls_at_once() -> tuple[dict, str]:
        gov = RateGovernor({"fast": Limit(rpm=60)}, {"fast": Route("fast", "openai/x", {})},
                           default_concurrency=8)
        progress = RunProgress(held_back=gov.waiting)
        calls = [asyncio.create_task(gov.acquire("fast", 10)) for _ in range(3)]
        await asyncio.sleep(0.3)  # the first went at once; the next two wait 1 s and 2 s
        seen = gov.waiting(), progress.waiting_note()
        for c in calls:
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        return seen

    waiting, note = asyncio.run(three_calls_at_once())
    assert waiting == {"fast": 2} and note == "2 calls wait for the rate limit of fast"
