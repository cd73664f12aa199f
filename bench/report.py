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


def occupancy(spans: list[tuple[float, float]], concurrency: int) -> dict[str, Any] | None:
    """How the C concurrency slots were used, from the (start, end) of every call.

    span x C = busy slot-seconds (calls in flight) + idle slot-seconds. The idle part is split
    where it happened: the *ramp* (first start -> the C-th start), the *drain* (from the last
    moment all C slots were busy to the last end: nothing ready to start any more, the slots
    empty while the last calls and the chains behind them finish; a heavy tail shows here) and
    the *middle* (between the two: a slot left free for a moment between one call's end and
    the next one's start, the hand-off). Divided by C, each idle part is seconds of run time
    lost against the ideal."""
    if not spans:
        return None
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    starts = sorted(s for s, _ in spans)
    ramp_end = starts[min(concurrency, len(starts)) - 1]

    level = peak = 0
    last_full = None  # when the level last dropped from C (all slots busy) to below C
    for t, step in sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans]):
        was_full = level >= concurrency
        level += step  # at equal times the end (-1) sorts first: no phantom overlap
        peak = max(peak, level)
        if was_full and level < concurrency:
            last_full = t
    drain_start = max(ramp_end, last_full if last_full is not None else starts[-1])

    def idle(a: float, b: float) -> float:
        busy = sum(max(0.0, min(e, b) - max(s, a)) for s, e in spans)
        return max(0.0, concurrency * (b - a) - busy)

    busy = sum(e - s for s, e in spans)
    parts = {"ramp": idle(first, ramp_end), "middle": idle(ramp_end, drain_start),
             "drain": idle(drain_start, last)}
    return {"calls": len(spans), "span_s": round(last - first, 3), "busy_slot_s": round(busy, 2),
            "mean_in_flight": round(busy / (last - first), 2) if last > first else None,
            "peak_in_flight": peak, "ramp_s": round(ramp_end - first, 3),
            "drain_s": round(last - drain_start, 3), "last_start_to_end_s": round(last - starts[-1], 3),
            "idle_s": {k: round(v / concurrency, 3) for k, v in parts.items()}}


def time_budget(occ: dict[str, Any] | None, delay_s_total: float | None, concurrency: int,
                elapsed: float | None) -> dict[str, float] | None:
    """Where a run's elapsed time went, in seconds that add up exactly:

    elapsed = served (the server's delays / C: the ideal) + per-call overhead (client-side time
    of each call beyond the server's delay, / C) + idle slots (ramp, middle, drain; / C) +
    outside the calls phase (before the first call and after the last one)."""
    if not occ or not elapsed or delay_s_total is None:
        return None
    parts = {"served": delay_s_total / concurrency,
             "per_call_overhead": (occ["busy_slot_s"] - delay_s_total) / concurrency,
             **{f"idle_{k}": v for k, v in occ["idle_s"].items()},
             "outside_calls": elapsed - occ["span_s"]}
    return {k: round(v, 2) for k, v in parts.items()} | {"elapsed": round(elapsed, 2)}


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
    out.update(_derive_tail(r))
    out.update(_derive_scale(r.get("scale")))
    return out


def _gap(tail: dict[str, Any]) -> float | None:
    if tail.get("efficiency_run") is None or tail.get("efficiency_cli_wall") is None:
        return None
    return round(tail["efficiency_run"] - tail["efficiency_cli_wall"], 4)


def _tail_over_naive(tail: dict[str, Any] | None, naive: dict[str, Any] | None) -> float | None:
    if not (tail and naive and tail.get("efficiency_run") and naive.get("efficiency_loop")):
        return None
    return round(tail["efficiency_run"] / naive["efficiency_loop"], 3)


def _derive_tail(r: dict[str, Any]) -> dict[str, Any]:
    """The tail verdicts, from the median runs shown (so the printed figures reproduce them)."""
    tail, naive, out = r.get("tail"), r.get("naive"), {}
    if tail and tail.get("efficiency_run") is not None and tail.get("efficiency_cli_wall") is not None:
        out["tail_cli_gap"] = round(tail["efficiency_run"] - tail["efficiency_cli_wall"], 4)
    ratio = _tail_over_naive(tail, naive)
    if ratio is not None:
        out["tail_over_naive"] = ratio
    pairs = r.get("tail_repeats") or []
    if pairs:
        out["tail_efficiency_run_runs"] = [p["tail"]["efficiency_run"] for p in pairs]
        out["tail_efficiency_cli_wall_runs"] = [p["tail"]["efficiency_cli_wall"] for p in pairs]
        out["naive_efficiency_loop_runs"] = [p["naive"]["efficiency_loop"] for p in pairs if p["naive"]]
        out["tail_over_naive_runs"] = [_tail_over_naive(p["tail"], p["naive"]) for p in pairs]
    return out


def _derive_scale(sc: dict[str, Any] | None) -> dict[str, Any]:
    """RSS growth between the two largest Ns measured (the target compares 10k and 100k)."""
    measured = sorted((p for p in (sc or {}).get("points", []) if "skipped" not in p), key=lambda p: p["n"])
    if len(measured) < 2:
        return {}
    lo, hi = measured[-2:]
    return {"scale_rss_growth": {"from_n": lo["n"], "to_n": hi["n"],
                                 "ratio": round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3),
                                 "timed_out": lo["timed_out"] or hi["timed_out"]}}


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
    for key, label in (("tail", "hedging off (default)"), ("tail_hedged", "hedge_after_p 95")):
        tail = r.get(key)
        if not tail:
            continue
        add(f"tail efficiency, run (ideal / elapsed), {label}", tail["efficiency_run"], ">= 0.92",
            at_least(tail["efficiency_run"], 0.92))
        gap = _gap(tail)
        add(f"tail efficiency, run - CLI wall, {label}", gap, "<= 0.03",
            None if gap is None else gap <= 0.03)
        if r.get("naive"):
            ratio = _tail_over_naive(tail, r.get("naive"))
            add(f"tail efficiency: agentctl run / naive chain, {label}", ratio, ">= 1.08",
                None if ratio is None else ratio >= 1.08)
        add(f"tail accounts ok, {label}", f'{tail.get("accounts_ok_pct")}%', "100%",
            tail.get("accounts_ok_pct") == 100)
        add(f"tail peak in-flight at the server, {label}", tail["server"]["peak_in_flight"],
            f"<= {concurrency}", 0 < tail["server"]["peak_in_flight"] <= concurrency)
    rows += _scale_targets(r.get("scale"), d)
    from orchestrate import targets as orch_targets

    for name, value, goal, ok in orch_targets(r.get("orch")):
        add(name, value, goal, ok)
    return rows


def _scale_targets(sc: dict[str, Any] | None, d: dict[str, Any]) -> list[dict[str, Any]]:
    """Graded at the largest N measured (100,000 in the full run; the row names the N)."""
    if not sc or not sc["points"]:
        return []
    pts = sc["points"]
    done = sum(1 for p in pts if p.get("status") == "completed")
    top = max((p for p in pts if "skipped" not in p), key=lambda p: p["n"])
    rows = [("scale runs completed", f"{done}/{len(pts)}", "all", done == len(pts))]
    over = top["peak_rss_mb"] > 400
    rows.append((f"scale peak RSS at N={top['n']:,}, MB" + (" (timed out)" if top["timed_out"] else ""),
                 top["peak_rss_mb"], "<= 400", False if over else (None if top["timed_out"] else True)))
    g = d.get("scale_rss_growth")
    if g:
        rows.append((f"scale peak RSS N={g['to_n']:,} / N={g['from_n']:,}", g["ratio"], "0.85-1.15",
                     None if g["timed_out"] else 0.85 <= g["ratio"] <= 1.15))
    return [{"target": t, "value": v, "goal": goal, "result": "n/a" if ok is None else ("PASS" if ok else "FAIL")}
            for t, v, goal, ok in rows]


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
        f"  ideal {s['ideal_s']:.2f} s = {s.get('ideal_calls', srv['requests'])} calls x {_mean(s, cfg['latency'])} / "
        f"{cfg['concurrency']}; efficiency {s['efficiency_run']} (run), {s['efficiency_cli_wall']} (CLI wall)",
        f"  status {s['status'] or log.get('run_status')}, exit {p['returncode']}{stopped}",
        f"  server: {srv['requests']} requests, peak in-flight {srv['peak_in_flight']}, statuses "
        f"{_fmt(srv['status_counts'])}; faults {_fmt(srv['fault_counts'])}; server CPU {srv['cpu_s']} s"
        + (f"; slow replies {srv['slow_replies']}" if srv.get("slow_replies") else ""),
        f"  log: {log.get('llm_calls_rows')} llm_calls rows ({_fmt(log.get('llm_calls_by_status'))}); "
        f"sum(cells.attempts) {log.get('cell_attempts')}; errors {_fmt(log.get('llm_errors_by_type'))}",
        f"  accounts ok {log.get('accounts_ok')}/{cfg['n']} ({s.get('accounts_ok_pct')}%); cells "
        f"{_fmt(log.get('cells_by_status'))}; ok-call latency seen by agentctl p50 "
        f"{log.get('ok_latency_ms_p50')} ms, p99 {log.get('ok_latency_ms_p99')} ms",
        f"  agentctl process: CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = "
        f"{p['cpu_ms_per_call']} ms per call; peak RSS {p['peak_rss_mb']} MB",
        f"  other processes on the machine used {s['other_load_cores']} of {cpus} cores meanwhile",
    ]
    if s.get("time_budget_s"):
        lines += _slots(s.get("occupancy"), s["time_budget_s"], cfg["concurrency"], "run elapsed")
    lines += [f"  failed cell: {c}" for c in log.get("failed_cells_sample", [])[:3]]
    lines += [f"  stderr: {t}" for t in s.get("stderr_tail", [])]
    return lines + [""]


def _mean(s: dict[str, Any], latency: float) -> str:
    basis = s.get("ideal_basis")
    mean = s.get("ideal_mean_latency_s", latency)
    return f"{mean:g} s" + {"served": " (mean served)", "expected": ""}.get(basis, "")


def _slots(occ: dict[str, Any] | None, budget: dict[str, float], concurrency: int, what: str) -> list[str]:
    """The slot timeline and the time budget: where the run lost time against the ideal."""
    idle = occ["idle_s"]
    return [
        f"  slots: mean in flight {occ['mean_in_flight']} of {concurrency} (peak {occ['peak_in_flight']}) "
        f"over the {occ['span_s']} s calls phase; ramp {occ['ramp_s']} s; drain {occ['drain_s']} s "
        f"(last moment at {concurrency} -> last end; last start -> end {occ['last_start_to_end_s']} s)",
        f"  time budget: {what} {budget['elapsed']} s = served {budget['served']} (the ideal) + per-call "
        f"overhead {budget['per_call_overhead']} + idle ramp {idle['ramp']} / middle {idle['middle']} / "
        f"drain {idle['drain']} + outside the calls {budget['outside_calls']}",
    ]


def _naive(title: str, nv: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    p, own, srv = nv["process"], nv["script"], nv["server"]
    lines = [
        title,
        f"  {own.get('accounts')} accounts, {own.get('calls')} calls: ok {own.get('ok')}, errors "
        f"{own.get('errors')} {own.get('first_errors') or ''}; server: {srv['requests']} requests, peak "
        f"in-flight {srv['peak_in_flight']}, slow replies {srv.get('slow_replies')}",
        f"  ideal {nv['ideal_s']:.2f} s = {srv['requests']} calls x {_mean(nv, cfg['latency'])} / "
        f"{cfg['concurrency']}; loop {own.get('wall_s')} s (efficiency {nv['efficiency_loop']}), process "
        f"wall {p['wall_s']:.2f} s (efficiency {nv['efficiency_process_wall']})",
        f"  ok-call latency seen by the script p50 {own.get('ok_latency_ms_p50')} ms, p99 "
        f"{own.get('ok_latency_ms_p99')} ms",
    ]
    if nv.get("time_budget_s"):
        lines += _slots(own.get("occupancy"), nv["time_budget_s"], cfg["concurrency"], "loop")
    lines += [
        f"  CPU {p['cpu_user_s']:.2f} s user + {p['cpu_sys_s']:.2f} s sys = {p['cpu_ms_per_call']} ms per "
        f"call (`import litellm`: {own.get('import_cpu_s')} s); peak RSS {p['peak_rss_mb']} MB",
        f"  other processes on the machine used {nv['other_load_cores']} cores meanwhile",
    ]
    return lines + [""]


def _scale(sc: dict[str, Any]) -> list[str]:
    lines = [f"Scale: agentctl run --mock (no server, instant deterministic model), {sc['stages']} "
             f"stages, each run stopped after {sc['timeout_s']:g} s",
             f"  {'N':>7}  {'cells':>7}  {'status':<10} {'wall s':>8} {'run s':>8} {'CPU s':>8} "
             f"{'CPU ms/cell':>11} {'peak RSS MB':>11} {'log MB':>7} {'others':>6}"]
    for p in sc["points"]:
        if "skipped" in p:
            lines.append(f"  {p['n']:>7}  skipped: {p['skipped']}")
            continue
        lines.append(f"  {p['n']:>7}  {p['cells']:>7}  {p['status']:<10} {p['wall_s']:>8} "
                     f"{p['run_elapsed_s'] if p['run_elapsed_s'] is not None else '-':>8} {p['cpu_s']:>8} "
                     f"{p['cpu_ms_per_cell']:>11} {p['peak_rss_mb']:>11} {p['db_mb'] or '-':>7} "
                     f"{p['other_load_cores'] if p['other_load_cores'] is not None else '-':>6}")
        lines += [f"    stderr: {t}" for t in p.get("stderr_tail", [])]
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
             f"  tail: latency {cfg['tail_latency']:g} s, {cfg['slow_rate']:.0%} of replies x"
             f"{cfg['slow_factor']:g} (expected mean {cfg['tail_mean_latency']:g} s), model timeout "
             f"{cfg['tail_timeout']:g} s; scale: N = {', '.join(f'{n:,}' for n in cfg['scale_ns'])} (--mock)",
             f"  scenarios {', '.join(cfg['scenarios'])}",
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
    if r.get("tail"):
        lines += _scenario(f"Scenario tail: heavy-tailed latency, {cfg['slow_rate']:.0%} of replies "
                           f"x{cfg['slow_factor']:g}", r["tail"], cfg, env["cpus"])
    if r.get("tail_hedged"):
        lines += _scenario(f"Scenario tail, hedged (hedge_after_p: {cfg.get('hedge_p')}): the same "
                           "server and calls, a duplicate past p95 takes the next free slot",
                           r["tail_hedged"], cfg, env["cpus"])
    if r.get("naive"):
        lines += _naive(f"Naive chain: per-account asyncio chains under one Semaphore({cfg['concurrency']}), "
                        "same server, the tail run's requests", r["naive"], cfg)
    if r.get("naive_transport"):
        lines += _naive("Naive chain on agentctl's litellm transport (informational): the same chains with "
                        "litellm's own HTTP handler instead of the openai SDK client", r["naive_transport"], cfg)
        ratios = [f"{label} {_tail_over_naive(r.get(key), r['naive_transport'])}"
                  for key, label in (("tail", "hedging off"), ("tail_hedged", "hedged")) if r.get(key)]
        lines.insert(-1, f"  agentctl run / this chain: {', '.join(ratios)} (informational; the graded "
                         "ratio is against the naive chain on litellm's defaults, as a user would write it)")
    if r.get("barrier"):
        lines += _naive("Barrier baseline (informational): stage by stage, same Semaphore, same requests",
                        r["barrier"], cfg)
    if d.get("tail_efficiency_run_runs"):
        lines += [f"Repeats of tail + naive: agentctl efficiency (run) {d['tail_efficiency_run_runs']}, "
                  f"(CLI wall) {d['tail_efficiency_cli_wall_runs']}, naive (loop) "
                  f"{d['naive_efficiency_loop_runs']}, ratio {d['tail_over_naive_runs']}; the table uses "
                  "the median runs (details above)", ""]
    if r.get("scale"):
        lines += _scale(r["scale"])
    if r.get("orch"):
        o = r["orch"]
        lines += [f"Scenario orch: orchestrate over {o['accounts']} accounts x {o['subagents_per_account']} "
                  f"sub-agents, concurrency {o['concurrency']}, latency {o['latency_s']:g} s",
                  f"  status {o['status']} (exit {o['returncode']}), wall {o['wall_s']} s, run elapsed "
                  f"{o['run_elapsed_s']} s, CPU {o['cpu_s']} s, peak RSS {o['peak_rss_mb']} MB",
                  f"  server: {o['server_requests']} requests, peak in flight {o['server_peak_in_flight']}; "
                  f"log: {o.get('llm_calls_rows')} llm_calls rows, {o.get('subagent_spans')} sub-agent spans ok, "
                  f"{o.get('spawns_refused')} spawns refused, {o.get('accounts_ok')} accounts ok", ""]
        lines += [f"  stderr: {t}" for t in o.get("stderr_tail", [])]
    rows = r["targets"]
    if rows:
        w0 = max(len(t["target"]) for t in rows)
        w1 = max(len(str(t["value"])) for t in rows)
        lines.append(f"{'target':<{w0}}  {'value':>{w1}}  {'goal':<9} result")
        lines += [f"{t['target']:<{w0}}  {str(t['value']):>{w1}}  {t['goal']:<9} {t['result']}" for t in rows]
    busy = [r[k]["other_load_cores"] for k in ("a", "baseline", "b", "tail", "naive", "naive_transport", "barrier")
            if r.get(k) and r[k].get("other_load_cores") is not None]
    busy += [p["other_load_cores"] for p in (r.get("scale") or {}).get("points", [])
             if p.get("other_load_cores") is not None]
    if busy and max(busy) > 0.25:
        lines.append(f"WARNING: other processes used up to {max(busy)} cores during the measurements; "
                     "wall-clock figures are inflated, rerun on an idle machine")
    if cfg["mode"] != "full":
        lines.append(f"({cfg['mode']} mode: the targets are set for the full run, N=1000 (A at 1.0 s, "
                     "tail at 0.4 s) and scale to 100,000; fixed start-up costs weigh more here)")
    lines.append(f"total bench time {r['bench_seconds']:.0f} s; results in {out}")
    return "\n".join(lines)
