"""The fake LLM server: its answers, its faults, and what litellm makes of them.

The error-mapping test pins down which litellm exception each failure becomes, and where
Retry-After survives; the retry policy is built on those observations.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import pydantic
import pytest

from agentctl.llm.litellm_client import load_litellm  # noqa: E402
from tests.fakes.llm_server import FakeLLM, Faults, Reply, sample_schema, scripted_tool_calls  # noqa: E402

litellm = load_litellm()  # configured as agentctl runs it: the findings below are about that
pytestmark = pytest.mark.timeout(10)

REPO = Path(__file__).resolve().parents[1]
HTTP = httpx.Client(timeout=5)  # one client: a new one per call costs ~40 ms of TLS setup

ACCOUNT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "tier", "employees", "score", "active", "tags", "owner", "address", "notes"],
    "properties": {
        "name": {"type": "string", "minLength": 30, "maxLength": 40},
        "tier": {"enum": ["gold", "silver", "bronze"]},
        "employees": {"type": "integer", "minimum": 10, "maximum": 20},
        "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 2, "maxItems": 4},
        "owner": {"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]},
        "address": {"type": "object", "required": ["city"], "additionalProperties": False,
                    "properties": {"city": {"type": "string", "minLength": 1},
                                   "zip": {"type": ["string", "null"], "maxLength": 5}}},
        "notes": {"type": "array", "items": {"$ref": "#/$defs/Note"}, "maxItems": 2},
    },
    "$defs": {"Note": {"type": "object", "required": ["kind"],
                       "properties": {"kind": {"type": "string", "enum": ["call", "mail"]},
                                      "when": {"type": "string", "format": "date"}}}},
}


class Contact(pydantic.BaseModel):
    name: str
    email: str | None = None


class Brief(pydantic.BaseModel):
    tier: Literal["a", "b"]
    score: float = pydantic.Field(ge=0, le=1)
    contacts: list[Contact] = pydantic.Field(min_length=1, max_length=3)
    summary: str = pydantic.Field(max_length=10)


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


def llm(srv: FakeLLM, messages: list[dict], **kwargs):
    """One litellm call against the fake, with every retry layer off so faults stay visible."""
    return litellm.acompletion(model="openai/fake", api_base=srv.base_url, api_key="sk-test",
                               messages=messages, num_retries=0, max_retries=0, **kwargs)


def run(coro):
    """asyncio.run, closing litellm's cached clients before their loop goes away."""
    async def main():
        try:
            return await coro
        finally:
            await litellm.close_litellm_async_clients()
    return asyncio.run(main())


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def post(srv: FakeLLM, body: dict | None = None, **kwargs) -> httpx.Response:
    body = body or {"model": "fake", "messages": user("hello")}
    return HTTP.post(f"{srv.base_url}/chat/completions", json=body, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def close_http_client():
    yield
    HTTP.close()


@pytest.fixture
def srv():
    with FakeLLM() as server:
        yield server


# -- default answers -----------------------------------------------------------------------

def test_schema_reply_is_valid_and_the_same_for_the_same_prompt(srv):
    async def main():
        first = await llm(srv, user("Research ACME"), response_format=schema_format(ACCOUNT_SCHEMA))
        again = await llm(srv, user("Research ACME"), response_format=schema_format(ACCOUNT_SCHEMA))
        other = await llm(srv, user("Research Initech"), response_format=schema_format(ACCOUNT_SCHEMA))
        return [r.choices[0].message.content for r in (first, again, other)]

    first, again, other = run(main())
    jsonschema.validate(json.loads(first), ACCOUNT_SCHEMA)
    jsonschema.validate(json.loads(other), ACCOUNT_SCHEMA)
    assert first == again
    assert first != other
    assert srv.requests[0]["response_format"]["json_schema"]["schema"] == ACCOUNT_SCHEMA  # litellm passes it through


@pytest.mark.parametrize("schema", [ACCOUNT_SCHEMA, Brief.model_json_schema()], ids=["handwritten", "pydantic"])
def test_sampled_values_validate_for_many_seeds(schema):
    validator = jsonschema.Draft202012Validator(schema)
    for seed in range(200):
        validator.validate(sample_schema(schema, random.Random(seed)))


def test_pydantic_model_as_response_format_round_trips(srv):
    reply = run(llm(srv, user("brief me"), response_format=Brief))
    Brief.model_validate_json(reply.choices[0].message.content)


def test_json_object_and_plain_text_defaults(srv):
    as_object = post(srv, {"model": "m", "messages": user("x"), "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(as_object.json()["choices"][0]["message"]["content"]), dict)
    text = post(srv).json()
    assert text["choices"][0]["message"]["content"].startswith("fake answer")
    assert text["object"] == "chat.completion" and text["choices"][0]["finish_reason"] == "stop"


def test_usage_returned_equals_usage_recorded(srv):
    async def main():
        return await asyncio.gather(*(llm(srv, user("account " + "x" * n)) for n in (1, 50, 400)))

    replies = run(main())
    recorded = {r["messages"][0]["content"]: r["_usage"] for r in srv.requests}
    for reply, n in zip(replies, (1, 50, 400)):
        usage = recorded["account " + "x" * n]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
            usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert recorded["account " + "x" * 400]["prompt_tokens"] > recorded["account x"]["prompt_tokens"] + 90


# -- tool calls ----------------------------------------------------------------------------

TOOLS = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
         for name in ("kb_search", "now")]


def test_tool_calls_are_scripted_from_the_prompt(srv):
    prompt = 'Look it up. [[call:kb_search {"query": "ACME pricing", "k": 3}]] [[call:now]]'

    async def main():
        asked = await llm(srv, user(prompt), tools=TOOLS)
        message = asked.choices[0].message
        followup = user(prompt) + [
            {"role": "assistant", "content": None,
             "tool_calls": [tc.model_dump() for tc in message.tool_calls]},
            *({"role": "tool", "tool_call_id": tc.id, "content": "result"} for tc in message.tool_calls)]
        answered = await llm(srv, followup, tools=TOOLS, response_format=schema_format(ACCOUNT_SCHEMA))
        no_tools = await llm(srv, user(prompt))
        return asked, answered, no_tools

    asked, answered, no_tools = run(main())
    assert asked.choices[0].finish_reason == "tool_calls"
    calls = asked.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["kb_search", "now"]
    assert [json.loads(c.function.arguments) for c in calls] == [{"query": "ACME pricing", "k": 3}, {}]
    assert len({c.id for c in calls}) == 2
    assert answered.choices[0].message.tool_calls is None  # after the tool result, it answers
    jsonschema.validate(json.loads(answered.choices[0].message.content), ACCOUNT_SCHEMA)
    assert no_tools.choices[0].message.tool_calls is None  # markers need `tools` in the request


def test_marker_with_broken_json_passes_arguments_through_raw():
    assert scripted_tool_calls('[[call:kb_search {"query": oops]]') == [
        {"name": "kb_search", "arguments": '{"query": oops'}]
    assert scripted_tool_calls('[[call:kb_search {"q": [[1]]} ]]') == [
        {"name": "kb_search", "arguments": {"q": [[1]]}}]


# -- metadata and counting -----------------------------------------------------------------

def test_meta_markers_and_headers_are_counted(srv):
    system = {"role": "system", "content": "You research accounts. [[stage:research]]"}

    async def main():
        await llm(srv, [system, *user("[[item:ACME-1]] go")])
        await llm(srv, [system, *user("[[item:ACME-1]] [[stage:review]] again")])
        await llm(srv, user("no markers"), extra_headers={"x-agentctl-item": "INI-2", "x-agentctl-stage": "research"})

    run(main())
    assert srv.count(item="ACME-1") == 2
    assert srv.count(item="ACME-1", stage="research") == 1
    assert srv.count(stage="research") == 2
    assert srv.count(item="INI-2") == 1
    assert srv.count(_status=200) == srv.count() == 3


# -- concurrency ---------------------------------------------------------------------------

def test_peak_in_flight_is_measured(srv):
    srv.latency = 0.3

    async def main(limit: int):
        gate = asyncio.Semaphore(limit)

        async def one(i):
            async with gate:
                return await llm(srv, user(f"[[item:{i}]]"))
        await asyncio.gather(*(one(i) for i in range(8)))

    run(main(limit=8))
    assert srv.peak_in_flight == 8
    srv.reset()
    run(main(limit=3))
    assert srv.peak_in_flight == 3
    assert srv.in_flight == 0 and len(srv.requests) == 8


def test_slow_rate_makes_a_seeded_share_of_replies_slow():
    def served(seed: int) -> tuple[list[bool], dict, list[float]]:
        with FakeLLM(latency=0.002, seed=seed, slow_rate=0.2, slow_factor=10) as server:
            took = []
            for _ in range(100):
                started = time.perf_counter()
                post(server)
                took.append(time.perf_counter() - started)
            return [r["_slow"] for r in server.requests], server.stats(), took

    slow, stats, took = served(5)
    assert 8 <= sum(slow) <= 35 and stats["slow_replies"] == sum(slow)
    assert all(t >= 0.02 for t, s in zip(took, slow) if s)
    assert stats["delay_s_total"] == pytest.approx(0.002 * (100 + 9 * sum(slow)))
    assert stats["slept_s_total"] >= stats["delay_s_total"] - 0.001  # measured around the sleep
    assert served(5)[0] == slow  # the same seed draws the same sequence


# -- faults --------------------------------------------------------------------------------

def test_fault_429_carries_retry_after(srv):
    srv.faults = Faults(rate_429=1.0, retry_after=2)
    response = post(srv)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    srv.faults = Faults(rate_429=1.0, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    assert post(srv).headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert srv.count(_fault="429") == srv.count(_status=429) == 2


def test_rpm_limit_is_a_sliding_window(srv):
    srv.faults = Faults(rpm_limit=3, rpm_window=0.6)
    responses = [post(srv) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert responses[3].headers["Retry-After"] == "1"  # whole seconds, rounded up
    wait_ms = int(responses[3].headers["retry-after-ms"])
    assert 0 < wait_ms <= 600
    assert srv.count(_fault="rpm") == 2
    time.sleep(wait_ms / 1000 + 0.05)
    assert post(srv).status_code == 200


def test_malformed_and_reset(srv):
    srv.faults = Faults(rate_malformed=1.0)
    response = post(srv)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    srv.faults = Faults(rate_reset=1.0)
    with pytest.raises(httpx.TransportError):
        post(srv)
    assert [r["_status"] for r in srv.requests] == [200, None]
    assert srv.in_flight == 0


def test_hang_times_out_and_stops_counting_when_the_client_leaves(srv):
    srv.responder = lambda body: Reply(hang=True)
    with pytest.raises(httpx.ReadTimeout):
        post(srv, timeout=0.3)
    deadline = time.monotonic() + 2
    while srv.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.in_flight == 0 and srv.requests[0]["_status"] is None


def test_stop_releases_a_hung_request():
    server = FakeLLM().start()
    server.faults = Faults(rate_hang=1.0)
    errors = []

    def call():
        try:
            post(server)
        except httpx.TransportError as exc:
            errors.append(exc)

    client = threading.Thread(target=call)
    client.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    client.join(timeout=5)
    assert time.monotonic() - started < 2 and errors


def test_invalid_fault_is_json_that_breaks_the_schema(srv):
    srv.faults = Faults(rate_invalid=1.0)
    body = {"model": "m", "messages": user("x"), "response_format": schema_format(ACCOUNT_SCHEMA)}
    content = json.loads(post(srv, body).json()["choices"][0]["message"]["content"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(content, ACCOUNT_SCHEMA)


def test_fault_draws_are_reproducible_for_a_seed():
    def statuses(seed: int) -> list[int]:
        with FakeLLM(seed=seed) as server:
            server.faults = Faults(rate_429=0.2, rate_500=0.2, retry_after=0)
            return [post(server).status_code for _ in range(30)]

    first = statuses(7)
    assert first == statuses(7)
    assert {200, 429, 500} <= set(first)


def test_responder_overrides_and_falls_back(srv):
    srv.responder = lambda body: Reply(content="scripted") if "script" in body["messages"][-1]["content"] else None
    assert post(srv, {"model": "m", "messages": user("script me")}).json()["choices"][0]["message"]["content"] == "scripted"
    assert post(srv).json()["choices"][0]["message"]["content"].startswith("fake answer")


# -- how litellm surfaces each failure (the retry policy depends on these) -----------------

@pytest.mark.parametrize(("reply", "expected", "status"), [
    (Reply(status=429, headers={"Retry-After": "2"}), litellm.RateLimitError, 429),
    (Reply(error_type="insufficient_quota"), litellm.RateLimitError, 429),
    (Reply(status=400, error_type="insufficient_quota"), litellm.BadRequestError, 400),
    (Reply(status=500), litellm.InternalServerError, 500),
    (Reply(status=503), litellm.ServiceUnavailableError, 503),
    (Reply(error_type="authentication_error"), litellm.AuthenticationError, 401),
    (Reply(status=400), litellm.BadRequestError, 400),
    (Reply(error_type="context_length_exceeded"), litellm.ContextWindowExceededError, 400),
    (Reply(hang=True), litellm.Timeout, 408),
    (Reply(reset=True), litellm.InternalServerError, 500),  # not APIConnectionError
    (Reply(malformed=True), litellm.APIError, 200),  # the real status; translate_error finds the JSONDecodeError
], ids=["429", "quota-429", "quota-400", "500", "503", "401", "400", "context", "hang", "reset", "malformed"])
def test_litellm_exception_for_each_failure(srv, reply, expected, status):
    srv.responder = lambda body: reply
    with pytest.raises(expected) as caught:
        run(llm(srv, user("x"), timeout=0.3))
    assert caught.value.status_code == status
    assert len(srv.requests) == 1  # no hidden retries
    if reply.headers:
        # litellm's own .response is a stub without headers; the real ones are here.
        assert caught.value.litellm_response_headers["retry-after"] == "2"
    if reply.error_type == "insufficient_quota":
        # Only the message tells quota apart from rate limiting (translate_error reads it).
        assert "exceeded your current quota" in caught.value.message


# -- process mode --------------------------------------------------------------------------

def test_process_mode_prints_port_and_serves_stats():
    command = [sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", "--fault-500", "0.5", "--seed", "3"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        try:
            first_line = proc.stdout.readline()
            assert first_line.startswith("PORT ")
            base = f"http://127.0.0.1:{int(first_line.split()[1])}"
            codes = [HTTP.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": user("x")}).status_code
                     for _ in range(10)]
            stats = HTTP.get(f"{base}/stats").json()
            assert stats["requests"] == 10 and stats["peak_in_flight"] == 1
            assert stats["status_counts"] == {str(c): codes.count(c) for c in set(codes)}
            HTTP.post(f"{base}/reset")
            assert HTTP.get(f"{base}/stats").json()["requests"] == 0
        finally:
            proc.terminate()
        assert proc.wait(timeout=5) == 0
