"""The pipeline spec: pydantic models, loading with file/line errors, cross-field checks,
output schemas and prompt templates.

The public names load lazily, so that a leaf module (``agentctl.spec.base``, which the stage
types in ``agentctl/stages`` build on) can be imported without the loader and models, which
themselves import the stage registry.
"""

from typing import Any

__all__ = ["LoadedSpec", "Pipeline", "SpecError", "load_spec", "load_spec_text"]


def __getattr__(name: str) -> Any:
    if name in ("LoadedSpec", "load_spec", "load_spec_text"):
        from agentctl.spec import loader

        return getattr(loader, name)
    if name == "Pipeline":
        from agentctl.spec.models import Pipeline

        return Pipeline
    if name == "SpecError":
        from agentctl.errors import SpecError

        return SpecError
    raise AttributeError(f"module 'agentctl.spec' has no attribute {name!r}")
