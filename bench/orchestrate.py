"""Scenario "orch": one `orchestrate` stage over 100 accounts whose lead spawns 10 sub-agents
each, at concurrency 1,000, against the fake server in its own process.

Every lead's prompt carries ten `[[call:spawn {...}]]` markers, so the fake server answers
its first turn with ten spawn calls; the 1,000 sub-agents then wait `latency` seconds each at
the server, all at once if agentctl keeps the limit full. Measured: the server's peak
in-flight (target: = the concurrency), requests against `llm_calls` rows, spans in the log,
accounts ok, wall clock, CPU and peak RSS of the agentctl process.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from harness import FakeServer, read_only, run_measured

SUBAGENTS = 10
AGENTS = ("news", "hiring", "stack", "funding", "leadership", "partners", "product", "pricing",
          "customers", "risks")


def write_orchestrate(work: Path, api_base: str, accounts: int, latency: float) -> tuple[Path, Path]:
    markers = " ".join(
        "[[call:spawn " + json.dumps({"agent": AGENTS[i % len(AGENTS)],
                                      "task": f"angle {i}: {AGENTS[i % len(AGENTS)]} of {{{{ account.name }}}}"})
        + "]]" for i in range(SUBAGENTS))
    doc = {
        "name": "bench-orchestrate",
        "input": {"key": "id", "required": ["name"]},
        "models": {"fast": {"model": "openai/gpt-4o-mini", "api_base": api_base,
                            "timeout": max(30.0, 10 * latency)}},
        "defaults": {"model": "fast", "concurrency": 1000, "max_attempts": 3},
        "agents": {"lead": {"system": "You lead the research of one account."},
                   **{a: {"system": f"You research the {a} of one account."} for a in AGENTS}},
        "stages": [{"id": "research", "type": "orchestrate", "lead": "lead", "agents": list(AGENTS),
                    "max_subagents": SUBAGENTS, "max_rounds": 1,
                    "prompt": "Research {{ account.name }} [[item:{{ account.id }}]] " + markers,
                    "output": {"summary": "str"}}],
    }
    spec = work / "pipeline-orchestrate.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    csv_path = work / "orchestrate-accounts.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name"])
        for i in range(accounts):
            w.writerow([f"acct-{i:04d}", f"Company {i}"])
    return spec, csv_path


def run_orchestrate(cmd: list[str], work: Path, *, accounts: int, concurrency: int, latency: float,
                    say: Callable[[str], None]) -> dict[str, Any]:
    with FakeServer(latency=latency, seed=1, log_path=work / "server-orch.log") as srv:
        spec, csv_path = write_orchestrate(work, srv.api_base, accounts, latency)
        db = work / "orchestrate.duckdb"
        say(f"scenario orch: orchestrate, {accounts} accounts x {SUBAGENTS} sub-agents, "
            f"concurrency {concurrency}, latency {latency:g} s ...")
        srv.reset()
        m = run_measured(cmd + ["run", str(spec), str(csv_path), "--json", "--db", str(db),
                                "--concurrency", str(concurrency)],
                         cwd=work, timeout=300 + 20 * latency, out_dir=work, name="orch")
        stats = srv.stats()
    try:
        summary = json.loads(m.stdout)
    except ValueError:
        summary = {}
    out: dict[str, Any] = {
        "accounts": accounts, "subagents_per_account": SUBAGENTS, "concurrency": concurrency,
        "latency_s": latency, "status": summary.get("status"), "returncode": m.returncode,
        "wall_s": round(m.wall_s, 2), "run_elapsed_s": summary.get("elapsed_s"),
        "cpu_s": round(m.cpu_s, 2), "peak_rss_mb": round(m.maxrss_mb, 1),
        "server_requests": stats["requests"], "server_peak_in_flight": stats["peak_in_flight"],
        "stderr_tail": m.stderr.strip().splitlines()[-5:] if m.returncode else [],
    }
    if summary.get("run_id"):
        with read_only(db) as con:
            q = lambda sql: con.execute(sql, [summary["run_id"]]).fetchone()[0]  # noqa: E731
            out.update(
                llm_calls_rows=q("SELECT count(*) FROM llm_calls WHERE run_id = ?"),
                subagent_spans=q("SELECT count(*) FROM spans WHERE run_id = ? AND role = 'subagent' "
                                 "AND status = 'ok'"),
                spawns_refused=q("SELECT count(*) FROM tool_calls WHERE run_id = ? AND tool = 'spawn' "
                                 "AND status = 'refused'"),
                accounts_ok=q("SELECT count(*) FROM cells WHERE run_id = ? AND status = 'ok'"))
    return out


def targets(o: dict[str, Any] | None) -> list[tuple[str, Any, str, bool | None]]:
    """(name, value, target, pass) rows for the report."""
    if not o:
        return []
    n = o["accounts"]
    return [
        ("orch peak in-flight at the server", o["server_peak_in_flight"], f"= {o['concurrency']}",
         o["server_peak_in_flight"] == o["concurrency"]),
        ("orch sub-agents finished", o.get("subagent_spans"), f"= {n * o['subagents_per_account']}",
         o.get("subagent_spans") == n * o["subagents_per_account"]),
        ("orch accounts ok", o.get("accounts_ok"), f"= {n}", o.get("accounts_ok") == n),
        ("orch server requests == llm_calls rows", f"{o['server_requests']} / {o.get('llm_calls_rows')}",
         "equal", o["server_requests"] == o.get("llm_calls_rows")),
        ("orch wall clock / peak RSS", f"{o['wall_s']} s / {o['peak_rss_mb']} MB", "reported", None),
    ]
