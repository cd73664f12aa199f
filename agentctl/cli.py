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

app = typer.Typer(
    name="agentctl", add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Run YAML multi-agent LLM pipelines over lists of accounts, with a DuckDB run log.\n\n"
         "Exit codes: 0 all cells ok, 1 some cells failed, 2 bad usage/spec/input/environment, "
         "3 awaiting approval, 4 budget exceeded, 130 interrupted.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"verbose": False}

DB_HELP = "Run log file (default ./agentctl.duckdb; env AGENTCTL_DB)."


def _debug() -> bool:
    return _state["verbose"] or os.environ.get("AGENTCTL_DEBUG") not in (None, "", "0")


def guarded(fn: Callable[..., int | None]) -> int:
    """Run a command body: agentctl errors become one line on stderr and their exit code."""
    try:
        return fn() or 0
    except AgentctlError as exc:
        if _debug():
            traceback.print_exc()
        err.print(f"[red]error:[/red] {exc.one_line()}", markup=True, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except (typer.Exit, SystemExit):
        raise
    except Exception as exc:  # a bug: one line, traceback on request
        if _debug():
            traceback.print_exc()
        err.print(f"[red]internal error:[/red] {type(exc).__name__}: {exc} "
                  "(rerun with --verbose or AGENTCTL_DEBUG=1 for the traceback)", markup=True,
                  highlight=False)
        return 1


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v",
                                              help="Show tracebacks for errors.")) -> None:
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
) -> None:
    """Run PIPELINE over ACCOUNTS. Prints the run id first, then a summary."""
    from agentctl import runner

    opts = runner.RunOptions(pipeline=pipeline, accounts=accounts, db=db, concurrency=concurrency,
                             limit=limit, model=model, mock=mock)

    def body() -> int:
        prep = runner.prepare_run(opts)
        outcome = runner.execute(prep, on_run_id=lambda rid: _announce(rid, as_json),
                                 display=_display(as_json))
        return _finish(outcome, as_json)

    raise typer.Exit(guarded(body))


def _announce(run_id: str, as_json: bool) -> None:
    stream = sys.stderr if as_json else sys.stdout
    print(run_id, file=stream, flush=True)


def _finish(outcome, as_json: bool) -> int:
    from agentctl.render import run_summary

    doc = outcome.as_json()
    if as_json:
        print(json.dumps(doc, indent=2, default=str), flush=True)
    else:
        out.print(run_summary(doc))
    return outcome.exit_code


def _display(as_json: bool):
    """A coroutine factory that keeps a live progress table on stderr."""
    from agentctl.render import progress_table

    async def live(progress) -> None:
        if err.is_terminal:
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
                print(f"[{progress.elapsed:.0f}s] cells {t['cells']} ok {t['ok']} failed "
                      f"{t['failed']} calls {t['llm_calls']}", file=sys.stderr, flush=True)

    return live


@app.command()
def runs(
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP),
    limit: int = typer.Option(20, "--limit", help="How many runs to list."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """Recent runs, newest first."""
    from agentctl.runlog import queries, store
    from agentctl.render import runs_table

    def body() -> int:
        rows = queries.list_runs(store.resolve_db_path(db), limit)
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
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
    rows: int = typer.Option(40, "--rows", help="Accounts shown in the status grid."),
) -> None:
    """Explain a run: per-stage overview, account x stage grid, top errors, drill-downs."""
    from agentctl.runlog import queries, store
    from agentctl.render import inspect_view

    def body() -> int:
        data = queries.inspect_run(store.resolve_db_path(db), run_id, stage=stage, item=item,
                                   grid_limit=max(rows, 1) if not as_json else 100_000)
        if as_json:
            print(json.dumps(data, indent=2, default=str))
        else:
            out.print(inspect_view(data, grid_rows=rows))
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
        spec = load_spec(pipeline)
        doc: dict[str, Any] = {"pipeline": spec.pipeline.name, "spec": str(spec.path),
                               "stages": spec.order, "ok": True}
        if accounts is not None:
            summary = AccountsFile(accounts, spec.pipeline.input).validate()
            doc["accounts"] = {"path": summary.path, "rows": summary.rows, "format": summary.format}
        if as_json:
            print(json.dumps(doc, indent=2))
        else:
            msg = f"ok: {spec.path.name} ({spec.pipeline.name}): stages {' -> '.join(spec.order)}"
            if accounts is not None:
                msg += f"; {doc['accounts']['rows']} accounts in {accounts}"
            out.print(msg, highlight=False)
        return 0

    raise typer.Exit(guarded(body))


def main() -> None:
    try:
        app(prog_name="agentctl")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
