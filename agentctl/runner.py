"""`agentctl run`, as one function: check everything, open the log, run the engine, finish.

The CLI calls `prepare_run` (all checks that can fail with exit 2, before any model call or
run row) and then `execute` (which owns the event loop, signals and the run's final status).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from agentctl import __version__
from agentctl.engine.plan import StagePlan, build_routes, compile_plan
from agentctl.engine.progress import RunProgress
from agentctl.engine.scheduler import CellResult, Engine
from agentctl.errors import AgentctlError, ConfigError
from agentctl.inputs import AccountsFile, InputSummary
from agentctl.llm.caller import ModelCaller, RetryPolicy
from agentctl.llm.limiter import PriorityLimiter
from agentctl.runlog import store
from agentctl.runlog.recorder import RunRecorder, new_run_id
from agentctl.spec.loader import LoadedSpec, load_spec

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


def prepare_run(opts: RunOptions) -> Prepared:
    """Every check that can reject the run, before a run row exists or a model is called."""
    spec = load_spec(opts.pipeline, model_override=opts.model)
    if opts.limit is not None and opts.limit < 1:
        raise ConfigError("--limit must be a positive number of accounts")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    accounts = AccountsFile(opts.accounts, spec.pipeline.input, limit=opts.limit)
    summary = accounts.validate()
    db_path = store.resolve_db_path(opts.db)
    store._check_file(db_path, for_write=True)
    if not opts.mock:
        check_provider_env(spec)
    plans = compile_plan(spec)
    concurrency = opts.concurrency or spec.pipeline.defaults.concurrency
    return Prepared(opts, spec, accounts, summary, db_path, plans, concurrency)


def used_aliases(spec: LoadedSpec) -> set[str]:
    p = spec.pipeline
    aliases = set()
    for s in p.stages:
        if s.type == "agent":
            aliases.add(spec.model_alias(s.id))
    for a in list(aliases):
        aliases.update(p.models[a].fallbacks)
    return aliases


def check_provider_env(spec: LoadedSpec) -> None:
    """Fail fast (exit 2) on a missing API key or an api_base nobody listens on."""
    from agentctl.llm.litellm_client import load_litellm

    litellm = load_litellm()
    routes = build_routes(spec.pipeline)
    for alias in sorted(used_aliases(spec)):
        route = routes[alias]
        api_base = route.params.get("api_base") or _env_api_base(route.model)
        if api_base:
            _check_reachable(api_base, alias)
        try:
            env = litellm.validate_environment(model=route.model, api_base=api_base)
        except Exception:
            continue
        missing = [k for k in env.get("missing_keys", []) if "BASE" not in k.upper()]
        if missing and not env.get("keys_in_environment"):
            hint = ("; for a local OpenAI-compatible server any value works"
                    if api_base else "")
            raise ConfigError(
                f"model alias '{alias}' ({route.model}) needs {', '.join(missing)} in the "
                f"environment; export it, or run with --mock to try the pipeline offline{hint}")


def _env_api_base(model: str) -> str | None:
    if model.startswith("openai/"):
        return os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL")
    return None


def _check_reachable(api_base: str, alias: str) -> None:
    url = urlparse(api_base)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"model alias '{alias}': api_base '{api_base}' is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"model alias '{alias}': cannot reach api_base {api_base} "
                          f"({exc.strerror or exc}); start the server or fix api_base") from None


def make_client(mock: bool, tool_args=None):
    if mock:
        from agentctl.llm.mock import MockClient

        return MockClient(tool_args=tool_args)
    from agentctl.llm.litellm_client import LiteLLMClient

    return LiteLLMClient()


def execute(prep: Prepared, *, on_run_id: Callable[[str], None],
            display: Callable[[RunProgress], Any] | None = None) -> RunOutcome:
    """Run the pipeline; returns the outcome. Exactly one `asyncio.run` lives here."""
    opts, spec = prep.options, prep.spec
    run_id = new_run_id()
    progress = RunProgress(mock=opts.mock)
    recorder = RunRecorder(prep.db_path, run_id).open()
    recorder.start_run(
        pipeline=spec.pipeline.name, spec_path=str(spec.path), spec_text=spec.text,
        spec_sha256=spec.sha256,
        prompts={"order": spec.order, "stages": spec.prompts, "agents": spec.systems},
        input_path=str(Path(opts.accounts).resolve()), input_sha256=prep.summary.sha256,
        input_rows=prep.summary.rows, args=opts.as_args(), mock=opts.mock, version=__version__)
    on_run_id(run_id)
    status, error = "failed", None
    try:
        status, error = asyncio.run(_main(prep, run_id, recorder, progress, display))
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user"
    except AgentctlError as exc:
        status, error = "failed", exc.one_line()
        raise
    finally:
        totals = progress.totals()
        try:
            recorder.finish_run(status, totals, error)
        finally:
            recorder.close()
    code = exit_code_for(status, totals)
    return RunOutcome(run_id, status, code, totals, progress, error)


def exit_code_for(status: str, totals: dict[str, Any]) -> int:
    return {"completed": EXIT_OK, "completed_with_errors": EXIT_FAILED_CELLS,
            "awaiting_approval": EXIT_AWAITING, "budget_exceeded": EXIT_BUDGET,
            "interrupted": EXIT_INTERRUPTED, "failed": EXIT_USAGE}.get(status, 1)


async def _main(prep: Prepared, run_id: str, recorder: RunRecorder, progress: RunProgress,
                display, prior: dict[tuple[str, str], CellResult] | None = None) -> tuple[str, str | None]:
    opts, spec = prep.options, prep.spec
    loop = asyncio.get_running_loop()
    client = make_client(opts.mock)
    limiter = PriorityLimiter(prep.concurrency)
    stage_limiters = {p.id: PriorityLimiter(p.stage.concurrency) for p in prep.plans
                      if p.kind == "agent" and p.stage.concurrency}
    routes = build_routes(spec.pipeline)
    caller = ModelCaller(
        client=client, record=recorder.llm_call, run_id=run_id, limiter=limiter,
        stage_limiters=stage_limiters,
        policy=RetryPolicy(max_attempts=spec.pipeline.defaults.max_attempts),
        routes=routes, fallbacks={a: m.fallbacks for a, m in spec.pipeline.models.items()},
        on_usage=progress.usage)
    engine = Engine(prep.plans, run_id=run_id, pipeline_name=spec.pipeline.name,
                    key_column=spec.pipeline.input.key, caller=caller,
                    record_cell=recorder.cell, record_item=recorder.item, progress=progress,
                    prior=prior, max_active_items=max(64, prep.concurrency * 4))
    progress.items_total = prep.summary.rows
    main_task = asyncio.current_task()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        if interrupted:  # second Ctrl-C: stop now
            os._exit(EXIT_INTERRUPTED)
        interrupted = True
        main_task.cancel()  # type: ignore[union-attr]

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(2.0)
            recorder.heartbeat(progress.totals())

    tickers = [asyncio.create_task(heartbeat())]
    if display is not None:
        tickers.append(asyncio.create_task(display(progress)))
    try:
        await engine.run(iter(prep.accounts), record_items=prior is None)
    except asyncio.CancelledError:
        if interrupted:
            return "interrupted", "interrupted by the user (Ctrl-C)"
        raise
    finally:
        for t in tickers:
            t.cancel()
        await asyncio.gather(*tickers, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await client.aclose()
    if caller.stop_reason:
        return "failed", caller.stop_reason
    totals = progress.totals()
    if totals["awaiting_approval"]:
        return "awaiting_approval", None
    if totals["failed"]:
        return "completed_with_errors", None
    return "completed", None


def emit_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=str)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
