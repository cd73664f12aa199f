"""``mcp``: tools served by an MCP server (stdio subprocess or streamable HTTP), via the official SDK.

The SDK's transports and ``ClientSession`` are anyio context managers that must be entered
and exited by the same task. So each server gets one long-lived asyncio task that owns the
connection: it connects, initialises, lists the tools, then serves calls that arrive on a
queue, each in its own child task (calls run concurrently). ``aclose`` stops that task,
which closes the session and — for stdio — closes the server's stdin, then terminates its
process group (the SDK's shutdown sequence). A server's stderr goes to a temporary file
whose tail is quoted when it fails to start or drops the connection.

Written against ``mcp`` 2.x (``mcp.client.streamable_http.streamable_http_client``, which
replaced 1.x's ``streamablehttp_client``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp.types as mcp_types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from pydantic import Field, field_validator, model_validator

from agentctl.errors import ConfigError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools.base import Tool, ToolContext
from agentctl.tools.settings import ToolSettings, expand_env, parse_settings, resolve_path, spec_error

log = logging.getLogger(__name__)


def _not_session_termination(record: logging.LogRecord) -> bool:
    """Drop the SDK's "Session termination failed" warning. Closing the connection to an HTTP
    server that has gone away cannot end its session; the calls that failed already said so,
    and with no logging configured the bare line would land on agentctl's stderr."""
    return not record.getMessage().startswith("Session termination failed")


logging.getLogger("mcp.client.streamable_http").addFilter(_not_session_termination)

STDERR_TAIL = 2000
CLOSE_GRACE = 10.0  # seconds for an orderly shutdown before the owner task is cancelled
MAX_TOOL_PAGES = 100


class McpSettings(ToolSettings):
    command: list[str] | str | None = Field(default=None, description=(
        "stdio server: the program and its arguments (a list, or a string split like a shell does)"))
    args: list[str] = Field(default_factory=list, description="more arguments appended to command")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment; ${VAR} is expanded")
    cwd: str | None = Field(default=None, description="working folder (spec-relative; default the spec's folder)")
    url: str | None = Field(default=None, description="streamable HTTP server endpoint")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers; ${VAR} is expanded")
    include: list[str] | None = Field(default=None, description="offer only these of the server's tools")
    startup_timeout: float = Field(default=20, gt=0, le=600, description="seconds to start, initialise and list tools")
    call_timeout: float = Field(default=120, gt=0, le=3600, description="seconds per tool call")

    @field_validator("command")
    @classmethod
    def _split_command(cls, v: list[str] | str | None) -> list[str] | None:
        # "python server.py --port 1" is the program and its arguments, as a shell reads them
        if isinstance(v, str):
            try:
                return shlex.split(v)
            except ValueError as exc:
                raise ValueError(f"cannot split {v!r} into a program and its arguments ({exc}); "
                                 "give a list instead: [program, arg, ...]") from None
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> "McpSettings":
        if (self.command is None) == (self.url is None):
            raise ValueError("give either 'command' (a stdio server) or 'url' (streamable HTTP), "
                             + ("not both" if self.command is not None else "neither is set"))
        if self.command is not None and not self.command:
            raise ValueError("'command' is empty")
        return self


@dataclass
class _Call:
    tool: str
    args: dict[str, Any]
    timeout: float
    future: asyncio.Future[mcp_types.CallToolResult]
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def resolve(self, result: mcp_types.CallToolResult) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class McpServer:
    """One MCP server for the length of a run: started once, its tools shared by all agents."""

    def __init__(self, name: str, settings: McpSettings, *, spec_dir: Path, side_effects: bool | None = None):
        self.name = name
        self.settings = settings
        self.spec_dir = spec_dir
        self.side_effects = side_effects
        self.tools: list[McpTool] = []
        self.stderr_tail = ""
        self._task: asyncio.Task[None] | None = None
        self._scope: anyio.CancelScope | None = None  # created in start(): needs a running loop
        self._inbox: asyncio.Queue[_Call | None] = asyncio.Queue()
        self._ready: asyncio.Future[list[mcp_types.Tool]] | None = None
        self._accepting = False
        self._errlog: Any = None

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "McpServer":
        settings = parse_settings(McpSettings, name, spec, spec_file=spec_file)
        if settings.cwd is not None and not resolve_path(spec_dir, settings.cwd).is_dir():
            raise spec_error(name, "cwd", f"folder {settings.cwd!r} does not exist", spec_file=spec_file)
        program = (settings.command or [None])[0]
        if program and _program_path(program, spec_dir) is None:  # `validate` says so, not only `run`
            raise spec_error(name, "command", f"command {program!r} not found (PATH is "
                             f"{os.environ.get('PATH', '')!r}); install it, give its full path, or "
                             "fix PATH (cron jobs often have a short one)", spec_file=spec_file)
        return cls(name, settings, spec_dir=spec_dir, side_effects=spec.side_effects)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, initialise and list tools; ConfigError (naming the server) if that fails."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._scope = anyio.CancelScope()
        if self.settings.command is not None:
            self._errlog = tempfile.TemporaryFile()  # the child writes to its file descriptor
        self._task = asyncio.create_task(self._own_connection(), name=f"agentctl-mcp-{self.name}")
        timeout = self.settings.startup_timeout
        try:
            listed = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self._ready.cancel()
            await self.aclose()
            raise ConfigError(f"MCP server {self.name!r} did not start within {timeout:g}s "
                              f"(setting startup_timeout){self._stderr_note()}") from None
        except asyncio.CancelledError:
            await self.aclose()
            raise
        except Exception as exc:
            await self.aclose()
            raise ConfigError(f"MCP server {self.name!r} failed to start: {_describe(exc)}"
                              f"{self._stderr_note()}") from exc
        try:
            self.tools = self._wrap_tools(listed)
        except ConfigError:
            await self.aclose()
            raise

    def _wrap_tools(self, listed: list[mcp_types.Tool]) -> list["McpTool"]:
        by_name = {t.name: t for t in listed}
        include = self.settings.include
        if include is not None:
            missing = [n for n in include if n not in by_name]
            if missing:
                raise ConfigError(f"MCP server {self.name!r} has no tool(s) {', '.join(missing)} "
                                  f"(it offers: {', '.join(by_name) or 'none'})")
            listed = [by_name[n] for n in include]
        return [McpTool(self, remote) for remote in listed]

    async def aclose(self) -> None:
        """Stop serving, close the session and stop the server process. Idempotent."""
        task, self._task = self._task, None
        serving, self._accepting = self._accepting, False
        if task is not None:
            assert self._scope is not None
            if serving:  # orderly: the owner leaves its loop, cancels running calls, disconnects
                self._inbox.put_nowait(None)
                await asyncio.wait({task}, timeout=CLOSE_GRACE)
            if not task.done():  # still starting, or stuck: cancel (the SDK's shutdown is shielded)
                self._scope.cancel()
                await asyncio.wait({task})
            if self._ready is not None and self._ready.done() and not self._ready.cancelled():
                self._ready.exception()  # mark retrieved: start() already reported it
        if self._errlog is not None:
            self.stderr_tail = self._read_stderr()
            self._errlog.close()
            self._errlog = None

    # --- the owner task -----------------------------------------------------------------

    async def _own_connection(self) -> None:
        assert self._ready is not None
        assert self._scope is not None
        try:
            with self._scope:
                async with AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(await self._transport(stack))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    await session.initialize()
                    listed = await _list_tools(session)
                    if self._ready.done():  # start() gave up waiting
                        return
                    self._accepting = True
                    self._ready.set_result(listed)
                    async with anyio.create_task_group() as calls:
                        while (call := await self._inbox.get()) is not None:
                            calls.start_soon(self._serve, session, call)
                        calls.cancel_scope.cancel()  # closing: abandon calls still running
        except Exception as exc:
            if self._ready.done():
                log.warning("MCP server %r: connection failed: %s", self.name, _describe(exc))
            else:
                self._ready.set_exception(exc)
        finally:
            # no awaits from here on, so no call can be queued after the drain
            self._accepting = False
            if not self._ready.done():
                self._ready.set_exception(ToolError(f"MCP server {self.name!r} stopped while starting"))
            closed = ToolError(f"MCP server {self.name!r} is closed{self._stderr_note()}")
            while not self._inbox.empty():
                pending = self._inbox.get_nowait()
                if pending is not None:
                    pending.fail(closed)

    async def _transport(self, stack: AsyncExitStack) -> Any:
        s = self.settings
        if s.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            headers = {k: expand_env(v, tool=self.name, key=f"headers.{k}") for k, v in s.headers.items()}
            # building the client loads CA certificates: keep that off the event loop
            client = await asyncio.to_thread(httpx2.AsyncClient, headers=headers,
                                             timeout=httpx2.Timeout(30, read=300))
            stack.push_async_callback(client.aclose)
            return streamable_http_client(s.url, http_client=client)
        command = list(s.command or [])  # a string was split when the settings were read
        program = _program_path(command[0], self.spec_dir)
        if program is None:
            raise FileNotFoundError(f"command {command[0]!r} not found (tools.{self.name}.command); "
                                    "install it, put it on PATH, or fix the path")
        params = StdioServerParameters(
            command=program,
            args=[*command[1:], *s.args],
            env={k: expand_env(v, tool=self.name, key=f"env.{k}") for k, v in s.env.items()} or None,
            cwd=resolve_path(self.spec_dir, s.cwd) if s.cwd else self.spec_dir,
        )
        return stdio_client(params, errlog=self._errlog)

    async def _serve(self, session: ClientSession, call: _Call) -> None:
        try:
            with call.scope:
                result = await session.call_tool(call.tool, call.args, read_timeout_seconds=call.timeout)
                call.resolve(result)
        except MCPError as exc:
            call.fail(ToolError(f"MCP server {self.name!r}, tool {call.tool!r}: {exc.message}"
                                f"{self._stderr_note() if exc.code == mcp_types.CONNECTION_CLOSED else ''}"))
        except Exception as exc:
            call.fail(ToolError(f"MCP server {self.name!r}, tool {call.tool!r}: {_describe(exc)}"))
        finally:
            call.fail(ToolError(f"MCP server {self.name!r} closed before {call.tool!r} finished"))

    # --- calls --------------------------------------------------------------------------

    async def call(self, tool: str, args: dict[str, Any]) -> mcp_types.CallToolResult:
        if not self._accepting:
            raise ToolError(f"MCP server {self.name!r} is not running{self._stderr_note()}")
        call = _Call(tool, args, self.settings.call_timeout, asyncio.get_running_loop().create_future())
        self._inbox.put_nowait(call)
        try:
            return await call.future
        except asyncio.CancelledError:
            call.scope.cancel()  # stop the in-flight request too
            raise

    # --- stderr -------------------------------------------------------------------------

    def _read_stderr(self) -> str:
        if self._errlog is None:
            return self.stderr_tail
        try:
            size = self._errlog.seek(0, os.SEEK_END)
            self._errlog.seek(max(0, size - STDERR_TAIL))
            return self._errlog.read().decode("utf-8", errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def _stderr_note(self) -> str:
        tail = self._read_stderr()
        return f"; server stderr: {tail}" if tail else ""


class McpTool(Tool):
    """One tool of an MCP server, named ``<server>.<tool>``."""

    kind = "mcp"

    def __init__(self, server: McpServer, remote: mcp_types.Tool):
        self.server = server
        self.remote_name = remote.name
        self.name = f"{server.name}.{remote.name}"
        self.description = remote.description or remote.title or f"{remote.name} (MCP server {server.name})"
        schema = dict(remote.input_schema or {})
        schema.setdefault("type", "object")
        schema.setdefault("properties", {})
        self.parameters = schema
        read_only = bool(remote.annotations and remote.annotations.read_only_hint)
        # MCP's default for a tool without annotations is "may modify its environment"
        self.side_effects = server.side_effects if server.side_effects is not None else not read_only

    @property
    def own_timeout(self) -> float | None:
        return self.server.settings.call_timeout

    async def call(self, args: dict, ctx: ToolContext) -> str | dict | list:
        result = await self.server.call(self.remote_name, args)
        text = "\n".join(_content_text(block) for block in result.content).strip()
        if result.is_error:
            raise ToolError(text or f"MCP tool {self.name} failed")
        if not text and result.structured_content is not None:
            return result.structured_content
        return text


def _content_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return block.text
    if kind == "resource":
        resource = block.resource
        return getattr(resource, "text", None) or f"[resource {resource.uri} ({resource.mime_type or 'binary'})]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    if kind in ("image", "audio"):
        return f"[{kind} ({block.mime_type}) not shown]"
    return f"[{kind} content not shown]"


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    tools: list[mcp_types.Tool] = []
    cursor = None
    for _ in range(MAX_TOOL_PAGES):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _program_path(program: str, spec_dir: Path) -> str | None:
    """Where a stdio server's program is: a path with a folder in it is spec-relative, a bare
    name is looked up on PATH; None when it is not there."""
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else resolve_path(spec_dir, program)
        return str(path) if path.exists() else None
    return shutil.which(program) or (program if Path(program).exists() else None)


def _describe(exc: BaseException) -> str:
    """The innermost messages of an exception (group), e.g. 'FileNotFoundError: ...'."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
