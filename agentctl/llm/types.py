"""What crosses the LLM seam: one request, one response. No litellm types leak past it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class ToolCallRequest:
    id: str
    name: str        # "" when the model sent a call without a function name
    arguments: str   # raw JSON text from the model (may be invalid)


@dataclass
class LLMRequest:
    alias: str                      # model alias from the spec
    model: str                      # litellm model string
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)   # temperature, max_tokens, timeout, api_base...
    response_format: dict[str, Any] | None = None          # {"type": "json_schema", "json_schema": {...}}
    tools: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)     # run_id, item_key, stage_id, agent, account
    _key: str | None = field(default=None, repr=False, compare=False)

    def prompt_tokens(self) -> int:
        """A cheap estimate (about 4 characters a token) of what the prompt and tools cost."""
        chars = sum(len(str(m.get("content") or "")) for m in self.messages)
        if self.tools:
            chars += sum(len(str(t)) for t in self.tools)
        return chars // 4

    def cache_key(self) -> str:
        """Content address of what the model is asked: model, messages, parameters that change
        the answer, output schema and tools (not timeouts or endpoints). Computed once: the
        cache, replay and the log row all ask for it."""
        if self._key is not None:
            return self._key
        import hashlib
        import json

        params = {k: v for k, v in self.params.items() if k not in NON_SEMANTIC_PARAMS}
        doc = {"model": self.model, "messages": self.messages, "params": params,
               "response_format": self.response_format, "tools": self.tools}
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        self._key = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        return self._key

    def loggable(self) -> dict[str, Any]:
        """The request as stored in the run log: never API keys or headers."""
        params = {k: v for k, v in self.params.items() if k not in SECRET_PARAMS}
        out: dict[str, Any] = {"model": self.model, "messages": self.messages, "params": params}
        if self.response_format is not None:
            out["response_format"] = self.response_format
        if self.tools:
            out["tools"] = self.tools
        return out


NON_SEMANTIC_PARAMS = {"timeout", "api_base", "num_retries", "max_retries", "api_key",
                       "extra_headers", "headers"}
SECRET_PARAMS = {"api_key", "extra_headers", "headers", "aws_secret_access_key",
                 "aws_session_token", "vertex_credentials", "azure_ad_token"}


@dataclass
class LLMResponse:
    content: str | None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    finish_reason: str | None = None
    input_tokens: int = 0           # 0 when `usage_known` is False
    output_tokens: int = 0
    cost_usd: float | None = None   # None = unpriced (never shown as $0)
    model: str | None = None        # the model name the reply reports (not what it is priced as)
    usage_known: bool = True        # False: the reply had no usable token counts (none,
                                    # zero prompt tokens, negative): logged as NULL, unpriced
    refusal: str | None = None      # the model's refusal text (OpenAI's `message.refusal`)
    latency_ms: float = 0.0
    cache_hit: bool = False
    call_id: str | None = None      # the llm_calls row, set by ModelCaller
    checked: Any = None             # the validated output, when the caller passed a check

    def loggable(self) -> dict[str, Any]:
        usage = ({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
                 if self.usage_known else None)
        out: dict[str, Any] = {"content": self.content, "finish_reason": self.finish_reason,
                               "usage": usage}
        if self.refusal:
            out["refusal"] = self.refusal
        if self.tool_calls:
            out["tool_calls"] = [{"id": t.id, "name": t.name, "arguments": t.arguments}
                                 for t in self.tool_calls]
        if self.model:
            out["model"] = self.model
        return out


class LLMClient(Protocol):
    """Sends one request. Raises agentctl.errors.ProviderError subclasses on failure."""

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...
