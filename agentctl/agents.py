"""One agent call for one cell: messages -> model -> tool rounds -> validated output.

An invalid reply goes back to the model with the validation errors (bounded repairs); tool
calls are executed by the `ToolRunner` the engine hands in (permissions, ledger, approval
live there). Nothing here knows about DuckDB or litellm.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from agentctl.errors import AgentctlError, OutputInvalid
from agentctl.llm.caller import CellUsage, ModelCaller, Route
from agentctl.llm.replies import UnusableReply
from agentctl.llm.types import LLMRequest, LLMResponse, ToolCallRequest


class ToolRunner(Protocol):
    """Executes the tool calls a model asked for; returns one result text per call."""

    def offered(self, agent: str) -> list[dict]: ...

    def side_effect_names(self, agent: str) -> set[str]: ...

    async def run(self, calls: list[ToolCallRequest], *, agent: str, stage_id: str,
                  item_key: str, llm_call_id: str | None, approval: str,
                  meta: dict | None = None) -> list[str]: ...


@dataclass
class ExtraTool:
    """A tool a stage type offers its agents on top of their granted ones (orchestrate's
    `spawn`). `handle` answers every call to it in one model turn, in order."""
    name: str
    schema: dict[str, Any]                       # OpenAI function tool schema
    handle: Callable[[list[ToolCallRequest], str | None], Awaitable[list[str]]]


class CellFailed(AgentctlError):
    """The cell could not produce a valid output; recorded as a failed cell."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class AgentTask:
    stage_id: str
    agent: str
    system: str
    prompt: str
    route: Route
    schema: dict[str, Any]
    parse: Any                    # callable(text) -> dict, raises OutputInvalid
    max_repairs: int = 2
    max_tool_rounds: int = 5
    approval: str = "required"
    meta: dict[str, Any] = field(default_factory=dict)
    output_name: str | None = None              # response_format name; "<stage>_output" if unset
    extra_tools: list[ExtraTool] = field(default_factory=list)


def output_instructions(schema: dict[str, Any]) -> str:
    return ("Reply with one JSON object (no prose, no code fences) that matches this JSON "
            f"schema:\n{json.dumps(schema, separators=(',', ':'))}")


async def run_agent(task: AgentTask, *, caller: ModelCaller, usage: CellUsage,
                    tools: ToolRunner | None = None, priority: float = 0.0) -> dict[str, Any]:
    system = (task.system.rstrip() + "\n\n" if task.system else "") + output_instructions(task.schema)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                      {"role": "user", "content": task.prompt}]
    offered = tools.offered(task.agent) if tools is not None else []
    extra = {t.name: t for t in task.extra_tools}
    if extra:
        offered = [*offered, *(t.schema for t in task.extra_tools)]
    response_format = {"type": "json_schema",
                       "json_schema": {"name": task.output_name or f"{task.stage_id}_output",
                                       "schema": task.schema, "strict": False}}
    repairs = 0
    rounds = 0
    asked_again = False  # an empty reply is asked for once more (see UnusableReply)
    purpose = "initial"

    def check(resp: LLMResponse) -> Any:
        if resp.tool_calls:
            return None
        return task.parse(resp.content or "")

    while True:
        req = LLMRequest(alias=task.route.alias, model=task.route.model, messages=list(messages),
                         params=dict(task.route.params), response_format=response_format,
                         tools=offered or None, meta=task.meta)
        try:
            resp = await caller.call(req, usage=usage, purpose=purpose, priority=priority, check=check)
        except UnusableReply as exc:
            # cut off, filtered, refused: no repair, it would get the same reply
            if exc.retry_once and not asked_again:
                asked_again = True
                purpose = "retry"
                continue
            again = " (asked twice)" if exc.retry_once else ""
            raise CellFailed(f"{exc.message}{again}", exc.kind) from exc
        except OutputInvalid as exc:
            if repairs >= task.max_repairs:
                raise CellFailed(f"output invalid after {repairs} repair(s): {exc}",
                                 "OutputInvalid") from exc
            repairs += 1
            purpose = "repair"
            bad = req_reply_text(exc)
            messages.append({"role": "assistant", "content": bad})
            messages.append({"role": "user", "content":
                             f"Your reply did not match the required output schema:\n{exc}\n"
                             "Reply again with only the corrected JSON object."})
            continue
        if resp.tool_calls:
            unique_call_ids(resp.tool_calls)
            rounds += 1
            if rounds > task.max_tool_rounds:
                raise CellFailed(
                    f"agent '{task.agent}' still asked for tools after max_tool_rounds="
                    f"{task.max_tool_rounds}; raise max_tool_rounds on the agent or narrow its task",
                    "ToolRoundsExceeded")
            messages.append({"role": "assistant", "content": resp.content,
                             "tool_calls": [{"id": c.id, "type": "function",
                                             "function": {"name": c.name or NAMELESS,
                                                          "arguments": c.arguments}}
                                            for c in resp.tool_calls]})
            results = await _run_tools(task, resp, tools, extra)
            for c, text in zip(resp.tool_calls, results):
                messages.append({"role": "tool", "tool_call_id": c.id, "content": text})
            purpose = "tool_round"
            continue
        return resp.checked


async def _run_tools(task: AgentTask, resp: LLMResponse, tools: ToolRunner | None,
                     extra: dict[str, ExtraTool]) -> list[str]:
    """Every call of one model turn, at once: a stage's own tools (spawn) by their handlers,
    the rest by the tool runner (permissions, ledger, gate). Results in call order."""
    calls = resp.tool_calls
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(calls):
        # "\0": no function name (the tool runner denies and logs it); "": the tool runner's;
        # else a stage's own tool (spawn)
        groups.setdefault("\0" if not c.name else c.name if c.name in extra else "",
                          []).append(i)

    async def answer(name: str, index: list[int]) -> list[str]:
        subset = [calls[i] for i in index]
        if name == "\0" and tools is None:  # nothing to run, nor to look up, nor to log
            text = ("denied: this tool call has no function name; call a tool by its name"
                    f" ({', '.join(sorted(extra)) or 'none offered'})")
            return [json.dumps({"error": text}) for _ in subset]
        if name and name != "\0":
            return await extra[name].handle(subset, resp.call_id)
        if tools is None:  # no executor at all (engine tests): refuse
            return [json.dumps({"error": f"tool '{c.name}' is not available to this agent"})
                    for c in subset]
        return await tools.run(subset, agent=task.agent, stage_id=task.stage_id,
                               item_key=str(task.meta.get("item_key")), llm_call_id=resp.call_id,
                               approval=task.approval, meta=task.meta)

    answers = await asyncio.gather(*(answer(n, idx) for n, idx in groups.items()))
    results = [""] * len(calls)
    for (name, index), texts in zip(groups.items(), answers):
        for i, text in zip(index, texts):
            results[i] = text
    return results


# Sent back to the provider in place of a tool call's missing function name: a `null` name
# in the conversation's history is a 400 at most providers.
NAMELESS = "unnamed_tool_call"


def unique_call_ids(calls: list[ToolCallRequest]) -> None:
    """Give every call of one reply its own id (the model sent `call_1` twice): each tool
    result must answer exactly one call, by id, in the assistant message and its answers."""
    taken = {c.id for c in calls}
    seen: set[str] = set()
    for c in calls:
        if c.id in seen:
            n = 2
            while f"{c.id}_{n}" in taken:
                n += 1
            c.id = f"{c.id}_{n}"
            taken.add(c.id)
        seen.add(c.id)


def req_reply_text(exc: OutputInvalid) -> str:
    return getattr(exc, "reply_text", None) or "(invalid reply)"

