"""mcp tools through the official SDK: the real mcp-server-time package and the demo server in
tests/fakes over stdio, grants, concurrency and clean shutdown (failures: test_tools_mcp_lifecycle.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from agentctl.errors import ConfigError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext, ToolRegistry

pytestmark = pytest.mark.timeout(20)

DEMO = str(Path(__file__).parent / "fakes" / "mcp_server_demo.py")
CTX = ToolContext(run_id="r", item_key="acme", stage_id="research", agent="researcher")


def mcp(*args: str, **settings) -> ToolSpec:
    return ToolSpec(type="mcp", command=[sys.executable, *args], **settings)


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process, from /proc."""
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def both_servers(tmp_path_factory) -> dict:
    """One registry with mcp-server-time and the demo server, shared by the read-only tests."""
    pid_file = tmp_path_factory.mktemp("pids") / "pids"
    registry = ToolRegistry.from_spec({
        "time": mcp("-m", "mcp_server_time"),
        "demo": mcp(DEMO, env={"DEMO_PID_FILE": str(pid_file), "DEMO_GREETING": "${DEMO_TEST_GREETING}"}),
    }, spec_dir=Path(__file__).parent)
    loop = asyncio.new_event_loop()
    children_before = child_pids()
    os.environ["DEMO_TEST_GREETING"] = "hola"
    try:
        loop.run_until_complete(registry.start())
    finally:
        del os.environ["DEMO_TEST_GREETING"]
    yield {"registry": registry, "loop": loop, "pid_file": pid_file, "children_before": children_before}
    loop.run_until_complete(registry.aclose())
    loop.close()


def call(both_servers: dict, name: str, args: dict):
    tool = both_servers["registry"].get(name)
    return both_servers["loop"].run_until_complete(tool.call(tool.validate_args(args), CTX))


def test_time_server_tools_are_listed_with_their_schemas(both_servers):
    registry = both_servers["registry"]
    tool = registry.get("time.get_current_time")
    assert tool is registry.get("time__get_current_time")
    assert tool.openai_name == "time__get_current_time"
    assert tool.openai_schema()["function"]["name"] == "time__get_current_time"
    assert tool.parameters["required"] == ["timezone"]
    assert tool.parameters["properties"]["timezone"]["type"] == "string"
    assert tool.description and tool.kind == "mcp"
    assert {t.name for t in registry.granted(["time"])} == {"time.get_current_time", "time.convert_time"}


def test_time_server_answers(both_servers):
    import json

    result = json.loads(call(both_servers, "time.get_current_time", {"timezone": "UTC"}))
    assert result["timezone"] == "UTC" and result["datetime"].endswith("+00:00")
    with pytest.raises(ToolError, match="Invalid timezone"):
        call(both_servers, "time.get_current_time", {"timezone": "Mars/Olympus"})


def test_demo_tools(both_servers):
    import json

    company = json.loads(call(both_servers, "demo.lookup_company", {"domain": "acme.com"}))
    assert company == {"domain": "acme.com", "name": "Acme Corp", "industry": "Manufacturing", "employees": 1200}
    assert call(both_servers, "demo.add", {"a": 2, "b": 40}) == "42"
    assert call(both_servers, "demo.get_env", {"name": "DEMO_GREETING"}) == "hola"  # ${VAR} expanded


def test_tool_errors_come_back_as_tool_errors(both_servers):
    with pytest.raises(ToolError, match="no company with domain nowhere.org"):
        call(both_servers, "demo.lookup_company", {"domain": "nowhere.org"})
    with pytest.raises(ToolError, match="explode"):
        call(both_servers, "demo.explode", {})
    tool = both_servers["registry"].get("demo.add")
    with pytest.raises(ToolError, match="invalid arguments"):
        tool.validate_args({"a": "two"})


def test_side_effects_follow_the_read_only_hint(both_servers):
    registry = both_servers["registry"]
    assert registry.get("demo.add").side_effects is False  # readOnlyHint
    assert registry.get("demo.explode").side_effects is True  # no annotation: may modify
    # a spec's side_effects setting wins: see test_tools_mcp_lifecycle.test_streamable_http_server


def test_calls_run_concurrently_and_cancel_cleanly(both_servers):
    tool = both_servers["registry"].get("demo.slow_echo")
    loop = both_servers["loop"]

    async def main():
        started = time.monotonic()
        answers = await asyncio.gather(*(tool.call({"text": str(i), "seconds": 0.5}, CTX) for i in range(6)))
        elapsed = time.monotonic() - started
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(tool.call({"text": "never", "seconds": 30}, CTX), 0.3)
        after = await tool.call({"text": "still alive", "seconds": 0}, CTX)
        return answers, elapsed, after

    answers, elapsed, after = loop.run_until_complete(main())
    assert answers == [str(i) for i in range(6)]
    assert elapsed < 2.0  # six 0.5 s calls overlapped
    assert after == "still alive"


def test_grants(both_servers):
    registry = both_servers["registry"]
    demo_tools = {"demo.lookup_company", "demo.add", "demo.explode", "demo.slow_echo", "demo.get_env"}
    assert {t.name for t in registry.granted(["demo"])} == demo_tools
    assert [t.name for t in registry.granted(["demo.add"])] == ["demo.add"]
    assert [t.name for t in registry.granted(["demo.add", "demo", "time.convert_time"])][:1] == ["demo.add"]
    assert len(registry.granted(["demo.add", "demo"])) == len(demo_tools)
    with pytest.raises(ConfigError, match="has no tool 'nope'.*lookup_company"):
        registry.granted(["demo.nope"])
    with pytest.raises(ConfigError, match="unknown tool 'weather'"):
        registry.granted(["weather"])


def test_a_call_by_the_documented_name_finds_the_granted_tool(both_servers):
    """Tools are offered as server__tool (OpenAI names cannot hold dots), but the docs name
    them server.tool: a model calling either spelling reaches the tool, if it was granted."""
    registry = both_servers["registry"]
    offered = {t.openai_name: t for t in registry.granted(["demo.add", "time"])}
    add = registry.get("demo.add")
    assert registry.called_tool(offered, "demo__add") is add
    assert registry.called_tool(offered, "demo.add") is add
    assert registry.called_tool(offered, "time.convert_time") is registry.get("time__convert_time")
    for not_granted in ("demo.explode", "demo__explode", "demo.nope", "add"):
        assert registry.called_tool(offered, not_granted) is None


def test_aclose_leaves_no_processes(both_servers):
    """Runs last in this file: it closes the shared registry (the fixture's aclose is a no-op then)."""
    registry, loop = both_servers["registry"], both_servers["loop"]
    running = child_pids() - both_servers["children_before"]
    assert len(running) == 2  # mcp-server-time and the demo server
    assert int(both_servers["pid_file"].read_text().split()[0]) in running

    async def main():
        slow = asyncio.create_task(registry.get("demo.slow_echo").call({"text": "x", "seconds": 30}, CTX))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await registry.aclose()
        await registry.aclose()  # idempotent
        took = time.monotonic() - started
        with pytest.raises(ToolError, match="closed"):
            await slow  # an in-flight call fails instead of hanging
        with pytest.raises(ToolError, match="not running"):
            await registry.get("demo.add").call({"a": 1, "b": 2}, CTX)
        return took

    assert loop.run_until_complete(main()) < 5
    assert not any(alive(pid) for pid in running)
    assert child_pids() <= both_servers["children_before"]

