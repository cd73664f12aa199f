"""The bad-input corpus: every malformed spec, accounts file and environment in
``tests/bad_inputs/`` goes through the real CLI in a subprocess and must be refused the same
way: exit 2, exactly one line on stderr naming what is wrong and where, no traceback, nothing
on stdout (no run id), and no run left behind in the log (or, for a failure that can only
happen after the run started, a run marked ``failed``, never ``running``).

One folder per case: ``spec.yaml``, ``accounts.csv`` (or the file the case names), optional
prompt files, and ``case.toml``:

    about = "what is wrong"             # for people
    kind = "spec"                       # spec | input | env; spec and input cases also
                                        # go through `agentctl validate`
    exit_code = 2
    contains = ["spec.yaml:12", "stages[1].needs[0]", "did you mean"]   # all must appear
    spec = "spec.yaml"                  # optional: the spec argument (may not exist)
    accounts = "accounts.csv"           # optional: the accounts argument (may not exist)
    args = ["--limit", "0"]             # optional: more `run` arguments
    mock = true                         # optional: false runs without --mock (imports litellm)
    env = { OPENAI_API_KEY = "sk-test" }  # optional: extra environment
    db = "run.duckdb"                   # optional: the --db path, relative to the case folder
    db_setup = "directory"              # optional: directory | garbage | chmod000
    make_parquet = { from = "rows.csv", to = "accounts.parquet" }   # optional: built at test time
    run_may_start = false               # optional: true allows a run row marked 'failed'
    xfail = "why"                       # optional: a known bug in the message (strict xfail)
    xfail_refusal = "why"               # optional: a known bug in exit code / lines / run log

Every case runs in a copy of its folder under a temp dir. All subprocesses of the selected
cases are started together from a thread pool once per module, so the corpus costs a few
seconds of wall time rather than one per case.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.conftest import CLOSED_PROXY, LOOPBACK, PROVIDER_KEYS, PROVIDER_PREFIXES

CORPUS = Path(__file__).parent / "bad_inputs"
KINDS = ("spec", "input", "env")
CASE_KEYS = {"about", "kind", "exit_code", "contains", "spec", "accounts", "args", "mock", "env",
             "db", "db_setup", "make_parquet", "run_may_start", "xfail", "xfail_refusal"}
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TIMEOUT_S = 120  # per subprocess; generous because a busy CI box can be several times slower

# The whole corpus runs in the first test's fixture (~70 CPU-seconds of subprocesses, so
# ~35 s on two idle cores): the per-test limit is raised for this module only.
pytestmark = pytest.mark.timeout(600)


def load_cases() -> dict[str, dict[str, Any]]:
    cases = {}
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        with open(folder / "case.toml", "rb") as fh:
            cases[folder.name] = tomllib.load(fh)
    return cases


CASES = load_cases()


def needs_root_skip(case: dict[str, Any]) -> bool:
    # root ignores file permissions, so a chmod 000 run log is writable for it
    return case.get("db_setup") == "chmod000" and IS_ROOT


def case_params(xfail_key: str) -> list:
    params = []
    for name, case in CASES.items():
        marks = []
        if case.get(xfail_key):
            marks.append(pytest.mark.xfail(strict=True, reason=case[xfail_key]))
        if needs_root_skip(case):
            marks.append(pytest.mark.skip(reason="running as root: permissions are not enforced"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


# --- running a case -------------------------------------------------------------------------

@dataclass
class Result:
    argv: list[str]
    code: int
    stdout: str
    stderr: str


@dataclass
class Outcome:
    folder: Path
    db: Path
    db_before: bytes | None
    results: dict[str, Result] = field(default_factory=dict)  # "run", "validate"


def clean_env(db: Path, extra: dict[str, str]) -> dict[str, str]:
    """Like conftest's `isolated`, for a subprocess: no keys, no internet, our own run log."""
    env = {k: v for k, v in os.environ.items()
           if k not in PROVIDER_KEYS and not k.startswith(PROVIDER_PREFIXES)
           and k not in ("FORCE_COLOR", "AGENTCTL_DEBUG")}
    env.update({"AGENTCTL_DB": str(db), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False", "NO_PROXY": LOOPBACK, "no_proxy": LOOPBACK})
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[key] = env[key.lower()] = CLOSED_PROXY
    env.update(extra)
    return env


def prepare(name: str, case: dict[str, Any], root: Path) -> Outcome:
    folder = root / name
    shutil.copytree(CORPUS / name, folder)
    if "make_parquet" in case:
        src, dst = folder / case["make_parquet"]["from"], folder / case["make_parquet"]["to"]
        duckdb.sql(f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true)) "
                   f"TO '{dst}' (FORMAT parquet)")
    db = folder / case.get("db", "agentctl.duckdb")
    setup = case.get("db_setup")
    if setup == "directory":
        db.mkdir(parents=True)
    elif setup == "garbage":
        db.write_bytes(os.urandom(4096))
    elif setup == "chmod000":
        db.parent.mkdir(parents=True, exist_ok=True)
        duckdb.connect(str(db)).close()
        db.chmod(0)
    elif setup is not None:
        raise ValueError(f"{name}: unknown db_setup {setup!r}")
    before = db.read_bytes() if db.is_file() and os.access(db, os.R_OK) else None
    return Outcome(folder, db, before)


def commands(case: dict[str, Any], outcome: Outcome) -> dict[str, list[str]]:
    spec, accounts = case.get("spec", "spec.yaml"), case.get("accounts", "accounts.csv")
    cli = [sys.executable, "-m", "agentctl.cli"]
    run = [*cli, "run", spec, accounts, "--db", str(outcome.db), *case.get("args", [])]
    if case.get("mock", True):
        run.append("--mock")
    out = {"run": run}
    if case["kind"] in ("spec", "input"):
        out["validate"] = [*cli, "validate", spec, accounts]
    return out


def execute(argv: list[str], cwd: Path, env: dict[str, str]) -> Result:
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              errors="replace", timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:  # fails this case only, not the whole corpus
        def text(data: bytes | str | None) -> str:  # bytes here even with text=True
            return data.decode(errors="replace") if isinstance(data, bytes) else data or ""
        return Result(argv, -1, text(exc.stdout),
                      text(exc.stderr) + f"\n[test: no exit within {TIMEOUT_S}s]")
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Run every selected case (run and validate) in parallel, once per module."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if item.module is sys.modules[__name__] and hasattr(item, "callspec")
                and "name" in item.callspec.params}
    root = tmp_path_factory.mktemp("bad_inputs")
    prepared: dict[str, Outcome] = {}
    jobs = []
    for name in sorted(selected):
        case = CASES[name]
        if needs_root_skip(case):
            continue
        outcome = prepared[name] = prepare(name, case, root)
        env = clean_env(outcome.folder / "agentctl.duckdb", case.get("env", {}))
        for label, argv in commands(case, outcome).items():
            jobs.append((name, label, argv, outcome.folder, env))
    # slow jobs (no --mock: they import litellm) first, so they overlap with the rest
    jobs.sort(key=lambda j: CASES[j[0]].get("mock", True))
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 2) as pool:
        futures = [(name, label, pool.submit(execute, argv, cwd, env))
                   for name, label, argv, cwd, env in jobs]
        for name, label, future in futures:
            prepared[name].results[label] = future.result()
    return prepared


# --- the checks ------------------------------------------------------------------------------

def describe(res: Result) -> str:
    return f"$ {' '.join(res.argv)}\nexit {res.code}\nstdout: {res.stdout!r}\nstderr: {res.stderr!r}"


def check_refused(case: dict[str, Any], res: Result) -> str:
    """Exit code, one line on stderr, no traceback, empty stdout; returns the message."""
    why = describe(res)
    assert "Traceback" not in res.stderr + res.stdout, why
    assert res.code == case["exit_code"], why
    assert res.stdout == "", f"nothing (no run id) may be printed on stdout\n{why}"
    message = res.stderr[:-1] if res.stderr.endswith("\n") else res.stderr
    assert message.strip() and "\n" not in message, f"stderr must be exactly one line\n{why}"
    assert message.startswith("error: "), why
    return message


def check_run_log(case: dict[str, Any], outcome: Outcome) -> None:
    """No run row, or (only where allowed) a run marked failed; a foreign file is untouched."""
    db = outcome.db
    if outcome.db_before is not None and outcome.db_before[8:12] != b"DUCK":
        assert db.read_bytes() == outcome.db_before, f"{db} (not a run log) was modified"
        return
    if not db.is_file() or not os.access(db, os.R_OK):
        return  # never created, a directory the run refused, or a chmod 000 file
    con = duckdb.connect(str(db), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_name = 'runs'").fetchone()[0]:
            return
        statuses = [r[0] for r in con.execute("SELECT status FROM runs").fetchall()]
    finally:
        con.close()
    if case.get("run_may_start"):
        assert all(s == "failed" for s in statuses), f"runs left as {statuses}"
    else:
        assert statuses == [], f"a run row was written before the check failed: {statuses}"


def test_corpus_is_complete_and_well_formed():
    assert len(CASES) >= 40
    for name, case in CASES.items():
        assert set(case) <= CASE_KEYS, f"{name}: unknown keys {set(case) - CASE_KEYS}"
        assert case.get("kind") in KINDS and case.get("exit_code") == 2, name
        assert case.get("about") and case.get("contains"), name
        folder = CORPUS / name
        files = {p.name for p in folder.iterdir()}
        assert case.get("spec", "spec.yaml") in files or case["kind"] == "spec", name
    kinds = [case["kind"] for case in CASES.values()]
    assert min(kinds.count(k) for k in KINDS) >= 8


@pytest.mark.parametrize("name", case_params("xfail_refusal"))
def test_bad_input_is_refused_in_one_line(name, outcomes):
    """Exit 2, one line, no traceback, no run id, no run row (or a failed one) -- run and validate."""
    case, outcome = CASES[name], outcomes[name]
    assert set(outcome.results) == ({"run", "validate"} if case["kind"] != "env" else {"run"})
    for res in outcome.results.values():
        check_refused(case, res)
    check_run_log(case, outcome)


@pytest.mark.parametrize("name", case_params("xfail"))
def test_bad_input_message_says_where_and_how(name, outcomes):
    """The one line names the file / YAML path / row / column and says how to fix it."""
    case, outcome = CASES[name], outcomes[name]
    for res in outcome.results.values():
        message = res.stderr.strip()
        missing = [s for s in case["contains"] if s not in message]
        assert not missing, f"message lacks {missing}\n{describe(res)}"
