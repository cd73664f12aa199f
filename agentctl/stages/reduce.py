"""`type: reduce`: fan-in over every account that reached it, into ONE run-level output (a
report over the top 10, a summary of the whole list).

The prompt sees `items`: one entry per account, in input order, each with `key`, `account`
and the outputs of the stages the reduce needs. When the rendered prompt would exceed
`max_input_tokens` (and there are more than `batch_size` items), the items are mapped in
batches of `batch_size` (same prompt, same output schema, in parallel) and the partial outputs
merged `batch_size` at a time (`merge_prompt`, which sees `partials` and `items_count`, the
items under that merge), level by level, until the partials fit in one final merge (or
`batch_size` or fewer are left); a lone partial left over at a level goes up unmerged.
`agentctl plan` counts the same tree (`tree_calls`), sizing partials from its sample. The result is stored once, in `run_outputs`;
the accounts' own `cells` rows say they were included, and later per-account stages read the
run-level output under the stage id.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agentctl.agents import CellFailed, output_instructions
from agentctl.engine.cell import CellResult, all_or_cancel
from agentctl.errors import AgentctlError, ProviderError
from agentctl.runlog.writer import utcnow
from agentctl.spec.base import (
    Ident, OutputField, StageBase, check_one_prompt, output_block, prompt_file_field)
from agentctl.spec.outputs import TEXT_FIELDS, output_json_schema
from agentctl.stages.base import AgentRef, Fields, Projection, PromptSlot, StageType


class ReduceStage(StageBase):
    type: Literal["reduce"]
    agent: str = Field(description="the agent that writes the run-level output")
    prompt: str | None = Field(default=None, description=(
        "Jinja2 template over `items` (each: key, account, and the needed stages' outputs)"))
    prompt_file: str | None = prompt_file_field()
    merge_prompt: str | None = Field(default=None, description=(
        "Jinja2 template over `partials` (batch outputs) and `items_count` (the items they "
        "cover); a built-in one if unset"))
    merge_prompt_file: str | None = prompt_file_field()
    batch_size: int = Field(default=25, ge=2, le=10_000, description=(
        "items per map call, and partials per merge call, when the prompt is too long"))
    max_input_tokens: int = Field(default=8000, gt=0, description=(
        "above this estimated prompt size (4 characters a token), map-reduce in batches"))
    output: dict[Ident, OutputField] = Field(default_factory=dict, description="the run-level output schema")
    model: str | None = Field(default=None, description="model alias overriding the agent's")

    @field_validator("output", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return output_block(v)

    @model_validator(mode="after")
    def _prompts(self) -> "ReduceStage":
        check_one_prompt(self, what="a reduce stage")
        check_one_prompt(self, what="a reduce stage", text="merge_prompt", required=False)
        return self


def _tokens(*texts: str) -> int:
    return sum(len(t) for t in texts) // 4


def _chunks(seq: list, size: int) -> list[list]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


def tree_merges(items: int, batch_size: int, fits: int | None = None) -> list[int]:
    """The merge calls `_reduce`'s map-reduce tree makes over ``items`` (more than
    ``batch_size``), as the number of partials each one merges: at each level, one merge per
    group of ``batch_size`` partials, a lone leftover partial going up unmerged; then the final
    merge, once ``batch_size`` or fewer remain or once the partials fit in one prompt
    (``fits`` of them do)."""
    partials = math.ceil(items / batch_size)
    merges: list[int] = []
    while partials > batch_size and (fits is None or partials > fits):
        full, rest = divmod(partials, batch_size)
        merges += [batch_size] * full + ([rest] if rest > 1 else [])
        partials = math.ceil(partials / batch_size)
    return merges + [partials]


def tree_calls(items: int, batch_size: int, fits: int | None = None) -> int:
    """The calls of that tree: one map per batch, and its merges (`tree_merges`)."""
    return math.ceil(items / batch_size) + len(tree_merges(items, batch_size, fits))


class ReduceType(StageType):
    kind = "reduce"
    model = ReduceStage
    summary = ("Fan-in over every account that reached it: one agent call (or a map-reduce "
               "tree over `batch_size` batches when the prompt exceeds `max_input_tokens`) "
               "producing one run-level output.")
    fan_in = True

    def agents(self, stage: ReduceStage) -> list[AgentRef]:
        return [AgentRef("agent", stage.agent, stage.model)]

    def prompt_slots(self, stage: ReduceStage) -> list[PromptSlot]:
        return [PromptSlot(stage.id, "prompt", "prompt_file", stage.prompt, stage.prompt_file,
                           names=("items",), item_scope=False),
                PromptSlot(f"{stage.id}.merge", "merge_prompt", "merge_prompt_file",
                           stage.merge_prompt, stage.merge_prompt_file,
                           names=("partials", "items_count"), item_scope=False,
                           what="merge prompt")]

    def output_fields(self, stage: ReduceStage) -> Fields:
        return stage.output or TEXT_FIELDS

    def project(self, stage: ReduceStage, measured, upstream: float, reached: int, *,
                spec: Any = None) -> Projection:
        """The prompt grows with the accounts, the calls do not: one, or (once the prompt
        passes ``max_input_tokens``) the map-reduce tree `_reduce` builds over that many
        accounts, call for call, with `_reduce`'s own fit test: the system prompt, the merge
        framing and the partials (sized from the sample's outputs) must fit in one merge.
        Input tokens count the system prompt and output instructions every call repeats, the
        accounts once (in the maps), and each merge's framing and partials."""
        base = super().project(stage, measured, upstream, reached)
        items = round(base.items)
        sample_calls = max(measured["llm_calls"], 1)
        sample_items = max(measured["ok"] + measured["failed"]
                           + measured.get("awaiting_approval", 0), 1)
        system = _tokens(spec.systems.get(stage.agent, "")) if spec is not None else 0
        repeated = system + _tokens(output_instructions(output_json_schema(self.output_fields(stage))))
        per_item = max(measured["input_tokens"] - sample_calls * repeated, 0) / sample_items
        per_output = measured["output_tokens"] / sample_calls
        if items == 0:  # nobody reaches it: the run records it skipped, without a call
            return dataclasses.replace(base, llm_calls=0, input_tokens=0, output_tokens=0,
                                       cost_usd=0.0, unpriced_calls=0)
        if items <= stage.batch_size or system + items * per_item <= stage.max_input_tokens:
            calls, tin = 1, repeated + items * per_item
        else:
            merge_text = (spec.prompts.get(f"{stage.id}.merge") if spec is not None else None)
            framing = _tokens(merge_text or self._merge_prompt(None, stage, [], items))
            per_partial = per_output + 2  # the partial's JSON, numbered, on its own line
            fits = int((stage.max_input_tokens - system - framing) // per_partial) \
                if per_partial else None
            merges = tree_merges(items, stage.batch_size, None if fits is None else max(fits, 0))
            maps = math.ceil(items / stage.batch_size)
            calls = maps + len(merges)
            tin = (maps * repeated + items * per_item
                   + sum(repeated + framing + k * per_partial for k in merges))
        tout = per_output * calls
        measured_tokens = measured["input_tokens"] + measured["output_tokens"]
        scale = (tin + tout) / measured_tokens if measured_tokens else 0.0
        return dataclasses.replace(
            base, llm_calls=calls, input_tokens=tin, output_tokens=tout,
            cost_usd=(measured["cost_usd"] or 0.0) * scale,
            unpriced_calls=measured["unpriced_calls"] * calls / sample_calls)

    def compile(self, stage: ReduceStage, build) -> Any:
        return (build.profile(stage.agent, model=stage.model),
                build.output(f"{stage.id}_output", self.output_fields(stage)))

    async def decide(self, run) -> dict[str, CellResult]:
        stage: ReduceStage = run.plan.stage
        keys = [key for _, key, _ in run.items]
        if not keys:  # say so, rather than leave the report missing without a word
            run.record_output("skipped", None, items=0, error="no account reached this stage")
            return {}
        done = run.prior_output()
        if done is not None:  # a resumed run: the reduce already finished
            return {k: CellResult("ok", done["output"], log_output=False) for k in keys}
        started_at, t0 = utcnow(), time.perf_counter()
        items = [{"key": key, **{k: v for k, v in ctx.items() if k not in ("run", "item")}}
                 for _, key, ctx in run.items]
        try:
            output = await self._reduce(run, stage, items)
        except (CellFailed, ProviderError, AgentctlError) as exc:
            kind = getattr(exc, "kind", None) or type(exc).__name__
            run.record_output("failed", None, items=len(items), error=exc.message, error_type=kind,
                              started_at=started_at, t0=t0)
            return {k: CellResult("failed", error=f"reduce '{stage.id}' failed: {exc.message}",
                                  error_type=kind) for k in keys}
        run.record_output("awaiting_approval" if run.awaiting else "ok", output, items=len(items),
                          started_at=started_at, t0=t0)
        return {k: CellResult("ok", output, log_output=False) for k in keys}

    async def _reduce(self, run, stage: ReduceStage, items: list[dict]) -> dict[str, Any]:
        """One call, or the tree `tree_calls` counts: map the batches, merge the partials
        ``batch_size`` at a time, level by level, then merge what is left once."""
        profile, output = run.plan.runtime
        size = stage.batch_size
        prompt = run.render(stage.id, items=items)
        final = run.span("final")
        if len(items) <= size or _tokens(profile.system, prompt) <= stage.max_input_tokens:
            # one batch would be this very prompt: mapping it and merging it alone buys nothing
            return await run.agent(profile, prompt, output, role="reduce", span=final,
                                   task=f"{len(items)} items")
        batches = _chunks(items, size)
        partials = list(await all_or_cancel(*(
            run.agent(profile, run.render(stage.id, items=b), output, role="map", parent=final,
                      span=run.span("map", i, depth=1), task=f"items {i * size + 1}-"
                      f"{i * size + len(b)} of {len(items)}")
            for i, b in enumerate(batches))))
        counts = [len(b) for b in batches]  # the items under each partial
        level = 1
        while len(partials) > size:
            if _tokens(profile.system, self._merge_prompt(run, stage, partials, len(items))) \
                    <= stage.max_input_tokens:
                break  # the partials fit in one merge: no more levels
            level += 1
            groups = _chunks(list(zip(partials, counts)), size)
            merged = iter(await all_or_cancel(*(
                run.agent(profile, self._merge_prompt(run, stage, [p for p, _ in g],
                                                      sum(n for _, n in g)),
                          output, role="merge", parent=final,
                          span=run.span("merge", level, i, depth=1),
                          task=f"level {level}: {len(g)} partials of {sum(n for _, n in g)} items")
                for i, g in enumerate(groups) if len(g) > 1)))
            # a lone leftover partial goes up as it is: merging it alone would be a paid no-op
            partials = [next(merged) if len(g) > 1 else g[0][0] for g in groups]
            counts = [sum(n for _, n in g) for g in groups]
        return await run.agent(profile, self._merge_prompt(run, stage, partials, len(items)),
                               output, role="merge", span=final,
                               task=f"{len(partials)} partials of {len(items)} items")

    def _merge_prompt(self, run, stage: ReduceStage, partials: list[dict], n: int) -> str:
        """The prompt merging ``partials``, which together cover ``n`` items (``run`` None:
        the built-in framing alone, for `project`)."""
        slot = f"{stage.id}.merge"
        if run is not None and run.has_template(slot):
            return run.render(slot, partials=partials, items_count=n)
        body = "\n".join(f"{i}. {json.dumps(p, ensure_ascii=False)}" for i, p in enumerate(partials, 1))
        return ("The items were too many for one request, so each batch was answered "
                "separately in the required output format. Merge these partial results into "
                f"one result over all {n} items they cover:\n{body}")

    def span_label(self, span: dict[str, Any]) -> str:
        return f"{span.get('role')} {span.get('task') or ''}".strip()
