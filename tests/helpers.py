"""Shared test helpers: a research -> score -> select -> write spec, accounts, and ways to run
the CLI (a real subprocess, or in-process with typer's CliRunner), plus a read-only DuckDB peek.

The prompts carry ``[[item:...]] [[stage:...]]`` markers, so the fake server files every
request it sees under the account and stage it belongs to (``request["_meta"]``).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RUN_ID = r"r-\d{8}-\d{6}-[0-9a-f]{6}"
TEST_KEY = "sk-test"
MODEL = "openai/gpt-4o-mini"  # priced in litellm's local price map, so cost > 0


def default_stages(top: int = 3) -> list[dict[str, Any]]:
    """research -> score -> select top K by score -> write (K accounts only)."""
    tag = "[[item:{{ account.id }}]] [[stage:%s]]"
    return [
        {"id": "research", "agent": "researcher",
         "prompt": "Research {{ account.name }} ({{ account.domain }}), a {{ account.industry }} "
                   "company with {{ account.employees }} staff. " + tag % "research",
         "output": {"summary": {"type": "str", "min_length": 1}}},
        {"id": "score", "agent": "scorer", "needs": ["research"],
         "prompt": "Score {{ account.name }} for fit. Research: {{ research.summary }} "
                   + tag % "score",
         "output": {"score": {"type": "int", "min": 0, "max": 100}, "reason": "str"}},
        {"id": "select", "type": "select", "needs": ["score"], "by": "score.score", "top": top},
        {"id": "write", "agent": "writer", "needs": ["select", "research", "score"],
         "prompt": "Write a first email to {{ account.name }} (score {{ score.score }}). "
                   + tag % "write",
         "output": {"subject": "str", "body": "str"}},
    ]


def _merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def spec_doc(api_base: str, *, stages: list[dict] | None = None, concurrency: int = 4,
             extra: dict | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "outreach-test",
        "input": {"key": "id", "required": ["name", "domain", "industry", "employees"]},
        "models": {"fast": {"model": MODEL, "api_base": api_base, "timeout": 10}},
        "defaults": {"model": "fast", "concurrency": concurrency, "max_repairs": 2,
                     "max_attempts": 2},
        "agents": {
            "researcher": {"system": "You research B2B companies."},
            "scorer": {"system": "You score accounts for fit."},
            "writer": {"system": "You write short outreach emails."},
        },
        "stages": copy.deepcopy(stages) if stages is not None else default_stages(),
    }
    return _merge(doc, copy.deepcopy(extra or {}))


def write_spec(dir: Path, api_base: str, *, stages: list[dict] | None = None,
               concurrency: int = 4, extra: dict | None = None, name: str = "pipeline.yaml") -> Path:
    """Write the test pipeline; ``extra`` is deep-merged into the YAML document."""
    path = Path(dir) / name
    doc = spec_doc(api_base, stages=stages, concurrency=concurrency, extra=extra)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def account_id(i: int) -> str:
    return f"acct-{i:03d}"


def write_accounts(dir: Path, n: int, *, name: str = "accounts.csv") -> Path:
    path = Path(dir) / name
    industries = ("software", "retail", "logistics", "fintech")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "domain", "industry", "employees"])
        for i in range(n):
            w.writerow([account_id(i), f"Company {i}", f"company{i}.example.com",
                        industries[i % len(industries)], 10 * (i + 1)])
    return path


def subprocess_env(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The current (already sanitised) environment plus a fake key; None deletes a variable."""
    out = dict(os.environ)
    out["OPENAI_API_KEY"] = TEST_KEY
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    for key, value in (env or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def run_cli(*args: str, env: dict[str, str | None] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m agentctl.cli ARGS` as a real process (fresh imports, real signals/exit codes)."""
    return subprocess.run([sys.executable, "-m", "agentctl.cli", *map(str, args)],
                          env=subprocess_env(env), capture_output=True, text=True,
                          timeout=timeout)


def popen_cli(*args: str, env: dict[str, str | None] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentctl.cli", *map(str, args)],
                            env=subprocess_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def run_inproc(*args: str, env: dict[str, str | None] | None = None):
    """Invoke the typer app in this process (litellm is imported once per session).

    OPENAI_API_KEY=sk-test is set for the duration of the call, like monkeypatch would;
    ``env`` adds or (with None) removes variables. Returns click's Result (stdout, stderr,
    exit_code, exception)."""
    from typer.testing import CliRunner

    from agentctl.cli import app

    full_env: dict[str, str | None] = {"OPENAI_API_KEY": TEST_KEY}
    full_env.update(env or {})
    return CliRunner().invoke(app, [str(a) for a in args], env=full_env, catch_exceptions=False)


def db_rows(path: Path | str, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    """Rows as dicts, from a read-only connection that is closed at once."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        con.close()


def cell_counts(db: Path | str, run_id: str) -> dict[str, dict[str, int]]:
    """{stage: {status: n}} from the cells table."""
    out: dict[str, dict[str, int]] = {}
    for r in db_rows(db, "SELECT stage_id, status, count(*) AS n FROM cells WHERE run_id = ? "
                         "GROUP BY ALL", [run_id]):
        out.setdefault(r["stage_id"], {})[r["status"]] = r["n"]
    return out


def run_status(db: Path | str, run_id: str) -> str:
    return db_rows(db, "SELECT status FROM runs WHERE run_id = ?", [run_id])[0]["status"]


def stage_of(request: dict) -> str:
    """The stage a server request belongs to, from its response_format schema name."""
    name = request["response_format"]["json_schema"]["name"]
    assert name.endswith("_output"), name
    return name[: -len("_output")]


def agent_of(body: dict) -> str:
    """The agent a fake-server request came from."""
    return body["_meta"].get("agent", "?")


def last_user(body: dict) -> str:
    """A request's last user message."""
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content or ""
    return ""


def first_line(text: str) -> str:
    return text.splitlines()[0].strip() if text.strip() else ""


def loads(text: str) -> Any:
    return json.loads(text)


def copy_sample(root: Path) -> Path:
    """pipelines/ and sample_data/ copied side by side under `root`, with a fresh CRM, so a
    sample run writes its outbox and CRM rows there, not in the repository."""
    import shutil

    shutil.copytree(REPO / "pipelines", root / "pipelines")
    data = root / "sample_data"
    data.mkdir()
    shutil.copy(REPO / "sample_data" / "accounts.csv", data / "accounts.csv")
    shutil.copytree(REPO / "sample_data" / "corpus", data / "corpus")
    subprocess.run([sys.executable, str(REPO / "sample_data" / "make_crm.py"),
                    str(data / "crm.duckdb")], check=True, capture_output=True, cwd=REPO)
    return root
