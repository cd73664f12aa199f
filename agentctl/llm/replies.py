"""Replies no stage can use, whatever it asked for: cut off at max_tokens, blocked by the
provider's content filter, refused by the model, or empty.

`unusable_reply` names the problem in the words a user acts on; the caller logs the row as
`invalid` with it, and the agent loop fails the cell instead of sending a repair: a repair with
the same max_tokens is cut off the same way, and a filter or a refusal answers the same prompt
the same way. Only an empty reply is asked again, once (see `UnusableReply.retry_once`).
"""

from __future__ import annotations

from agentctl.errors import OutputInvalid
from agentctl.llm.types import LLMRequest, LLMResponse


class UnusableReply(OutputInvalid):
    """A reply that is not an answer. `kind` is the cell's error_type."""

    def __init__(self, message: str, kind: str, *, retry_once: bool = False):
        super().__init__(message)
        self.kind = kind
        # An empty reply (no content, no tool calls, no stated reason) is mostly a provider
        # hiccup that the same request does not repeat: worth one more request. A cut-off,
        # filtered or refused reply is what the same request gets again: no retry.
        self.retry_once = retry_once


def unusable_reply(resp: LLMResponse, req: LLMRequest) -> UnusableReply | None:
    finish = (resp.finish_reason or "").lower()
    if finish in ("length", "max_tokens"):
        limit = req.params.get("max_tokens")
        at = f"max_tokens={limit}" if limit else "the model's default output limit"
        return UnusableReply(f"reply cut off at {at} (finish_reason length); raise "
                             f"models.{req.alias}.max_tokens", "Truncated")
    if finish == "content_filter":
        return UnusableReply("the provider's content filter blocked the reply (finish_reason "
                             "content_filter); rephrase the prompt or use another model",
                             "ContentFilter")
    if resp.refusal:
        said = " ".join(resp.refusal.split())
        said = said if len(said) <= 300 else said[:299] + "…"
        return UnusableReply(f"the model refused: {said}", "Refused")
    if not resp.tool_calls and not (resp.content or "").strip():
        return UnusableReply(f"the model returned an empty reply (no content and no tool calls; "
                             f"finish_reason {resp.finish_reason or 'none'})", "EmptyReply",
                             retry_once=True)
    return None
