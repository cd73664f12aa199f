"""Text that UTF-8 can hold."""

from __future__ import annotations

from typing import Any


def valid_text(text: str) -> str:
    """`text` with each unpaired UTF-16 surrogate replaced by U+FFFD (a pair becomes its
    character). JSON's \\ud800-\\udfff escapes decode to such strings (a model that cut an emoji
    in half writes one); UTF-8, DuckDB and pydantic refuse them."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def valid_strings(value: Any) -> Any:
    """`value` (decoded JSON) with `valid_text` applied to every string in it, keys too."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {valid_strings(k): valid_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_strings(v) for v in value]
    return value


def may_hold_surrogates(json_text: str) -> bool:
    """Cheap test before `valid_strings`: only a \\uD8xx-\\uDFxx escape makes one."""
    return "\\ud" in json_text or "\\uD" in json_text
