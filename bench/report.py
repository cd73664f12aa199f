"""The bench's verdicts and its text report: pure functions of the results dict (no I/O
except `environment`, which asks git and the package metadata what was measured)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib import metadata
from typing import Any

from harness import REPO


def environment() -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "?"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    sha, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "agentctl")
    return {"python": platform.python_version(), "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(), "litellm": version("litellm"), "agentctl": version("agentctl"),
            "git": (sha or "?") + (" + uncommitted changes in agentctl/" if dirty else "")}


def _cpu_ratio(a: dict[str, Any] | None, base: dict[str, Any] | None) -> float | None:
    if not (a and base and base["process"]["cpu_ms_per_call"] and a["process"]["cpu_ms_per_call"]):
        return None
    return round(a["process"]["cpu_ms_per_call"] / base["process"]["cpu_ms_per_call"], 3)


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Cross-scenario figures: the CPU ratio (median over repeats) and B's slowdown."""
    a, base, b = r.get("a"), r.get("baseline"), r.get("b")
    out: dict[str, Any] = {}
    pairs = r.get("repeats") or [{"a": a, "baseline": base}]
    ratios = [x for x in (_cpu_ratio(p["a"], p["baseline"]) for p in pairs) if x is not None]
    if len(pairs) > 1:
        out["cpu_ratio_runs"] = ratios
        out["efficiency_run_runs"] = [p["a"]["efficiency_run"] for p in pairs]
        out["a_wall_runs"] = [p["a"]["process"]["wall_s"] for p in pairs]
    if ratios:
        out["cpu_ratio"] = round(statistics.median(ratios), 3)
    if a and base and a["process"]["cpu_ms_per_call"]:
        imp = base["script"].get("import_cpu_s")
        if imp is not None and a["server"]["requests"] and base["replayed_calls"]:
            # both processes import litellm once; without it the per-call cost stands out more
            a_ms = 1000 * (a["process"]["cpu_user_s"] + a["process"]["cpu_sys_s"] - imp) / a["server"]["requests"]
            b_ms = 1000 * (base["process"]["cpu_user_s"] + base["process"]["cpu_sys_s"] - imp) / base["replayed_calls"]
            out["cpu_ms_per_call_without_litellm_import"] = {
                "agentctl": round(a_ms, 3), "bare": round(b_ms, 3), "ratio": round(a_ms / b_ms, 3)}
    if a and b and a.get("run_id") and b.get("run_id"):
        a_wall = statistics.median(out.get("a_wall_runs") or [a["process"]["wall_s"]])
        out["b_over_a"] = round(b["process"]["wall_s"] / a_wall, 3)
        out["b_stopped"] = b["process"]["timed_out"]
    return out


def targets(concurrency: int, r: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, goal: str, ok: bool | None) -> None:
        rows.append({"target": name, "value": value, "goal": goal,
                     "result": "n/a" if ok is None else ("PASS" if ok else "FAIL")})

    def at_least(x: float | None, goal: float) -> bool:
        return x is not None and x >= goal

    a, b, d = r.get("a"), r.get("b"), r.get("derived", {})
    if a:
        log = a["log"] or {}
        add("A efficiency, run (ideal / run elapsed)", a["efficiency_run"], ">= 0.90",
            at_least(a["efficiency_run"], 0.9))
        add("A efficiency, CLI wall (start+exit incl.)", a["efficiency_cli_wall"], ">= 0.90",
            at_least(a["efficiency_cli_wall"], 0.9))
        add("A peak in-flight at the server", a["server"]["peak_in_flight"], f"<= {concurrency}",
            0 < a["server"]["peak_in_flight"] <= concurrency)
        add("A server requests == llm_calls rows", f'{a["server"]["requests"]} / {log.get("llm_calls_rows")}',
            "equal", a["server"]["requests"] == log.get("llm_calls_rows"))
        add("A accounts ok", f'{a.get("accounts_ok_pct")}%', "100%", a.get("accounts_ok_pct") == 100)
        add("A peak RSS, MB", a["process"]["peak_rss_mb"], "< 400", a["process"]["peak_rss_mb"] < 400)
    if "cpu_ratio" in d:
        add("CPU/call: agentctl / bare litellm", d["cpu_ratio"], "<= 1.5", d["cpu_ratio"] <= 1.5)
    if b:
        log = b["log"] or {}
        add("B accounts ok", f'{b.get("accounts_ok_pct")}%', "100%", b.get("accounts_ok_pct") == 100)
        ratio = d.get("b_over_a")
        shown = f">= {ratio} (stopped)" if ratio is not None and d.get("b_stopped") else ratio
        add("B wall / A wall", shown, "<= 1.5",
            None if ratio is None else ratio <= 1.5 and not d.get("b_stopped"))
        # A stopped run leaves the requests in flight at Ctrl-C without a row: no verdict then.
        stopped = b["process"]["timed_out"]
        add("B server requests == llm_calls rows",
            f'{b["server"]["requests"]} / {log.get("llm_calls_rows")}' + (" (stopped)" if stopped else ""),
            "equal", None if stopped else b["server"]["requests"] == log.get("llm_calls_rows"))
        add("B peak in-flight at the server", b["server"]["peak_in_flight"], f"<= {concurrency}",
            0 < b["server"]["peak_in_flight"] <= concurrency)
    return rows


# -- text ------------------------------------------------------------------------------------

def _fmt(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (d or {}).items()) or "-"


def _scenario(title: str, s: dict[str, Any], cfg: dict[str, Any], cpus: Any) -> list[str]:
    p, srv, log, ph = s["process"], s["server"], s["log"] or {}, s.get("phases_s") or {}
    stopped = f" -- STOPPED by the bench after {s['timeout_s']} s" if p["timed_out"] else ""
    lines = [
        title,
        f"  CLI wall {p['wall_s']:.2f} s = startup {ph.get('startup')} s (spawn -> first request) + calls "
        f"{ph.get('calls')} s + shutdown {ph.get('shutdown')} s (last reply -> exit); run elapsed "
        f"{s['run_elapsed_s']} s",
        f"  ideal {s['ideal_s']:.2f} s = {srv['requests']} calls x {cfg['latency']:g} s / "
        f"{cfg['concurrency']}; efficiency {s['efficiency_run']} (run), {s['efficiency_cli_wall']} (CLI wall)",
        f"  status {s['status'] or log.get('run_status')}, exit {p['returncode']}{stopped}",
        f"  server: {srv['requests']} requests, peak in-flight {srv['peak_in_flight']}, statuses "
        f"{_fmt(srv['status_counts'])}; faults {_fmt(srv['fault_counts'])}; server CPU {srv['cpu_s']} s",
        f"  log: {log.get('llm_calls_rows')} llm_calls rows ({_fmt(log.get('llm_calls_by_status'))}); "
        f"sum(cells.attempts) {log.get('cell_attempts')}; errors {_fmt(log.get('llm_errors_by_type'))}",
        f"  accounts ok {log.get('accounts_ok')}/{cfg['n']} ({s.get('accounts_ok_pct')}%); cells "
        f"{_fmt(log.get('cells_by_status'))}; ok-call latency seen by agentctl p50 "
        f"{log.get('ok_latency_ms_p50')} ms, p99 {log.get('ok_latency_ms_p99')} ms",
        f"  agentctl process: CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = "
        f"{p['cpu_ms_per_call']} ms per call; peak RSS {p['peak_rss_mb']} MB",
        f"  other processes on the machine used {s['other_load_cores']} of {cpus} cores meanwhile",
    ]
    lines += [f"  failed cell: {c}" for c in log.get("failed_cells_sample", [])[:3]]
    lines += [f"  stderr: {t}" for t in s.get("stderr_tail", [])]
    return lines + [""]


def _baseline(base: dict[str, Any], d: dict[str, Any]) -> list[str]:
    p, own = base["process"], base["script"]
    lines = [
        "Baseline: bare litellm.acompletion loop replaying A's requests",
        f"  {base['replayed_calls']} calls, ok {own.get('ok')}, errors {own.get('errors')}; loop "
        f"{own.get('wall_s')} s (efficiency {base['efficiency_loop']}), process wall {p['wall_s']:.2f} s "
        f"(efficiency {base['efficiency_process_wall']}); peak in-flight {base['server']['peak_in_flight']}",
        f"  ok-call latency seen by the loop p50 {own.get('ok_latency_ms_p50')} ms, p99 "
        f"{own.get('ok_latency_ms_p99')} ms",
        f"  CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = {p['cpu_ms_per_call']} ms per "
        f"call (`import litellm` alone: {own.get('import_cpu_s')} s); peak RSS {p['peak_rss_mb']} MB",
        f"  other processes on the machine used {base['other_load_cores']} cores meanwhile",
    ]
    ex = d.get("cpu_ms_per_call_without_litellm_import")
    if ex:
        lines.append(f"  without the litellm import in both: agentctl {ex['agentctl']} ms vs bare "
                     f"{ex['bare']} ms per call = {ex['ratio']}x (informational)")
    return lines + [""]


def render(r: dict[str, Any], *, out: str) -> str:
    cfg, env, d = r["config"], r["env"], r.get("derived", {})
    lines = [f"agentctl bench ({cfg['mode']}): N={cfg['n']} accounts, latency {cfg['latency']:g} s, "
             f"concurrency {cfg['concurrency']}, model timeout {cfg['timeout']:g} s",
             f"  Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, litellm "
             f"{env['litellm']}, agentctl {env['agentctl']} at {env['git']}", ""]
    if r.get("a"):
        lines += _scenario("Scenario A: fault-free", r["a"], cfg, env["cpus"])
    if r.get("baseline"):
        lines += _baseline(r["baseline"], d)
    if d.get("cpu_ratio_runs"):
        lines += [f"Repeats of A + baseline: efficiency (run) {d['efficiency_run_runs']}, A wall "
                  f"{d['a_wall_runs']} s, CPU ratio {d['cpu_ratio_runs']}; the table uses medians "
                  "(details above: the median A run)", ""]
    if r.get("b"):
        lines += _scenario("Scenario B: faults " + _fmt(r["faults_b"]), r["b"], cfg, env["cpus"])
    rows = r["targets"]
    if rows:
        w0 = max(len(t["target"]) for t in rows)
        w1 = max(len(str(t["value"])) for t in rows)
        lines.append(f"{'target':<{w0}}  {'value':>{w1}}  {'goal':<9} result")
        lines += [f"{t['target']:<{w0}}  {str(t['value']):>{w1}}  {t['goal']:<9} {t['result']}" for t in rows]
    busy = [r[k]["other_load_cores"] for k in ("a", "baseline", "b")
            if r.get(k) and r[k].get("other_load_cores") is not None]
    if busy and max(busy) > 0.25:
        lines.append(f"WARNING: other processes used up to {max(busy)} cores during the measurements; "
                     "wall-clock figures are inflated, rerun on an idle machine")
    if cfg["mode"] != "full":
        lines.append(f"({cfg['mode']} mode: the targets are set for the full run, N=1000 at 1.0 s; "
                     "fixed start-up costs weigh more here)")
    lines.append(f"total bench time {r['bench_seconds']:.0f} s; results in {out}")
    return "\n".join(lines)
