"""Running the tool calls a model asks for: permissions, argument checks, logging, and the
action ledger that makes side effects exactly-once and gates them behind human approval.

A side-effect call gets a deterministic idempotency key (run, item, stage, tool, canonical
arguments). Its ledger row moves pending_approval -> approved/rejected -> intent -> done, and
each move is flushed to the run log before the next step, so after a crash a done action is
never executed again: its stored result is returned instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from agentctl.errors import AgentctlError, RunLogError, ToolError
from agentctl.llm.types import ToolCallRequest
from agentctl.runlog.writer import utcnow
from agentctl.tools.base import Tool, ToolContext, render_result

APPROVAL_MODES = ("required", "auto", "dry_run")


def idempotency_key(run_id: str, item_key: str, stage_id: str, tool: str, args: dict) -> str:
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    raw = "\x1f".join([run_id, item_key, stage_id, tool, canonical])
    return "act-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


@dataclass
class Ledger:
    """The run's actions, mirrored in memory; every change is written and flushed."""
    run_id: str
    write: Callable[[dict], None]           # recorder.action
    flush: Callable[[], Any]                # awaitable durable flush
    rows: dict[str, dict] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)   # actions a model asked for in this session
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, key: str) -> asyncio.Lock:
        self.touched.add(key)
        return self._locks.setdefault(key, asyncio.Lock())

    def put_soon(self, row: dict) -> None:
        """Write a change that only ever makes an action less likely to run (withdrawn): it
        goes out with the writer's next batch, like the cell row that explains it."""
        self.rows[row["idempotency_key"]] = row
        self.write(dict(row))

    async def put(self, row: dict, *, durable: bool = True) -> dict:
        self.put_soon(row)
        if durable:
            await self.flush()
        return row


class ToolExecutor:
    """Implements agents.ToolRunner for one run."""

    def __init__(self, registry, grants: dict[str, list[str]], *, run_id: str,
                 record_tool_call: Callable[[dict], None], ledger: Ledger,
                 on_tool_call: Callable[[], None] | None = None, max_result_chars: int = 8000,
                 tool_timeout: float = 60.0):
        self.registry = registry
        self.run_id = run_id
        self.record_tool_call = record_tool_call
        self.ledger = ledger
        self.on_tool_call = on_tool_call
        self.max_result_chars = max_result_chars
        self.tool_timeout = tool_timeout
        self._granted: dict[str, dict[str, Tool]] = {}
        for agent, names in grants.items():
            tools = registry.granted(names) if names else []
            self._granted[agent] = {t.openai_name: t for t in tools}
        self._offered = {a: [t.openai_schema() for t in tools.values()]
                         for a, tools in self._granted.items()}

    def deadline(self, tool: Tool) -> float:
        """The limit on one call: `tool_timeout`, or longer for a tool whose own setting (an
        MCP `call_timeout`, a query or SMTP `timeout`) allows more."""
        own = tool.own_timeout
        return max(self.tool_timeout, own + 5) if own else self.tool_timeout

    def offered(self, agent: str) -> list[dict]:
        return self._offered.get(agent, [])

    def side_effect_names(self, agent: str) -> set[str]:
        return {n for n, t in self._granted.get(agent, {}).items() if t.side_effects}

    async def run(self, calls: list[ToolCallRequest], *, agent: str, stage_id: str,
                  item_key: str, llm_call_id: str | None, approval: str,
                  meta: dict | None = None) -> list[str]:
        return list(await asyncio.gather(*(
            self._one(c, agent=agent, stage_id=stage_id, item_key=item_key,
                      llm_call_id=llm_call_id, approval=approval, meta=meta) for c in calls)))

    async def _one(self, call: ToolCallRequest, *, agent: str, stage_id: str, item_key: str,
                   llm_call_id: str | None, approval: str, meta: dict | None) -> str:
        started_at = utcnow()
        t0 = time.perf_counter()
        row: dict[str, Any] = {"tool_call_id": uuid.uuid4().hex, "run_id": self.run_id,
                               "item_key": item_key, "stage_id": stage_id, "agent": agent,
                               "llm_call_id": llm_call_id, "tool": call.name, "arguments": None,
                               "started_at": started_at,
                               "span_id": (meta or {}).get("span_id")}

        def finish(status: str, text: str, *, error: str | None = None, size: int | None = None,
                   key: str | None = None) -> str:
            row.update(status=status, result=text, result_chars=size if size is not None else len(text),
                       error=error, duration_ms=(time.perf_counter() - t0) * 1000, idempotency_key=key)
            self.record_tool_call(row)
            if self.on_tool_call:
                self.on_tool_call()
            return text

        try:
            args = json.loads(call.arguments or "{}")
        except ValueError as exc:
            row["arguments"] = {"_raw": call.arguments}
            return finish("invalid_args", _err(f"arguments are not valid JSON: {exc}"),
                          error=f"arguments are not valid JSON: {exc}")
        row["arguments"] = args
        tool = self.registry.called_tool(self._granted.get(agent, {}), call.name) if call.name else None
        if tool is None:
            # the stage's own tools (an orchestrate lead's spawn) are allowed as well
            allowed = ", ".join(sorted({*self._granted.get(agent, {}),
                                        *(meta or {}).get("extra_tools", ())})) or "none"
            if not call.name:  # logged under no name, never sent back as one (see agents.py)
                row["tool"] = ""
                msg = f"denied: this tool call has no function name; call a tool by its name ({allowed})"
            else:
                msg = (f"tool '{call.name}' is not available to agent '{agent}' (not permitted); "
                       f"allowed: {allowed}")
            return finish("denied", _err(msg), error=msg)
        row["tool"] = tool.name
        try:
            args = tool.validate_args(args)
        except ToolError as exc:
            return finish("invalid_args", _err(exc.message), error=exc.message)
        ctx = ToolContext(run_id=self.run_id, item_key=item_key, stage_id=stage_id, agent=agent)
        if not tool.side_effects:
            deadline = self.deadline(tool)
            try:
                result = await asyncio.wait_for(tool.call(args, ctx), deadline)
            except asyncio.TimeoutError:
                msg = f"tool '{tool.name}' timed out after {deadline:g}s"
                return finish("error", _err(msg), error=msg)
            except (ToolError, AgentctlError) as exc:
                return finish("error", _err(exc.message), error=exc.message)
            except Exception as exc:  # a raising tool answers the model; it never crashes the cell
                msg = f"{type(exc).__name__}: {exc}"
                return finish("error", _err(msg), error=msg)
            text, size = render_result(result, self.max_result_chars)
            return finish("ok", text, size=size)
        return await self._side_effect(tool, args, ctx, approval, finish, meta)

    async def _side_effect(self, tool: Tool, args: dict, ctx: ToolContext, approval: str,
                           finish, meta: dict | None) -> str:
        key = idempotency_key(self.run_id, ctx.item_key or "", ctx.stage_id or "", tool.name, args)
        ctx.idempotency_key = key
        async with self.ledger.lock(key):
            existing = self.ledger.rows.get(key)
            status = existing["status"] if existing else None
            if status == "done":
                text, size = render_result(existing["result"], self.max_result_chars)
                return finish("ok", text, size=size, key=key)
            if status == "rejected":
                msg = f"action {key} was rejected by a reviewer; do not retry it"
                return finish("rejected", _err(msg), error=msg, key=key)
            if status == "failed" and not tool.accepts_idempotency_key:
                # it may have run before a crash: never again without a human (see intent below)
                msg = existing.get("error") or f"action {key} failed"
                _note_failed(meta, msg)
                return finish("error", _err(msg), error=msg, key=key)
            if status == "pending_approval":
                if meta is not None:
                    meta["awaiting_approval"] = True
                return finish("pending_approval", _pending(key), key=key)
            if status in ("approved", "intent") and approval == "dry_run":
                # --dry-actions executes nothing, an approved action included; it waits
                if meta is not None:
                    meta["awaiting_approval"] = True
                return finish("dry_run", json.dumps({"status": "approved", "executed": False,
                                                     "note": "dry run: approved, not executed"}),
                              key=key)
            if status in ("approved", "intent") or approval == "auto":
                if status == "intent" and not tool.accepts_idempotency_key:
                    msg = (f"action {key} may or may not have run before a crash and tool "
                           f"'{tool.name}' cannot deduplicate, so it is not run again; "
                           "check by hand whether it happened")
                    await self.ledger.put({**existing, "status": "failed", "error": msg})
                    _note_failed(meta, msg)
                    return finish("error", _err(msg), error=msg, key=key)
                text, size, ok, err = await self.execute(tool, args, ctx, existing)
                if not ok:
                    _note_failed(meta, err or f"action {key} failed")
                return finish("ok" if ok else "error", text, size=size, error=err, key=key)
            base = {"idempotency_key": key, "run_id": self.run_id, "item_key": ctx.item_key,
                    "stage_id": ctx.stage_id, "tool": tool.name, "arguments": args,
                    "created_at": utcnow(), "result": None, "error": None, "decided_by": None,
                    "decided_at": None, "decision_note": None, "done_at": None}
            if approval == "dry_run":
                await self.ledger.put({**base, "status": "dry_run"}, durable=False)
                return finish("dry_run", json.dumps({"status": "dry_run", "executed": False,
                                                     "note": "dry run: action recorded, not executed"}),
                              key=key)
            await self.ledger.put({**base, "status": "pending_approval"})
            if meta is not None:
                meta["awaiting_approval"] = True
            return finish("pending_approval", _pending(key), key=key)

    async def execute(self, tool: Tool, args: dict, ctx: ToolContext,
                      existing: dict | None) -> tuple[str, int, bool, str | None]:
        """Intent (flushed) -> call -> done/failed (flushed). Used by `run` and `resume`."""
        key = ctx.idempotency_key or ""
        base = existing or {"idempotency_key": key, "run_id": self.run_id, "item_key": ctx.item_key,
                            "stage_id": ctx.stage_id, "tool": tool.name, "arguments": args,
                            "created_at": utcnow(), "decided_by": "auto-approve",
                            "decided_at": utcnow(), "decision_note": None}
        try:
            await self.ledger.put({**base, "status": "intent", "result": None, "error": None})
        except (asyncio.CancelledError, RunLogError):
            # stopped (Ctrl-C, or the run log locked for good) while the intent was being
            # flushed: the tool was never called, so the action is as it was, not "may or may
            # not have run"
            await self.ledger.put({**base, "status": base.get("status") or "approved"},
                                  durable=False)
            raise
        deadline = self.deadline(tool)
        try:
            result = await asyncio.wait_for(tool.call(args, ctx), deadline)
        except Exception as exc:  # recorded on the action; the model hears about it
            if isinstance(exc, asyncio.TimeoutError):
                msg = (f"tool '{tool.name}' timed out after {deadline:g}s; the action may still "
                       "have happened" + ("" if tool.accepts_idempotency_key else
                                          ", and it is not run again: check by hand"))
            elif isinstance(exc, AgentctlError):
                msg = exc.message
            else:
                msg = f"{type(exc).__name__}: {exc}"
            await self.ledger.put({**base, "status": "failed", "error": msg, "done_at": utcnow()})
            return _err(msg), len(msg), False, msg
        await self.ledger.put({**base, "status": "done", "result": _jsonable(result),
                               "error": None, "done_at": utcnow()})
        text, size = render_result(result, self.max_result_chars)
        return text, size, True, None


def _jsonable(result: Any) -> Any:
    from agentctl.tools.base import to_jsonable

    return to_jsonable(result)


def _note_failed(meta: dict | None, message: str) -> None:
    """Tell the cell an action of its failed: the cell fails too, whatever the model says next."""
    if meta is not None:
        meta.setdefault("failed_actions", []).append(message)


def _err(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def _pending(key: str) -> str:
    return json.dumps({"status": "pending_approval", "action_id": key,
                       "note": "Recorded for human approval; it will run after approval. "
                               "Do not call it again; finish your answer."})
