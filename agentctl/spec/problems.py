"""One spec problem (YAML path, message, hint, line) and the helpers that build them.

A leaf module, so stage types (``agentctl/stages/``) can report problems in the same shape
as the cross-field checks in ``checks.py``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentctl.errors import SpecError

if TYPE_CHECKING:
    from agentctl.spec.loader import SourceMap


@dataclass
class Problem:
    path: str
    message: str
    hint: str | None = None
    line: int | None = None   # set for template problems (a line inside the prompt)
    file: str | None = None   # set when the problem is in a prompt file, not the spec


def first_error(problems: list[Problem], src: "SourceMap") -> SpecError:
    def position(p: Problem) -> tuple[float, float]:
        spec_line = src.line(p.path)
        return (spec_line if spec_line is not None else float("inf"), p.line or 0)

    first = min(problems, key=position)
    more = len(problems) - 1
    message = first.message + (f" (+{more} more error{'s' if more > 1 else ''})" if more else "")
    line = first.line if first.line is not None else src.line(first.path)
    return SpecError(message, file=first.file or src.file, path=first.path, line=line,
                     hint=first.hint)


def _raise(problems: list[Problem], src: "SourceMap") -> None:
    if problems:
        raise first_error(problems, src)


def did_you_mean(word: Any, choices: Any, *, what: str = "") -> str:
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    listed = ", ".join(choices) if choices else "(none)"
    return f"known {what}: {listed}" if what else f"expected one of: {listed}"


def join_path(parent: str, key: Any, *, index: bool = False) -> str:
    """Extend a YAML path: ``stages`` + 0 -> ``stages[0]``; ``agents`` + ``w`` -> ``agents.w``."""
    if index:
        return f"{parent}[{key}]"
    key = str(key)
    if not key or re.search(r"[.\[\]\"'\s]", key):
        key = '["' + key.replace('"', '\\"') + '"]'
        return parent + key
    return f"{parent}.{key}" if parent else key
