"""The stage-type registry: every `type:` a stage can have, in one place.

The spec (models, checks, docs), the planner, the scheduler, the mock model and `inspect`
all look a stage's type up here; adding a type means adding one module and one line below.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from agentctl.stages.agent import AgentStage, AgentType
from agentctl.stages.base import AgentRef, PromptSlot, StageType
from agentctl.stages.orchestrate import OrchestrateStage, OrchestrateType
from agentctl.stages.panel import PanelStage, PanelType
from agentctl.stages.reduce import ReduceStage, ReduceType
from agentctl.stages.route import RouteStage, RouteType
from agentctl.stages.select import SelectStage, SelectType

REGISTRY: dict[str, StageType] = {t.kind: t for t in (
    AgentType(), SelectType(), RouteType(), PanelType(), ReduceType(), OrchestrateType())}
STAGE_TYPES = tuple(REGISTRY)
STAGE_MODELS = {kind: t.model for kind, t in REGISTRY.items()}


def stage_type(stage_or_kind: Any) -> StageType:
    """The type of a stage model (or of a kind name)."""
    kind = stage_or_kind if isinstance(stage_or_kind, str) else getattr(stage_or_kind, "type", "agent")
    return REGISTRY[kind]


def _stage_kind(v: Any) -> str:
    if isinstance(v, dict):
        return v.get("type", "agent")
    return getattr(v, "type", "agent")


# The `stages:` item type: a union discriminated by `type` (default `agent`).
Stage = Annotated[Union[tuple(Annotated[t.model, Tag(kind)] for kind, t in REGISTRY.items())],  # type: ignore[misc]
                  Discriminator(_stage_kind)]

__all__ = ["REGISTRY", "STAGE_MODELS", "STAGE_TYPES", "AgentRef", "AgentStage", "OrchestrateStage",
           "PanelStage", "PromptSlot", "ReduceStage", "RouteStage", "SelectStage", "Stage",
           "StageType", "stage_type"]
