"""The tools of one pipeline: built from the spec, started once per run, granted to agents by name.

    registry = ToolRegistry.from_spec(pipeline.tools, spec_dir=spec_path.parent)  # validates only
    async with registry:                     # start(): MCP servers up, tools listed
        tools = registry.granted(agent.tools)
        schemas = [t.openai_schema() for t in tools]
        tool = registry.get(name_from_model)  # "time.get_current_time" or "time__get_current_time"
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from agentctl.errors import AgentctlError, ConfigError
from agentctl.spec.models import ToolSpec
from agentctl.tools.base import Tool
from agentctl.tools.crm_upsert import CrmUpsertTool
from agentctl.tools.http_get import HttpGetTool
from agentctl.tools.kb_search import KbSearchTool
from agentctl.tools.mcp_client import McpServer
from agentctl.tools.python_function import PythonTool
from agentctl.tools.send_email import SendEmailTool
from agentctl.tools.sql import SqlTool


class _FromSpec(Protocol):
    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> Any: ...


TOOL_TYPES: dict[str, type[_FromSpec]] = {
    "kb_search": KbSearchTool,
    "sql": SqlTool,
    "http_get": HttpGetTool,
    "crm_upsert": CrmUpsertTool,
    "send_email": SendEmailTool,
    "python": PythonTool,
    "mcp": McpServer,
}


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None, servers: list[McpServer] | None = None):
        self._builtin = list(tools or [])
        self._servers = {s.name: s for s in servers or []}
        self._started = False
        self._closed = False
        self._index()

    @classmethod
    def from_spec(cls, tools: dict[str, ToolSpec], *, spec_dir: Path, spec_file: str | None = None) -> "ToolRegistry":
        """Validate every tool's settings (SpecError naming ``tools.<name>.<key>``); starts nothing."""
        built: list[Tool] = []
        servers: list[McpServer] = []
        for name, spec in tools.items():
            made = TOOL_TYPES[spec.type].from_spec(name, spec, spec_dir=Path(spec_dir), spec_file=spec_file)
            (servers if isinstance(made, McpServer) else built).append(made)
        return cls(built, servers)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start MCP servers (concurrently) and prepare built-in tools; ConfigError if any fails."""
        if self._started:
            return
        self._started = True
        results = await asyncio.gather(*(s.start() for s in self._servers.values()),
                                       *(t.start() for t in self._builtin), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, AgentctlError):
                await self.aclose()
                raise result
        failures = [r for r in results if isinstance(r, AgentctlError)]
        if failures:
            await self.aclose()
            if len(failures) == 1:
                raise failures[0]
            raise ConfigError("; ".join(f.message for f in failures)) from failures[0]
        try:
            self._index()
        except ConfigError:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop every MCP server and release tool resources. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(s.aclose() for s in self._servers.values()),
                             *(t.aclose() for t in self._builtin), return_exceptions=True)

    async def __aenter__(self) -> "ToolRegistry":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- lookup -------------------------------------------------------------------------

    def _index(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._by_openai: dict[str, Tool] = {}
        for tool in [*self._builtin, *(t for s in self._servers.values() for t in s.tools)]:
            clash = self._by_openai.get(tool.openai_name)
            if clash is not None:
                raise ConfigError(f"tools {clash.name!r} and {tool.name!r} would both be offered to the "
                                  f"model as {tool.openai_name!r}; rename one")
            self._tools[tool.name] = tool
            self._by_openai[tool.openai_name] = tool

    def all(self) -> list[Tool]:
        return list(self._tools.values())

    def get(self, name: str) -> Tool | None:
        """A tool by its name (``server.tool``) or by the name the model saw (``server__tool``)."""
        return self._tools.get(name) or self._by_openai.get(name)

    @property
    def server_names(self) -> list[str]:
        return list(self._servers)

    def granted(self, grants: list[str]) -> list[Tool]:
        """The tools an agent may use: a tool name grants it; an MCP server name grants all its tools."""
        out: dict[str, Tool] = {}
        for grant in grants:
            if grant in self._servers:
                server = self._servers[grant]
                if not self._started:
                    raise ConfigError(f"MCP server {grant!r} is not started yet (call registry.start())")
                out.update((t.name, t) for t in server.tools)
            elif grant in self._tools:
                out[grant] = self._tools[grant]
            else:
                raise ConfigError(self._unknown(grant))
        return list(out.values())

    def _unknown(self, grant: str) -> str:
        server = grant.split(".", 1)[0]
        if server in self._servers and "." in grant:
            if not self._started:
                return f"MCP server {server!r} is not started yet (call registry.start())"
            offered = ", ".join(t.remote_name for t in self._servers[server].tools) or "none"
            return f"MCP server {server!r} has no tool {grant.split('.', 1)[1]!r} (it offers: {offered})"
        known = ", ".join([*self._servers, *self._tools]) or "none"
        return f"unknown tool {grant!r} (declared tools: {known})"
