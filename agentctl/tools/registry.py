"""The tools of one pipeline: built from the spec, started once per run, granted to agents by name.

    registry = ToolRegistry.from_spec(pipeline.tools, spec_dir=spec_path.parent)  # validates only
    async with registry:                     # start(): MCP servers up, tools listed
        tools = registry.granted(agent.tools)
        schemas = [t.openai_schema() for t in tools]
        tool = registry.get(name_from_model)  # "time.get_current_time" or "time__get_current_time"
        tool = registry.called_tool({t.openai_name: t for t in tools}, name_from_model)  # granted only
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentctl.errors import ConfigError
from agentctl.spec.models import ToolSpec
from agentctl.tools.base import Tool

if TYPE_CHECKING:
    from agentctl.tools.mcp_client import McpServer

# Imported on first use: the MCP SDK and bm25s/numpy take a second to import, which a CLI
# command that never runs tools should not pay.
TOOL_TYPES: dict[str, str] = {
    "kb_search": "agentctl.tools.kb_search:KbSearchTool",
    "sql": "agentctl.tools.sql:SqlTool",
    "http_get": "agentctl.tools.http_get:HttpGetTool",
    "crm_upsert": "agentctl.tools.crm_upsert:CrmUpsertTool",
    "send_email": "agentctl.tools.send_email:SendEmailTool",
    "python": "agentctl.tools.python_function:PythonTool",
    "mcp": "agentctl.tools.mcp_client:McpServer",
}


def tool_class(type_: str) -> Any:
    """The class implementing spec ``type`` (each has ``from_spec(name, spec, spec_dir=...)``)."""
    module, _, attr = TOOL_TYPES[type_].partition(":")
    return getattr(importlib.import_module(module), attr)


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None, servers: list["McpServer"] | None = None):
        self._builtin = list(tools or [])
        self._servers = {s.name: s for s in servers or []}
        self._started = False
        self._closed = False
        self._index()

    @classmethod
    def from_spec(cls, tools: dict[str, ToolSpec], *, spec_dir: Path, spec_file: str | None = None) -> "ToolRegistry":
        """Validate every tool's settings (SpecError naming ``tools.<name>.<key>``); starts nothing."""
        built: list[Tool] = []
        servers: list["McpServer"] = []
        for name, spec in tools.items():
            made = tool_class(spec.type).from_spec(name, spec, spec_dir=Path(spec_dir), spec_file=spec_file)
            (servers if spec.type == "mcp" else built).append(made)
        return cls(built, servers)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start MCP servers (concurrently) and prepare built-in tools.

        The first failure (a ConfigError naming the tool) stops everything already started
        or still starting, so a broken server is reported at once, before any model call.
        """
        if self._started:
            return
        self._started = True
        starts = [*(s.start() for s in self._servers.values()), *(t.start() for t in self._builtin)]
        tasks = [asyncio.ensure_future(c) for c in starts]
        try:
            for next_done in asyncio.as_completed(tasks):
                await next_done
            self._index()
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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

    @staticmethod
    def called_tool(offered: Mapping[str, Tool], name: str) -> Tool | None:
        """The tool a model called ``name``, among an agent's tools keyed by the name offered
        to it: by that name (``server__tool``) or by the documented one (``server.tool``)."""
        return offered.get(name) or next((t for t in offered.values() if t.name == name), None)

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
