"""`make bench`: agentctl's throughput, CPU and memory against a fake model with fixed latency.

Scenario A   N accounts x 3 agent stages through the real CLI (`agentctl run --json`) at
             concurrency C, fake OpenAI-compatible server in its own process, fixed latency.
Baseline     the same requests (read back from A's run log) sent by a bare
             `litellm.acompletion` loop with one asyncio.Semaphore(C): litellm's own CPU cost.
Scenario B   A again against a server that injects 10% 429, 5% 500, 2% hangs, 2% malformed.

    python bench/run.py                 # full: N=1000, latency 1.0 s, concurrency 64
    python bench/run.py --quick         # N=200, latency 0.2 s: a sanity check
    python bench/run.py --n 500 --latency 0.5 --concurrency 32 --scenarios a,baseline

Prints a report and a PASS/FAIL table, writes bench/results.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import yaml

from harness import PY, REPO, FakeServer, Measured, machine_busy_s, run_measured

BENCH = Path(__file__).resolve().parent
MODEL = "openai/gpt-4o-mini"
FAULTS_B = {"429": 0.10, "500": 0.05, "hang": 0.02, "malformed": 0.02}  # Retry-After: 1 on 429s
SCENARIOS = ("a", "baseline", "b")
B_CUTOFF = 4.0  # B is interrupted once it has taken this many times A's wall clock


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


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="agentctl benchmark (see bench/README.md)")
    p.add_argument("--quick", action="store_true", help="N=200, latency 0.2 s: a fast sanity check")
    p.add_argument("--n", type=int, help="accounts (default 1000; 200 with --quick)")
    p.add_argument("--latency", type=float, help="fake model latency in seconds (default 1.0; 0.2 with --quick)")
    p.add_argument("--concurrency", type=int, default=64, help="agentctl --concurrency and the baseline's semaphore")
    p.add_argument("--timeout", type=float, help="model alias timeout in seconds (default 5 x latency): what a hang costs in B")
    p.add_argument("--seed", type=int, default=1, help="seed of the accounts and of B's fault draws")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of a, baseline, b (baseline needs a)")
    p.add_argument("--out", default=str(BENCH / "results.json"), help="where to write the results")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (run logs, stdout/stderr)")
    a = p.parse_args(argv)
    n = a.n or (200 if a.quick else 1000)
    latency = a.latency if a.latency is not None else (0.2 if a.quick else 1.0)
    scenarios = tuple(s.strip().lower() for s in a.scenarios.split(",") if s.strip())
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad or ("baseline" in scenarios and "a" not in scenarios):
        p.error(f"--scenarios takes a, baseline, b (baseline needs a); got {a.scenarios!r}")
    if n < 1 or latency <= 0 or a.concurrency < 1:
        p.error("--n, --latency and --concurrency must be positive")
    return Config(mode="quick" if a.quick else ("full" if a.n is None and a.latency is None else "custom"),
                  n=n, latency=latency, concurrency=a.concurrency,
                  timeout=a.timeout or round(5 * latency, 3), seed=a.seed, scenarios=scenarios,
                  out=a.out, keep=a.keep)


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
    """The bench pipeline with this server and timeout; returns its number of agent stages."""
    doc = yaml.safe_load((BENCH / "pipeline.yaml").read_text())
    doc["models"]["fast"].update(api_base=api_base, timeout=timeout)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return sum(1 for s in doc["stages"] if s.get("type", "agent") == "agent")


def agentctl_cmd() -> list[str]:
    script = Path(PY).with_name("agentctl")
    return [str(script)] if script.exists() else [PY, "-m", "agentctl.cli"]


# -- the run log -----------------------------------------------------------------------------

def read_log(db: Path, run_id: str, agent_stages: int) -> dict[str, Any]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        def one(sql: str, *params: Any) -> Any:
            return con.execute(sql, [run_id, *params]).fetchone()

        def pairs(sql: str) -> dict[str, int]:
            return {str(k): v for k, v in con.execute(sql, [run_id]).fetchall()}

        run = one("SELECT status, epoch(ended_at) - epoch(started_at) FROM runs WHERE run_id = ?")
        first, last = one("SELECT epoch(min(started_at)), epoch(max(started_at + to_milliseconds(latency_ms))) "
                          "FROM llm_calls WHERE run_id = ?")
        p50, p99 = one("SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99) "
                       "FROM llm_calls WHERE run_id = ? AND status = 'ok'")
        return {
            "run_status": run[0] if run else None,
            "first_call_epoch": first, "last_call_done_epoch": last,
            "run_seconds": round(run[1], 3) if run and run[1] is not None else None,
            "llm_calls_rows": one("SELECT count(*) FROM llm_calls WHERE run_id = ?")[0],
            "llm_calls_by_status": pairs("SELECT status, count(*) FROM llm_calls WHERE run_id = ? GROUP BY 1"),
            "llm_errors_by_type": pairs("SELECT error_type, count(*) FROM llm_calls "
                                        "WHERE run_id = ? AND status <> 'ok' GROUP BY 1 ORDER BY 2 DESC"),
            "cell_attempts": int(one("SELECT coalesce(sum(attempts), 0) FROM cells WHERE run_id = ?")[0]),
            "cells_by_status": pairs("SELECT status, count(*) FROM cells WHERE run_id = ? GROUP BY 1"),
            "items": one("SELECT count(*) FROM items WHERE run_id = ?")[0],
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


def measured_summary(m: Measured, calls: int) -> dict[str, Any]:
    return {"returncode": m.returncode, "timed_out": m.timed_out, "wall_s": round(m.wall_s, 3),
            "cpu_user_s": round(m.user_s, 3), "cpu_sys_s": round(m.sys_s, 3),
            "cpu_ms_per_call": round(1000 * m.cpu_s / calls, 3) if calls else None,
            "peak_rss_mb": round(m.maxrss_mb, 1)}


def other_load(busy0: float | None, busy1: float | None, m: Measured, srv0: float | None,
               srv1: float | None) -> float | None:
    """Average cores used by processes other than the measured child and the fake server."""
    if None in (busy0, busy1, srv0, srv1) or not m.wall_s:
        return None
    return round(max(0.0, (busy1 - busy0) - m.cpu_s - (srv1 - srv0)) / m.wall_s, 2)


def run_pipeline(name: str, cfg: Config, server: FakeServer, spec: Path, accounts: Path,
                 agent_stages: int, work: Path, *, timeout: float) -> dict[str, Any]:
    """One `agentctl run` against `server`; what the process, the server and the log say."""
    db = work / f"{name}.duckdb"
    server.reset()
    srv_cpu0, busy0 = server.cpu_s(), machine_busy_s()
    m = run_measured(agentctl_cmd() + ["run", str(spec), str(accounts), "--json", "--db", str(db),
                                       "--concurrency", str(cfg.concurrency)],
                     cwd=work, timeout=timeout, out_dir=work, name=name)
    stats = server.stats()
    srv_cpu1, busy1 = server.cpu_s(), machine_busy_s()
    try:
        summary = json.loads(m.stdout)
    except ValueError:
        summary = {}
    calls = stats["requests"]
    ideal = calls * cfg.latency / cfg.concurrency
    out: dict[str, Any] = {
        "timeout_s": round(timeout, 1),
        "process": measured_summary(m, calls),
        "server": {"requests": calls, "peak_in_flight": stats["peak_in_flight"],
                   "status_counts": stats["status_counts"], "fault_counts": stats["fault_counts"],
                   "cpu_s": round(srv_cpu1 - srv_cpu0, 3) if srv_cpu0 is not None and srv_cpu1 is not None else None},
        "run_id": summary.get("run_id"), "status": summary.get("status"),
        "engine_elapsed_s": summary.get("elapsed_s"),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / m.wall_s, 4) if m.wall_s else None,
        "engine_efficiency": round(ideal / summary["elapsed_s"], 4) if summary.get("elapsed_s") else None,
        "log": read_log(db, summary["run_id"], agent_stages) if summary.get("run_id") else None,
        "stderr_tail": m.stderr.strip().splitlines()[-5:] if m.returncode not in (0, 1) else [],
        "other_load_cores": other_load(busy0, busy1, m, srv_cpu0, srv_cpu1),
    }
    if out["log"]:
        out["accounts_ok_pct"] = round(100 * out["log"]["accounts_ok"] / cfg.n, 2)
        first, last = out["log"].pop("first_call_epoch"), out["log"].pop("last_call_done_epoch")
        if first is not None and last is not None:  # where the CLI's wall clock went
            out["phases_s"] = {"startup": round(first - m.started_epoch, 2),
                               "calls": round(last - first, 2),
                               "shutdown": round(m.started_epoch + m.wall_s - last, 2)}
    out["_db"] = str(db)
    return out


def run_baseline(cfg: Config, server: FakeServer, a: dict[str, Any], work: Path) -> dict[str, Any]:
    requests = work / "baseline-requests.jsonl"
    calls = export_requests(Path(a["_db"]), a["run_id"], requests)
    server.reset()
    srv_cpu0, busy0 = server.cpu_s(), machine_busy_s()
    m = run_measured([PY, str(BENCH / "bare_litellm.py"), str(requests),
                      "--concurrency", str(cfg.concurrency)],
                     cwd=work, timeout=child_timeout(cfg, calls), out_dir=work, name="baseline")
    stats = server.stats()
    srv_cpu1, busy1 = server.cpu_s(), machine_busy_s()
    try:
        own = json.loads(m.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        own = {"error": m.stderr.strip().splitlines()[-3:]}
    return {"process": measured_summary(m, stats["requests"]), "replayed_calls": calls,
            "server": {"requests": stats["requests"], "peak_in_flight": stats["peak_in_flight"],
                       "status_counts": stats["status_counts"]},
            "script": own, "other_load_cores": other_load(busy0, busy1, m, srv_cpu0, srv_cpu1),
            "ideal_s": round(calls * cfg.latency / cfg.concurrency, 3),
            "efficiency": round(calls * cfg.latency / cfg.concurrency / own["wall_s"], 4)
            if own.get("wall_s") else None}


# -- targets and the report ------------------------------------------------------------------

def targets(cfg: Config, r: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, target: str, ok: bool | None) -> None:
        rows.append({"target": name, "value": value, "goal": target,
                     "result": "n/a" if ok is None else ("PASS" if ok else "FAIL")})

    a, base, b = r.get("a"), r.get("baseline"), r.get("b")
    if a:
        log = a["log"] or {}
        add("A efficiency (ideal / CLI wall)", a["efficiency"], ">= 0.90",
            a["efficiency"] is not None and a["efficiency"] >= 0.9)
        add("A peak in-flight (server)", a["server"]["peak_in_flight"], f"<= {cfg.concurrency}",
            0 < a["server"]["peak_in_flight"] <= cfg.concurrency)
        add("A server calls == llm_calls rows", f'{a["server"]["requests"]} / {log.get("llm_calls_rows")}',
            "equal", a["server"]["requests"] == log.get("llm_calls_rows"))
        add("A accounts ok", f'{a.get("accounts_ok_pct")}%', "100%", a.get("accounts_ok_pct") == 100)
        add("A peak RSS (MB)", a["process"]["peak_rss_mb"], "< 400", a["process"]["peak_rss_mb"] < 400)
    if a and base and base["process"]["cpu_ms_per_call"]:
        ratio = round(a["process"]["cpu_ms_per_call"] / base["process"]["cpu_ms_per_call"], 3)
        r["cpu_ratio"] = ratio
        add("CPU/call agentctl / bare litellm", ratio, "<= 1.5", ratio <= 1.5)
    if b:
        log = b["log"] or {}
        add("B accounts ok", f'{b.get("accounts_ok_pct")}%', "100%", b.get("accounts_ok_pct") == 100)
        both_ran = a is not None and a.get("run_id") and b.get("run_id")
        ratio = round(b["process"]["wall_s"] / a["process"]["wall_s"], 3) if both_ran else None
        r["b_over_a"] = ratio
        shown = f">= {ratio} (stopped)" if ratio is not None and b["process"]["timed_out"] else ratio
        add("B wall / A wall", shown, "<= 1.5",
            None if ratio is None else ratio <= 1.5 and not b["process"]["timed_out"])
        add("B server requests == llm_calls rows", f'{b["server"]["requests"]} / {log.get("llm_calls_rows")}',
            "equal", b["server"]["requests"] == log.get("llm_calls_rows"))
        add("B peak in-flight (server)", b["server"]["peak_in_flight"], f"<= {cfg.concurrency}",
            0 < b["server"]["peak_in_flight"] <= cfg.concurrency)
    return rows


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        d = (d or {}).get(k)  # type: ignore[assignment]
    return d


def _fmt(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (d or {}).items()) or "-"


def render(cfg: Config, r: dict[str, Any]) -> str:
    lines = [f"agentctl bench ({cfg.mode}): N={cfg.n} accounts, latency {cfg.latency:g} s, "
             f"concurrency {cfg.concurrency}, model timeout {cfg.timeout:g} s",
             f"  {r['env']['python']} on {r['env']['platform']}, {r['env']['cpus']} CPUs, "
             f"litellm {r['env']['litellm']}, agentctl {r['env']['agentctl']} ({r['env']['git']})", ""]
    for key, title in (("a", "Scenario A: fault-free"), ("b", "Scenario B: faults " + _fmt(FAULTS_B))):
        s = r.get(key)
        if not s:
            continue
        p, srv, log = s["process"], s["server"], s["log"] or {}
        stopped = f" -- STOPPED by the bench after {s['timeout_s']} s" if p["timed_out"] else ""
        lines += [
            title,
            f"  CLI wall {p['wall_s']:.2f} s (run itself {s['engine_elapsed_s']} s); ideal "
            f"{s['ideal_s']:.2f} s = {srv['requests']} calls x {cfg.latency:g} s / {cfg.concurrency}",
            f"  wall = startup {_get(s, 'phases_s', 'startup')} s (spawn -> first request) + calls "
            f"{_get(s, 'phases_s', 'calls')} s + shutdown {_get(s, 'phases_s', 'shutdown')} s (last reply -> exit)",
            f"  efficiency {s['efficiency']} (CLI wall), {s['engine_efficiency']} (run elapsed); "
            f"status {s['status'] or _get(s, 'log', 'run_status')}, exit {p['returncode']}{stopped}",
            f"  server: {srv['requests']} requests, peak in-flight {srv['peak_in_flight']}, "
            f"statuses {_fmt(srv['status_counts'])}; faults {_fmt(srv['fault_counts'])}; "
            f"server CPU {srv['cpu_s']} s",
            f"  log: {log.get('llm_calls_rows')} llm_calls rows ({_fmt(log.get('llm_calls_by_status'))}), "
            f"sum(cells.attempts) {log.get('cell_attempts')}, errors {_fmt(log.get('llm_errors_by_type'))}",
            f"  accounts ok {log.get('accounts_ok')}/{cfg.n} ({s.get('accounts_ok_pct')}%), cells "
            f"{_fmt(log.get('cells_by_status'))}; ok-call latency p50 {log.get('ok_latency_ms_p50')} ms "
            f"p99 {log.get('ok_latency_ms_p99')} ms",
            f"  agentctl process: CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = "
            f"{p['cpu_ms_per_call']} ms per call; peak RSS {p['peak_rss_mb']} MB",
            f"  other processes on the machine used {s['other_load_cores']} cores on average "
            f"(of {r['env']['cpus']}) during this run",
        ]
        lines += [f"  failed cell: {c}" for c in log.get("failed_cells_sample", [])[:3]]
        lines += [f"  stderr: {t}" for t in s.get("stderr_tail", [])]
        lines.append("")
    base = r.get("baseline")
    if base:
        p, own = base["process"], base["script"]
        imp = own.get("import_cpu_s")
        lines += [
            "Baseline: bare litellm.acompletion loop replaying A's requests",
            f"  {base['replayed_calls']} calls, ok {own.get('ok')}, errors {own.get('errors')}; "
            f"loop wall {own.get('wall_s')} s (ideal {base['ideal_s']} s, efficiency {base['efficiency']}); "
            f"process wall {p['wall_s']:.2f} s; peak in-flight {base['server']['peak_in_flight']}",
            f"  CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = {p['cpu_ms_per_call']} ms "
            f"per call (of which `import litellm` {imp} s); peak RSS {p['peak_rss_mb']} MB",
            f"  other processes on the machine used {base['other_load_cores']} cores on average",
        ]
        a = r.get("a")
        if a and imp is not None and base["replayed_calls"]:
            n_a, n_b = a["server"]["requests"], base["replayed_calls"]
            a_ex = 1000 * (a["process"]["cpu_user_s"] + a["process"]["cpu_sys_s"] - imp) / n_a
            b_ex = 1000 * (p["cpu_user_s"] + p["cpu_sys_s"] - imp) / n_b
            r["cpu_ms_per_call_excl_litellm_import"] = {"agentctl": round(a_ex, 3), "bare": round(b_ex, 3),
                                                        "ratio": round(a_ex / b_ex, 3)}
            lines.append(f"  excluding the litellm import in both: agentctl {a_ex:.2f} ms vs bare "
                         f"{b_ex:.2f} ms per call = {a_ex / b_ex:.2f}x (informational)")
        lines.append("")
    rows = r["targets"]
    w0 = max(len(t["target"]) for t in rows) if rows else 10
    w1 = max(len(str(t["value"])) for t in rows) if rows else 5
    lines.append(f"{'target':<{w0}}  {'value':>{w1}}  {'goal':<9} result")
    lines += [f"{t['target']:<{w0}}  {str(t['value']):>{w1}}  {t['goal']:<9} {t['result']}" for t in rows]
    busy = [r[k]["other_load_cores"] for k in ("a", "baseline", "b")
            if r.get(k) and r[k].get("other_load_cores") is not None]
    if busy and max(busy) > 0.25:
        lines.append(f"WARNING: other processes used up to {max(busy)} cores during the measurements; "
                     "wall-clock figures are inflated, rerun on an idle machine")
    if cfg.mode != "full":
        lines.append(f"({cfg.mode} mode: the targets are set for the full run, N=1000 at 1.0 s; "
                     "a fixed startup cost weighs more here)")
    lines.append(f"total bench time {r['bench_seconds']:.0f} s; results in {cfg.out}")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "agentctl"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        git = f"{sha}{' + local changes in agentctl/' if dirty else ''}" or "?"
    except (OSError, subprocess.SubprocessError):
        git = "?"

    return {"python": f"Python {platform.python_version()}", "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(), "litellm": version("litellm"), "agentctl": version("agentctl"),
            "git": git}


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="agentctl-bench-"))
    results: dict[str, Any] = {"config": asdict(cfg), "env": environment(), "faults_b": FAULTS_B}
    servers: list[FakeServer] = []
    try:
        accounts = work / "accounts.csv"
        write_accounts(accounts, cfg.n, cfg.seed)
        if "a" in cfg.scenarios:
            srv = FakeServer(latency=cfg.latency, seed=cfg.seed, log_path=work / "server-a.log").start()
            servers.append(srv)
            spec = work / "pipeline-a.yaml"
            stages = write_spec(spec, srv.api_base, cfg.timeout)
            print(f"[bench] scenario A: {cfg.n} accounts x {stages} stages ...", file=sys.stderr, flush=True)
            results["a"] = run_pipeline("a", cfg, srv, spec, accounts, stages, work,
                                        timeout=child_timeout(cfg, cfg.n * stages))
            if "baseline" in cfg.scenarios and results["a"].get("run_id"):
                print("[bench] baseline: bare litellm loop ...", file=sys.stderr, flush=True)
                results["baseline"] = run_baseline(cfg, srv, results["a"], work)
            srv.stop()
        if "b" in cfg.scenarios:
            srv = FakeServer(latency=cfg.latency, seed=cfg.seed, faults=FAULTS_B,
                             log_path=work / "server-b.log").start()
            servers.append(srv)
            spec = work / "pipeline-b.yaml"
            stages = write_spec(spec, srv.api_base, cfg.timeout)
            # B's target is 1.5x A's wall; stop it at 4x (Ctrl-C, so the log says how far it got)
            a_wall = results.get("a", {}).get("process", {}).get("wall_s")
            limit = max(60.0, B_CUTOFF * a_wall) if a_wall else child_timeout(cfg, 2 * cfg.n * stages)
            print(f"[bench] scenario B: fault mix (stopped after {limit:.0f} s) ...", file=sys.stderr, flush=True)
            results["b"] = run_pipeline("b", cfg, srv, spec, accounts, stages, work, timeout=limit)
            srv.stop()
    finally:
        for srv in servers:
            srv.stop()
        if cfg.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["targets"] = targets(cfg, results)
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    report = render(cfg, results)
    for key in ("a", "b"):
        if key in results:
            results[key].pop("_db", None)
    Path(cfg.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
