"""The real client: litellm, imported lazily, with its errors translated once, here."""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import sys
import threading
import time
import warnings
from typing import Any, Iterator

import httpx

from agentctl.errors import (AuthError, BadRequest, ProviderError, QuotaExceeded, RateLimited,
                             RetryableProviderError)
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
    off every run's start-up (the openai SDK already defers its own models this way)."""
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


def _retry_after(exc: Exception) -> float | None:
    headers = None
    for attr in ("litellm_response_headers", "headers"):
        headers = getattr(exc, attr, None)
        if headers:
            break
    if not headers:
        resp = getattr(exc, "response", None)
        headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        get = headers.get
    except AttributeError:
        return None
    for name in ("retry-after", "Retry-After", "retry-after-ms"):
        value = get(name)
        if value is None:
            continue
        value = str(value).strip()
        try:
            secs = float(value)
            return secs / 1000 if name == "retry-after-ms" else secs
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                continue
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = get(name)
        if value:
            secs = _parse_duration(str(value))
            if secs is not None:
                return secs
    return None


def _parse_duration(text: str) -> float | None:
    """OpenAI's reset headers look like '1s', '6m0s', '20ms'."""
    import re

    total, found = 0.0, False
    for num, unit in re.findall(r"([\d.]+)(ms|s|m|h)", text):
        found = True
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if found:
        return total
    try:
        return float(text)
    except ValueError:
        return None


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from, outermost first (bounded)."""
    out: list[BaseException] = []
    while exc is not None and len(out) < 12:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def translate_error(exc: Exception, model: str) -> ProviderError:
    """Map a litellm/openai/httpx exception onto agentctl's provider errors."""
    litellm = load_litellm()
    status = getattr(exc, "status_code", None)
    text = str(exc)
    # litellm prefixes messages with "litellm.RateLimitError: ..."; keep them short and keyless.
    short = text.split("\n")[0][:500]
    low = text.lower()
    retry_after = _retry_after(exc)
    if "insufficient_quota" in low or "exceeded your current quota" in low:
        return QuotaExceeded(f"{model}: quota exhausted at the provider (insufficient_quota); "
                             "add credit or switch model with --model", status=status)
    if isinstance(exc, litellm.AuthenticationError) or status in (401, 403):
        return AuthError(f"{model}: authentication failed; check the API key environment variable "
                         "for this provider (e.g. OPENAI_API_KEY)", status=status)
    if isinstance(exc, litellm.ContextWindowExceededError) or "context_length_exceeded" in low:
        return BadRequest(f"{model}: context length exceeded: {short}", status=status,
                          kind="ContextLengthExceeded")
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return RateLimited(f"{model}: rate limited (429)", status=429, retry_after=retry_after)
    if isinstance(exc, litellm.Timeout) or "timed out" in low or "timeout" in type(exc).__name__.lower():
        return RetryableProviderError(f"{model}: request timed out", status=status, kind="Timeout")
    causes = _causes(exc)
    if any(isinstance(c, json.JSONDecodeError) for c in causes):
        # a body litellm cannot parse: its exception carries a made-up status (500 on the
        # openai SDK path, the real 200 on its own handler), so the cause decides
        return RetryableProviderError(f"{model}: unreadable reply: {short}", kind="MalformedReply")
    if any(isinstance(c, (ConnectionError, httpx.TransportError)) for c in causes):
        return RetryableProviderError(f"{model}: connection error: {short}", kind="ConnectionError")
    if isinstance(exc, (litellm.InternalServerError, litellm.ServiceUnavailableError)) or (
            status is not None and status >= 500):
        return RetryableProviderError(f"{model}: server error {status or ''}".strip(),
                                      status=status, retry_after=retry_after, kind="ServerError")
    if isinstance(exc, litellm.APIConnectionError):
        # litellm also uses APIConnectionError for unparseable replies; both may heal on retry
        return RetryableProviderError(f"{model}: connection error: {short}", status=status,
                                      kind="ConnectionError")
    if isinstance(exc, (litellm.NotFoundError,)) or status == 404:
        return BadRequest(f"{model}: model or endpoint not found: {short}", status=status,
                          kind="NotFound")
    if isinstance(exc, litellm.BadRequestError) or status in (400, 422):
        return BadRequest(f"{model}: bad request: {short}", status=status)
    if isinstance(exc, litellm.APIError):
        return RetryableProviderError(f"{model}: API error: {short}", status=status, kind="APIError")
    if isinstance(exc, (ValueError, TypeError)):
        return RetryableProviderError(f"{model}: unreadable reply: {short}", kind="MalformedReply")
    return RetryableProviderError(f"{model}: {type(exc).__name__}: {short}", status=status)


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
            raise translate_error(exc, request.model) from exc
        latency = (time.perf_counter() - started) * 1000
        try:
            choice = resp.choices[0]
            message = choice.message
            content = message.content
            calls = [ToolCallRequest(id=tc.id or f"call_{i}", name=tc.function.name,
                                     arguments=tc.function.arguments or "{}")
                     for i, tc in enumerate(message.tool_calls or [])]
            usage = getattr(resp, "usage", None)
            in_tok = int(getattr(usage, "prompt_tokens", 0) or 0)
            out_tok = int(getattr(usage, "completion_tokens", 0) or 0)
        except (AttributeError, IndexError, TypeError) as exc:
            raise RetryableProviderError(f"{request.model}: unreadable reply: {exc}",
                                         kind="MalformedReply") from exc
        return LLMResponse(content=content, tool_calls=calls, finish_reason=choice.finish_reason,
                           input_tokens=in_tok, output_tokens=out_tok,
                           cost_usd=self._cost(request, resp, in_tok, out_tok),
                           model=getattr(resp, "model", None) or request.model, latency_ms=latency)

    def _cost(self, request: LLMRequest, resp: Any, in_tok: int, out_tok: int) -> float | None:
        price = request.meta.get("price")
        if price is not None:
            return (in_tok * price["input_per_mtok"] + out_tok * price["output_per_mtok"]) / 1e6
        hidden = getattr(resp, "_hidden_params", None) or {}
        if hidden.get("response_cost") is not None:  # litellm priced this reply already
            return float(hidden["response_cost"])
        return price_of(request.model, in_tok, out_tok)

    async def aclose(self) -> None:
        # litellm caches aiohttp sessions per loop; close them before our loop ends
        closer = getattr(self._litellm, "close_litellm_async_clients", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                pass


def price_of(model: str, in_tok: int, out_tok: int) -> float | None:
    """USD from litellm's local price map; None when the model is not in it (unpriced)."""
    litellm = load_litellm()
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=in_tok, completion_tokens=out_tok)
    except Exception:
        return None
    return float(prompt_cost + completion_cost)


def known_price(model: str) -> bool:
    return price_of(model, 1000, 1000) is not None
