"""MCP servers that fail: bad commands, servers that exit or hang at start, bad settings —
all ConfigError (exit 2) before any model call — plus the streamable HTTP transport."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentctl.errors import ConfigError, SpecError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext, ToolRegistry
from agentctl.tools.mcp_client import McpSettings

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
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def test_a_command_not_on_path_is_a_spec_error_when_the_settings_are_read(monkeypatch):
    # `validate` builds the registry without starting it: a cron job's short PATH shows there
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"broken": ToolSpec(type="mcp", command="agentctl-no-such-mcp-server --stdio")},
                               spec_dir=Path("."))
    assert err.value.exit_code == 2 and err.value.path == "tools.broken.command"
    assert "command 'agentctl-no-such-mcp-server' not found (PATH is " in err.value.message
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SpecError, match="command 'python' not found"):
        ToolRegistry.from_spec({"demo": ToolSpec(type="mcp", command="python server.py")}, spec_dir=Path("."))


def test_a_server_failing_to_start_stops_the_others_before_anything_else():
    async def main():
        registry = ToolRegistry.from_spec({
            "starting": mcp(DEMO, "--hang"),  # still starting when the other one fails
            "broken": mcp(DEMO, "--fail-on-start"),
        }, spec_dir=Path("."))
        with pytest.raises(ConfigError) as err:
            await registry.start()
        return err.value

    before = child_pids()
    error = asyncio.run(main())
    assert error.exit_code == 2
    assert "'broken' failed to start" in error.message
    assert child_pids() <= before  # the server that was starting was stopped again


def test_server_that_exits_reports_its_stderr():
    registry = ToolRegistry.from_spec({"demo": mcp(DEMO, "--fail-on-start")}, spec_dir=Path("."))
    with pytest.raises(ConfigError, match="'demo' failed to start.*cannot open its database"):
        asyncio.run(registry.start())


def test_startup_timeout():
    registry = ToolRegistry.from_spec({"demo": mcp(DEMO, "--hang", startup_timeout=0.5)}, spec_dir=Path("."))
    before = child_pids()
    started = time.monotonic()
    with pytest.raises(ConfigError, match="did not start within 0.5s"):
        asyncio.run(registry.start())
    assert time.monotonic() - started < 8
    assert child_pids() <= before


def test_settings_are_validated():
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"demo": ToolSpec(type="mcp")}, spec_dir=Path("."))
    assert err.value.path == "tools.demo" and "either 'command'" in err.value.message
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"demo": ToolSpec(type="mcp", command=["x"], url="http://127.0.0.1:1/mcp")},
                               spec_dir=Path("."))
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"demo": mcp(DEMO, startup_timeout=-1)}, spec_dir=Path("."))
    assert err.value.path == "tools.demo.startup_timeout"
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        asyncio.run(ToolRegistry.from_spec({"demo": mcp(DEMO, env={"K": "${NOT_SET_ANYWHERE}"})},
                                           spec_dir=Path(".")).start())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_demo_server() -> Iterator[tuple[subprocess.Popen, int]]:
    """The demo server on streamable HTTP (a loopback port), stopped afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, DEMO, "--http", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "demo HTTP server did not come up"
                time.sleep(0.05)
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_streamable_http_server():
    with http_demo_server() as (_, port):

        async def main():
            url = f"http://127.0.0.1:{port}/mcp"
            registry = ToolRegistry.from_spec({"remote": ToolSpec(
                type="mcp", url=url, headers={"X-Test": "1"}, include=["add", "lookup_company"],
                side_effects=True)}, spec_dir=Path("."))
            async with registry:
                tools = registry.granted(["remote"])
                assert [t.name for t in tools] == ["remote.add", "remote.lookup_company"]  # only `include`
                assert all(t.side_effects for t in tools)  # the spec's side_effects wins over the hint
                answer = await registry.get("remote__add").call({"a": 20, "b": 22}, CTX)
            missing = ToolRegistry.from_spec({"remote": ToolSpec(type="mcp", url=url, include=["add", "rm_rf"])},
                                             spec_dir=Path("."))
            with pytest.raises(ConfigError, match="has no tool.*rm_rf.*it offers: lookup_company"):
                await missing.start()
            return answer

        assert asyncio.run(main()) == "42"


def test_http_server_that_goes_away_leaves_no_sdk_noise_on_stderr(caplog):
    """Closing after the server died cannot end its MCP session; the SDK's warning about that
    ("Session termination failed: ...") would be a stray line on agentctl's stderr."""
    with http_demo_server() as (server, port):

        async def main():
            registry = ToolRegistry.from_spec({"remote": ToolSpec(type="mcp", url=f"http://127.0.0.1:{port}/mcp")},
                                              spec_dir=Path("."))
            async with registry:
                slow = asyncio.create_task(registry.get("remote.slow_echo").call({"text": "x", "seconds": 10}, CTX))
                await asyncio.sleep(0.5)
                server.kill()
                server.wait()
                with pytest.raises(ToolError, match="remote"):
                    await slow

        with caplog.at_level(logging.DEBUG):
            asyncio.run(main())
    assert not [r for r in caplog.records if "Session termination failed" in r.getMessage()]


def test_command_given_as_one_string_is_split_like_a_shell_does():
    command = f"{shlex.quote(sys.executable)} {shlex.quote(DEMO)}"

    async def main():
        async with ToolRegistry.from_spec({"demo": ToolSpec(type="mcp", command=command)},
                                          spec_dir=Path(".")) as registry:
            return await registry.get("demo.add").call({"a": 1, "b": 2}, CTX)

    assert asyncio.run(main()) == "3"
    settings = McpSettings(command="python 'my server.py' --port 8000")
    assert settings.command == ["python", "my server.py", "--port", "8000"]
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"demo": ToolSpec(type="mcp", command="python 'unclosed")}, spec_dir=Path("."))
    assert err.value.path == "tools.demo.command" and "give a list instead" in err.value.message
    with pytest.raises(SpecError, match="'command' is empty"):
        ToolRegistry.from_spec({"demo": ToolSpec(type="mcp", command="  ")}, spec_dir=Path("."))


def test_unreachable_http_server_is_a_config_error():
    registry = ToolRegistry.from_spec(
        {"remote": ToolSpec(type="mcp", url=f"http://127.0.0.1:{free_port()}/mcp", startup_timeout=5)},
        spec_dir=Path("."))
    with pytest.raises(ConfigError, match="'remote'"):
        asyncio.run(registry.start())
