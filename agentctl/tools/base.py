"""The tool contract: what the engine's tool-calling loop sees of every tool.

A tool has a model-facing name, description and JSON-Schema ``parameters``; the engine
validates the model's arguments with ``validate_args``, runs ``call`` and sends the result
back through ``render_result``. Expected failures raise ``ToolError``; their message goes
back to the model.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import jsonschema

from agentctl.errors import ToolError

OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TRUNCATION_NOTE = "\n…[truncated: showing {shown} of {total} chars]"


@dataclass
class ToolContext:
    """Who is calling: lets side-effect tools deduplicate and log with the run's ids."""

    run_id: str
    item_key: str | None
    stage_id: str | None
    agent: str | None
    idempotency_key: str | None = None  # set by the runner for side-effect tools


class Tool(ABC):
    """One callable tool offered to a model."""

    name: str
    description: str
    parameters: dict
    side_effects: bool = False
    accepts_idempotency_key: bool = False
    kind: str = "tool"  # the spec's `type` (kb_search, sql, mcp...)

    @property
    def own_timeout(self) -> float | None:
        """The time limit the tool's settings give one call (a query's or SMTP `timeout`), if
        any: the executor's own limit stays above it, so the tool's clearer error comes first."""
        return getattr(getattr(self, "settings", None), "timeout", None)

    async def start(self) -> None:
        """Prepare for calls (look up schemas, check resources). Called once by the registry."""

    async def aclose(self) -> None:
        """Release whatever ``start`` or ``call`` acquired."""

    @abstractmethod
    async def call(self, args: dict, ctx: ToolContext) -> str | dict | list:
        """Run the tool on validated ``args``; return a JSON-serialisable result."""

    def validate_args(self, args: dict) -> dict:
        """Check ``args`` against ``parameters``; ToolError lists every problem."""
        if not isinstance(args, dict):
            raise ToolError(f"invalid arguments: expected a JSON object, got {type(args).__name__}")
        validator_class = jsonschema.validators.validator_for(self.parameters, default=jsonschema.Draft202012Validator)
        try:
            problems = sorted(validator_class(self.parameters).iter_errors(args),
                              key=lambda e: [str(p) for p in e.absolute_path])
        except jsonschema.exceptions.SchemaError:  # a server's malformed schema: let the server judge
            return args
        if problems:
            raise ToolError("invalid arguments: " + "; ".join(_describe(e) for e in problems))
        return args

    @property
    def openai_name(self) -> str:
        return openai_safe_name(self.name)

    def openai_schema(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.openai_name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def openai_safe_name(name: str) -> str:
    """A function name OpenAI accepts (``^[a-zA-Z0-9_-]{1,64}$``).

    ``server.tool`` becomes ``server__tool``; other characters become ``_``; names longer
    than 64 characters keep a prefix and a hash of the full name so they stay distinct.
    """
    safe = re.sub(r"[^a-zA-Z0-9_-]", "_", name.replace(".", "__", 1)) or "_"
    if len(safe) > 64:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        safe = f"{safe[:55]}_{digest}"
    return safe


def to_jsonable(value: Any) -> Any:
    """Convert database and Python values (Decimal, datetime, UUID, bytes...) to JSON types."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and value.is_finite() else float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (uuid.UUID, PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    try:
        import pydantic_core

        return pydantic_core.to_jsonable_python(value)
    except Exception:
        return str(value)


def render_result(result: Any, max_chars: int = 8000) -> tuple[str, int]:
    """The text sent to the model for ``result`` and the size in chars before truncation."""
    if isinstance(result, str):
        text = result
    else:
        text = json.dumps(to_jsonable(result), ensure_ascii=False)
    total = len(text)
    if total <= max_chars:
        return text, total
    keep = max(0, max_chars - len(TRUNCATION_NOTE.format(shown=max_chars, total=total)))
    return text[:keep] + TRUNCATION_NOTE.format(shown=keep, total=total), total
