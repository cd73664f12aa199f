"""What a stage type is: one class per `type:` a stage can have, read by every layer.

The spec layer asks it for its pydantic model, the agents and prompts it uses, its output
fields and its own cross-field checks; the planner asks it to compile a stage; the scheduler
asks it to run one cell (or, for a fan-in type, to decide over every item that arrived);
`agentctl plan` asks it to scale a sample run's figures to the whole input; the mock model
asks it for a deterministic turn; `inspect` asks it to label the spans it logged.
Nothing outside ``agentctl/stages`` branches on a stage's kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from agentctl.spec.base import OutputField, StageBase

if TYPE_CHECKING:
    from agentctl.engine.cell import CellRun, FanInRun
    from agentctl.engine.plan import PlanBuilder
    from agentctl.llm.types import LLMRequest, ToolCallRequest
    from agentctl.spec.models import Pipeline
    from agentctl.spec.problems import Problem

Fields = dict[str, OutputField]


@dataclass(frozen=True)
class Projection:
    """One stage's share of `agentctl plan`'s projection for the whole input.

    ``items`` is how many accounts the stage runs for; ``reach`` how many go on from it to
    the stages that need it (fewer than ``items`` when it filters); the rest are totals."""
    items: float
    reach: float
    llm_calls: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_usd: float = 0.0
    unpriced_calls: float = 0.0


@dataclass(frozen=True)
class PromptSlot:
    """A prompt template a stage carries (a stage can carry several: a router's, a moderator's).

    ``key`` names it in ``LoadedSpec.prompts`` and in the run log: the stage id for the main
    prompt, ``<stage>.<name>`` for the others. ``path``/``file_path`` are YAML paths under the
    stage (``prompt``, ``router.prompt_file``). ``names`` are the extra context names the
    template may read; ``item_scope`` says whether ``account``, ``item`` and the needed
    stages are in scope (a reduce's prompts see ``items`` instead)."""
    key: str
    path: str
    file_path: str
    text: str | None
    file: str | None
    names: tuple[str, ...] = ()
    item_scope: bool = True
    what: str = "prompt"


@dataclass(frozen=True)
class AgentRef:
    """An agent a stage may call, and where in the stage it is named (for errors)."""
    path: str       # YAML path under the stage, e.g. "cases[1].agent"
    name: str
    model: str | None = None   # a stage-level model alias overriding the agent's


class StageType:
    kind: ClassVar[str]
    model: ClassVar[type[StageBase]]
    summary: ClassVar[str] = ""
    fan_in: ClassVar[bool] = False        # waits for every item (a barrier), decides once
    calls_models: ClassVar[bool] = True

    # -- spec -------------------------------------------------------------------------------
    def agents(self, stage: Any) -> list[AgentRef]:
        return []

    def prompt_slots(self, stage: Any) -> list[PromptSlot]:
        return []

    def conditions(self, stage: Any) -> list[tuple[str, str, str]]:
        """Jinja2 expressions besides ``when``: (path under the stage, expression, label)."""
        return []

    def output_fields(self, stage: Any) -> Fields:
        raise NotImplementedError

    def check(self, stage: Any, here: str, pipeline: "Pipeline") -> list["Problem"]:
        """Type-specific cross-field checks; paths start with ``here`` (``stages[3]``)."""
        return []

    # -- plan and run -----------------------------------------------------------------------
    def compile(self, stage: Any, build: "PlanBuilder") -> Any:
        return None

    async def run_item(self, cell: "CellRun") -> dict[str, Any]:
        raise NotImplementedError(f"{self.kind} stages do not run per item")

    async def decide(self, run: "FanInRun") -> dict[str, Any]:
        raise NotImplementedError(f"{self.kind} stages are not fan-in stages")

    # -- agentctl plan ---------------------------------------------------------------------
    def project(self, stage: Any, measured: dict[str, Any], upstream: float,
                reached: int, *, spec: Any = None) -> Projection:
        """Scale what a sample run measured for this stage (its row of `inspect_run`) to the
        whole input: ``upstream`` accounts reach it there, ``reached`` did in the sample
        (``spec``: the loaded spec, for a type that sizes prompts from its texts).
        By default every figure grows with the accounts the stage runs for."""
        ran = measured["ok"] + measured["failed"] + measured.get("awaiting_approval", 0)
        items = upstream * (ran / reached if reached else 0.0)
        per_item = items / max(ran, 1)
        return Projection(
            items=items, reach=items if stage.when else upstream,
            llm_calls=measured["llm_calls"] * per_item,
            input_tokens=measured["input_tokens"] * per_item,
            output_tokens=measured["output_tokens"] * per_item,
            cost_usd=(measured["cost_usd"] or 0.0) * per_item,
            unpriced_calls=measured["unpriced_calls"] * per_item)

    # -- the mock model and inspect ---------------------------------------------------------
    def mock_turn(self, request: "LLMRequest", seed: str) -> list["ToolCallRequest"] | None:
        """Tool calls the offline mock makes on this turn, or None for its generic behaviour."""
        return None

    def span_label(self, span: dict[str, Any]) -> str:
        """How `inspect` names one logged agent turn of this stage type."""
        return f"{span.get('role') or 'agent'} · {span.get('agent')}"
