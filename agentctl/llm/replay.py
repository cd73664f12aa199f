"""Answers from the run log instead of a model: the response cache and `--replay RUN_ID`.

Both key a request by its content address (`LLMRequest.cache_key`). The cache falls through
to the real client on a miss; replay refuses, and says what differs from the recording.
"""

from __future__ import annotations

import json
from typing import Any

from agentctl.errors import FatalProviderError
from agentctl.llm.types import LLMRequest, LLMResponse, ToolCallRequest


class ReplayMiss(FatalProviderError):
    stops_run = True
    exit_code = 2


def response_from_log(doc: dict[str, Any], model: str | None) -> LLMResponse:
    usage = doc.get("usage") or {}
    return LLMResponse(
        content=doc.get("content"),
        tool_calls=[ToolCallRequest(id=t["id"], name=t["name"], arguments=t["arguments"])
                    for t in doc.get("tool_calls") or []],
        finish_reason=doc.get("finish_reason"), input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0), cost_usd=0.0,
        usage_known=doc.get("usage") is not None, refusal=doc.get("refusal"),
        model=doc.get("model") or model, latency_ms=0.0, cache_hit=True)


class CachingClient:
    """Serves recorded answers for identical requests; asks the inner client otherwise."""

    def __init__(self, inner, recorded: dict[str, dict[str, Any]]):
        self.inner = inner
        self.recorded = recorded
        self.hits = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        doc = self.recorded.get(request.cache_key())
        if doc is not None:
            self.hits += 1
            return response_from_log(doc, request.model)
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayClient:
    """Every answer comes from one recorded run; an unrecorded request stops the run.

    `recorded` holds, per request, every reply the run got for it in the order it got them,
    the ones its stage refused too (invalid JSON, a cut-off or empty reply): the replay then
    makes the same repairs and retries, and meets the same answers. A request asked more
    often than recorded gets its last reply again."""

    def __init__(self, run_id: str, recorded: dict[str, list[dict[str, Any]]],
                 requests_by_cell: dict[tuple[str, str], list[dict[str, Any]]]):
        self.run_id = run_id
        self.recorded = recorded
        self.requests_by_cell = requests_by_cell

    async def complete(self, request: LLMRequest) -> LLMResponse:
        replies = self.recorded.get(request.cache_key())
        if replies:
            doc = replies.pop(0) if len(replies) > 1 else replies[0]
            return response_from_log(doc, request.model)
        raise ReplayMiss(self.explain_miss(request), kind="ReplayMiss")

    def explain_miss(self, request: LLMRequest) -> str:
        item, stage = str(request.meta.get("item_key")), str(request.meta.get("stage_id"))
        head = f"replay of {self.run_id}: no recorded answer for item {item}, stage {stage}"
        candidates = self.requests_by_cell.get((item, stage)) or []
        if not candidates:
            return f"{head}: the recorded run has no call for this cell (new item or stage?)"
        mine = request.loggable()
        mine["model"] = request.model
        best = min(candidates, key=lambda c: len(differences(mine, c)))
        diffs = differences(mine, best)
        return f"{head}: differs from the recording in " + "; ".join(diffs[:3])

    async def aclose(self) -> None:
        return None


def differences(mine: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    out = []
    if mine.get("model") != recorded.get("model"):
        out.append(f"model ({mine.get('model')} vs recorded {recorded.get('model')})")
    a, b = mine.get("messages") or [], recorded.get("messages") or []
    if len(a) != len(b):
        out.append(f"number of messages ({len(a)} vs recorded {len(b)})")
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            xs, ys = str(x.get("content")), str(y.get("content"))
            at = next((j for j, (p, q) in enumerate(zip(xs, ys)) if p != q), min(len(xs), len(ys)))
            out.append(f"messages[{i}] ({x.get('role')}) at char {at}: "
                       f"{xs[max(0, at - 20):at + 40]!r} vs recorded {ys[max(0, at - 20):at + 40]!r}")
            break
    sem = lambda p: {k: v for k, v in (p or {}).items() if k not in ("timeout", "api_base")}
    if sem(mine.get("params")) != sem(recorded.get("params")):
        out.append(f"parameters ({json.dumps(sem(mine.get('params')))} vs recorded "
                   f"{json.dumps(sem(recorded.get('params')))})")
    if mine.get("response_format") != recorded.get("response_format"):
        out.append("output schema (response_format)")
    if (mine.get("tools") or None) != (recorded.get("tools") or None):
        out.append("tools offered")
    return out or ["request details"]
