"""An OpenAI-compatible chat-completions server on loopback, for tests.

``FakeLLM`` is a real aiohttp server running its own event loop in a background thread, so
sync and async tests can both point litellm at ``srv.base_url``. It answers
``POST /v1/chat/completions`` (and ``/chat/completions``) in OpenAI's format, records every
request body it receives, and measures how many requests it was handling at once.

How one request is answered; the first rule that applies wins:

1. ``faults.rpm_limit``: a request over the sliding-window limit gets a 429 at once, with
   ``Retry-After`` (whole seconds) and ``retry-after-ms`` saying when a slot frees.
2. One seeded random draw against the ``faults`` rates: 429 (at once), 500, hang, malformed
   body, connection reset, or content that violates the request's schema.
3. ``responder(body)``, if set and it returns a ``Reply``.
4. The default. ``[[call:NAME {json args}]]`` markers in the last user message become tool
   calls, when the request offers ``tools`` and the last message is not a tool result. Otherwise
   the content is a JSON value valid against ``response_format``'s ``json_schema``, derived from
   a hash of the last user message (same prompt, same answer), or ``{"answer": ...}`` for
   ``json_object``, or a short text.

Every reply except the fault and rpm 429s waits ``Reply.delay`` or else ``latency`` first.
Heavy tail: with ``slow_rate`` set, a seeded random share of the replies that wait ``latency``
wait ``latency * slow_factor`` instead (a draw of its own, so the fault draws do not move).
Markers such as ``[[item:ACME-1]] [[stage:research]]`` in the system messages or the last user
message, and ``x-agentctl-<key>`` headers, become ``body["_meta"]``; ``count(item="ACME-1")``
matches on them. Each recorded body also gets ``_status`` (None while pending, or when no
response was sent: hang, reset), ``_usage``, ``_fault`` (which fault rule fired, or None) and
``_org`` (the ``OpenAI-Organization`` header, or None).

As a process: ``python -m tests.fakes.llm_server --port 0 --latency 1.0 --fault-429 0.1``
(``--slow-rate 0.05 --slow-factor 10`` for a heavy tail) prints ``PORT <n>`` as its first line
and also serves ``GET /stats`` and ``POST /reset``. ``/stats`` sums the delays of the answered
requests (``delay_s_total``, as scheduled; ``slept_s_total``, as measured), so a benchmark can
compute its ideal time from what was actually served.

This file runs past STYLE.md's ~400 lines because the schema-value generator lives here too,
so that the fake stays one self-contained file.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import itertools
import json
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

HANG_SECONDS = 3600.0
MAX_SCHEMA_DEPTH = 8


@dataclass
class Reply:
    """One scripted answer; ``status != 200`` sends an OpenAI-style error body.

    What real providers also send: ``finish_reason`` ("length", "content_filter"; default
    "tool_calls" or "stop"), ``refusal`` (OpenAI's ``message.refusal``), ``usage`` (a dict sent
    as is, or ``NO_USAGE`` for none), ``model`` (the name the reply reports), ``raw`` (this body
    text, sent as is with ``status`` and ``content_type``) and ``dribble`` (seconds between
    8-byte pieces of the body, after the headers went out at once)."""

    content: str | None = None
    # [{"name": ..., "arguments": dict | raw str}]; optional "id"; a call without "name"
    # is sent without one
    tool_calls: list[dict] | None = None
    status: int = 200  # with error_type set and status 200, the status follows error_type
    error_type: str | None = None
    headers: dict[str, str] | None = None
    delay: float | None = None
    hang: bool = False
    reset: bool = False
    malformed: bool = False
    finish_reason: str | None = None
    refusal: str | None = None
    usage: Any = None
    model: str | None = None
    raw: str | None = None
    content_type: str = "application/json"
    dribble: float | None = None


NO_USAGE = "no usage"  # Reply(usage=NO_USAGE): the reply has no `usage` key


@dataclass
class Faults:
    rate_429: float = 0.0
    retry_after: float | str | None = 1
    rate_500: float = 0.0
    rate_hang: float = 0.0
    rate_malformed: float = 0.0
    rate_reset: float = 0.0
    rate_invalid: float = 0.0
    rpm_limit: int | None = None
    rpm_window: float = 60.0


# error_type -> (status, OpenAI "type", OpenAI "code", message), as OpenAI sends them.
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limit_exceeded": (429, "requests", "rate_limit_exceeded",
                            "Rate limit reached for requests. Please try again later."),
    "insufficient_quota": (429, "insufficient_quota", "insufficient_quota",
                           "You exceeded your current quota, please check your plan and billing details."),
    "context_length_exceeded": (400, "invalid_request_error", "context_length_exceeded",
                                "This model's maximum context length is 8192 tokens. However, your "
                                "messages resulted in 9000 tokens. Please reduce the length of the messages."),
    "authentication_error": (401, "invalid_request_error", "invalid_api_key",
                             "Incorrect API key provided: sk-test. You can find your API key at "
                             "https://platform.openai.com/account/api-keys."),
    "invalid_request_error": (400, "invalid_request_error", None, "Invalid request."),
    "server_error": (500, "server_error", None,
                     "The server had an error while processing your request. Sorry about that!"),
}
_ERROR_FOR_STATUS = {429: "rate_limit_exceeded", 401: "authentication_error", 400: "invalid_request_error"}


class FakeLLM:
    def __init__(self, *, latency: float = 0.0, seed: int = 0, slow_rate: float = 0.0,
                 slow_factor: float = 10.0):
        self.latency = latency
        self.seed = seed
        self.slow_rate = slow_rate      # share of latency-waiting replies that are slow
        self.slow_factor = slow_factor  # ... and wait latency * slow_factor
        self.faults = Faults()
        self.responder: Callable[[dict], Reply | None] | None = None
        self.requests: list[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.port: int | None = None
        self._lock = threading.Lock()  # guards everything above that handlers mutate
        self._rng = random.Random(seed)
        self._slow_rng = random.Random(f"slow:{seed}")
        self._admitted: deque[float] = deque()  # start times inside the rpm window
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeLLM is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> FakeLLM:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"FakeLLM:{self.port}",
                                        daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/stats", self._stats_route)
        app.router.add_post("/reset", self._reset_route)
        # handler_cancellation: a client that gives up (timeout) stops counting as in flight.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5,
                                     access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        self._stopping.set()  # hung handlers wake up and drop their connections
        await self._runner.cleanup()
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    # -- bookkeeping -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, counters and the rpm window; settings and the seed stay."""
        with self._lock:
            self.requests.clear()
            self.peak_in_flight = self.in_flight
            self._admitted.clear()
            self._rng = random.Random(self.seed)
            self._slow_rng = random.Random(f"slow:{self.seed}")

    def count(self, **match: Any) -> int:
        """Requests whose ``_meta`` has every key=value; ``_status=429`` etc. match the record."""
        with self._lock:
            rows = list(self.requests)
        return sum(
            all((row.get(key) if key.startswith("_") else row["_meta"].get(key)) == value
                for key, value in match.items())
            for row in rows)

    def stats(self) -> dict:
        with self._lock:
            rows = list(self.requests)
            in_flight, peak = self.in_flight, self.peak_in_flight
        statuses = Counter("none" if r["_status"] is None else str(r["_status"]) for r in rows)
        faults = Counter(r["_fault"] for r in rows if r["_fault"])
        answered = [r for r in rows if r["_status"] is not None]
        return {"requests": len(rows), "in_flight": in_flight, "peak_in_flight": peak,
                "status_counts": dict(statuses), "fault_counts": dict(faults),
                "answered": len(answered), "slow_replies": sum(1 for r in answered if r.get("_slow")),
                "delay_s_total": round(sum(r.get("_delay") or 0.0 for r in answered), 6),
                "slept_s_total": round(sum(r.get("_slept") or 0.0 for r in answered), 6)}

    async def _stats_route(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _reset_route(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    # -- answering -------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        counted = True
        try:
            response = await self._answer(request)
            if response is not None:
                return response
            # Leave before the RST goes out, so a client that sees the reset sees the count drop.
            self._leave()
            counted = False
            return await _drop_connection(request)
        finally:
            if counted:
                self._leave()

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse | None:
        """The response to send, or None to drop the connection without one."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            status, payload = _error_payload(Reply(status=400, content="The body is not a JSON object."))
            return web.json_response(payload, status=status)
        body.update(_meta=_meta(body, request.headers), _status=None, _usage=None, _fault=None,
                    _org=request.headers.get("OpenAI-Organization"))
        with self._lock:
            self.requests.append(body)
            reply, body["_fault"] = self._decide_fault(body)
        if reply is None:
            reply = await self._respond(body)

        delay = reply.delay if reply.delay is not None else self._base_delay(body)
        if reply.hang:
            await _wait(self._stopping, HANG_SECONDS)
            return None
        if delay > 0:
            slept = time.perf_counter()
            await asyncio.sleep(delay)
            body["_slept"] = time.perf_counter() - slept
        body["_delay"] = delay
        if reply.reset:
            return None
        if reply.raw is not None:
            body["_status"] = reply.status
            return web.Response(status=reply.status, text=reply.raw,
                                content_type=reply.content_type, headers=reply.headers)
        if reply.malformed:
            body["_status"] = 200
            return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"mess',
                                content_type="application/json", headers=reply.headers)
        if reply.status != 200 or reply.error_type:
            status, payload = _error_payload(reply)
            body["_status"] = status
            return web.json_response(payload, status=status, headers=reply.headers)
        payload = _completion(body, reply, next(self._ids))
        body["_usage"], body["_status"] = payload.get("usage"), 200
        if reply.dribble is not None:
            return await _dribble(request, payload, reply)
        return web.json_response(payload, headers=reply.headers)

    def _base_delay(self, body: dict) -> float:
        """``latency``, or ``latency * slow_factor`` for a seeded ``slow_rate`` share of replies."""
        if self.slow_rate <= 0:  # no draw at all: unchanged behaviour when the tail is off
            return self.latency
        with self._lock:
            slow = self._slow_rng.random() < self.slow_rate
        body["_slow"] = slow
        return self.latency * self.slow_factor if slow else self.latency

    def _decide_fault(self, body: dict) -> tuple[Reply | None, str | None]:
        """Called under the lock: the rpm window and the seeded draw."""
        faults, now = self.faults, time.monotonic()
        if faults.rpm_limit is not None:
            while self._admitted and self._admitted[0] <= now - faults.rpm_window:
                self._admitted.popleft()
            if len(self._admitted) >= faults.rpm_limit:
                oldest = self._admitted[0] if self._admitted else now
                wait = max(oldest + faults.rpm_window - now, 0.001)
                headers = {"Retry-After": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
                return Reply(status=429, error_type="rate_limit_exceeded", headers=headers, delay=0), "rpm"
            self._admitted.append(now)
        draw = self._rng.random()
        for name, rate in (("429", faults.rate_429), ("500", faults.rate_500), ("hang", faults.rate_hang),
                           ("malformed", faults.rate_malformed), ("reset", faults.rate_reset),
                           ("invalid", faults.rate_invalid)):
            if draw < rate:
                return self._fault_reply(name, body), name
            draw -= rate
        return None, None

    def _fault_reply(self, name: str, body: dict) -> Reply:
        if name == "429":
            after = self.faults.retry_after
            headers = None if after is None else {"Retry-After": after if isinstance(after, str) else f"{after:g}"}
            return Reply(status=429, error_type="rate_limit_exceeded", headers=headers, delay=0)
        if name == "500":
            return Reply(status=500, error_type="server_error")
        if name == "invalid":
            return Reply(content=_violate(_schema_of(body), default_reply(body).content))
        return Reply(**{name: True})

    async def _respond(self, body: dict) -> Reply:
        if body.get("stream"):
            return Reply(status=400, content="FakeLLM does not stream; call without stream=True.")
        if self.responder is not None:
            try:
                reply = self.responder(body)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception as exc:  # a broken test responder shows up as a 500, and on stderr
                traceback.print_exc()
                body["_fault"] = "responder-error"
                return Reply(status=500, error_type="server_error", content=f"responder raised {exc!r}")
            if reply is not None:
                return reply
        return default_reply(body)


async def _dribble(request: web.Request, payload: dict, reply: Reply) -> web.StreamResponse:
    """Headers at once, then the body 8 bytes at a time, ``reply.dribble`` seconds apart."""
    data = json.dumps(payload).encode()
    response = web.StreamResponse(status=200, headers=reply.headers)
    response.content_type = "application/json"
    response.content_length = len(data)
    await response.prepare(request)
    try:
        for i in range(0, len(data), 8):
            await response.write(data[i:i + 8])
            await asyncio.sleep(reply.dribble)
        await response.write_eof()
    except ConnectionError:  # the client gave up waiting
        pass
    return response


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass


async def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Abort the TCP connection with an RST, so the client sees a reset and no response."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    await asyncio.sleep(HANG_SECONDS)  # connection_lost cancels this handler (handler_cancellation)
    raise AssertionError("unreachable")


def _error_payload(reply: Reply) -> tuple[int, dict]:
    key = reply.error_type or _ERROR_FOR_STATUS.get(reply.status) or (
        "server_error" if reply.status >= 500 else "invalid_request_error")
    status, kind, code, message = _ERRORS.get(key, (400, key, key, key.replace("_", " ")))
    status = reply.status if reply.status != 200 else status
    return status, {"error": {"message": reply.content or message, "type": kind, "param": None, "code": code}}


def _completion(body: dict, reply: Reply, seq: int) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.refusal is not None:
        message["refusal"] = reply.refusal
    spoken = reply.content or ""
    if reply.tool_calls:
        calls = []
        for i, call in enumerate(reply.tool_calls):
            args = call.get("arguments", {})
            args = args if isinstance(args, str) else json.dumps(args)
            function = {"name": call["name"]} if "name" in call else {}
            calls.append({"id": call.get("id", f"call_fake{seq}_{i}"), "type": "function",
                          "function": {**function, "arguments": args}})
            spoken += str(call.get("name") or "") + args
        message["tool_calls"] = calls
    prompt_tokens = math.ceil(len(json.dumps(body.get("messages", []))) / 4)
    completion_tokens = math.ceil(len(spoken) / 4)
    usage = reply.usage if reply.usage is not None else {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens}
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    payload = {
        "id": f"chatcmpl-fake{seq}", "object": "chat.completion", "created": int(time.time()),
        "model": reply.model or body.get("model", "fake"), "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage != NO_USAGE:
        payload["usage"] = usage
    return payload


# -- the default model ---------------------------------------------------------------------

_MARKER = re.compile(r"\[\[(\w[\w-]*):([^\[\]]*)\]\]")
_CALL = re.compile(r"\[\[call:([\w.-]+)")
_WORDS = ("alpha", "bravo", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris",
          "juniper", "kestrel", "lumen", "meadow", "nimbus", "orchid", "pioneer", "quartz")


def default_reply(body: dict) -> Reply:
    messages = body.get("messages") or []
    text = _text(_last(messages, "user"))
    if body.get("tools") and not (messages and messages[-1].get("role") == "tool"):
        calls = scripted_tool_calls(text)
        if calls:
            return Reply(tool_calls=calls)
    digest = hashlib.sha256(text.encode()).digest()
    kind = (body.get("response_format") or {}).get("type")
    if kind == "json_schema":
        return Reply(content=json.dumps(sample_schema(_schema_of(body), random.Random(digest))))
    if kind == "json_object":
        return Reply(content=json.dumps({"answer": f"fake answer {digest.hex()[:8]}"}))
    return Reply(content=f"fake answer {digest.hex()[:8]}")


def scripted_tool_calls(text: str) -> list[dict]:
    """``[[call:NAME {json}]]`` -> calls; arguments that are not JSON pass through as a raw string."""
    calls, decoder = [], json.JSONDecoder()
    for match in _CALL.finditer(text):
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
        end = text.find("]]", pos)
        if end < 0:
            continue
        args: dict | str = {}
        if pos < end:
            try:
                args, after = decoder.raw_decode(text, pos)
                end = text.index("]]", after)
            except ValueError:
                args = text[pos:end].strip()
        calls.append({"name": match.group(1), "arguments": args})
    return calls


def _meta(body: dict, headers: Any) -> dict[str, str]:
    meta = {k.lower()[len("x-agentctl-"):]: v for k, v in headers.items() if k.lower().startswith("x-agentctl-")}
    messages = body.get("messages") or []
    sources = [m for m in messages if m.get("role") in ("system", "developer")] + [_last(messages, "user")]
    for message in sources:
        for key, value in _MARKER.findall(_text(message)):
            if key != "call":
                meta[key] = value.strip()
    return meta


def _last(messages: list[dict], role: str) -> dict:
    return next((m for m in reversed(messages) if m.get("role") == role), {})


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _schema_of(body: dict) -> dict:
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("schema") or {} if fmt.get("type") == "json_schema" else {}


def _violate(schema: dict, content: str | None) -> str:
    """Valid JSON that breaks ``schema``: drop a required field, else mistype a field."""
    try:
        value = json.loads(content or "")
    except ValueError:
        value = None
    if isinstance(value, dict) and schema.get("required"):
        value.pop(schema["required"][0], None)
    elif isinstance(value, dict) and value:
        key = next(iter(value))
        value[key] = 12345 if isinstance(value[key], str) else "not the expected type"
    else:
        value = {"unexpected": True} if isinstance(value, list) else ["not", "an", "object"]
    return json.dumps(value)


def sample_schema(schema: dict, rng: random.Random) -> Any:
    """A value valid against ``schema`` (no ``pattern``, ``multipleOf``, ``not``, ``if``)."""
    return _Sampler(schema, rng).value(schema, 0, "value")


class _Sampler:
    def __init__(self, root: dict, rng: random.Random):
        self.root, self.rng = root, rng

    def value(self, schema: Any, depth: int, name: str) -> Any:
        if not isinstance(schema, dict):
            return f"{name} {self.rng.choice(_WORDS)}"
        if "$ref" in schema:
            return self.value(self._resolve(schema["$ref"]), depth, name)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:  # prefer a non-null branch so replies carry data
                options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
                return self.value(self.rng.choice(options), depth, name)
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                merged.update(self._resolve(part["$ref"]) if "$ref" in part else part)
            return self.value(merged, depth, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        return getattr(self, f"_{kind}")(schema, depth, name)

    def _resolve(self, ref: str) -> dict:
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _object(self, schema: dict, depth: int, name: str) -> dict:
        props = schema.get("properties", {})
        keys = list(props) if depth < MAX_SCHEMA_DEPTH else []
        keys += [k for k in schema.get("required", []) if k not in keys]
        return {k: self.value(props.get(k, {"type": "string"}), depth + 1, k) for k in keys}

    def _array(self, schema: dict, depth: int, name: str) -> list:
        low = schema.get("minItems", 0 if depth >= MAX_SCHEMA_DEPTH else 1)
        high = max(low, schema.get("maxItems", low + 2))
        size = low if depth >= MAX_SCHEMA_DEPTH else self.rng.randint(low, high)
        items, seen = [], set()
        for _ in range(size * 20):
            if len(items) == size:
                break
            item = self.value(schema.get("items", {}), depth + 1, name)
            key = json.dumps(item, sort_keys=True)
            if not schema.get("uniqueItems") or key not in seen:
                items.append(item)
                seen.add(key)
        return items

    def _string(self, schema: dict, depth: int, name: str) -> str:
        fixed = {"date": "2024-03-15", "date-time": "2024-03-15T12:00:00Z", "time": "12:00:00Z",
                 "email": f"{self.rng.choice(_WORDS)}@example.com", "uuid": "123e4567-e89b-12d3-a456-426614174000",
                 "uri": f"https://example.com/{self.rng.choice(_WORDS)}"}
        if schema.get("format") in fixed:
            return fixed[schema["format"]]
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        text = f"{name} " + " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 4)))
        while len(text) < low:
            text += " " + self.rng.choice(_WORDS)
        return text if high is None else text[:high]

    def _integer(self, schema: dict, depth: int, name: str) -> int:
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
        high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
        low = math.ceil(low) if low is not None else (0 if high is None or high >= 0 else high - 100)
        high = math.floor(high) if high is not None else low + 100
        return self.rng.randint(low, high)

    def _number(self, schema: dict, depth: int, name: str) -> float:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        low = low if low is not None else (0.0 if high is None or high >= 0 else high - 100.0)
        high = high if high is not None else low + 100.0
        value = round(self.rng.uniform(low, high), 2)
        strictly_inside = low < value < high
        return value if strictly_inside or (low == high) else (low + high) / 2

    def _boolean(self, schema: dict, depth: int, name: str) -> bool:
        return self.rng.random() < 0.5

    def _null(self, schema: dict, depth: int, name: str) -> None:
        return None


# -- process mode --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.llm_server",
                                     description="Serve a fake OpenAI chat-completions API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--slow-rate", type=float, default=0.0, metavar="RATE",
                        help="share of answers that wait latency x --slow-factor (seeded draw)")
    parser.add_argument("--slow-factor", type=float, default=10.0, help="how much slower a slow answer is")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fault draws")
    for name in ("429", "500", "hang", "malformed", "reset", "invalid"):
        parser.add_argument(f"--fault-{name}", type=float, default=0.0, metavar="RATE")
    parser.add_argument("--retry-after", default="1", help="Retry-After on fault 429s: seconds or an HTTP date")
    parser.add_argument("--rpm-limit", type=int, default=None)
    parser.add_argument("--rpm-window", type=float, default=60.0)
    args = parser.parse_args(argv)

    try:
        retry_after: float | str = float(args.retry_after)
    except ValueError:
        retry_after = args.retry_after
    server = FakeLLM(latency=args.latency, seed=args.seed, slow_rate=args.slow_rate,
                     slow_factor=args.slow_factor)
    server.faults = Faults(rate_429=args.fault_429, rate_500=args.fault_500, rate_hang=args.fault_hang,
                           rate_malformed=args.fault_malformed, rate_reset=args.fault_reset,
                           rate_invalid=args.fault_invalid, retry_after=retry_after,
                           rpm_limit=args.rpm_limit, rpm_window=args.rpm_window)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start(args.port)
    print(f"PORT {server.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
