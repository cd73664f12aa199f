"""The command line: parse, call one core function, render, exit. No SQL, no litellm here."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from agentctl.errors import AgentctlError

# httpx's package init imports its own command-line client, and with it rich.syntax and
# pygments (~0.13 s before a run's first request) when those happen to be installed, as they
# are here; agentctl never uses it. A None entry makes that import fail fast, and httpx then
# defines a stub `httpx.main` instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

app = typer.Typer(
    name="agentctl", add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Run YAML multi-agent LLM pipelines over lists of accounts, with a DuckDB run log.\n\n"
         "Exit codes: 0 all cells ok, 1 some cells failed, 2 bad usage/spec/input/environment, "
         "3 awaiting approval, 4 budget exceeded, 130 interrupted.")
# Pipes and cron logs get a wide console, so run ids and tables are never cut short.
_WIDTH = None if (sys.stdout is not None and sys.stdout.isatty()) or os.environ.get("COLUMNS") else 160
class _Stdout(Console):
    def on_broken_pipe(self) -> None:  # rich would exit 1 here; the command's own code stands
        self.quiet = True
        _drop_stdout()


out = _Stdout(soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, width=_WIDTH)
_state = {"verbose": False}

DB_HELP = "Run log file (default ./agentctl.duckdb; env AGENTCTL_DB)."
AUTO_HELP = ("Run side-effect actions without waiting for approval, whatever the spec's "
             "`approval:` says (trusted pipelines).")
DRY_HELP = ("Record side-effect actions without executing them, whatever the spec's "
            "`approval:` says.")


def _json_value(o: Any) -> Any:
    """How --json writes what JSON has no type for: times as ISO 8601 UTC, the rest as text."""
    from datetime import datetime

    from agentctl.runlog.queries import iso_utc

    return iso_utc(o) if isinstance(o, datetime) else str(o)


def _debug() -> bool:
    return _state["verbose"] or os.environ.get("AGENTCTL_DEBUG") not in (None, "", "0")


def _show_usage_error(self: Any, file: Any = None) -> None:
    """click's usage errors as one line, like every other error (`--help` stays one away)."""
    where = self.ctx.command_path if self.ctx is not None else "agentctl"
    print(f"error: {self.format_message()} (see '{where} --help')", file=file or sys.stderr)


def _one_line_usage_errors() -> None:
    # typer parses with its own copy of click since 0.22, and with click before
    import importlib

    for name in ("click.exceptions", "typer._click.exceptions"):
        try:
            importlib.import_module(name).UsageError.show = _show_usage_error
        except (ImportError, AttributeError):
            pass


_one_line_usage_errors()


def _drop_stdout() -> None:
    """Whoever read stdout has gone (`agentctl run ... | head -1`): write the rest nowhere,
    so the command still ends with its own exit code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests)
        pass


def _print_error(label: str, text: str) -> None:
    """One red-labelled line; the text (paths, ids, the user's own values) is never markup."""
    from rich.text import Text

    err.print(Text.assemble((label, "red"), " ", " ".join(str(text).split("\n"))), highlight=False)


def guarded(fn: Callable[..., int | None]) -> int:
    """Run a command body: agentctl errors become one line on stderr and their exit code."""
    try:
        return fn() or 0
    except AgentctlError as exc:
        if _debug():
            traceback.print_exc()
        _print_error("error:", exc.one_line())
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        _drop_stdout()
        return 0
    except (typer.Exit, SystemExit):
        raise
    except Exception as exc:  # a bug: one line, traceback on request
        if _debug():
            traceback.print_exc()
        _print_error("internal error:", f"{type(exc).__name__}: {exc} "
                     "(rerun as `agentctl -v COMMAND ...` or with AGENTCTL_DEBUG=1 for the traceback)")
        return 1


def _print_version(value: bool) -> None:
    if value:
        from agentctl import __version__

        print(f"agentctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                              help="Show tracebacks for errors."),
                 version: bool = typer.Option(False, "--version", "-V", is_eager=True,
                                              callback=_print_version,
                                              help="Print agentctl's version and exit.")) -> None:
    _state["verbose"] = verbose


@app.command()
def run(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML)."),
    accounts: str = typer.Argument(..., help="Accounts file: CSV, TSV, JSONL or Parquet."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Max LLM calls in flight (default: spec defaults.concurrency)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N accounts."),
    model: Optional[str] = typer.Option(None, "--model", help="Override every model in the spec, e.g. ollama/llama3.1."),
    mock: bool = typer.Option(False, "--mock", help="Offline deterministic mock model: no keys, no cost."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help=AUTO_HELP),
    dry_actions: bool = typer.Option(False, "--dry-actions", help=DRY_HELP),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop scheduling when spending would pass this many USD (exit 4)."),
    cache: bool = typer.Option(False, "--cache", help="Reuse answers to identical requests from the run log (zero cost)."),
    replay: Optional[str] = typer.Option(None, "--replay", help="Serve every LLM answer from a recorded run (deterministic, zero cost)."),
    allow_overlap: bool = typer.Option(False, "--allow-overlap", help=(
        "Run even while another run of this spec and input is live (refused by default when "
        "the pipeline has side-effect tools: both runs would act).")),
) -> None:
    """Run PIPELINE over ACCOUNTS. Prints the run id first, then a summary."""
    from agentctl import runner

    if auto_approve and dry_actions:
        err.print("error: --auto-approve and --dry-actions contradict each other; pick one")
        raise typer.Exit(2)
    opts = runner.RunOptions(pipeline=pipeline, accounts=accounts, db=db, concurrency=concurrency,
                             limit=limit, model=model, mock=mock, auto_approve=auto_approve,
                             dry_actions=dry_actions, max_cost=max_cost, cache=cache,
                             replay=replay, allow_overlap=allow_overlap)
    runner.start_early(opts)  # the litellm import overlaps with the checks

    def body() -> int:
        prep = runner.prepare_run(opts)
        _warn_columns(prep.spec, prep.summary.columns, accounts)
        for line in prep.warnings:
            err.print(f"warning: {line}", highlight=False, markup=False)
        outcome = runner.execute(prep, on_run_id=lambda rid: _announce(rid, as_json),
                                 display=_display(as_json))
        return _finish(outcome, as_json)

    raise typer.Exit(guarded(body))


def _warn_columns(spec, columns: list[str], accounts: str) -> None:
    from agentctl.spec.checks import unknown_columns

    for line in unknown_columns(spec.columns_read, columns, accounts, spec.source):
        err.print(f"warning: {line}", highlight=False, markup=False)


def _announce(run_id: str, as_json: bool) -> None:
    stream = sys.stderr if as_json else sys.stdout
    try:
        print(run_id, file=stream, flush=True)
    except OSError as exc:
        _stdout_gone(exc)


def _stdout_gone(exc: OSError) -> None:
    """stdout cannot be written (a reader that left, a full disk, a closed terminal): the
    run goes on and ends with its own exit code; what it would have printed is in the log."""
    _drop_stdout()
    if not isinstance(exc, BrokenPipeError):
        try:
            print(f"warning: cannot write to stdout ({exc.strerror or exc}); the run goes on, "
                  "see `agentctl inspect last`", file=sys.stderr, flush=True)
        except OSError:
            pass


def _finish(outcome, as_json: bool) -> int:
    from agentctl.render import run_summary

    doc = outcome.as_json()
    if outcome.status == "failed" and outcome.error:  # cron logs must say why, on stderr
        _print_error("error:", outcome.error)
    try:
        if as_json:
            print(json.dumps(doc, indent=2, default=_json_value), flush=True)
        else:
            out.print(run_summary(doc))
            sys.stdout.flush()
    except OSError as exc:
        _stdout_gone(exc)
    return outcome.exit_code


def _display(as_json: bool):
    """A coroutine factory that keeps a live progress table on stderr."""
    from agentctl.render import progress_table

    async def live(progress) -> None:
        # a real terminal only: FORCE_COLOR (set by many CI systems) makes rich call a log
        # file a terminal, and the live table would write ~5 KB/s of frames into it
        if err.is_terminal and sys.stderr.isatty():
            from rich.live import Live

            with Live(progress_table(progress), console=err, refresh_per_second=4,
                      transient=False) as view:
                while True:
                    await asyncio.sleep(0.25)
                    view.update(progress_table(progress))
        else:  # cron / CI logs: a plain line now and then
            while True:
                await asyncio.sleep(15)
                t = progress.totals()
                waiting = progress.waiting_note()
                print(f"[{progress.elapsed:.0f}s] cells {t['cells']} ok {t['ok']} failed "
                      f"{t['failed']} calls {t['llm_calls']}" + (f" ({waiting})" if waiting else ""),
                      file=sys.stderr, flush=True)

    return live


@app.command()
def runs(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    limit: int = typer.Option(20, "--limit", min=1, help="How many runs to list."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Recent runs, newest first."""
    from agentctl.runlog import queries, store
    from agentctl.render import runs_table

    def body() -> int:
        rows = queries.list_runs(store.resolve_db_path(db), limit)
        if as_json:
            print(json.dumps(rows, indent=2, default=_json_value))
        else:
            out.print(runs_table(rows))
        return 0

    raise typer.Exit(guarded(body))


@app.command()
def inspect(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix works; 'last' = newest)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Drill into one stage's cells."),
    item: Optional[str] = typer.Option(None, "--item", help="Drill into one account: cells and every LLM call."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    rows: int = typer.Option(40, "--rows", min=1, help="Accounts shown in the status grid (--json has them all)."),
) -> None:
    """Explain a run: per-stage overview, account x stage grid, top errors, drill-downs."""
    from agentctl.runlog import queries, store
    from agentctl.render import inspect_view

    def body() -> int:
        data = queries.inspect_run(store.resolve_db_path(db), run_id, stage=stage, item=item,
                                   grid_limit=rows if not as_json else 100_000)
        if as_json:
            print(json.dumps(data, indent=2, default=_json_value))
        else:
            out.print(inspect_view(data, grid_rows=rows))
        return 0

    raise typer.Exit(guarded(body))


@app.command()
def export(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix works; 'last' = newest)."),
    stage: Optional[str] = typer.Option(None, "--stage", help="One stage; a reduce stage exports its run-level output as JSON."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one account per line) or csv (stage.status and stage.field columns; a field named status is stage.output.status)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write a run's outputs to stdout: per account (JSON Lines or CSV), or a reduce stage's run-level output."""
    from agentctl.export import render
    from agentctl.runlog import queries, store

    def body() -> int:
        if fmt not in ("jsonl", "csv"):
            raise_usage("--format takes jsonl or csv")
        data = queries.export_data(store.resolve_db_path(db), run_id, stage=stage)
        sys.stdout.write(render(data, fmt))
        return 0

    raise typer.Exit(guarded(body))


@app.command()
def validate(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML)."),
    accounts: Optional[str] = typer.Argument(None, help="Accounts file to check against the spec."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Check a spec (and optionally an accounts file) without calling any model."""
    from agentctl.inputs import AccountsFile
    from agentctl.spec import load_spec

    def body() -> int:
        try:
            return check()
        except AgentctlError as exc:
            if as_json:  # a JSON reader gets its answer too; the line goes to stderr as ever
                print(json.dumps({"ok": False, "error": exc.one_line()}, indent=2))
            raise

    def check() -> int:
        from agentctl.runner import build_registry

        spec = load_spec(pipeline)
        build_registry(spec)  # every tool's settings, as `run` checks them (nothing is started)
        kinds = {sid: spec.pipeline.stage(sid).type for sid in spec.order}
        doc: dict[str, Any] = {"pipeline": spec.pipeline.name, "spec": str(spec.path),
                               "stages": spec.order, "kinds": kinds, "ok": True}
        if accounts is not None:
            summary = AccountsFile(accounts, spec.pipeline.input).validate()
            doc["accounts"] = {"path": summary.path, "rows": summary.rows, "format": summary.format}
            _warn_columns(spec, summary.columns, accounts)
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            shown = [sid + (f" [{kinds[sid]}]" if kinds[sid] != "agent" else "") for sid in spec.order]
            msg = f"ok: {spec.path.name} ({spec.pipeline.name}): stages {' -> '.join(shown)}"
            if accounts is not None:
                msg += f"; {doc['accounts']['rows']} accounts in {accounts}"
            out.print(msg, highlight=False, markup=False)
        return 0

    raise typer.Exit(guarded(body))


@app.command()
def resume(
    run_id: str = typer.Argument(..., help="Run id (prefix or 'last')."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Summary as JSON on stdout."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="A new spending limit in USD for the whole run, what it has spent so far included."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help=AUTO_HELP),
    dry_actions: bool = typer.Option(False, "--dry-actions", help=DRY_HELP),
) -> None:
    """Continue an interrupted or crashed run, and execute approved actions exactly once.

    Finished cells are kept, unfinished ones run; the spec and input stored with the run are
    used. Approved actions run once; rejected ones are recorded as such. The run's own
    --auto-approve/--dry-actions still hold unless given again here."""
    _continue(run_id, db, as_json, max_cost=max_cost, auto_approve=auto_approve,
              dry_actions=dry_actions)


@app.command()
def retry(
    run_id: str = typer.Argument(..., help="Run id (prefix or 'last')."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Only cells of this stage (and what depends on them)."),
    failed: bool = typer.Option(True, "--failed/--not-ok", help="Re-run failed cells (default), or every cell that is not ok."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="Summary as JSON on stdout."),
    auto_approve: bool = typer.Option(False, "--auto-approve", help=AUTO_HELP),
    dry_actions: bool = typer.Option(False, "--dry-actions", help=DRY_HELP),
) -> None:
    """Re-run failed cells and what depends on them, inside the same run (earlier attempts stay in the log)."""
    _continue(run_id, db, as_json, retry_failed=failed, retry_stage=stage, retrying=True,
              auto_approve=auto_approve, dry_actions=dry_actions)


def _continue(run_id: str, db: str | None, as_json: bool, *, retry_failed: bool = False,
              retry_stage: str | None = None, retrying: bool = False,
              max_cost: float | None = None, auto_approve: bool = False,
              dry_actions: bool = False) -> None:
    from agentctl import runner

    def body() -> int:
        from agentctl.errors import NothingToResume
        from agentctl.resume import prepare_resume

        try:
            prep, state, warnings = prepare_resume(
                run_id, db, retry=retrying, retry_failed=retry_failed if retrying else False,
                retry_stage=retry_stage, max_cost=max_cost, auto_approve=auto_approve,
                dry_actions=dry_actions)
        except NothingToResume as done:  # not an error: the run is left as it ended
            err.print(done.message, highlight=False, markup=False)
            return done.exit_code
        for w in warnings:
            err.print(f"warning: {w}", highlight=False, markup=False)
        outcome = runner.execute(prep, on_run_id=lambda rid: _announce(rid, as_json),
                                 display=_display(as_json), resume=state)
        return _finish(outcome, as_json)

    raise typer.Exit(guarded(body))


@app.command()
def review(
    run_id: str = typer.Argument(..., help="Run id (prefix or 'last')."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    export: Optional[str] = typer.Option(None, "--export", help="'csv' writes the table as CSV to stdout."),
    show_all: bool = typer.Option(False, "--all", help="Include decided and executed actions."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Pending side-effect actions of a run, with the upstream outputs that led to them."""
    from agentctl import approvals
    from agentctl.render import review_table
    from agentctl.runlog import store

    def body() -> int:
        if export not in (None, "csv"):
            raise_usage("--export supports only 'csv'")
        doc = approvals.review(store.resolve_db_path(db), run_id, include_decided=show_all)
        if export == "csv":
            sys.stdout.write(approvals.to_csv(doc))
        elif as_json:
            print(json.dumps(doc, indent=2, default=_json_value))
        else:
            out.print(review_table(doc))
        return 0

    raise typer.Exit(guarded(body))


def raise_usage(message: str) -> None:
    from agentctl.errors import UsageError

    raise UsageError(message)


def _decide(decision: str, run_id: str, all_: bool, items: str | None, where: str | None,
            action: str | None, by: str | None, note: str | None, db: str | None,
            as_json: bool) -> None:
    from agentctl import approvals
    from agentctl.runlog import store

    def body() -> int:
        res = approvals.decide(store.resolve_db_path(db), run_id, decision=decision, all_=all_,
                               items=items,
                               where=where, actions=[action] if action else None, by=by, note=note)
        if as_json:
            print(json.dumps(res, indent=2))
        else:
            out.print(f"{res['decision']} {res['changed']} action(s) in {res['run_id']} as {res['by']}; "
                      f"{res['pending_after']} still pending. Next: agentctl resume {res['run_id']}",
                      highlight=False, markup=False)
        return 0

    raise typer.Exit(guarded(body))


_SEL = dict(
    all_=typer.Option(False, "--all", help="Every pending action."),
    items=typer.Option(None, "--items", help="Comma-separated account keys (a key that holds a comma "
                                             "is taken whole when it matches one)."),
    where=typer.Option(None, "--where", help="Condition on stage outputs, e.g. \"score.score >= 80\"."),
    action=typer.Option(None, "--action", help="One action id (from review)."),
    by=typer.Option(None, "--by", help="Who decides (default: the OS user)."),
    note=typer.Option(None, "--note", help="A note stored with the decision."),
)


def _decision_command(decision: str, doc: str):
    """`approve` and `reject` take the same selectors; one definition serves both."""

    def command(
        run_id: str = typer.Argument(..., help="Run id (prefix or 'last')."),
        all_: bool = _SEL["all_"], items: Optional[str] = _SEL["items"],
        where: Optional[str] = _SEL["where"], action: Optional[str] = _SEL["action"],
        by: Optional[str] = _SEL["by"], note: Optional[str] = _SEL["note"],
        db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
        as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    ) -> None:
        _decide(decision, run_id, all_, items, where, action, by, note, db, as_json)

    command.__doc__ = doc
    return command


app.command(name="approve")(_decision_command(
    "approved", "Approve pending actions; `agentctl resume RUN_ID` then executes them exactly once."))
app.command(name="reject")(_decision_command(
    "rejected", "Reject pending actions; they are never executed."))


@app.command()
def plan(
    pipeline: str = typer.Argument(..., help="Pipeline spec (YAML)."),
    accounts: str = typer.Argument(..., help="Accounts file."),
    sample: int = typer.Option(3, "--sample", help="How many accounts to run for real."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Concurrency to project wall time for."),
    model: Optional[str] = typer.Option(None, "--model", help="Override every model in the spec."),
    mock: bool = typer.Option(False, "--mock", help="Structure only: calls and tokens, no cost."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Run a sample of ACCOUNTS and project calls, tokens, cost and time for the whole file.

    Side-effect actions in the sample are recorded, never executed (--dry-actions)."""
    from agentctl import runner
    from agentctl.inputs import AccountsFile
    from agentctl.plan import project
    from agentctl.render import plan_table
    from agentctl.runlog import queries

    def body() -> int:
        if sample < 1:
            raise_usage("--sample must be at least 1")
        opts = runner.RunOptions(pipeline=pipeline, accounts=accounts, db=db, limit=sample,
                                 concurrency=concurrency, model=model, mock=mock, dry_actions=True,
                                 plan_sample=True)
        prep = runner.prepare_run(opts)
        total = AccountsFile(accounts, prep.spec.pipeline.input).validate().rows
        outcome = runner.execute(prep, on_run_id=lambda rid: print(f"sample run {rid}", file=sys.stderr),
                                 display=None)
        data = queries.inspect_run(prep.db_path, outcome.run_id)
        doc = project(data, total_items=total, sample_items=prep.summary.rows, spec=prep.spec,
                      concurrency=prep.concurrency)
        if as_json:
            print(json.dumps(doc, indent=2, default=_json_value))
        else:
            out.print(plan_table(doc))
        return 0

    raise typer.Exit(guarded(body))


def _usable_streams() -> None:
    """stdout/stderr as cron jobs and wrappers leave them: a closed one (None) writes to
    /dev/null; one whose encoding cannot hold every character (LC_ALL=C without Python's UTF-8
    mode, PYTHONIOENCODING=ascii) writes '?' for those instead of failing after the run."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        elif (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "") != "utf8":
            try:
                stream.reconfigure(errors="replace")
            except (AttributeError, ValueError):
                pass


def main() -> None:
    _usable_streams()
    try:
        app(prog_name="agentctl")
    except KeyboardInterrupt:
        code: object = 130
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if "litellm" in sys.modules:
        # Tearing down litellm's module graph takes ~1 s and does nothing we need: the run
        # log and the HTTP clients are closed by now. Run atexit hooks, flush, leave.
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))
    sys.exit(code)


if __name__ == "__main__":
    main()
