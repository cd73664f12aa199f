"""The pipeline spec: pydantic models, loading with file/line errors, cross-field checks,
output schemas and prompt templates."""

from agentctl.errors import SpecError
from agentctl.spec.loader import LoadedSpec, load_spec, load_spec_text
from agentctl.spec.models import Pipeline

__all__ = ["LoadedSpec", "Pipeline", "SpecError", "load_spec", "load_spec_text"]
