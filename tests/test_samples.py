"""The sample pipelines run offline from a copy of the repository's own files, as the README
shows them (`make demo`, `make demo-research`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import copy_sample, db_rows, first_line, run_cli, run_status

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sample(tmp_path) -> Path:
    return copy_sample(tmp_path)


def test_account_research_uses_every_orchestration_type_offline(sample, tmp_path):
    db = tmp_path / "agentctl.duckdb"
    spec = sample / "pipelines" / "account_research.yaml"
    accounts = sample / "sample_data" / "accounts.csv"
    assert run_cli("validate", spec, accounts).returncode == 0

    res = run_cli("run", spec, accounts, "--mock", timeout=110)
    assert res.returncode == 0, res.stderr[-2000:]
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "completed"

    kinds = json.loads(db_rows(db, "SELECT prompts FROM runs")[0]["prompts"])["kinds"]
    assert kinds == {"research": "orchestrate", "score": "route", "top10": "select",
                     "draft": "agent", "review": "panel", "report": "reduce"}
    roles = Counter(r["role"] for r in db_rows(db, "SELECT role FROM spans WHERE run_id = ?", [run_id]))
    assert roles["lead"] == 100 and 200 <= roles["subagent"] <= 300  # 2-3 scouts each
    assert roles["specialist"] == 100 and roles["moderator"] == 10 and roles["panelist"] >= 40
    chosen = {r["item_key"]: json.loads(r["output"])["route"]["agent"] for r in db_rows(
        db, "SELECT item_key, output FROM cells WHERE run_id = ? AND stage_id = 'score'", [run_id])}
    industry = {r["item_key"]: json.loads(r["input"])["industry"] for r in db_rows(
        db, "SELECT item_key, input FROM items WHERE run_id = ?", [run_id])}
    assert all(chosen[k] == "saas_scorer" for k, i in industry.items() if i == "SaaS")
    assert all(chosen[k] == "logistics_scorer" for k, i in industry.items() if i == "Logistics")
    (report,) = db_rows(db, "SELECT status, items, output FROM run_outputs WHERE run_id = ?", [run_id])
    assert report["status"] == "ok" and report["items"] == 10
    assert set(json.loads(report["output"])) == {"headline", "send_now", "needs_work", "themes"}

    tree = run_cli("inspect", run_id, "--item", "ACC-001", env={"COLUMNS": "200"}).stdout
    assert "lead lead_researcher" in tree and "sub-agent" in tree and "specialist" in tree
    # cells and agent turns come in the pipeline's order, not the stage ids' alphabetical one
    assert tree.index("research lead") < tree.index("score specialist") < tree.index("review round 1")
    assert tree.index("│ ACC-001 │ research") < tree.index("│ ACC-001 │ draft")
    exported = run_cli("export", run_id, "--stage", "report")
    assert exported.returncode == 0 and json.loads(exported.stdout) == json.loads(report["output"])
