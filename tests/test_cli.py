"""The command line as users and scripts meet it: output streams, JSON, exit codes, signals,
lazy imports, and secrets that must never reach the log.

Exit codes and signals are checked on a real subprocess; the rest runs in-process.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.llm_server import Reply
from tests.helpers import (RUN_ID, account_id, cell_counts, db_rows, default_stages, first_line,
                           popen_cli, run_cli, run_inproc, run_status, subprocess_env,
                           write_accounts, write_spec)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "agentctl.duckdb"


def one_line_error(stderr: str) -> str:
    """The CLI's contract for usage errors: exactly one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def no_runs(db: Path) -> bool:
    if not db.exists():
        return True
    return db_rows(db, "SELECT count(*) AS n FROM runs")[0]["n"] == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def finished_run(llm, tmp_path) -> str:
    """A completed 6-account run through the fake server; returns its run id."""
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 6))
    assert res.exit_code == 0, res.output
    return first_line(res.stdout)


# --- inspect ------------------------------------------------------------------------------

def test_inspect_json_overview(finished_run, db):
    res = run_inproc("inspect", finished_run, "--json")
    assert res.exit_code == 0, res.output
    view = json.loads(res.stdout)
    assert view["run_id"] == finished_run
    assert view["status"] == "completed"
    assert view["mock"] is False
    stages = {s["id"]: s for s in view["stages"]}
    assert [s["id"] for s in view["stages"]] == ["research", "score", "select", "write"]
    assert {k: (v["ok"], v["failed"], v["skipped"]) for k, v in stages.items()} == {
        "research": (6, 0, 0), "score": (6, 0, 0), "select": (3, 0, 0), "write": (3, 0, 0)}
    assert stages["select"]["filtered"] == 3
    totals = view["totals"]
    calls = db_rows(db, "SELECT count(*) AS n, sum(input_tokens) AS i, sum(output_tokens) AS o, "
                        "sum(cost_usd) AS c FROM llm_calls WHERE run_id = ?", [finished_run])[0]
    assert totals["llm_calls"] == calls["n"] == 15
    assert totals["tool_calls"] == 0
    assert totals["input_tokens"] == calls["i"] and totals["output_tokens"] == calls["o"]
    assert totals["cost_usd"] == pytest.approx(calls["c"], abs=1e-6) and totals["cost_usd"] > 0
    assert set(view["grid"]) == {account_id(i) for i in range(6)}
    assert view["detail"] is None


def test_inspect_item_detail_has_every_call(finished_run, llm):
    item = account_id(1)
    res = run_inproc("inspect", finished_run, "--item", item, "--json")
    assert res.exit_code == 0, res.output
    detail = json.loads(res.stdout)["detail"]
    assert detail["item"] == item
    assert {c["stage_id"] for c in detail["cells"]} == {"research", "score", "select", "write"}
    assert all(c["item_key"] == item for c in detail["cells"] + detail["llm_calls"])
    sent = [r for r in llm.requests if r["_meta"].get("item") == item]
    assert len(detail["llm_calls"]) == len(sent) >= 2
    for call in detail["llm_calls"]:
        messages = call["request"]["messages"]
        assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
        assert messages in [r["messages"] for r in sent]
        assert json.loads(call["response"]["content"])  # the model's JSON reply
        assert call["status"] == "ok"


def test_inspect_stage_detail(finished_run):
    res = run_inproc("inspect", finished_run, "--stage", "score", "--json")
    assert res.exit_code == 0, res.output
    detail = json.loads(res.stdout)["detail"]
    assert detail["stage"] == "score"
    assert len(detail["cells"]) == 6 and {c["stage_id"] for c in detail["cells"]} == {"score"}
    assert len(detail["llm_calls"]) == 6
    assert all(0 <= c["output"]["score"] <= 100 for c in detail["cells"])
    # the human view renders too
    res = run_inproc("inspect", finished_run, "--stage", "score")
    assert res.exit_code == 0 and "score" in res.stdout


def test_inspect_unknown_run_stage_and_item(finished_run):
    for args in (["inspect", "r-19990101-000000-000000"], ["inspect", finished_run, "--stage", "nope"],
                 ["inspect", finished_run, "--item", "nobody"]):
        res = run_inproc(*args)
        assert res.exit_code == 2, (args, res.output)
        line = one_line_error(res.stderr)
        assert line.startswith("error:") and res.stdout == ""


@pytest.mark.parametrize("text", ["[/x]", "drafts [wip]", "[bold]"])
def test_errors_print_brackets_as_they_are(finished_run, tmp_path, text):
    res = run_inproc("inspect", finished_run, "--item", text)
    assert res.exit_code == 2, res.output
    assert text in one_line_error(res.stderr)
    folder = tmp_path / text.replace("/", "_")
    folder.mkdir()
    res = run_inproc("run", folder / "pipeline.yaml", tmp_path / "a.csv", "--mock")
    assert res.exit_code == 2, res.output
    assert str(folder) in one_line_error(res.stderr)


def test_inspect_last_and_prefix(finished_run, db):
    last = json.loads(run_inproc("inspect", "last", "--json").stdout)
    assert last["run_id"] == finished_run
    prefix = finished_run[:-3]
    res = run_inproc("inspect", prefix, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["run_id"] == finished_run
    text = run_inproc("inspect", "last")
    assert text.exit_code == 0 and finished_run in text.stdout


# --- run --json and runs --json -----------------------------------------------------------

def test_run_json_is_one_document_on_stdout(llm, tmp_path, db):
    res = run_inproc("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 5), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # the whole of stdout is one JSON document
    assert re.fullmatch(RUN_ID, doc["run_id"])
    assert first_line(res.stderr) == doc["run_id"]  # the run id goes to stderr instead
    assert doc["status"] == "completed" and doc["exit_code"] == 0 and doc["mock"] is False
    assert {s["id"]: s["ok"] for s in doc["stages"]} == {"research": 5, "score": 5, "select": 3, "write": 3}
    assert doc["totals"]["llm_calls"] == len(llm.requests) == 13
    assert doc["totals"]["cost_usd"] > 0


def test_runs_json_newest_first(llm, tmp_path, db):
    spec, accounts = write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 4)
    first = first_line(run_inproc("run", spec, accounts).stdout)
    second = first_line(run_inproc("run", spec, accounts, "--mock").stdout)
    res = run_inproc("runs", "--json")
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)
    assert [r["run_id"] for r in runs] == [second, first]
    newest, older = runs
    for r in runs:
        assert r["pipeline"] == "outreach-test" and r["status"] == "completed"
        assert r["items"] == 4 and r["calls"] == 4 + 4 + 3
    assert newest["mock"] is True and newest["cost_usd"] == 0
    assert older["mock"] is False and older["cost_usd"] > 0
    assert json.loads(run_inproc("runs", "--json", "--limit", "1").stdout)[0]["run_id"] == second
    assert run_inproc("runs").exit_code == 0
    # a prefix shared by both runs is refused, not silently resolved to one of them
    res = run_inproc("inspect", "r-")
    assert res.exit_code == 2 and "matches 2 runs" in one_line_error(res.stderr)


def test_run_limit_and_bad_flags(tmp_path, db):
    spec, accounts = write_spec(tmp_path, "http://127.0.0.1:9/v1"), write_accounts(tmp_path, 10)
    res = run_inproc("run", spec, accounts, "--mock", "--limit", "3", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["totals"]["items"] == 3
    assert [r["item_key"] for r in db_rows(db, "SELECT item_key FROM items ORDER BY seq")] == \
        [account_id(i) for i in range(3)]
    for bad in (["--limit", "0"], ["--concurrency", "0"], ["--concurrency", "9223372036854775807"],
                ["--max-cost", "nan"], ["--max-cost", "-1"], ["--limit", "x"]):
        res = run_inproc("run", spec, accounts, "--mock", *bad)
        assert res.exit_code == 2, (bad, res.output)
        assert bad[0] in one_line_error(res.stderr) and res.stdout == ""
    assert db_rows(db, "SELECT count(*) AS n FROM runs")[0]["n"] == 1
    for args in (["resume", "last", "--max-cost", "-5"], ["resume", "last", "--max-cost", "0"],
                 ["runs", "--limit", "-1"], ["runs", "--limit", "0"]):
        res = run_inproc(*args)
        assert res.exit_code == 2, (args, res.output)
        assert "--max-cost" in one_line_error(res.stderr) or "--limit" in res.stderr


def test_export_csv_keeps_a_field_named_status_apart_from_the_cell_status(tmp_path, db):
    stages = [{"id": "s", "agent": "researcher", "prompt": "Look at {{ account.name }}",
               "output": {"status": {"type": "enum", "values": ["lead", "customer"]}, "hot": "bool"}}]
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=stages)
    run_id = first_line(run_inproc("run", spec, write_accounts(tmp_path, 3), "--mock").stdout)

    rows = list(csv.DictReader(io.StringIO(run_inproc("export", run_id, "--format", "csv").stdout)))

    assert [r["s.status"] for r in rows] == ["ok"] * 3
    assert {r["s.output.status"] for r in rows} <= {"lead", "customer"}
    assert {r["s.hot"] for r in rows} <= {"true", "false"}
    lines = [json.loads(x) for x in run_inproc("export", run_id).stdout.splitlines()]
    assert [x["s"]["status"] for x in lines] == [r["s.output.status"] for r in rows]


def test_the_grid_says_how_many_accounts_it_leaves_out(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    run_id = first_line(run_inproc("run", spec, write_accounts(tmp_path, 45), "--mock").stdout)
    env = {"COLUMNS": "200"}
    assert "5 more accounts not shown" in run_inproc("inspect", run_id, env=env).stdout
    assert "1 more account not shown" in run_inproc("inspect", run_id, "--rows", "44", env=env).stdout
    assert "not shown" not in run_inproc("inspect", run_id, "--rows", "45", env=env).stdout
    assert run_inproc("inspect", run_id, "--rows", "0").exit_code == 2


def test_validate_checks_tool_settings_like_run_does(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", extra={
        "tools": {"kb": {"type": "kb_search", "corpsu": "docs"}},
        "agents": {"researcher": {"system": "You research.", "tools": ["kb"]}}})
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "corpsu" in text)
    for args in (["validate", spec], ["run", spec, write_accounts(tmp_path, 2), "--mock"]):
        res = run_inproc(*args)
        assert res.exit_code == 2, (args, res.output)
        assert f"pipeline.yaml:{line} at tools.kb.corpsu" in one_line_error(res.stderr)
        assert "did you mean 'corpus'" in res.stderr
    res = run_inproc("validate", spec, "--json")
    assert res.exit_code == 2 and json.loads(res.stdout)["ok"] is False
    assert "tools.kb.corpsu" in json.loads(res.stdout)["error"]


def test_a_when_that_fails_on_csv_text_says_how_to_compare_numbers(tmp_path, db):
    stages = default_stages()[:2]
    stages[1] = {**stages[1], "when": "account.employees > 3"}
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=stages)
    res = run_inproc("run", spec, write_accounts(tmp_path, 2), "--mock")
    assert res.exit_code == 1, res.output
    rows = db_rows(db, "SELECT error_type, error FROM cells WHERE stage_id = 'score'")
    assert len(rows) == 2 and {r["error_type"] for r in rows} == {"SpecError"}
    assert all("account.employees | int > 100" in r["error"] for r in rows)


def test_a_column_the_accounts_file_lacks_is_a_warning_before_the_run(tmp_path, db):
    stages = default_stages()[:1]
    stages[0] = {**stages[0], "prompt": stages[0]["prompt"] + " Sector: {{ account.industy }}"}
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=stages,
                      extra={"input": {"required": []}})
    line = next(i for i, t in enumerate(spec.read_text().splitlines(), 1) if "prompt:" in t)
    accounts = write_accounts(tmp_path, 2)
    for args in (["validate", spec, accounts], ["run", spec, accounts, "--mock"]):
        res = run_inproc(*args)
        warning = next(x for x in res.stderr.splitlines() if x.startswith("warning:"))
        assert f"pipeline.yaml:{line} at stages[0].prompt: account.industy is not a column of" \
            in warning and "did you mean 'industry'?" in warning


def test_usage_errors_are_one_line(tmp_path, db):
    for args in (["run"], ["bogus"], ["runs", "--limit", "x"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert one_line_error(proc.stderr).startswith("error: ") and "--help" in proc.stderr


def test_a_closed_stdout_pipe_keeps_the_exit_code(tmp_path, db):
    """`agentctl run ... | head -1` reads the run id and goes; the run still ends as it would."""
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    proc = popen_cli("run", spec, write_accounts(tmp_path, 30), "--mock")
    run_id = proc.stdout.readline().strip()
    proc.stdout.close()  # the reader has gone
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert run_status(db, run_id) == "completed"


def two_stage_spec(tmp_path: Path, api_base: str, **kw) -> Path:
    """research -> score, no select stage."""
    return write_spec(tmp_path, api_base, stages=default_stages()[:2], **kw)


def test_provider_auth_error_fails_the_run_with_exit_2(llm, tmp_path, db):
    llm.responder = lambda body: Reply(status=401, error_type="authentication_error")
    res = run_inproc("run", two_stage_spec(tmp_path, llm.base_url, concurrency=2),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 2, res.output
    run_id = first_line(res.stdout)
    assert run_status(db, run_id) == "failed"
    error = db_rows(db, "SELECT error FROM runs WHERE run_id = ?", [run_id])[0]["error"]
    assert "authentication failed" in error and "OPENAI_API_KEY" in error
    assert "OPENAI_API_KEY" in res.stdout  # in the summary, under the stage table
    assert "score" not in {r["stage_id"] for r in db_rows(
        db, "SELECT stage_id FROM llm_calls WHERE run_id = ?", [run_id])}


def test_provider_auth_error_stops_sending_requests(llm, tmp_path, db):
    llm.latency = 0.05
    llm.responder = lambda body: Reply(status=401, error_type="authentication_error")
    res = run_inproc("run", two_stage_spec(tmp_path, llm.base_url, concurrency=2),
                     write_accounts(tmp_path, 20))
    assert res.exit_code == 2, res.output
    # the two calls in flight when the 401 came back, not one doomed call per account
    assert len(llm.requests) <= 4, len(llm.requests)


@pytest.mark.timeout(15)
def test_provider_auth_error_with_a_select_stage_does_not_hang(llm, tmp_path, db):
    """Regression: cells reaching a select barrier after the run stopped used to wait forever."""
    llm.responder = lambda body: Reply(status=401, error_type="authentication_error")
    res = run_inproc("run", write_spec(tmp_path, llm.base_url, concurrency=2),
                     write_accounts(tmp_path, 6))
    assert res.exit_code == 2, res.output
    assert run_status(db, first_line(res.stdout)) == "failed"


# --- exit codes, on a real process --------------------------------------------------------

SECRET = "sk-secret-DO-NOT-LOG-123"


def test_exit_0_on_a_real_process(tmp_path, db):
    proc = run_cli("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"), write_accounts(tmp_path, 5),
                   "--mock")
    assert proc.returncode == 0, proc.stderr
    run_id = first_line(proc.stdout)
    assert re.fullmatch(RUN_ID, run_id)
    assert run_status(db, run_id) == "completed"


def test_exit_1_and_no_secret_anywhere(llm, tmp_path, db):
    """A real run with a key and one refused account: exit 1, and the key is nowhere."""
    bad = f"[[item:{account_id(3)}]]"
    llm.responder = lambda body: (Reply(status=400, content=f"bad request for {bad}")
                                  if bad in json.dumps(body["messages"]) else None)
    proc = run_cli("run", write_spec(tmp_path, llm.base_url), write_accounts(tmp_path, 6), "--json",
                   env={"OPENAI_API_KEY": SECRET})
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "completed_with_errors" and doc["exit_code"] == 1
    assert first_line(proc.stderr) == doc["run_id"]
    counts = cell_counts(db, doc["run_id"])
    assert counts["research"] == {"ok": 5, "failed": 1}
    assert counts["write"]["ok"] == 3
    error = db_rows(db, "SELECT error FROM llm_calls WHERE status = 'error'")
    assert len(error) == 1 and "bad request" in error[0]["error"]

    # not in any column of any table, the raw file, stdout or stderr
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    tables = [r["table_name"] for r in db_rows(db, "SELECT table_name FROM information_schema.tables")]
    assert {"runs", "items", "cells", "llm_calls"} <= set(tables)
    seen = 0
    for table in tables:
        for row in db_rows(db, f'SELECT * FROM "{table}"'):
            for value in row.values():
                assert SECRET not in str(value), (table, row)
                seen += 1
    assert seen > 100
    for path in tmp_path.glob("agentctl.duckdb*"):
        assert SECRET.encode() not in path.read_bytes(), path
    assert len(llm.requests) == 6 + 5 + 3  # the key did go to the server, and only there


def test_bad_spec_exits_2_before_any_run(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    text = spec.read_text().replace("- research\n", "- reserch\n", 1)
    assert "reserch" in text
    spec.write_text(text)
    proc = run_cli("run", spec, write_accounts(tmp_path, 3), "--mock")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "reserch" in line and "pipeline.yaml" in line
    assert proc.stdout == ""
    assert no_runs(db)


def test_bad_input_exits_2_before_any_run(tmp_path, db):
    accounts = write_accounts(tmp_path, 4)
    with open(accounts, "a") as fh:
        fh.write(f"{account_id(1)},Again,again.example.com,software,5\n")  # duplicate key
    proc = run_cli("run", write_spec(tmp_path, "http://127.0.0.1:9/v1"), accounts, "--mock")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert account_id(1) in line and "accounts.csv" in line
    assert no_runs(db)


def test_missing_key_and_unreachable_api_base_exit_2(llm, tmp_path, db):
    """Both are found before the run starts; the two processes run side by side to save time."""
    accounts = write_accounts(tmp_path, 3)
    no_key = popen_cli("run", write_spec(tmp_path, llm.base_url, name="a.yaml"), accounts,
                       env={"OPENAI_API_KEY": None})
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    unreachable = popen_cli("run", write_spec(tmp_path, api_base, name="b.yaml"), accounts)
    no_key_out, no_key_err = no_key.communicate(timeout=40)
    _, unreachable_err = unreachable.communicate(timeout=40)

    assert no_key.returncode == 2, no_key_err
    line = one_line_error(no_key_err)
    assert "OPENAI_API_KEY" in line and "--mock" in line
    assert no_key_out == ""
    assert unreachable.returncode == 2, unreachable_err
    line = one_line_error(unreachable_err)
    assert "cannot reach" in line and api_base in line
    assert no_runs(db) and llm.requests == []


def test_a_model_litellm_cannot_place_is_refused_before_the_run(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    res = run_inproc("run", spec, write_accounts(tmp_path, 2), "--model", "foo")
    assert res.exit_code == 2, res.output
    line = one_line_error(res.stderr)
    assert "cannot tell which provider serves 'foo' (from --model)" in line
    assert no_runs(db)


@pytest.mark.parametrize("sig, why", [(signal.SIGINT, "interrupted by the user"),
                                      (signal.SIGHUP, "SIGHUP (the terminal or SSH session closed)")])
def test_ctrl_c_exits_130_and_keeps_finished_cells(llm, tmp_path, db, sig, why):
    """Ctrl-C, and a closed terminal or SSH session (SIGHUP: it used to kill the run like
    SIGKILL, exit 129, left `running`), stop the run cleanly."""
    llm.latency = 0.5
    n = 40
    proc = popen_cli("run", write_spec(tmp_path, llm.base_url, concurrency=4),
                     write_accounts(tmp_path, n))
    try:
        deadline = time.monotonic() + 20
        while sum(r["_status"] == 200 for r in llm.requests) < 8:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        # while it runs, the log can be read from another process (the writer only holds the
        # file while flushing)
        live = run_inproc("inspect", "last", "--json")
        assert live.exit_code == 0, live.output
        assert json.loads(live.stdout)["status"] == "running"
        proc.send_signal(sig)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert took < 8  # generous: shared CI machines are slow to tear a process down
    assert "Traceback" not in err
    run_id = first_line(out)
    assert run_status(db, run_id) == "interrupted"
    counts = cell_counts(db, run_id)
    ok = sum(c.get("ok", 0) for c in counts.values())
    assert 0 < ok < 2 * n
    assert counts["research"]["ok"] < n
    # the requests in flight at Ctrl-C have rows too: a provider may bill them
    rows = db_rows(db, "SELECT status, error_type FROM llm_calls WHERE run_id = ?", [run_id])
    assert len(rows) >= len(llm.requests)
    assert any(r["status"] == "cancelled" and r["error_type"] == "Cancelled" for r in rows)
    ended = db_rows(db, "SELECT ended_at, error FROM runs WHERE run_id = ?", [run_id])[0]
    assert ended["ended_at"] is not None and why in ended["error"]


# --- lazy imports -------------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import sys
    from agentctl.cli import main
    sys.argv = ["agentctl", *sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    else:
        code = 0
    print("PROBE", code, "litellm" in sys.modules, flush=True)
""")


def probe(*args: str) -> tuple[int, bool]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=30)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")][-1]
    _, code, imported = line.split()
    return int(code), imported == "True"


def test_read_only_commands_and_mock_runs_do_not_import_litellm(tmp_path, db):
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    accounts = write_accounts(tmp_path, 3)
    assert probe("run", spec, accounts, "--mock", "--db", db) == (0, False)
    commands = [["--help"], ["runs", "--db", db], ["inspect", "last", "--db", db],
                ["inspect", "last", "--db", db, "--json"], ["validate", spec, accounts]]
    with ThreadPoolExecutor(len(commands)) as pool:  # independent processes: run side by side
        results = list(pool.map(lambda argv: probe(*argv), commands))
    assert results == [(0, False)] * len(commands), list(zip(commands, results))


@pytest.mark.parametrize("cost, shown", [(0.00003, "$0.00003"), (0.000034, "$0.00003"),
                                         (0.0001, "$0.0001"), (0.25, "$0.2500"), (12.3, "$12.30")])
def test_money_shows_a_cheap_call_as_what_it_cost_not_zero(cost, shown):
    from agentctl.render import money

    assert money(cost) == shown


def test_version():
    from agentctl import __version__

    res = run_cli("--version")
    assert (res.returncode, res.stdout) == (0, f"agentctl {__version__}\n")


def test_stdout_a_cron_job_may_leave_does_not_crash_or_stop_a_run(tmp_path, db):
    """Closed stdout (`>&-`: a traceback at import), stdout on a full disk (the run stopped
    before any work, `failed`, exit 1), an ASCII-only stdout (exit 1 'internal error' after a
    completed run), FORCE_COLOR into a log file (live progress frames in it)."""
    spec = write_spec(tmp_path, "http://127.0.0.1:9/v1")
    accounts = write_accounts(tmp_path, 3)
    cmd = f"{sys.executable} -m agentctl.cli"
    full = subprocess.run(f"{cmd} run {spec} {accounts} --mock > /dev/full", shell=True,
                          env=subprocess_env(), stderr=subprocess.PIPE, text=True, timeout=60)
    assert full.returncode == 0, full.stderr
    assert "warning: cannot write to stdout (No space left on device)" in full.stderr
    closed = subprocess.run(f"{cmd} runs >&-", shell=True, env=subprocess_env(),
                            stderr=subprocess.PIPE, text=True, timeout=60)
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr
    ascii_out = run_cli("run", spec, accounts, "--mock", env={"PYTHONIOENCODING": "ascii"})
    assert ascii_out.returncode == 0, ascii_out.stderr
    assert "3 accounts" in ascii_out.stdout and "internal error" not in ascii_out.stderr
    colour = run_cli("run", spec, accounts, "--mock", env={"FORCE_COLOR": "1"})
    assert colour.returncode == 0 and "\x1b[" not in colour.stderr, colour.stderr
    statuses = [r["status"] for r in db_rows(db, "SELECT status FROM runs")]
    assert statuses == ["completed"] * 3
