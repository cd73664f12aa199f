"""agentctl's exception tree.

Errors from lower libraries (litellm, DuckDB, MCP, httpx, YAML, pydantic) are translated
into these at the one boundary that calls them (``raise SpecError(...) from exc``). The CLI
turns any ``AgentctlError`` into one line on stderr and ``exit_code``.

    AgentctlError                 exit 1 unless a subclass says otherwise
    ├── UsageError                exit 2: the user must fix something before a run can start
    │   ├── SpecError             the pipeline YAML (file, YAML path, line)
    │   ├── InputError            the accounts file (file, row, column)
    │   ├── ConfigError           environment: database path, API key, api_base, flags
    │   └── NotFound              an unknown run id, stage or item
    ├── RunLogError               the DuckDB run log cannot be opened or written
    ├── ProviderError             a model call failed (kept as a record on the cell, not raised
    │   │                         out of the engine, unless it must stop the run)
    │   ├── RetryableProviderError   429, 5xx, timeouts, connection errors: worth another attempt
    │   │   └── RateLimited          429, with the server's Retry-After when it gave one
    │   └── FatalProviderError       will not heal by retrying
    │       ├── AuthError            bad or missing API key: stops the run early
    │       ├── QuotaExceeded        insufficient_quota: stops the run early
    │       ├── BadRequest           the request itself is wrong (incl. context length)
    │       └── ReplayMiss           --replay: the recorded run never made this request
    ├── BudgetExceeded            a budget would be exceeded (exit 4 when it stops the run)
    ├── OutputInvalid             a model reply that failed the stage's output schema
    │   └── UnusableReply         not an answer: cut off, filtered, refused or empty
    ├── ToolError                 a tool failed; its message goes back to the model
    ├── CellFailed                a cell's agent gave up (agents.py)
    └── NothingToResume           `resume` of a run that has ended: its own exit code, no row touched
"""

from __future__ import annotations

import os
import re

_KEY_PATTERN = re.compile(
    r"(sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|(?:api[_-]?key|token|secret|password)=[^\s&'\"]{6,})", re.I)
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIALS)", re.I)


def redact(text: str) -> str:
    """Blank out API keys and other secrets before text reaches a log, a screen or JSON."""
    if not text:
        return text
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, "[redacted]")
    return _KEY_PATTERN.sub("[redacted]", text)


class AgentctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.strip().replace("\n", " ")
        if self.hint:
            text = f"{text} ({self.hint})" if not self.hint.startswith("fix:") else f"{text}; {self.hint}"
        return text


class UsageError(AgentctlError):
    exit_code = 2


class SpecError(UsageError):
    """A problem in the pipeline spec; the message names file, YAML path and line."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None,
                 line: int | None = None, hint: str | None = None):
        self.file, self.path, self.line = file, path, line
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if path:
            where = f"{where} at {path}" if where else path
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.detail = message


class InputError(UsageError):
    """A problem in the accounts file; the message names file, row and column."""


class ConfigError(UsageError):
    """A problem with the environment or flags (database path, API key, api_base...)."""


class NotFound(UsageError):
    """An unknown run id, stage or item."""


class RunLogError(AgentctlError):
    exit_code = 2


class ProviderError(AgentctlError):
    """A model call failed. ``retryable`` says whether another attempt could succeed."""

    retryable = False
    stops_run = False

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after: float | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.kind = kind or type(self).__name__


class RetryableProviderError(ProviderError):
    retryable = True


class RateLimited(RetryableProviderError):
    pass


class FatalProviderError(ProviderError):
    pass


class AuthError(FatalProviderError):
    stops_run = True
    exit_code = 2


class QuotaExceeded(FatalProviderError):
    stops_run = True
    exit_code = 2


class BadRequest(FatalProviderError):
    pass


class BudgetExceeded(AgentctlError):
    """The next call would take spending past a budget. ``whole_run`` stops the run (exit 4);
    otherwise only the item's per-item budget is spent and its cell fails."""

    exit_code = 4

    def __init__(self, message: str, *, whole_run: bool):
        super().__init__(message)
        self.whole_run = whole_run


class OutputInvalid(AgentctlError):
    """The model's reply did not match the stage's output schema."""


class ToolError(AgentctlError):
    """A tool failed; the message is returned to the model as the tool result."""


class NothingToResume(AgentctlError):
    """`agentctl resume` of a run that has ended (completed, or completed with errors): there
    is no unfinished cell and no approved action left, and the run row is left as it is. The
    exit code is the run's own."""

    def __init__(self, message: str, *, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
