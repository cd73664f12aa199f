"""`make bench`: agentctl's throughput, CPU and memory against a fake model with fixed latency.

Scenario A   N accounts x 3 agent stages through the real CLI (`agentctl run --json`) at
             concurrency C; the fake OpenAI-compatible server runs in its own process.
Baseline     the same requests (read back from A's run log) sent by a bare
             `litellm.acompletion` loop with one asyncio.Semaphore(C): litellm's own cost.
Scenario B   A again against a server that injects 10% 429, 5% 500, 2% hangs, 2% malformed.

    python bench/run.py                 # full: N=1000, latency 1.0 s, concurrency 64, A+baseline x2
    python bench/run.py --quick         # N=200, latency 0.2 s: a sanity check
    python bench/run.py --n 500 --latency 0.5 --concurrency 32 --scenarios a,baseline

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
from typing import Any

import duckdb
import yaml

from harness import PY, FakeServer, Measured, machine_busy_s, run_measured
from report import derive, environment, render, targets

BENCH = Path(__file__).resolve().parent
MODEL = "openai/gpt-4o-mini"
FAULTS_B = {"429": 0.10, "500": 0.05, "hang": 0.02, "malformed": 0.02}  # 429s carry Retry-After: 1
SCENARIOS = ("a", "baseline", "b")
B_CUTOFF = 3.0  # B is interrupted (Ctrl-C) once it has run this many times A's wall clock


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


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="agentctl benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="N=200, latency 0.2 s: a fast sanity check")
    p.add_argument("--n", type=int, help="accounts (default 1000; 200 with --quick)")
    p.add_argument("--latency", type=float, help="fake model latency, seconds (default 1.0; 0.2 with --quick)")
    p.add_argument("--concurrency", type=int, default=64, help="agentctl --concurrency and the baseline's semaphore")
    p.add_argument("--timeout", type=float, help="model alias timeout, seconds (default 5 x latency): what a hang costs in B")
    p.add_argument("--seed", type=int, default=1, help="seed of the accounts and of B's fault draws")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of a, baseline, b (baseline needs a)")
    p.add_argument("--out", default=str(BENCH / "results.json"), help="where to write the results JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (run logs, specs, stdout/stderr)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--repeat", type=int,
                   help="run A and the baseline this many times, alternating; verdicts use medians "
                        "(default 2; 1 with --quick)")
    a = p.parse_args(argv)
    n = a.n or (200 if a.quick else 1000)
    latency = a.latency if a.latency is not None else (0.2 if a.quick else 1.0)
    scenarios = tuple(s.strip().lower() for s in a.scenarios.split(",") if s.strip())
    if any(s not in SCENARIOS for s in scenarios) or ("baseline" in scenarios and "a" not in scenarios):
        p.error(f"--scenarios takes a, baseline, b (baseline needs a); got {a.scenarios!r}")
    repeat = a.repeat or (1 if a.quick else 2)
    if n < 1 or latency <= 0 or a.concurrency < 1 or repeat < 1:
        p.error("--n, --latency, --concurrency and --repeat must be positive")
    mode = "quick" if a.quick else ("full" if a.n is None and a.latency is None else "custom")
    return Config(mode=mode, n=n, latency=latency, concurrency=a.concurrency,
                  timeout=a.timeout or round(5 * latency, 3), seed=a.seed, scenarios=scenarios,
                  out=a.out, keep=a.keep, strict=a.strict, repeat=repeat)


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


def write_spec(path: Path, api_base: str, timeout: float) -> int:
    """bench/pipeline.yaml pointed at this server; returns its number of agent stages."""
    doc = yaml.safe_load((BENCH / "pipeline.yaml").read_text())
    doc["models"]["fast"].update(api_base=api_base, timeout=timeout)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return sum(1 for s in doc["stages"] if s.get("type", "agent") == "agent")


def agentctl_cmd() -> list[str]:
    script = Path(PY).with_name("agentctl")
    return [str(script)] if script.exists() else [PY, "-m", "agentctl.cli"]


# -- the run log (read-only, after the run) --------------------------------------------------

def read_log(db: Path, run_id: str, agent_stages: int) -> dict[str, Any]:
    con = duckdb.connect(str(db), read_only=True)
    try:
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
    finally:
        con.close()


def export_requests(db: Path, run_id: str, path: Path) -> int:
    """Scenario A's requests, exactly as agentctl sent them, for the baseline to replay."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT request FROM llm_calls WHERE run_id = ? AND status = 'ok' "
                           "ORDER BY started_at", [run_id]).fetchall()
    finally:
        con.close()
    with open(path, "w", encoding="utf-8") as fh:
        for (raw,) in rows:
            req = json.loads(raw)
            fh.write(json.dumps({"model": MODEL, "messages": req["messages"],
                                 "params": req.get("params", {}),
                                 "response_format": req.get("response_format")}) + "\n")
    return len(rows)


# -- scenarios -------------------------------------------------------------------------------

def child_timeout(cfg: Config, calls: int) -> float:
    return 120 + 10 * calls * cfg.latency / cfg.concurrency


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


def run_pipeline(name: str, cfg: Config, server: FakeServer, spec: Path, accounts: Path,
                 agent_stages: int, work: Path, *, timeout: float) -> tuple[dict[str, Any], Path]:
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
    ideal = calls * cfg.latency / cfg.concurrency
    elapsed = summary.get("elapsed_s")
    out: dict[str, Any] = {
        "run_id": summary.get("run_id"), "status": summary.get("status"),
        "timeout_s": round(timeout, 1),
        "process": process_summary(m, calls),
        "server": {"requests": calls, "peak_in_flight": stats["peak_in_flight"],
                   "status_counts": stats["status_counts"], "fault_counts": stats["fault_counts"],
                   "cpu_s": round(srv1 - srv0, 3) if None not in (srv0, srv1) else None},
        "ideal_s": round(ideal, 3),
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
    return results


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="agentctl-bench-"))
    try:
        results = {"config": asdict(cfg), "env": environment(), "faults_b": FAULTS_B,
                   **run_all(cfg, work)}
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
