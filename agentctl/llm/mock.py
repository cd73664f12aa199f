"""`--mock`: an offline model for smoke runs and CI.

Deterministic: the same (account, stage, schema) always gives the same schema-valid output.
It exercises the tool path too: on its first turn, an agent with tools calls each granted
tool once with schema-valid arguments derived from the account (side-effect tools included,
so the approval gate and the action ledger are exercised offline as well). A stage type can
script its own turns (`StageType.mock_turn`): an orchestrator's mock lead spawns two or three
sub-agents; a router's enum output picks one of its choices deterministically.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agentctl.llm.types import LLMRequest, LLMResponse, ToolCallRequest

MOCK_MODEL = "mock"

_WORDS = ("signal", "growth", "pipeline", "expansion", "hiring", "platform", "migration",
          "security", "partnership", "funding", "launch", "automation", "analytics", "team",
          "customers", "revenue", "priority", "budget", "evaluation", "renewal")


class _Rand:
    """A tiny deterministic stream of numbers from a seed string."""

    def __init__(self, seed: str):
        self.seed = seed.encode()
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return int.from_bytes(hashlib.blake2b(self.seed + self.n.to_bytes(4, "big"),
                                              digest_size=8).digest(), "big")

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * (self.next() % 10_000) / 10_000

    def choice(self, seq):
        return seq[self.next() % len(seq)]


def _label(account: dict[str, Any]) -> str:
    for key in ("name", "company", "account_name", "title"):
        if account.get(key):
            return str(account[key])
    # a run-level call (a reduce) has no account
    return next((str(v) for v in account.values() if v not in (None, "")), "the run")


def value_for(schema: dict[str, Any], rnd: _Rand, *, name: str, account: dict[str, Any],
              stage: str) -> Any:
    if "enum" in schema:
        return rnd.choice(schema["enum"])
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"] or schema["anyOf"]
        return value_for(options[0], rnd, name=name, account=account, stage=stage)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: value_for(v, rnd, name=k, account=account, stage=stage) for k, v in props.items()}
    if kind == "integer":
        lo = int(schema.get("minimum", 0))
        hi = int(schema.get("maximum", max(lo, 100)))
        return lo + rnd.next() % (hi - lo + 1)
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", max(lo, 1.0)))
        return round(rnd.uniform(lo, hi), 3)
    if kind == "boolean":
        return rnd.next() % 4 != 0
    if kind == "array":
        lo = int(schema.get("minItems", 1))
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = lo + rnd.next() % (hi - lo + 1)
        item = schema.get("items", {"type": "string"})
        return [value_for(item, rnd, name=name, account=account, stage=stage) for _ in range(n)]
    # string
    lo = int(schema.get("minLength", 0))
    hi = int(schema.get("maxLength", 400))
    if account.get(name) not in (None, "") and not isinstance(account.get(name), (dict, list)):
        return str(account[name])[:hi]  # a field named like an input column takes its value
    if schema.get("format") == "email" or "@" in str(schema.get("pattern", "")) or \
            name.lower() in ("to", "email", "cc", "bcc", "recipient") or name.lower().endswith("_email"):
        domain = str(account.get("domain") or "example.com").removeprefix("www.")
        return f"contact@{domain}"[:hi]
    if schema.get("format") == "date-time":
        return f"2026-{1 + rnd.next() % 12:02d}-{1 + rnd.next() % 28:02d}T09:00:00"
    if schema.get("format") == "date":
        return f"2026-{1 + rnd.next() % 12:02d}-{1 + rnd.next() % 28:02d}"
    if schema.get("format") in ("uri", "url") or name.lower() in ("url", "website"):
        return f"https://{account.get('domain') or 'example.com'}/"
    text = (f"[mock] {name} for {_label(account)} ({stage}): "
            f"{rnd.choice(_WORDS)} {rnd.choice(_WORDS)} {rnd.choice(_WORDS)}")
    while len(text) < lo:
        text += f" {rnd.choice(_WORDS)}"
    return text[:hi]


def example_args(parameters: dict[str, Any], account: dict[str, Any], tool_name: str) -> dict:
    """Schema-valid tool arguments derived from the account."""
    rnd = _Rand(f"{tool_name}|{json.dumps(account, sort_keys=True, default=str)}")
    args: dict[str, Any] = {}
    label = _label(account)
    for key, sub in (parameters.get("properties") or {}).items():
        if key not in parameters.get("required", []) and key not in ("query", "url", "domain"):
            continue
        if key == "query" and sub.get("type") == "string":
            args[key] = label
        elif key in ("domain", "url") and sub.get("type") == "string":
            args[key] = account.get("domain") or account.get("website") or label
        else:
            args[key] = value_for(sub, rnd, name=key, account=account, stage=tool_name)
    return args


class MockClient:
    """Implements the LLMClient protocol without a network."""

    def __init__(self, tool_args: "callable | None" = None):
        # tool_args(tool_name, parameters, account) -> dict lets tools suggest safe arguments
        self.tool_args = tool_args
        self.calls = 0

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        meta = request.meta
        account = meta.get("account") or {}
        stage = str(meta.get("stage_id") or "")
        key = str(meta.get("item_key") or "")
        tool_calls: list[ToolCallRequest] = []
        content: str | None = None
        already_used_tools = any(m.get("role") == "tool" for m in request.messages)
        kind = meta.get("kind")
        if kind and request.tools:  # a stage type may script its own turns (a lead's spawns)
            from agentctl.stages import stage_type

            tool_calls = stage_type(kind).mock_turn(request, f"{key}|{stage}") or []
        if request.tools and not already_used_tools and not tool_calls:
            for i, tool in enumerate(request.tools):
                fn = tool["function"]
                args = (self.tool_args(fn["name"], fn.get("parameters") or {}, account)
                        if self.tool_args else None)
                if args is None:
                    args = example_args(fn.get("parameters") or {}, account, fn["name"])
                tool_calls.append(ToolCallRequest(id=f"mock_{stage}_{i}", name=fn["name"],
                                                  arguments=json.dumps(args)))
        if not tool_calls:
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            if request.response_format and request.response_format.get("type") == "json_schema":
                schema = request.response_format["json_schema"].get("schema", schema)
            voice = f"|{meta.get('role')}|{meta.get('agent')}" if kind not in (None, "agent") else ""
            rnd = _Rand(f"{key}|{stage}|{json.dumps(schema, sort_keys=True)}{voice}")
            content = json.dumps(value_for(schema, rnd, name=stage, account=account, stage=stage))
        prompt_chars = sum(len(str(m.get("content") or "")) for m in request.messages)
        return LLMResponse(content=content, tool_calls=tool_calls,
                           finish_reason="tool_calls" if tool_calls else "stop",
                           input_tokens=max(1, prompt_chars // 4),
                           output_tokens=max(1, len(content or json.dumps(
                               [t.arguments for t in tool_calls])) // 4),
                           cost_usd=0.0, model=MOCK_MODEL, latency_ms=0.0)

    async def aclose(self) -> None:
        return None
