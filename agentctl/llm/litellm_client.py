"""The real client: litellm, imported lazily; its errors are translated once, at this call
(`provider_errors.translate_error`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Iterator

import httpx

from agentctl.errors import ProviderError, RetryableProviderError
from agentctl.llm.provider_errors import translate_error
from agentctl.llm.types import LLMRequest, LLMResponse, ToolCallRequest

_litellm = None


def quiet_litellm_env() -> None:
    """Environment litellm reads: no price-map download, no telemetry, aiohttp connection
    pools that do not cap concurrency (litellm's defaults are 1,000 in all and 500 per host,
    read once at import; 0 would mean aiohttp's own 100), and OpenAI-compatible chat calls
    through litellm's own HTTP handler rather than the openai SDK's client, which spends
    about a third of litellm's CPU per call re-walking the request against its typed
    schema (see `_no_silent_resend` for the one thing that handler must not do). A user
    who sets any of these keeps their value."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT", "8192")
    os.environ.setdefault("AIOHTTP_CONNECTOR_LIMIT_PER_HOST", "8192")
    if not (os.environ.get("OPENAI_ORG_ID") or os.environ.get("OPENAI_ORGANIZATION")):
        # that handler sends no OpenAI-Organization header of its own: with an organization
        # in the environment, the SDK path (which sends it) stays
        os.environ.setdefault("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER", "True")


async def _no_silent_resend(self, url, client, **kwargs):
    """Replaces litellm's `AsyncHTTPHandler.single_connection_post_request`, which re-sends
    a request on a fresh connection after a connection error or a dropped connection. The
    provider may already have received (and billed) the first one, and no run-log row would
    show it. The original error is raised instead, so agentctl's retry policy decides, with
    a backoff and an `llm_calls` row for every request sent."""
    exc = sys.exc_info()[1]  # the RemoteProtocolError/ConnectError being handled by post()
    if exc is None:
        exc = httpx.TransportError(f"connection error on {url}")
    raise exc


_preload: "threading.Thread | None" = None


def preload_litellm() -> None:
    """Start importing litellm on a background thread (it takes seconds) while the caller
    checks the spec, the input and the run log; `load_litellm` then joins it. The import is
    CPU-bound, so it overlaps with the checks' I/O, not with their CPU."""
    global _preload
    if _litellm is None and _preload is None:
        _preload = threading.Thread(target=_import_quietly, name="agentctl-import-litellm",
                                    daemon=True)
        _preload.start()


def _import_quietly() -> None:
    try:
        load_litellm()
    except Exception:  # the foreground load_litellm() raises it again, where it is handled
        pass


@contextlib.contextmanager
def _deferred_pydantic_builds() -> Iterator[None]:
    """pydantic models defined inside the block build their validators when first used,
    not when defined. litellm defines ~1,800 and a run uses a few dozen: this takes ~0.4 s
    off every run's start-up (the openai SDK already defers its own models this way). The
    import runs on the preload thread: a model agentctl defines meanwhile (a stage's output
    schema) is deferred too, which only moves its build to its first validation."""
    import pydantic

    config = pydantic.BaseModel.model_config
    before = config.get("defer_build", _UNSET)
    config["defer_build"] = True
    try:
        yield
    finally:
        if before is _UNSET:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before


_UNSET = object()


def load_litellm():
    global _litellm
    if _preload is not None and _preload.is_alive() and threading.current_thread() is not _preload:
        _preload.join()
    if _litellm is None:
        quiet_litellm_env()
        import gc

        # The import builds ~1,800 pydantic models: collecting while it runs costs ~0.4 s, and
        # freezing what it built afterwards keeps later collections (and the event loop's
        # pauses) from walking it again on every cycle.
        gc.disable()
        try:
            with _deferred_pydantic_builds():
                import litellm
        finally:
            gc.enable()
        gc.collect()
        gc.freeze()

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.drop_params = True
        litellm.num_retries = 0
        litellm.set_verbose = False
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        AsyncHTTPHandler.single_connection_post_request = _no_silent_resend
        # litellm builds the request coroutine on an executor thread and awaits it after; a
        # call cancelled in between (a hedge that lost, Ctrl-C) leaves it unsent and unawaited,
        # which is harmless but would print a RuntimeWarning on the user's terminal
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message=r"coroutine 'BaseLLMHTTPHandler\.\w+' was never awaited")
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _litellm = litellm
    return _litellm


class LiteLLMClient:
    def __init__(self) -> None:
        self._litellm = load_litellm()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        litellm = self._litellm
        kwargs: dict[str, Any] = dict(request.params)
        kwargs.setdefault("num_retries", 0)
        kwargs.setdefault("max_retries", 0)
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        if request.tools:
            kwargs["tools"] = request.tools
        if kwargs.get("organization"):  # an alias's `params: {organization: ...}`, as a header
            # litellm's own HTTP handler (see quiet_litellm_env) would drop it otherwise
            kwargs["extra_headers"] = {"OpenAI-Organization": str(kwargs["organization"]),
                                       **(kwargs.get("extra_headers") or {})}
        started = time.perf_counter()
        try:
            resp = await litellm.acompletion(model=request.model, messages=request.messages, **kwargs)
        except ProviderError:
            raise
        except Exception as exc:  # translated once, here
            raise translate_error(exc, request.model, request.params.get("timeout")) from exc
        latency = (time.perf_counter() - started) * 1000
        try:
            choice = resp.choices[0]
            message = choice.message
            content = message.content
            calls = [ToolCallRequest(id=tc.id or f"call_{i}", name=tc.function.name or "",
                                     arguments=tc.function.arguments or "{}")
                     for i, tc in enumerate(message.tool_calls or [])]
            refusal = getattr(message, "refusal", None) or (
                getattr(message, "provider_specific_fields", None) or {}).get("refusal")
            tokens = _tokens(getattr(resp, "usage", None))
        except (AttributeError, IndexError, TypeError) as exc:
            raise RetryableProviderError(f"{request.model}: unreadable reply: {exc}",
                                         kind="MalformedReply") from exc
        in_tok, out_tok = tokens or (0, 0)
        return LLMResponse(content=content, tool_calls=calls, finish_reason=choice.finish_reason,
                           input_tokens=in_tok, output_tokens=out_tok,
                           usage_known=tokens is not None,
                           cost_usd=self._cost(request, resp, in_tok, out_tok) if tokens else None,
                           model=getattr(resp, "model", None) or request.model, latency_ms=latency,
                           refusal=str(refusal) if refusal else None)

    def _cost(self, request: LLMRequest, resp: Any, in_tok: int, out_tok: int) -> float | None:
        """The price of the model this call was configured with and sent to: the alias's
        `price:`, else litellm's price map for `request.model`. Never the model name the reply
        reports (a proxy may answer "gpt-4o" for a model the user priced, or left unpriced)."""
        price = request.meta.get("price")
        if price is not None:
            return (in_tok * price["input_per_mtok"] + out_tok * price["output_per_mtok"]) / 1e6
        return price_of(request.model, in_tok, out_tok, usage=getattr(resp, "usage", None))

    async def aclose(self) -> None:
        # litellm caches aiohttp sessions per loop; close them before our loop ends
        closer = getattr(self._litellm, "close_litellm_async_clients", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                pass


def _tokens(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a reply, or None when it did not report them usably.
    litellm fills a missing `usage` with zeros; no real prompt is zero tokens, so zero prompt
    tokens mean "not reported". Negative counts are malformed, not a refund."""
    try:
        in_tok = int(getattr(usage, "prompt_tokens", None) or 0)
        out_tok = int(getattr(usage, "completion_tokens", None) or 0)
    except (TypeError, ValueError):
        return None
    if in_tok <= 0 or out_tok < 0:
        return None
    return in_tok, out_tok


def price_of(model: str, in_tok: int, out_tok: int, usage: Any = None) -> float | None:
    """USD from litellm's local price map; None when the model is not in it (unpriced).
    With the reply's `usage`, cached prompt tokens get their own (lower) rate."""
    litellm = load_litellm()
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=in_tok, completion_tokens=out_tok,
            **({"usage_object": usage} if usage is not None else {}))
    except Exception:
        return None
    return float(prompt_cost + completion_cost)


def known_price(model: str) -> bool:
    return price_of(model, 1000, 1000) is not None
