"""`agentctl run`, as one function: check everything, open the log, run the engine, finish.

The CLI calls `prepare_run` (all checks that can fail with exit 2, before any model call or
run row) and then `execute` (which owns the event loop, signals and the run's final status).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from agentctl import __version__
from agentctl.engine.plan import StagePlan, build_routes, compile_plan
from agentctl.engine.progress import RunProgress
from agentctl.engine.scheduler import Engine
from agentctl.errors import AgentctlError, ConfigError, SpecError
from agentctl.inputs import AccountsFile, InputSummary
from agentctl.llm.caller import ModelCaller, RetryPolicy
from agentctl.llm.limiter import PriorityLimiter
from agentctl.preflight import allow_open_files, check_budget_prices, check_provider_env
from agentctl.runlog import store
from agentctl.runlog.recorder import RunRecorder, new_run_id
from agentctl.runlog.writer import utcnow
from agentctl.spec.loader import LoadedSpec, load_spec

if TYPE_CHECKING:
    from agentctl.resume import ResumeState

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE, EXIT_AWAITING, EXIT_BUDGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


@dataclass
class RunOptions:
    pipeline: str
    accounts: str
    db: str | None = None
    concurrency: int | None = None
    limit: int | None = None
    model: str | None = None
    mock: bool = False
    auto_approve: bool = False
    dry_actions: bool = False
    max_cost: float | None = None
    cache: bool = False
    replay: str | None = None
    max_cost_overrides: bool = False   # resume --max-cost: replaces the stored spec's max_usd
    plan_sample: bool = False          # `agentctl plan`'s sample run (tagged so in `runs`)
    allow_overlap: bool = False        # run even while a live run of this spec and input acts

    def as_args(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Prepared:
    options: RunOptions
    spec: LoadedSpec
    accounts: AccountsFile
    summary: InputSummary
    db_path: Path
    plans: list[StagePlan]
    concurrency: int
    warnings: list[str] = field(default_factory=list)  # printed before the run starts


@dataclass
class RunOutcome:
    run_id: str
    status: str
    exit_code: int
    totals: dict[str, Any]
    progress: RunProgress
    error: str | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "exit_code": self.exit_code,
                "mock": self.progress.mock, "error": self.error,
                "elapsed_s": round(self.progress.elapsed, 3),
                "stages": [{"id": c.stage_id, "kind": c.kind, "ok": c.ok, "failed": c.failed,
                            "skipped": c.skipped, "filtered": c.filtered,
                            "awaiting_approval": c.awaiting, "llm_calls": c.calls,
                            "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                            "cost_usd": round(c.cost_usd, 6), "unpriced_calls": c.unpriced_calls}
                           for c in self.progress.stages.values()],
                "totals": self.totals}


def start_early(opts: RunOptions) -> None:
    """Before any check: start importing litellm on a thread, so the import overlaps with the
    checks' I/O (it is CPU-bound, so it cannot overlap with their CPU)."""
    if opts.mock or opts.replay:
        return
    from agentctl.llm.litellm_client import preload_litellm

    preload_litellm()


MAX_CONCURRENCY = 4096  # the spec's own ceiling for defaults.concurrency


def check_flags(opts: RunOptions) -> None:
    """The numeric flags `run`, `resume` and `retry` share."""
    if opts.concurrency is not None and not 1 <= opts.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, "
                          f"got {opts.concurrency}")
    if opts.max_cost is not None and not (math.isfinite(opts.max_cost) and opts.max_cost > 0):
        raise ConfigError(f"--max-cost must be a positive amount of USD, got {opts.max_cost:g}")


def prepare_run(opts: RunOptions) -> Prepared:
    """Every check that can reject the run, before a run row exists or a model is called."""
    spec = load_spec(opts.pipeline, model_override=opts.model)
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError("--limit must be a positive number of accounts")
    check_flags(opts)
    accounts = AccountsFile(opts.accounts, spec.pipeline.input, limit=opts.limit)
    summary = accounts.validate()
    db_path = store.resolve_db_path(opts.db)
    store.check_file(db_path, for_write=True)
    if opts.replay and opts.mock:
        raise ConfigError("--replay and --mock contradict each other; pick one")
    if opts.replay:
        from agentctl.runlog import queries

        if not db_path.exists():
            raise ConfigError(f"--replay {opts.replay}: no run log at {db_path}")
        with store.connect(db_path, read_only=True) as con:
            opts.replay = queries.resolve_run_id(con, opts.replay)  # 'last' means before this run
    if not opts.mock and not opts.replay:
        check_provider_env(spec)
    if spec.pipeline.tools:
        build_registry(spec)  # validates every tool's settings now (exit 2 before any run row)
    plans = compile_plan(spec)
    concurrency = opts.concurrency or spec.pipeline.defaults.concurrency
    prep = Prepared(opts, spec, accounts, summary, db_path, plans, concurrency)
    check_budget_prices(prep)
    prep.warnings += check_overlap(prep)
    allow_open_files(concurrency)
    return prep


def check_overlap(prep: Prepared) -> list[str]:
    """Another live run of this very spec and input: a cron job started again before the last
    one ended. The action ledger keeps each run's actions exactly-once, not two runs' together,
    so a pipeline that can act is refused; one that cannot is warned (it pays twice)."""
    from agentctl.runlog import queries

    opts = prep.options
    if opts.allow_overlap or opts.replay or opts.plan_sample or not prep.db_path.exists():
        return []
    twins = queries.live_runs_of(prep.db_path, prep.spec.sha256, prep.summary.sha256)
    if not twins:
        return []
    twin = twins[0]
    where = (f"run {twin['run_id']} of this spec and input is still running (pid {twin['pid']} "
             f"on {twin['host']}, started {queries.iso_utc(twin['started_at'])})")
    tools = prep.spec.pipeline.tools.values()
    if not opts.dry_actions and any(t.type in ("send_email", "crm_upsert") or t.side_effects
                                    for t in tools):
        raise ConfigError(f"{where}; a second run would execute its side-effect actions (emails, "
                          "CRM writes) again: wait for it to end, or pass --allow-overlap to run "
                          "anyway")
    return [f"{where}; this run repeats its work and its spend (--allow-overlap: no warning)"]


def make_client(prep: "Prepared", *, run_id: str, resuming: bool, tool_args=None):
    """The client chain: replay, or (cache ->) mock or litellm."""
    from agentctl.runlog import queries

    opts = prep.options
    if opts.replay:
        from agentctl.llm.replay import ReplayClient

        return ReplayClient(*queries.recording(prep.db_path, opts.replay))
    if opts.mock:
        from agentctl.llm.mock import MockClient

        inner = MockClient(tool_args=tool_args)
    else:
        from agentctl.llm.litellm_client import LiteLLMClient

        inner = LiteLLMClient()
    if resuming or opts.cache:
        from agentctl.llm.replay import CachingClient

        _, by_hash = queries.recorded_calls(prep.db_path, run_id if resuming and not opts.cache
                                            else None, mock=opts.mock)
        return CachingClient(inner, by_hash)
    return inner


def make_budget(prep: "Prepared", resume: "ResumeState | None" = None):
    """Budget from the spec and --max-cost (the stricter wins; `resume --max-cost` replaces
    max_usd); None when unlimited. The limits are the whole run's: a resume or retry starts
    from what the run spent before."""
    spec_budget = prep.spec.pipeline.budget
    max_usd = spec_budget.max_usd if spec_budget else None
    if prep.options.max_cost is not None:
        max_usd = (prep.options.max_cost if max_usd is None or prep.options.max_cost_overrides
                   else min(max_usd, prep.options.max_cost))
    per_item = spec_budget.per_item_usd if spec_budget else None
    if max_usd is None and per_item is None:
        return None
    from agentctl.llm.budget import Budget

    before = dict(resume.used["spent"]) if resume is not None else {}
    if prep.options.mock or prep.options.replay:
        return Budget(max_usd, per_item, price=lambda req, i, o: 0.0, before=before)
    from agentctl.llm.litellm_client import price_of

    def price(req, in_tok: int, out_tok: int) -> float | None:
        p = req.meta.get("price")
        if p:
            return (in_tok * p["input_per_mtok"] + out_tok * p["output_per_mtok"]) / 1e6
        return price_of(req.model, in_tok, out_tok)

    return Budget(max_usd, per_item, price=price, before=before)


def approval_mode(opts: RunOptions) -> str | None:
    """The CLI's word on actions, which beats the spec's per-stage `approval`."""
    if opts.dry_actions:
        return "dry_run"
    if opts.auto_approve:
        return "auto"
    return None


# Signals that stop a run cleanly (cells in flight logged as cancelled, the run `interrupted`,
# resumable); SIGHUP is a closed terminal or SSH session.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, name))


def execute(prep: Prepared, *, on_run_id: Callable[[str], None],
            display: Callable[[RunProgress], Any] | None = None,
            resume: "ResumeState | None" = None) -> RunOutcome:
    """Run (or resume) the pipeline; returns the outcome. The one `asyncio.run` lives here."""
    opts = prep.options
    created = utcnow()  # the run's start, whatever the run log's lock makes it wait for
    run_id = resume.run_id if resume else new_run_id(created)
    progress = RunProgress(mock=opts.mock)
    if resume is not None:
        progress.prior_usage, progress.tool_calls = resume.used["stages"], resume.used["tool_calls"]
    recorder = RunRecorder(prep.db_path, run_id).open()
    box: dict[str, Any] = {"started": False, "created": created}
    status, error = "failed", None
    try:
        status, error = asyncio.run(_main(prep, run_id, recorder, progress, display, on_run_id,
                                          box, resume))
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except AgentctlError as exc:
        status, error = "failed", exc.one_line()
        raise
    finally:
        totals = progress.totals()
        try:
            if box["started"]:
                recorder.finish_run(status, totals, error)
        finally:
            recorder.close()
    code = exit_code_for(status, totals)
    return RunOutcome(run_id, status, code, totals, progress, error)


def exit_code_for(status: str, totals: dict[str, Any]) -> int:
    return {"completed": EXIT_OK, "completed_with_errors": EXIT_FAILED_CELLS,
            "awaiting_approval": EXIT_AWAITING, "budget_exceeded": EXIT_BUDGET,
            "interrupted": EXIT_INTERRUPTED, "failed": EXIT_USAGE}.get(status, 1)


def build_registry(spec: LoadedSpec):
    if not spec.pipeline.tools:
        return None
    from agentctl.tools.registry import ToolRegistry

    try:
        return ToolRegistry.from_spec(spec.pipeline.tools, spec_dir=spec.path.parent,
                                      spec_file=spec.source.file)
    except SpecError as exc:  # the tool names the YAML path; the spec's line map knows its line
        if exc.line is None and exc.path and spec.source is not None:
            line = spec.source.line(exc.path)
            raise SpecError(exc.detail, file=exc.file, path=exc.path, line=line,
                            hint=exc.hint) from None
        raise


async def _main(prep: Prepared, run_id: str, recorder: RunRecorder, progress: RunProgress,
                display, on_run_id, box: dict, resume: "ResumeState | None") -> tuple[str, str | None]:
    opts, spec = prep.options, prep.spec
    loop = asyncio.get_running_loop()
    registry = build_registry(spec)
    if registry is not None:
        await registry.start()  # MCP servers up before any run row or model call
    try:
        if resume is None:
            recorder.start_run(
                pipeline=spec.pipeline.name, spec_path=str(spec.path), spec_text=spec.text,
                spec_sha256=spec.sha256,
                prompts={"order": spec.order, "kinds": {p.id: p.kind for p in prep.plans},
                         "stages": spec.prompts, "agents": spec.systems},
                input_path=str(Path(opts.accounts).resolve()), input_sha256=prep.summary.sha256,
                input_rows=prep.summary.rows, args=opts.as_args(), mock=opts.mock,
                version=__version__, started_at=box["created"])
        else:
            recorder.mark_running()
        box["started"] = True
        on_run_id(run_id)
        return await _drive(prep, run_id, recorder, progress, display, registry, resume, loop)
    finally:
        if registry is not None:
            await registry.aclose()


async def _drive(prep: Prepared, run_id: str, recorder: RunRecorder, progress: RunProgress,
                 display, registry, resume: "ResumeState | None", loop) -> tuple[str, str | None]:
    from agentctl.engine.actions import Ledger, ToolExecutor

    opts, spec = prep.options, prep.spec
    ledger = Ledger(run_id=run_id, write=recorder.action, flush=recorder.aflush,
                    rows=dict(resume.actions) if resume else {})
    if registry is None:  # no tools declared: an executor still refuses and logs invented calls
        from agentctl.tools.registry import ToolRegistry

        registry = ToolRegistry([])
    executor = ToolExecutor(registry, {a: ag.tools for a, ag in spec.pipeline.agents.items()},
                            run_id=run_id, record_tool_call=recorder.tool_call, ledger=ledger,
                            on_tool_call=lambda: setattr(progress, "tool_calls",
                                                         progress.tool_calls + 1))
    forced = approval_mode(opts)

    def stage_approval(plan: StagePlan) -> str:
        # --auto-approve / --dry-actions beat every stage's `approval:` in the spec
        return forced or plan.approval or "required"

    def mock_tool_args(name: str, parameters: dict, account: dict):
        tool = registry.get(name)
        fn = getattr(tool, "mock_args", None)
        return fn(account) if fn else None

    client = make_client(prep, run_id=run_id, resuming=resume is not None, tool_args=mock_tool_args)
    from agentctl.llm.governor import RateGovernor

    routes = build_routes(spec.pipeline)
    governor = RateGovernor(spec.pipeline.limits, routes, default_concurrency=prep.concurrency)
    progress.rate_limits, progress.held_back = governor.pushback, governor.waiting
    limiter = PriorityLimiter(prep.concurrency)
    stage_limiters = {p.id: PriorityLimiter(p.concurrency) for p in prep.plans if p.concurrency}
    caller = ModelCaller(
        client=client, record=recorder.llm_call, run_id=run_id, limiter=limiter,
        stage_limiters=stage_limiters,
        policy=RetryPolicy(max_attempts=spec.pipeline.defaults.max_attempts),
        routes=routes, fallbacks={a: m.fallbacks for a, m in spec.pipeline.models.items()},
        governor=governor, budget=make_budget(prep, resume), on_usage=progress.usage)
    prior = dict(resume.prior) if resume else None
    if resume is not None:
        from agentctl.resume import settle_approved_actions

        prior = await settle_approved_actions(resume, executor, registry, ledger, prior, recorder,
                                              forced=forced)
    engine = Engine(prep.plans, run_id=run_id, pipeline_name=spec.pipeline.name,
                    key_column=spec.pipeline.input.key, caller=caller,
                    record_cell=recorder.cell, record_item=recorder.item, progress=progress,
                    tools=executor, prior=prior, max_active_items=max(64, prep.concurrency * 4),
                    approval_for=stage_approval, record_span=recorder.span,
                    record_run_output=recorder.run_output, record_tool_call=recorder.tool_call,
                    prior_spans=resume.spans if resume else None,
                    prior_run_outputs=resume.run_outputs if resume else None,
                    carried=resume.carried if resume else None,
                    log_backlog=recorder.backlog)
    progress.items_total = prep.summary.rows
    main_task = asyncio.current_task()
    interrupted: signal.Signals | None = None

    def on_signal(sig: signal.Signals) -> None:
        nonlocal interrupted
        if interrupted:  # second Ctrl-C: stop now
            os._exit(EXIT_INTERRUPTED)
        interrupted = sig
        main_task.cancel()  # type: ignore[union-attr]

    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError):
            pass

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(2.0)
            recorder.heartbeat(progress.totals())

    tickers = [asyncio.create_task(heartbeat())]
    if display is not None:
        tickers.append(asyncio.create_task(display(progress)))
    rows = iter(prep.accounts)
    if resume is not None:
        rows = (resume.items.get(str(r[spec.pipeline.input.key]), r) for r in rows)
    try:
        await engine.run(rows, record_items=True)
    except asyncio.CancelledError:
        if interrupted == signal.SIGINT:
            return "interrupted", "interrupted by the user (Ctrl-C)"
        if interrupted == getattr(signal, "SIGHUP", None):
            return "interrupted", "stopped by SIGHUP (the terminal or SSH session closed)"
        if interrupted:
            return "interrupted", f"stopped by {interrupted.name} (from another process, e.g. kill or a scheduler)"
        raise
    finally:
        for t in tickers:
            t.cancel()
        await asyncio.gather(*tickers, return_exceptions=True)
        for sig in _STOP_SIGNALS:
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await client.aclose()
    if caller.stop_reason:
        return caller.stop_status or "failed", caller.stop_reason
    totals = progress.totals()
    if totals["awaiting_approval"]:
        return "awaiting_approval", None
    if totals["failed"]:
        return "completed_with_errors", None
    return "completed", None


