"""`--auto-approve` and `--dry-actions` beat the spec's `approval:` for every stage, in `run`,
`resume` and `retry`, on the sample pipeline itself (whose act stage says
`approval: required`).

Effects are counted where they land: `.eml` files in the copied sample's outbox and the
ledger rows in the run log. The mock model drives `run`; the loopback server drives the
stored-flag paths, where a budget stop and a failing stage leave work for resume and retry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import copy_sample, db_rows, first_line, run_cli, run_status

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sample(tmp_path) -> Path:
    """pipelines/ and sample_data/ copied side by side, with a fresh CRM database."""
    copy_sample(tmp_path)
    spec_text = (tmp_path / "pipelines" / "outbound.yaml").read_text()
    assert "approval: required" in spec_text  # the spec's own word, which the flags must beat
    return tmp_path


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"


def actions(db: Path, run_id: str) -> list[dict]:
    return db_rows(db, "SELECT * FROM actions WHERE run_id = ?", [run_id])


def emails(root: Path) -> list[Path]:
    outbox = root / "outbox"
    return sorted(outbox.glob("*.eml")) if outbox.exists() else []


def cli(root: Path, *args: str, env: dict | None = None, code: int | tuple = 0):
    res = run_cli(*args, env={"COLUMNS": "200", **(env or {})}, timeout=110)
    codes = code if isinstance(code, tuple) else (code,)
    assert res.returncode in codes, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    return res


def run_sample(root: Path, *flags: str, code: int | tuple = 0, env: dict | None = None):
    return cli(root, "run", root / "pipelines" / "outbound.yaml",
               root / "sample_data" / "accounts.csv", *flags, env=env, code=code)


# --- run ----------------------------------------------------------------------------------------

def test_run_dry_actions_beats_approval_required(sample, db):
    res = run_sample(sample, "--mock", "--dry-actions")
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "completed"
    acts = actions(db, run_id)
    assert acts and {a["status"] for a in acts} == {"dry_run"}
    assert emails(sample) == []


def test_run_auto_approve_beats_approval_required(sample, db):
    res = run_sample(sample, "--mock", "--auto-approve")
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "completed"
    acts = actions(db, run_id)
    assert acts and {(a["status"], a["decided_by"]) for a in acts} == {("done", "auto-approve")}
    sent = [a for a in acts if a["tool"] == "email"]
    assert len(emails(sample)) == len(sent) > 0


def test_run_without_flags_still_gates(sample, db):
    res = run_sample(sample, "--mock", code=3)
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "awaiting_approval"
    assert {a["status"] for a in actions(db, run_id)} == {"pending_approval"}
    assert emails(sample) == []


# --- resume -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, final", [("--auto-approve", "done"), ("--dry-actions", "dry_run")])
def test_resume_flag_settles_pending_actions(sample, db, flag, final):
    run_id = first_line(run_sample(sample, "--mock", code=3).stdout)
    pending = actions(db, run_id)
    assert pending and {a["status"] for a in pending} == {"pending_approval"}

    cli(sample, "resume", run_id, flag)

    assert run_status(db, run_id) == "completed"
    after = actions(db, run_id)
    assert {a["idempotency_key"] for a in after} == {a["idempotency_key"] for a in pending}
    assert {a["status"] for a in after} == {final}
    sent = [a for a in after if a["tool"] == "email" and a["status"] == "done"]
    assert len(emails(sample)) == len(sent)
    assert (len(sent) > 0) == (final == "done")


class SdrScript:
    """The act stage calls the email tool once, then answers; `broken_act` makes its answers
    invalid so the cell fails (for retry)."""

    def __init__(self) -> None:
        self.broken_act = False

    def __call__(self, body: dict) -> Reply | None:
        name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        if name != "act_output":
            return None
        messages = body["messages"]
        if messages[-1]["role"] != "tool":
            prompt = json.dumps(messages)
            to = "ops@" + prompt.split("contact@", 1)[1].split('"', 1)[0].split("\\", 1)[0] \
                if "contact@" in prompt else "ops@example.com"
            return Reply(tool_calls=[{"name": "email", "arguments": {
                "to": to, "subject": "Hello", "body": "A short note."}}])
        if self.broken_act:
            return Reply(content="not json at all")
        return None


def server_env(llm) -> dict:
    return {"OPENAI_API_BASE": llm.base_url}


def test_resume_keeps_the_runs_auto_approve_after_a_budget_stop(sample, db, llm):
    llm.responder = SdrScript()
    res = run_sample(sample, "--auto-approve", "--limit", "30", "--max-cost", "0.0005",
                     env=server_env(llm), code=4)
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "budget_exceeded"
    assert actions(db, run_id) == []

    cli(sample, "resume", run_id, "--max-cost", "100", env=server_env(llm))

    assert run_status(db, run_id) == "completed"
    acts = actions(db, run_id)
    assert acts and {(a["status"], a["decided_by"]) for a in acts} == {("done", "auto-approve")}
    assert len(emails(sample)) == len(acts)


def test_retry_keeps_the_runs_dry_actions(sample, db, llm):
    script = SdrScript()
    script.broken_act = True
    llm.responder = script
    res = run_sample(sample, "--dry-actions", "--limit", "30", env=server_env(llm), code=1)
    run_id = first_line(res.stdout)
    failed = db_rows(db, "SELECT count(*) AS n FROM cells WHERE run_id = ? AND stage_id = 'act' "
                         "AND status = 'failed'", [run_id])[0]["n"]
    assert failed > 0

    script.broken_act = False
    cli(sample, "retry", run_id, env=server_env(llm))

    assert run_status(db, run_id) == "completed"
    acts = actions(db, run_id)
    assert acts and {a["status"] for a in acts} == {"dry_run"}
    assert emails(sample) == []


def test_retry_auto_approve_flag_beats_the_spec(sample, db, llm):
    script = SdrScript()
    script.broken_act = True
    llm.responder = script
    run_id = first_line(run_sample(sample, "--limit", "30", env=server_env(llm), code=(1, 3)).stdout)

    script.broken_act = False
    cli(sample, "retry", run_id, "--auto-approve", env=server_env(llm))

    assert run_status(db, run_id) == "completed"
    acts = actions(db, run_id)
    assert acts and {a["status"] for a in acts} == {"done"}
    assert len(emails(sample)) == len(acts)
