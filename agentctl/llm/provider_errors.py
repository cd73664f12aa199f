"""litellm's (and the openai SDK's, and httpx's) exceptions as agentctl's provider errors:
`translate_error`, the one place they are read.

The HTTP status decides first: a 400 whose message happens to say "timed out" is still a bad
request, a 413 is permanent whatever its body (an nginx HTML page too). Texts are read only
where the status cannot tell: quota vs rate limit, context length, a content filter, a 200
reply litellm could not convert (it reports those with a made-up 500), an exception with no
status at all. The provider's own words are kept where a user needs them (401, 403, 413).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import Any

import httpx

from agentctl.errors import (AuthError, BadRequest, ProviderError, QuotaExceeded, RateLimited,
                             RetryableProviderError)


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


def translate_error(exc: Exception, model: str, timeout: Any = None) -> ProviderError:
    """Map a litellm/openai/httpx exception onto agentctl's provider errors (see above);
    `timeout` is the alias's, for the message."""
    from agentctl.llm.litellm_client import load_litellm

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
    unconverted = _unconverted_reply(exc, text, model)
    if unconverted is not None:  # litellm's made-up status 500 on a 200 reply: not a 5xx
        return unconverted
    if isinstance(exc, litellm.Timeout):
        return RetryableProviderError(f"{model}: request timed out{_after(timeout)}",
                                      status=status, kind="Timeout")
    said = _provider_message(text)
    if status == 401 or (isinstance(exc, litellm.AuthenticationError) and status != 403):
        return AuthError(f"{model}: authentication failed (401: {said}); check the API key "
                         "environment variable for this provider (e.g. OPENAI_API_KEY)",
                         status=status)
    if status == 403 or isinstance(exc, getattr(litellm, "PermissionDeniedError", ())):
        # a key problem, or access refused for this key: the model, the region, the org. It
        # will not heal by retrying and every call would meet it: it stops the run too, with
        # the provider's own words
        return AuthError(f"{model}: permission denied (403: {said}); the provider refused this "
                         "key (check the API key environment variable, e.g. OPENAI_API_KEY) "
                         "or its access to this model or from this region", status=403)
    if status == 413:
        return BadRequest(f"{model}: request too large (413: {said}); shorten the prompt or "
                          "the tool results", status=413, kind="RequestTooLarge")
    if isinstance(exc, litellm.ContextWindowExceededError) or (
            "context_length_exceeded" in low and status in (None, 400, 422)):
        return BadRequest(f"{model}: context length exceeded: {short}", status=status,
                          kind="ContextLengthExceeded")
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return RateLimited(f"{model}: rate limited (429)", status=429, retry_after=retry_after)
    if isinstance(exc, (litellm.NotFoundError,)) or status == 404:
        return BadRequest(f"{model}: model or endpoint not found: {short}", status=status,
                          kind="NotFound")
    if isinstance(exc, litellm.BadRequestError) or status in (400, 422):
        if "content_filter" in low or "content management policy" in low:
            return BadRequest(f"{model}: the provider's content filter blocked the prompt "
                              f"({status}: {said}); rephrase the prompt or use another model",
                              status=status, kind="ContentFilter")
        return BadRequest(f"{model}: bad request: {short}", status=status)
    if status is None and ("timed out" in low or "timeout" in type(exc).__name__.lower()):
        return RetryableProviderError(f"{model}: request timed out{_after(timeout)}",
                                      kind="Timeout")
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
    if isinstance(exc, litellm.APIError):
        return RetryableProviderError(f"{model}: API error: {short}", status=status, kind="APIError")
    if isinstance(exc, (ValueError, TypeError)):
        return RetryableProviderError(f"{model}: unreadable reply: {short}", kind="MalformedReply")
    return RetryableProviderError(f"{model}: {type(exc).__name__}: {short}", status=status)


def _after(timeout: Any) -> str:
    try:
        return f" after {float(timeout):g} s (the alias timeout)" if timeout else ""
    except (TypeError, ValueError):
        return ""


def _unconverted_reply(exc: Exception, text: str, model: str) -> ProviderError | None:
    """A 200 reply litellm could not turn into a completion (no choices, a choice without a
    message, content in a shape it does not take, a `null` body). litellm reports it with a
    made-up status 500; its own message says what was wrong, so it is kept. No choices with
    `prompt_filter_results` is Azure's prompt-filter block: retrying sends the same prompt
    into the same filter, so it is not retried."""
    if "response with no 'choices'" in text:
        if "prompt_filter_results" in text:
            return BadRequest(f"{model}: the provider's content filter blocked the prompt (a 200 "
                              "reply with no choices and prompt_filter_results); rephrase the "
                              "prompt or use another model", kind="ContentFilter")
        return RetryableProviderError(f"{model}: unreadable reply: a 200 reply with no choices "
                                      f"({_first_line(text, 'LiteLLM:')})", kind="MalformedReply")
    if "Invalid response object" in text:
        inner = _causes(exc)[-1]
        why = _first_line(str(inner)) if inner is not exc else ""
        detail = f"{type(inner).__name__}: {why}" if why else type(inner).__name__
        return RetryableProviderError(f"{model}: unreadable reply: litellm could not read the "
                                      f"200 reply (Invalid response object; {detail})",
                                      kind="MalformedReply")
    return None


def _first_line(text: str, after: str | None = None) -> str:
    if after and after in text:
        text = text.split(after, 1)[1]
    return " ".join(text.strip().split("\n")[0].split())[:300]


def _provider_message(text: str) -> str:
    """What the provider said in an error body: `error.message` (and `code`) of a JSON body,
    else the body's text without HTML tags; one line, short."""
    body = text.split("Exception - ", 1)[1] if "Exception - " in text else text
    start = body.find("{")
    if start >= 0:
        try:
            doc, _ = json.JSONDecoder().raw_decode(body, start)
        except ValueError:
            doc = None
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("message"):
            code = err.get("code") or err.get("type")
            return _first_line(str(err["message"])) + (f" ({code})" if code else "")
        if isinstance(err, str) and err:
            return _first_line(err)
    plain = re.sub(r"<[^>]*>", " ", body)
    return " ".join(plain.split())[:300] or "no message"
