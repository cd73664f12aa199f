"""Tools agents can call: the built-in ones, Python functions and MCP servers.

``ToolRegistry`` builds them from the spec's ``tools:`` section and grants them to agents;
every tool implements ``Tool`` from ``base``.
"""

from agentctl.tools.base import Tool, ToolContext, openai_safe_name, render_result
from agentctl.tools.registry import TOOL_TYPES, ToolRegistry

__all__ = ["TOOL_TYPES", "Tool", "ToolContext", "ToolRegistry", "openai_safe_name", "render_result"]
