"""A small MCP server for agentctl's tool tests, built with the SDK's MCPServer (mcp 2.x's FastMCP).

    python tests/fakes/mcp_server_demo.py                 # stdio
    python tests/fakes/mcp_server_demo.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp
    python tests/fakes/mcp_server_demo.py --fail-on-start # prints to stderr and exits 3
    python tests/fakes/mcp_server_demo.py --hang          # never answers (startup timeout)

Each started process appends its pid to $DEMO_PID_FILE when that is set, so tests can check
that no server outlives the registry.
"""

from __future__ import annotations

import asyncio
import os
import sys


def _early_exits(argv: list[str]) -> None:
    """The failure modes, handled before the (slow) SDK import so tests stay fast."""
    pid_file = os.environ.get("DEMO_PID_FILE")
    if pid_file:
        with open(pid_file, "a") as f:
            f.write(f"{os.getpid()}\n")
    if "--fail-on-start" in argv:
        print("demo server: cannot open its database (intentional failure)", file=sys.stderr, flush=True)
        sys.exit(3)
    if "--hang" in argv:  # never answer, but exit when the client closes stdin
        sys.stdin.read()
        sys.exit(0)


if __name__ == "__main__":
    _early_exits(sys.argv[1:])

from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp.types import ToolAnnotations  # noqa: E402

COMPANIES = {
    "acme.com": {"name": "Acme Corp", "industry": "Manufacturing", "employees": 1200},
    "globex.io": {"name": "Globex", "industry": "Software", "employees": 85},
}

# CRITICAL: the SDK pretty-prints tool crashes with rich, which costs ~1 s per crash
server = MCPServer("demo", version="1.0", log_level="CRITICAL")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def lookup_company(domain: str) -> dict:
    """Look up a company by its web domain."""
    company = COMPANIES.get(domain.lower())
    if company is None:
        raise ToolError(f"no company with domain {domain}")
    return {"domain": domain.lower(), **company}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def explode(reason: str = "boom") -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def slow_echo(text: str, seconds: float = 0.5) -> str:
    """Echo text after a delay."""
    await asyncio.sleep(seconds)
    return text


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def get_env(name: str) -> str:
    """The value of an environment variable in the server process."""
    return os.environ.get(name, "<unset>")


def main(argv: list[str]) -> None:
    if "--http" in argv:
        port = int(argv[argv.index("--http") + 1])
        asyncio.run(server.run_streamable_http_async(host="127.0.0.1", port=port))
        return
    asyncio.run(server.run_stdio_async())


if __name__ == "__main__":
    main(sys.argv[1:])
