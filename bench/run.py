"""`make bench`: agentctl's throughput, CPU and memory against a fake model.

Scenario A   N accounts x 3 agent stages through the real CLI (`agentctl run --json`) at
             concurrency C; the fake OpenAI-compatible server runs in its own process.
Baseline     the same requests (read back from A's run log) sent by a bare
             `litellm.acompletion` loop with one asyncio.Semaphore(C): litellm's own cost.
Scenario B   A again against a server that injects 10% 429, 5% 500, 2% hangs, 2% malformed.
Tail         A with a heavy-tailed model: latency 0.4 s, but a seeded 5% of replies take 10x.
Naive        the tail run's requests replayed as per-account asyncio chains (research ->
             score -> write) under one asyncio.Semaphore(C), same server: what agentctl's
             scheduler has to beat. Barrier (optional): the same, stage by stage.
Scale        `agentctl run --mock` (no server) at N = 1,000 / 10,000 / 100,000: CPU per cell
             and peak RSS as N grows.

    python bench/run.py                 # everything: A+baseline x2, B, tail+naive x2, barrier, scale
    python bench/run.py --quick         # N=200, latency 0.2 s, scale to 10,000: a sanity check
    python bench/run.py --n 500 --latency 0.5 --concurrency 32 --scenarios a,baseline
    python bench/run.py --scenarios tail,naive --n 200
    python bench/run.py --scenarios scale --scale-ns 1000,5000

Prints a report and a PASS/FAIL table and writes bench/results.json (see bench/README.md).
Exits 0 when the measurements ran, whatever the targets say; --strict exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from harness import PY, FakeServer, Measured, machine_busy_s, read_only, run_measured
from report import derive, environment, occupancy, render, targets, time_budget

BENCH = Path(__file__).resolve().parent
MODEL = "openai/gpt-4o-mini"
FAULTS_B = {"429": 0.10, "500": 0.05, "hang": 0.02, "malformed": 0.02}  # 429s carry Retry-After: 1
SCENARIOS = ("a", "baseline", "b", "tail", "naive", "barrier", "scale", "orch")
NEEDS = {"baseline": "a", "naive": "tail", "barrier": "tail"}  # they replay that run's requests
B_CUTOFF = 3.0  # B is interrupted (Ctrl-C) once it has run this many times A's wall clock
SCALE_NS = (1_000, 10_000, 100_000)


@dataclass
class Config:
    mode: str
    n: int
    latency: float
    concurrency: int
    timeout: float
    seed: int
    scenarios: tuple[str, ...]
    out: str
    keep: bool
    strict: bool
    repeat: int
    tail_latency: float
    slow_rate: float
    slow_factor: float
    scale_ns: tuple[int, ...]
    scale_timeout: float
    hedge_p: float | None = 95.0
    orch_latency: float = 5.0   # long enough for all 1,000 sub-agents to be in flight at once

    @property
    def tail_mean_latency(self) -> float:
        """The expected mean of the tail server: 0.4 x (0.95 + 0.05 x 10) = 0.58 s by default."""
        return self.tail_latency * (1 - self.slow_rate + self.slow_rate * self.slow_factor)

    @property
    def tail_timeout(self) -> float:
        """5 x a slow reply: the alias timeout must not cut the tail off (2 s would, at 0.4 s)."""
        return round(5 * self.tail_latency * max(1.0, self.slow_factor), 3)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="agentctl benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true",
                   help="N=200, latency 0.2 s, scale to 10,000, no repeat: a fast sanity check")
    p.add_argument("--n", type=int, help="accounts in A, B and tail (default 1000; 200 with --quick)")
    p.add_argument("--latency", type=float, help="fake model latency, seconds (default 1.0; 0.2 with --quick)")
    p.add_argument("--concurrency", type=int, default=64, help="agentctl --concurrency and the baseline's semaphore")
    p.add_argument("--timeout", type=float, help="model alias timeout, seconds (default 5 x latency): what a hang costs in B")
    p.add_argument("--seed", type=int, default=1, help="seed of the accounts and of B's fault draws")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma list of a, baseline, b, tail, naive, barrier, scale (default: all; "
                        "baseline needs a, naive and barrier need tail)")
    p.add_argument("--out", default=str(BENCH / "results.json"), help="where to write the results JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (run logs, specs, stdout/stderr)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--repeat", type=int,
                   help="run A + baseline and tail + naive this many times, alternating; verdicts "
                        "use medians (default 2; 1 with --quick)")
    p.add_argument("--tail-latency", type=float, help="tail scenario: base latency, seconds (default 0.4)")
    p.add_argument("--slow-rate", type=float, help="tail scenario: share of slow replies (default 0.05)")
    p.add_argument("--slow-factor", type=float, help="tail scenario: a slow reply takes this x latency (default 10)")
    p.add_argument("--scale-ns", help="scale scenario: comma list of N (default 1000,10000,100000; "
                                      "1000,10000 with --quick)")
    p.add_argument("--scale-timeout", type=float, default=1800.0,
                   help="scale scenario: stop one run after this many seconds (default 1800)")
    a = p.parse_args(argv)
    n = a.n or (200 if a.quick else 1000)
    latency = a.latency if a.latency is not None else (0.2 if a.quick else 1.0)
    scenarios = tuple(s.strip().lower() for s in a.scenarios.split(",") if s.strip())
    if any(s not in SCENARIOS for s in scenarios) or any(NEEDS.get(s, s) not in scenarios for s in scenarios):
        p.error(f"--scenarios takes {', '.join(SCENARIOS)} (baseline needs a, naive and barrier "
                f"need tail); got {a.scenarios!r}")
    repeat = a.repeat or (1 if a.quick else 2)
    if n < 1 or latency <= 0 or a.concurrency < 1 or repeat < 1:
        p.error("--n, --latency, --concurrency and --repeat must be positive")
    try:
        scale_ns = (tuple(sorted({int(x) for x in a.scale_ns.split(",") if x.strip()})) if a.scale_ns
                    else (SCALE_NS[:2] if a.quick else SCALE_NS))
    except ValueError:
        p.error(f"--scale-ns takes a comma list of integers; got {a.scale_ns!r}")
    tail = {"tail_latency": a.tail_latency if a.tail_latency is not None else 0.4,
            "slow_rate": a.slow_rate if a.slow_rate is not None else 0.05,
            "slow_factor": a.slow_factor if a.slow_factor is not None else 10.0}
    if (not scale_ns or min(scale_ns) < 1 or tail["tail_latency"] <= 0 or not 0 <= tail["slow_rate"] <= 1
            or tail["slow_factor"] < 1 or a.scale_timeout <= 0):
        p.error("--scale-ns, --tail-latency and --scale-timeout must be positive, --slow-rate in "
                "[0, 1], --slow-factor >= 1")
    defaults = all(v is None for v in (a.n, a.latency, a.tail_latency, a.slow_rate, a.slow_factor,
                                       a.scale_ns))
    mode = "quick" if a.quick else ("full" if defaults else "custom")
    return Config(mode=mode, n=n, latency=latency, concurrency=a.concurrency,
                  timeout=a.timeout or round(5 * latency, 3), seed=a.seed, scenarios=scenarios,
                  out=a.out, keep=a.keep, strict=a.strict, repeat=repeat, scale_ns=scale_ns,
                  scale_timeout=a.scale_timeout, **tail)


# -- inputs ----------------------------------------------------------------------------------

INDUSTRIES = ("SaaS", "Logistics", "Fintech", "Retail", "Energy", "Healthcare")
COUNTRIES = ("United States", "Germany", "Mexico", "Norway", "Japan", "Brazil")
WORDS = ("pipeline", "analytics", "warehouse", "freight", "billing", "forecasting", "compliance",
         "routing", "inventory", "payments", "telemetry", "onboarding")


def write_accounts(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "domain", "industry", "employees", "country", "description"])
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(12))
            w.writerow([f"acct-{i:05d}", f"Company {i}", f"company{i}.example.com",
                        rng.choice(INDUSTRIES), rng.randint(5, 5000), rng.choice(COUNTRIES),
                        f"Builds {words} software for mid-market customers."])


def write_spec(path: Path, api_base: str, timeout: float, hedge_p: float | None = None) -> int:
    """bench/pipeline.yaml pointed at this server; returns its number of agent stages.
    `hedge_p` turns on hedged requests (`defaults.hedge_after_p`)."""
    doc = yaml.safe_load((BENCH / "pipeline.yaml").read_text())
    doc["models"]["fast"].update(api_base=api_base, timeout=timeout)
    if hedge_p:
        doc.setdefault("defaults", {})["hedge_after_p"] = hedge_p
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return sum(1 for s in doc["stages"] if s.get("type", "agent") == "agent")


def agentctl_cmd() -> list[str]:
    script = Path(PY).with_name("agentctl")
    return [str(script)] if script.exists() else [PY, "-m", "agentctl.cli"]


# -- the run log (read-only, after the run) --------------------------------------------------

def read_log(db: Path, run_id: str, agent_stages: int) -> dict[str, Any]:
    with read_only(db) as con:
        def one(sql: str, *params: Any) -> Any:
            return con.execute(sql, [run_id, *params]).fetchone()

        def pairs(sql: str) -> dict[str, int]:
            return {str(k): v for k, v in con.execute(sql, [run_id]).fetchall()}

        run = one("SELECT status FROM runs WHERE run_id = ?")
        first, last = one("SELECT epoch(min(started_at)), "
                          "epoch(max(started_at + to_milliseconds(latency_ms))) FROM llm_calls WHERE run_id = ?")
        p50, p99 = one("SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) "
                       "FROM llm_calls WHERE run_id = ? AND status = 'ok'")
        return {
            "run_status": run[0] if run else None,
            "first_call_epoch": first, "last_call_done_epoch": last,
            "llm_calls_rows": one("SELECT count(*) FROM llm_calls WHERE run_id = ?")[0],
            "llm_calls_by_status": pairs("SELECT status, count(*) FROM llm_calls WHERE run_id = ? GROUP BY 1"),
            "llm_errors_by_type": pairs("SELECT error_type, count(*) FROM llm_calls "
                                        "WHERE run_id = ? AND status <> 'ok' GROUP BY 1 ORDER BY 2 DESC"),
            "cell_attempts": int(one("SELECT coalesce(sum(attempts), 0) FROM cells WHERE run_id = ?")[0]),
            "cells_by_status": pairs("SELECT status, count(*) FROM cells WHERE run_id = ? GROUP BY 1"),
            "accounts_ok": one("SELECT count(*) FROM (SELECT item_key FROM cells WHERE run_id = ? "
                               "GROUP BY item_key HAVING count(*) FILTER (WHERE status = 'ok') = ?)",
                               agent_stages)[0],
            "ok_latency_ms_p50": round(p50, 1) if p50 is not None else None,
            "ok_latency_ms_p99": round(p99, 1) if p99 is not None else None,
            "failed_cells_sample": [dict(zip(("item", "stage", "error_type", "error"), r)) for r in
                                    con.execute("SELECT item_key, stage_id, error_type, error FROM cells "
                                                "WHERE run_id = ? AND status <> 'ok' ORDER BY item_key "
                                                "LIMIT 5", [run_id]).fetchall()],
        }


def _replayable(raw: str) -> dict[str, Any]:
    """A logged request as the baseline scripts send it again."""
    req = json.loads(raw)
    return {"model": MODEL, "messages": req["messages"], "params": req.get("params", {}),
            "response_format": req.get("response_format")}


def export_requests(db: Path, run_id: str, path: Path) -> int:
    """Scenario A's requests, exactly as agentctl sent them, for the baseline to replay."""
    with read_only(db) as con:
        rows = con.execute("SELECT request FROM llm_calls WHERE run_id = ? AND status = 'ok' "
                           "AND purpose <> 'hedge' ORDER BY started_at", [run_id]).fetchall()
    with open(path, "w", encoding="utf-8") as fh:
        for (raw,) in rows:
            fh.write(json.dumps(_replayable(raw)) + "\n")
    return len(rows)


def call_spans(db: Path, run_id: str) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every call agentctl logged: from the moment its slot was
    granted (`started_at`) for as long as litellm took (`latency_ms`)."""
    with read_only(db) as con:
        rows = con.execute("SELECT epoch(started_at), latency_ms FROM llm_calls WHERE run_id = ? "
                           "AND latency_ms IS NOT NULL", [run_id]).fetchall()
    return [(float(start), float(start) + ms / 1000) for start, ms in rows]


def export_chains(db: Path, run_id: str, path: Path) -> tuple[int, int]:
    """The tail run's requests grouped per account, in the order agentctl sent them (research,
    score, write: each needs the previous one's answer), for the naive chain to replay."""
    with read_only(db) as con:
        rows = con.execute("SELECT item_key, request FROM llm_calls WHERE run_id = ? AND status = 'ok' "
                           "AND purpose <> 'hedge' ORDER BY item_key, started_at", [run_id]).fetchall()
    chains: dict[str, list[dict[str, Any]]] = {}
    for key, raw in rows:
        chains.setdefault(key, []).append(_replayable(raw))
    with open(path, "w", encoding="utf-8") as fh:
        for key, requests in chains.items():
            fh.write(json.dumps({"item": key, "requests": requests}) + "\n")
    return len(chains), len(rows)


# -- scenarios -------------------------------------------------------------------------------

def child_timeout(cfg: Config, calls: int, latency: float | None = None) -> float:
    return 120 + 10 * calls * (latency or cfg.latency) / cfg.concurrency


def ideal_time(stats: dict[str, Any], mean_latency: float, concurrency: int,
               served: bool, calls: int | None = None) -> tuple[float, float, str]:
    """(ideal seconds, mean latency used, basis): calls x mean latency / C.

    `calls` are the logical calls (accounts x stages; default: the requests the server saw).
    A hedged run sends more requests than it makes calls, and its cancelled duplicates are
    never answered, so the heavy-tail scenario grades every contender on the same figure:
    the configured (expected) mean, 0.4 x (0.95 + 0.05 x 10) = 0.58 s, for the same 3,000
    calls. `served` instead uses what the server slept per answered request."""
    calls = calls if calls is not None else stats["requests"]
    if served and stats.get("answered") and stats.get("delay_s_total") is not None:
        mean = stats["delay_s_total"] / stats["answered"]
        return calls * mean / concurrency, mean, "served"
    return calls * mean_latency / concurrency, mean_latency, "expected"


def process_summary(m: Measured, calls: int) -> dict[str, Any]:
    return {"returncode": m.returncode, "timed_out": m.timed_out, "wall_s": round(m.wall_s, 3),
            "cpu_user_s": round(m.user_s, 3), "cpu_sys_s": round(m.sys_s, 3),
            "cpu_ms_per_call": round(1000 * m.cpu_s / calls, 3) if calls else None,
            "peak_rss_mb": round(m.maxrss_mb, 1)}


def other_load(busy: tuple[float | None, float | None], srv: tuple[float | None, float | None],
               m: Measured) -> float | None:
    """Average cores used by processes other than the measured child and the fake server."""
    if None in busy or None in srv or not m.wall_s:
        return None
    return round(max(0.0, (busy[1] - busy[0]) - m.cpu_s - (srv[1] - srv[0])) / m.wall_s, 2)


def server_summary(stats: dict[str, Any], srv_cpu: tuple[float | None, float | None]) -> dict[str, Any]:
    out = {k: stats.get(k) for k in ("requests", "peak_in_flight", "status_counts", "fault_counts",
                                     "slow_replies", "delay_s_total", "slept_s_total")}
    out["cpu_s"] = round(srv_cpu[1] - srv_cpu[0], 3) if None not in srv_cpu else None
    return out


def run_pipeline(name: str, cfg: Config, server: FakeServer, spec: Path, accounts: Path,
                 agent_stages: int, work: Path, *, timeout: float, mean_latency: float | None = None,
                 served_ideal: bool = False, logical_calls: int | None = None) -> tuple[dict[str, Any], Path]:
    """One `agentctl run` against `server`: what the process, the server and the log say."""
    db = work / f"{name}.duckdb"
    server.reset()
    srv0, busy0 = server.cpu_s(), machine_busy_s()
    m = run_measured(agentctl_cmd() + ["run", str(spec), str(accounts), "--json", "--db", str(db),
                                       "--concurrency", str(cfg.concurrency)],
                     cwd=work, timeout=timeout, out_dir=work, name=name)
    stats = server.stats()
    srv1, busy1 = server.cpu_s(), machine_busy_s()
    try:
        summary = json.loads(m.stdout)
    except ValueError:
        summary = {}
    calls = stats["requests"]
    ideal, mean, basis = ideal_time(stats, mean_latency or cfg.latency, cfg.concurrency,
                                    served_ideal, logical_calls)
    elapsed = summary.get("elapsed_s")
    out: dict[str, Any] = {
        "run_id": summary.get("run_id"), "status": summary.get("status"),
        "timeout_s": round(timeout, 1),
        "process": process_summary(m, calls),
        "server": server_summary(stats, (srv0, srv1)),
        "ideal_s": round(ideal, 3), "ideal_mean_latency_s": round(mean, 4), "ideal_basis": basis,
        "ideal_calls": logical_calls if logical_calls is not None else calls,
        "run_elapsed_s": elapsed,
        "efficiency_cli_wall": round(ideal / m.wall_s, 4) if m.wall_s else None,
        "efficiency_run": round(ideal / elapsed, 4) if elapsed else None,
        "log": read_log(db, summary["run_id"], agent_stages) if summary.get("run_id") else None,
        "stderr_tail": m.stderr.strip().splitlines()[-5:] if m.returncode not in (0, 1) else [],
        "other_load_cores": other_load((busy0, busy1), (srv0, srv1), m),
    }
    if out["log"]:
        out["accounts_ok_pct"] = round(100 * out["log"]["accounts_ok"] / cfg.n, 2)
        first, last = out["log"].pop("first_call_epoch"), out["log"].pop("last_call_done_epoch")
        if first is not None and last is not None:  # where the CLI's wall clock went
            out["phases_s"] = {"startup": round(first - m.started_epoch, 2),
                               "calls": round(last - first, 2),
                               "shutdown": round(m.started_epoch + m.wall_s - last, 2)}
            if elapsed:  # the part of the run's own elapsed time that is not the calls phase
                out["phases_s"]["run_outside_calls"] = round(elapsed - (last - first), 2)
        out["occupancy"] = occupancy(call_spans(db, summary["run_id"]), cfg.concurrency)
        if not server.faults:  # with faults, failed calls hold slots the ideal does not count
            out["time_budget_s"] = time_budget(out["occupancy"], stats.get("delay_s_total"),
                                               cfg.concurrency, elapsed)
    return out, db


def run_baseline(cfg: Config, server: FakeServer, a_db: Path, a_run_id: str, work: Path,
                 name: str) -> dict[str, Any]:
    requests = work / f"{name}-requests.jsonl"
    calls = export_requests(a_db, a_run_id, requests)
    server.reset()
    srv0, busy0 = server.cpu_s(), machine_busy_s()
    m = run_measured([PY, str(BENCH / "bare_litellm.py"), str(requests),
                      "--concurrency", str(cfg.concurrency)],
                     cwd=work, timeout=child_timeout(cfg, calls), out_dir=work, name=name)
    stats = server.stats()
    srv1, busy1 = server.cpu_s(), machine_busy_s()
    try:
        own = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        own = {"error": m.stderr.strip().splitlines()[-3:]}
    ideal = calls * cfg.latency / cfg.concurrency
    return {"replayed_calls": calls, "process": process_summary(m, stats["requests"]),
            "server": {"requests": stats["requests"], "peak_in_flight": stats["peak_in_flight"],
                       "status_counts": stats["status_counts"]},
            "script": own, "ideal_s": round(ideal, 3),
            "efficiency_loop": round(ideal / own["wall_s"], 4) if own.get("wall_s") else None,
            "efficiency_process_wall": round(ideal / m.wall_s, 4) if m.wall_s else None,
            "other_load_cores": other_load((busy0, busy1), (srv0, srv1), m)}


def run_naive(cfg: Config, server: FakeServer, chains: Path, calls: int, work: Path, name: str,
              *, barrier: bool = False, agentctl_transport: bool = False) -> dict[str, Any]:
    """bench/naive_chain.py replaying the tail run's chains; its ideal is what the server
    served it, computed exactly as for agentctl's tail run."""
    server.reset()
    srv0, busy0 = server.cpu_s(), machine_busy_s()
    m = run_measured([PY, str(BENCH / "naive_chain.py"), str(chains), "--concurrency", str(cfg.concurrency)]
                     + (["--barrier"] if barrier else [])
                     + (["--agentctl-transport"] if agentctl_transport else []),
                     cwd=work, timeout=child_timeout(cfg, calls, cfg.tail_mean_latency), out_dir=work, name=name)
    stats = server.stats()
    srv1, busy1 = server.cpu_s(), machine_busy_s()
    try:
        own = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        own = {"error": m.stderr.strip().splitlines()[-3:]}
    ideal, mean, basis = ideal_time(stats, cfg.tail_mean_latency, cfg.concurrency, served=False,
                                    calls=calls)
    return {"process": process_summary(m, stats["requests"]), "server": server_summary(stats, (srv0, srv1)),
            "script": own, "ideal_s": round(ideal, 3), "ideal_mean_latency_s": round(mean, 4),
            "ideal_basis": basis,
            "efficiency_loop": round(ideal / own["wall_s"], 4) if own.get("wall_s") else None,
            "efficiency_process_wall": round(ideal / m.wall_s, 4) if m.wall_s else None,
            "time_budget_s": time_budget(own.get("occupancy"), stats.get("delay_s_total"),
                                         cfg.concurrency, own.get("wall_s")),
            "other_load_cores": other_load((busy0, busy1), (srv0, srv1), m)}


def run_tail(cfg: Config, accounts: Path, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Tail, then naive, `repeat` times alternating, against one heavy-tailed server; barrier
    once at the end. The details kept are those of the median runs."""
    out: dict[str, Any] = {}
    with FakeServer(latency=cfg.tail_latency, seed=cfg.seed, slow_rate=cfg.slow_rate,
                    slow_factor=cfg.slow_factor, log_path=work / "server-tail.log") as srv:
        spec = work / "pipeline-tail.yaml"
        stages = write_spec(spec, srv.api_base, cfg.tail_timeout)
        hedged_spec = work / "pipeline-tail-hedged.yaml"
        write_spec(hedged_spec, srv.api_base, cfg.tail_timeout, hedge_p=cfg.hedge_p)
        chains, calls, pairs = work / "tail-chains.jsonl", 0, []
        for i in range(1, cfg.repeat + 1):
            of = f" ({i}/{cfg.repeat})" if cfg.repeat > 1 else ""
            say(f"scenario tail{of}: {cfg.n} accounts x {stages} stages, latency {cfg.tail_latency:g} s, "
                f"{cfg.slow_rate:.0%} x{cfg.slow_factor:g}, concurrency {cfg.concurrency} ...")
            tail, db = run_pipeline(f"tail{i}", cfg, srv, spec, accounts, stages, work,
                                    timeout=child_timeout(cfg, cfg.n * stages, cfg.tail_mean_latency),
                                    mean_latency=cfg.tail_mean_latency, logical_calls=cfg.n * stages)
            if not calls and tail["run_id"]:
                _, calls = export_chains(db, tail["run_id"], chains)
            hedged = None
            if cfg.hedge_p:
                say(f"scenario tail, hedged{of}: the same with hedge_after_p: {cfg.hedge_p:g} ...")
                hedged, _ = run_pipeline(f"hedged{i}", cfg, srv, hedged_spec, accounts, stages, work,
                                         timeout=child_timeout(cfg, cfg.n * stages, cfg.tail_mean_latency),
                                         mean_latency=cfg.tail_mean_latency,
                                         logical_calls=cfg.n * stages)
            naive = None
            if "naive" in cfg.scenarios and calls:
                say(f"naive chain{of}: per-account asyncio chains, one Semaphore({cfg.concurrency}) ...")
                naive = run_naive(cfg, srv, chains, calls, work, name=f"naive{i}")
            pairs.append({"tail": tail, "hedged": hedged, "naive": naive})
        out["tail"] = _median(pairs, "tail", "efficiency_run")
        if cfg.hedge_p:
            out["tail_hedged"] = _median(pairs, "hedged", "efficiency_run")
        naives = [p for p in pairs if p["naive"]]
        if naives:
            out["naive"] = _median(naives, "naive", "efficiency_loop")
        if len(pairs) > 1:
            out["tail_repeats"] = pairs
        if "barrier" in cfg.scenarios and calls:
            say("barrier baseline: stage by stage, one Semaphore ...")
            out["barrier"] = run_naive(cfg, srv, chains, calls, work, name="barrier", barrier=True)
        if "naive" in cfg.scenarios and calls:
            say("naive chain on agentctl's litellm transport (informational) ...")
            out["naive_transport"] = run_naive(cfg, srv, chains, calls, work, name="naive-transport",
                                               agentctl_transport=True)
    return out


def _median(pairs: list[dict[str, Any]], key: str, by: str) -> dict[str, Any]:
    """The median run of `key` by `by` (the lower one of an even count, as for A)."""
    return sorted((p[key] for p in pairs), key=lambda x: x[by] or 0)[(len(pairs) - 1) // 2]


def run_scale(cfg: Config, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """`agentctl run --mock` at each N: no server, no latency, so what remains is agentctl's
    own CPU and memory per account. After a timeout the larger Ns are not tried."""
    spec = work / "pipeline-scale.yaml"
    stages = write_spec(spec, "http://127.0.0.1:9/v1", cfg.timeout)  # --mock never calls it
    points: list[dict[str, Any]] = []
    for n in cfg.scale_ns:
        if points and points[-1]["timed_out"]:
            points.append({"n": n, "skipped": f"N={points[-1]['n']} timed out"})
            continue
        say(f"scale: agentctl run --mock, {n} accounts x {stages} stages ...")
        accounts, db = work / f"scale-{n}.csv", work / f"scale-{n}.duckdb"
        write_accounts(accounts, n, cfg.seed)
        busy0 = machine_busy_s()
        m = run_measured(agentctl_cmd() + ["run", str(spec), str(accounts), "--mock", "--json",
                                           "--db", str(db), "--concurrency", str(cfg.concurrency)],
                         cwd=work, timeout=cfg.scale_timeout, out_dir=work, name=f"scale-{n}")
        points.append(scale_point(n, stages, m, db, busy0))
        if not cfg.keep:
            for path in (accounts, db, db.with_name(db.name + ".wal")):
                path.unlink(missing_ok=True)
    return {"stages": stages, "timeout_s": cfg.scale_timeout, "points": points}


def status_of(summary: dict[str, Any], m: Measured) -> str:
    """The run's own status, marked when the bench had to stop it."""
    own = summary.get("status")
    if m.timed_out:
        return f"timed out ({own})" if own else "timed out"
    return own or f"exit {m.returncode}"


def scale_point(n: int, stages: int, m: Measured, db: Path, busy0: float | None) -> dict[str, Any]:
    try:
        summary = json.loads(m.stdout)
    except ValueError:
        summary = {}
    totals = summary.get("totals") or {}
    cells = totals.get("cells") or n * stages
    busy1 = machine_busy_s()
    other = (round(max(0.0, busy1 - busy0 - m.cpu_s) / m.wall_s, 2)
             if None not in (busy0, busy1) and m.wall_s else None)
    return {"n": n, "cells": cells, "cells_ok": totals.get("ok"),
            "status": status_of(summary, m),
            "returncode": m.returncode, "timed_out": m.timed_out, "wall_s": round(m.wall_s, 2),
            "run_elapsed_s": summary.get("elapsed_s"), "cpu_s": round(m.cpu_s, 2),
            "cpu_ms_per_cell": round(1000 * m.cpu_s / cells, 3), "peak_rss_mb": round(m.maxrss_mb, 1),
            "db_mb": round(db.stat().st_size / 2**20, 1) if db.exists() else None,
            "other_load_cores": other,
            "stderr_tail": m.stderr.strip().splitlines()[-5:] if m.returncode not in (0, 1) else []}


def run_all(cfg: Config, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    accounts = work / "accounts.csv"
    write_accounts(accounts, cfg.n, cfg.seed)

    def say(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    if "a" in cfg.scenarios:
        with FakeServer(latency=cfg.latency, seed=cfg.seed, log_path=work / "server-a.log") as srv:
            spec = work / "pipeline-a.yaml"
            stages = write_spec(spec, srv.api_base, cfg.timeout)
            pairs = []
            for i in range(1, cfg.repeat + 1):
                of = f" ({i}/{cfg.repeat})" if cfg.repeat > 1 else ""
                say(f"scenario A{of}: {cfg.n} accounts x {stages} stages, concurrency {cfg.concurrency} ...")
                a, a_db = run_pipeline(f"a{i}", cfg, srv, spec, accounts, stages, work,
                                       timeout=child_timeout(cfg, cfg.n * stages))
                base = None
                if "baseline" in cfg.scenarios and a["run_id"]:
                    say(f"baseline{of}: bare litellm loop replaying A's requests ...")
                    base = run_baseline(cfg, srv, a_db, a["run_id"], work, name=f"baseline{i}")
                pairs.append({"a": a, "baseline": base})
            # the details shown are those of the median A run (the lower one of an even count)
            shown = sorted(pairs, key=lambda p: p["a"]["efficiency_run"] or 0)[(len(pairs) - 1) // 2]
            results["a"] = shown["a"]
            if shown["baseline"]:
                results["baseline"] = shown["baseline"]
            if len(pairs) > 1:
                results["repeats"] = pairs
    if "b" in cfg.scenarios:
        with FakeServer(latency=cfg.latency, seed=cfg.seed, faults=FAULTS_B,
                        log_path=work / "server-b.log") as srv:
            spec = work / "pipeline-b.yaml"
            stages = write_spec(spec, srv.api_base, cfg.timeout)
            a_wall = results.get("a", {}).get("process", {}).get("wall_s")  # the median A run
            limit = max(60.0, B_CUTOFF * a_wall) if a_wall else child_timeout(cfg, 2 * cfg.n * stages)
            say(f"scenario B: fault mix {FAULTS_B} (stopped after {limit:.0f} s) ...")
            results["b"], _ = run_pipeline("b", cfg, srv, spec, accounts, stages, work, timeout=limit)
    if "tail" in cfg.scenarios:
        results.update(run_tail(cfg, accounts, work, say))
    if "scale" in cfg.scenarios:
        results["scale"] = run_scale(cfg, work, say)
    if "orch" in cfg.scenarios:
        from orchestrate import run_orchestrate

        results["orch"] = run_orchestrate(agentctl_cmd(), work, accounts=100, concurrency=1000,
                                          latency=cfg.orch_latency, say=say)
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="agentctl-bench-"))
    try:
        results = {"config": {**asdict(cfg), "tail_mean_latency": round(cfg.tail_mean_latency, 4),
                              "tail_timeout": cfg.tail_timeout},
                   "env": environment(), "faults_b": FAULTS_B, **run_all(cfg, work)}
    finally:
        if cfg.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["derived"] = derive(results)
    results["targets"] = targets(cfg.concurrency, results)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    Path(cfg.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render(results, out=cfg.out))
    failed = any(t["result"] == "FAIL" for t in results["targets"])
    return 1 if cfg.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
