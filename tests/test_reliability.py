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
    script = FaultScript()
    llm.responder = script
    spec = write_spec(tmp_path, llm.base_url, stages=two_stages(), concurrency=8,
                      extra={"models": {"fast": {"timeout": 1}},
                             "defaults": {"max_attempts": 4}})
    res = run_inproc("run", spec, write_accounts(tmp_path, 30))

    assert res.exit_code == 0, res.output
    run_id = first_line(res.stdout)
    assert cell_counts(db, run_id) == {"research": {"ok": 30}, "score": {"ok": 30}}
    rows = calls(db, run_id)
    # one log row per request the server saw, faults included
    assert len(rows) == len(llm.requests) == 60 + len(script.injected)
    injected = Counter(f for _, _, f in script.injected)
    assert set(injected) == {"429", "500", "malformed", "reset", "hang"}, injected
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == len(script.injected)
    for r in failed:
        assert r["status"] == "error" and r["error_type"], r
        assert r["wait_ms"] is not None and r["wait_ms"] >= 0, r
        assert r["response"] is None and r["cost_usd"] is None
    # each fault is logged as what it was, on the cell it hit
    kind = {"429": "RateLimited", "500": "ServerError", "hang": "Timeout"}
    logged = Counter((r["item_key"], r["stage_id"]) for r in failed)
    assert logged == Counter((i, s) for i, s, _ in script.injected)
    types = Counter(r["error_type"] for r in failed)
    for fault, error_type in kind.items():
        assert types[error_type] == injected[fault], types
    assert sum(types.values()) == sum(injected.values())
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
