"""Validation of a tool's spec settings into a typed model, with errors naming ``tools.<name>.<key>``."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agentctl.errors import ConfigError, SpecError
from agentctl.spec.models import ToolSpec

S = TypeVar("S", bound="ToolSettings")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolSettings(BaseModel):
    """Base of every tool's settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def parse_settings(model: type[S], name: str, spec: ToolSpec, *, spec_file: str | None = None) -> S:
    """Validate the spec's extra keys (everything but type/description/side_effects)."""
    raw = dict(spec.model_extra or {})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # a misspelt key first: the "Field required" it causes is the same mistake
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        loc = ".".join(str(p) for p in first["loc"])
        path = f"tools.{name}.{loc}" if loc else f"tools.{name}"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            import difflib

            names = sorted(f.alias or k for k, f in model.model_fields.items())
            close = difflib.get_close_matches(str(first["loc"][-1]), names, n=1, cutoff=0.6)
            message = f"unknown setting for a {spec.type} tool (" + (
                f"did you mean '{close[0]}'?)" if close else f"allowed: {', '.join(names)})")
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise SpecError(message, file=spec_file, path=path) from exc


def spec_error(name: str, key: str, message: str, *, spec_file: str | None = None) -> SpecError:
    return SpecError(message, file=spec_file, path=f"tools.{name}.{key}" if key else f"tools.{name}")


def resolve_path(spec_dir: Path, value: str | Path) -> Path:
    """Spec-relative paths are resolved against the spec's folder; ``~`` is expanded."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(spec_dir) / path).resolve()


def expand_env(value: str, *, tool: str, key: str) -> str:
    """Replace ``${NAME}`` with the environment variable, so secrets stay out of the spec."""

    def sub(match: re.Match[str]) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise ConfigError(f"tool {tool!r}: {key} refers to ${{{var}}}, which is not set in the environment")
        return os.environ[var]

    return _ENV_REF.sub(sub, value)


def check_side_effects(name: str, spec: ToolSpec, default: bool, *, fixed: bool = False,
                       spec_file: str | None = None) -> bool:
    """The spec's ``side_effects`` override, or ``default``.

    A tool that always writes (``fixed``) cannot be declared side-effect free: that would
    let it bypass the approval gate.
    """
    if spec.side_effects is None:
        return default
    if fixed and default and not spec.side_effects:
        raise spec_error(name, "side_effects", f"a {spec.type} tool always has side effects; "
                         "remove 'side_effects: false'", spec_file=spec_file)
    return spec.side_effects
