"""`agentctl resume` and `agentctl retry`: rebuild a stored run (its spec text, prompts, input
rows, cells, finished sub-agents and ledger) and settle the actions decided since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentctl.engine.carry import Carried
from agentctl.engine.plan import StagePlan, compile_plan
from agentctl.engine.scheduler import CellResult
from agentctl.errors import ConfigError, NothingToResume
from agentctl.inputs import AccountsFile, InputSummary
from agentctl.preflight import allow_open_files, check_budget_prices, check_provider_env
from agentctl.runlog import store
from agentctl.runner import Prepared, RunOptions, check_flags


@dataclass
class ResumeState:
    run_id: str
    prior: dict[tuple[str, str], CellResult]
    items: dict[str, dict]                  # stored input rows by key
    actions: dict[str, dict]                # the ledger, by idempotency key
    spans: dict[str, dict] = field(default_factory=dict)         # finished agent turns, by span id
    run_outputs: dict[str, dict] = field(default_factory=dict)   # reduce outputs, by stage
    # what the run's earlier sessions used (queries.usage_so_far): its totals go on from the
    # stages' usage, its budget from `spent` (so a resume or retry cannot spend the limits again)
    used: dict[str, Any] = field(default_factory=lambda: {"stages": {}, "tool_calls": 0,
                                                          "spent": {}})
    # earlier sessions' usage of the rows that may be written again, cells that must run
    # again, and the outputs of reduces a retry recomputes (see engine/carry.py)
    carried: Carried = field(default_factory=Carried)


def prepare_resume(run_id: str, db: str | None, *, mock: bool | None = None,
                   retry: bool = False, retry_failed: bool = False, retry_stage: str | None = None,
                   max_cost: float | None = None, auto_approve: bool = False,
                   dry_actions: bool = False) -> tuple[Prepared, ResumeState, list[str]]:
    """Rebuild a stored run: its own spec text, prompts, input rows, cells and ledger.

    `retry` (agentctl retry) drops the chosen cells, and everything downstream of them, from
    the prior state so they run again inside the same run: the failed ones
    (`retry_failed`, the default) or every one that is not ok, of `retry_stage` or all stages.
    `auto_approve`/`dry_actions` given now replace the run's stored flags; otherwise the
    flags the run was started with still hold, over the spec's `approval:`."""
    if auto_approve and dry_actions:
        raise ConfigError("--auto-approve and --dry-actions contradict each other; pick one")
    from agentctl.runlog import queries
    from agentctl.spec.loader import load_spec_text

    db_path = store.resolve_db_path(db)
    run, cells, actions, items, spans, run_outputs = queries.load_run_state(db_path, run_id)
    warnings: list[str] = []
    if run["status"] == "running" and not queries.looks_dead(run):
        raise ConfigError(f"run {run['run_id']} is still running (pid {run['pid']} on {run['host']}); "
                          "wait for it, or stop it first")
    spec_path = Path(run["spec_path"])
    spec = load_spec_text(run["spec_text"], path=spec_path, stored_prompts=run["prompts"] or {})
    if spec_path.is_file() and _sha256(spec_path) != run["spec_sha256"]:
        warnings.append(f"{spec_path} changed since the run started; resuming with the stored spec")
    args = run["args"] or {}
    opts = RunOptions(pipeline=str(spec_path), accounts=run["input_path"], db=str(db_path),
                      concurrency=args.get("concurrency"), limit=args.get("limit"),
                      model=args.get("model"), mock=bool(run["mock"]) if mock is None else mock,
                      auto_approve=auto_approve or (bool(args.get("auto_approve")) and not dry_actions),
                      dry_actions=dry_actions or (bool(args.get("dry_actions")) and not auto_approve),
                      max_cost=max_cost if max_cost is not None else args.get("max_cost"),
                      max_cost_overrides=max_cost is not None)
    if max_cost is not None:
        check_flags(opts)
    if not retry and run["status"] in ("completed", "completed_with_errors"):
        failed = run["status"] == "completed_with_errors"
        raise NothingToResume(
            f"run {run['run_id']} has ended ({run['status']}): nothing to resume"
            + (f"; `agentctl retry {run['run_id']}` runs its failed cells again" if failed else ""),
            exit_code=1 if failed else 0)
    if opts.model:
        from agentctl.spec.loader import _override_models

        _override_models(spec, opts.model)
    accounts, summary = _input(run, items, spec, opts, warnings)
    if not opts.mock:
        check_provider_env(spec)
    plans = compile_plan(spec)
    prior = {k: CellResult(c["status"], c["output"], c["error"], c["error_type"],
                           usage={u: c[u] for u in USAGE}, changed=False)
             for k, c in cells.items()}
    dropped = Dropped([], set(), {})
    if retry or retry_failed or retry_stage:
        prior, run_outputs, dropped = _drop_for_retry(prior, plans, failed_only=retry_failed,
                                                      stage=retry_stage, run_outputs=run_outputs)
    rerun = _held_for_fan_in(prior, dropped, actions)
    prep = Prepared(opts, spec, accounts, summary, db_path, plans,
                    opts.concurrency or spec.pipeline.defaults.concurrency)
    check_budget_prices(prep)
    allow_open_files(prep.concurrency)
    from agentctl.runlog.recorder import claim_run

    if not claim_run(db_path, run):  # another resume or retry got there first
        raise ConfigError(f"run {run['run_id']} was taken up by another agentctl process "
                          "(resume or retry) just now; see `agentctl runs`")
    # a reduce may run again even with a stored output (an account reaches it only now)
    reduces = [p.id for p in plans if p.type.fan_in and p.type.calls_models]
    earlier = queries.earlier_usage(db_path, run["run_id"], cells=dropped.cells + sorted(rerun),
                                    stages=sorted(dropped.at_risk), reduces=reduces)
    carried = Carried(cells=earlier["cells"], spans=earlier["spans"], outputs=earlier["outputs"],
                      rerun=rerun, superseded=dropped.superseded)
    return prep, ResumeState(run["run_id"], prior, items, actions, spans, run_outputs,
                             used=queries.usage_so_far(db_path, run["run_id"]),
                             carried=carried), warnings


class StoredRows:
    """A run's input rows as it stored them, in input order."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows.values())


def _input(run: dict, items: dict[str, dict], spec, opts: RunOptions,
           warnings: list[str]) -> tuple[AccountsFile | StoredRows, InputSummary]:
    """Where a resumed run reads its accounts. A run that had stored every row reads those
    alone: the file may since have moved, changed or gone (a cron job's export). A run that
    stopped while still reading needs the file for the rest."""
    path = Path(opts.accounts)
    if len(items) >= (run["input_rows"] or 0):
        if path.is_file() and _sha256(path) != run["input_sha256"]:
            warnings.append(f"{path} changed since the run started; the run's stored rows are used")
        columns = list(next(iter(items.values()), {}))
        return StoredRows(items), InputSummary(str(path), "stored", len(items), columns,
                                               run["input_sha256"])
    if not path.exists():
        raise ConfigError(f"{path} is gone, and run {run['run_id']} had read {len(items)} of its "
                          f"{run['input_rows']} accounts when it stopped; put the file back at "
                          "that path to resume")
    accounts = AccountsFile(path, spec.pipeline.input, limit=opts.limit)
    summary = accounts.validate()
    if summary.sha256 != run["input_sha256"]:
        warnings.append(f"{path} changed since the run started; stored rows are used "
                        "for accounts already read")
    return accounts, summary


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


USAGE = ("attempts", "input_tokens", "output_tokens", "cost_usd", "started_at", "ended_at",
         "duration_ms")


def _drop_for_retry(prior: dict, plans: list[StagePlan], *, failed_only: bool,
                    stage: str | None, run_outputs: dict | None = None
                    ) -> tuple[dict, dict, "Dropped"]:
    ids = [p.id for p in plans]
    if stage is not None and stage not in ids:
        raise ConfigError(f"no stage '{stage}' in this run; stages: {', '.join(ids)}")
    downstream: dict[str, set[str]] = {p.id: set() for p in plans}
    for p in plans:  # plans are in topological order
        for n in p.needs:
            downstream[n].add(p.id)
    closure: dict[str, set[str]] = {}
    for p in reversed(plans):
        closure[p.id] = {p.id}.union(*(closure[d] for d in downstream[p.id]))
    out = dict(prior)
    outputs = dict(run_outputs or {})
    dropped: set[str] = set()
    cells: list[tuple[str, str]] = []
    for (item, sid), result in prior.items():
        chosen = (stage is None or sid == stage) and (
            result.status == "failed" or (not failed_only and result.status != "ok"))
        if chosen:
            dropped |= closure[sid]
            for d in closure[sid]:
                if out.pop((item, d), None) is not None:
                    cells.append((item, d))
    superseded = {}
    for sid, row in list(outputs.items()):  # a reduce re-runs when its inputs or itself do
        chosen = (stage is None or sid == stage) and row["status"] != "ok"
        if sid in dropped or chosen:
            superseded[sid] = outputs.pop(sid)
            dropped |= closure[sid]
    # A fan-in whose inputs changed decides again for every account, not only the retried
    # ones: a select may let other accounts through, a reduce gives everyone a new output.
    # What is downstream of it may then change for any account (the engine sees which).
    at_risk: set[str] = set()
    for p in plans:
        if p.type.fan_in and p.id in dropped:
            at_risk |= closure[p.id] - {p.id}
    return out, outputs, Dropped(cells, at_risk, superseded)


@dataclass
class Dropped:
    cells: list[tuple[str, str]]      # stored cells the retry runs again
    at_risk: set[str]                 # stages downstream of a fan-in whose inputs changed
    superseded: dict[str, dict]       # stored run outputs of reduces that run again


def _held_for_fan_in(prior: dict, dropped: Dropped, actions: dict) -> set[tuple[str, str]]:
    """Stored cells waiting on an action, downstream of a fan-in a retry decides again: the
    action must not run before the fan-in has decided (the account may no longer be let
    through). Such a cell runs again instead (from the cache as far as its requests are the
    same), and its action runs then, if it is still asked for and approved; otherwise the
    engine withdraws it."""
    waiting = {(a["item_key"], a["stage_id"]) for a in actions.values()
               if a["status"] in ("approved", "pending_approval")
               and a["stage_id"] in dropped.at_risk}
    return {k for k in waiting
            if (r := prior.get(k)) is not None and r.status == "awaiting_approval"}


async def settle_approved_actions(resume: ResumeState, executor, registry, ledger, prior,
                                  recorder, *, forced: str | None = None) -> dict:
    """Execute approved actions exactly once; a cell whose actions are all decided is done.

    `forced` is the CLI's word at this resume: 'auto' approves what is still pending,
    'dry_run' records it as a dry run, never to be executed."""
    from agentctl.runlog.writer import utcnow
    from agentctl.tools.base import ToolContext

    for key, action in list(ledger.rows.items()):
        if action["status"] == "pending_approval" and forced == "auto":
            action = await ledger.put({**action, "status": "approved", "decided_by": "auto-approve",
                                       "decided_at": utcnow()})
        if (action["item_key"], action["stage_id"]) in resume.carried.rerun:
            # its cell runs again once a retried fan-in has decided (see _held_for_fan_in): the
            # action runs then if the cell still asks for it, and is withdrawn otherwise
            continue
        elif action["status"] == "pending_approval" and forced == "dry_run":
            await ledger.put({**action, "status": "dry_run"})
            continue
        if forced == "dry_run":  # nothing is executed, an approved action included: it waits
            continue
        if action["status"] not in ("approved", "intent"):
            continue
        cell = prior.get((action["item_key"], action["stage_id"]))
        if cell is not None and cell.status in ("failed", "filtered", "skipped"):
            continue  # its cell failed after asking for it: only a retried cell may ask again;
            # or its account was filtered out since (a retried select): it must never run
        tool = registry.get(action["tool"])
        if tool is None:
            await ledger.put({**action, "status": "failed",
                              "error": f"tool '{action['tool']}' no longer exists in the spec"})
            continue
        if action["status"] == "intent" and not tool.accepts_idempotency_key:
            await ledger.put({**action, "status": "failed",
                              "error": f"action {key} may or may not have run before a crash and "
                                       f"tool '{tool.name}' cannot deduplicate, so it is not run "
                                       "again; check by hand whether it happened"})
            continue
        ctx = ToolContext(run_id=resume.run_id, item_key=action["item_key"],
                          stage_id=action["stage_id"], agent=None, idempotency_key=key)
        await executor.execute(tool, action["arguments"] or {}, ctx, action)
    open_cells = {(a["item_key"], a["stage_id"]) for a in ledger.rows.values()
                  if a["status"] in ("pending_approval", "approved", "intent")}
    for cell_key, result in list(prior.items()):
        if result.status == "awaiting_approval" and cell_key not in open_cells:
            failed = [a for a in ledger.rows.values()
                      if (a["item_key"], a["stage_id"]) == cell_key and a["status"] == "failed"]
            new = CellResult("failed" if failed else "ok", result.output,
                             error=failed[0]["error"] if failed else None,
                             error_type="ActionFailed" if failed else None, changed=False)
            prior[cell_key] = new
            usage = result.usage or {"attempts": 0, "input_tokens": 0, "output_tokens": 0,
                                     "cost_usd": 0.0, "started_at": None, "ended_at": None,
                                     "duration_ms": 0.0}
            recorder.cell({"run_id": resume.run_id, "item_key": cell_key[0],
                           "stage_id": cell_key[1], "status": new.status, "output": new.output,
                           "error": new.error, "error_type": new.error_type,
                           **usage})  # the calls it made before it waited still count
    return prior
