"""`type: select`: fan-in over every account; keep the top K by a field and/or those matching
`where`. No model is called; the kept accounts go on, the rest are `filtered`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from agentctl.engine.cell import CellResult
from agentctl.spec.base import OutputField, StageBase
from agentctl.spec.problems import Problem, did_you_mean
from agentctl.stages.base import Fields, Projection, StageType

SELECT_FIELDS = {"selected": OutputField(type="bool"),
                 "rank": OutputField(type="int", required=False, min=1)}


class SelectStage(StageBase):
    """Fan-in over all items: keep the top K by a field, and/or those matching ``where``."""
    type: Literal["select"]
    by: str | None = Field(default=None, description="stage.field to rank by, e.g. score.score")
    top: int | None = Field(default=None, gt=0)
    order: Literal["desc", "asc"] = Field(default="desc", description=(
        "desc: highest first (numbers, strings Z to A, an enum's last declared value first); "
        "asc: lowest first; missing values last either way"))
    where: str | None = Field(default=None, description="Jinja2 expression an item must satisfy")

    @model_validator(mode="after")
    def _something(self) -> "SelectStage":
        if self.top is None and self.where is None:
            raise ValueError("a select stage needs 'top' (with 'by') and/or 'where'")
        if self.top is not None and self.by is None:
            raise ValueError("'top' needs 'by: <stage>.<field>' to rank on")
        return self


def check_field_ref(ref: str, path: str, stage: Any, pipeline: Any, *, key: str = "by",
                    rankable: bool = True) -> list[Problem]:
    """`<stage>.<field>` naming a needed stage's output field (select's `by`, reduce's)."""
    from agentctl.spec.outputs import output_fields

    match = re.fullmatch(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)", ref)
    if not match:
        return [Problem(path, f"'{key}: {ref}' is not of the form <stage>.<field>",
                        "e.g. 'by: score.score'")]
    source, name = match.groups()
    if source not in stage.needs:
        return [Problem(path, f"'{key}' ranks on stage '{source}', which stage '{stage.id}' "
                              "does not list in needs", f"add '{source}' to needs")]
    try:
        fields = output_fields(pipeline.stage(source))
    except KeyError:
        return []  # reported as an unknown need
    if name not in fields:
        return [Problem(path, f"stage '{source}' has no output field '{name}'",
                        did_you_mean(name, fields, what=f"fields of '{source}'"))]
    if rankable and fields[name].type == "list":
        return [Problem(path, f"'{ref}' is a list and cannot be ranked",
                        "rank on an int, float, bool, enum or str field")]
    return []


def rank(items: list[tuple[int, str, dict]], by: str | None, order: str,
         field: OutputField | None = None) -> list[tuple[int, str, dict]]:
    """Items sorted by `<stage>.<field>`: ``desc`` puts the highest first, ``asc`` the lowest.

    Numbers compare as numbers (bools as 0/1), strings as strings, and an enum ``field`` by the
    position of its declared ``values`` (so ``desc`` puts the last declared value first).
    Missing values go last in both orders; ties keep input order."""
    in_order = sorted(items, key=lambda c: c[0])
    if not by:
        return in_order
    sid, _, fld = by.partition(".")
    declared = ({v: i for i, v in enumerate(field.values or [])}
                if field is not None and field.type == "enum" else None)

    def value(c: tuple[int, str, dict]) -> Any:
        v = (c[2].get(sid) or {}).get(fld)
        if declared is not None and v is not None:
            return declared.get(v)  # a value the enum does not declare ranks as missing
        return int(v) if isinstance(v, bool) else v

    valued = [(value(c), c) for c in in_order]
    present = [(v, c) for v, c in valued if v is not None]
    missing = [c for v, c in valued if v is None]
    # sorted() stays stable with reverse=True, so ties keep input order in both directions
    try:
        present.sort(key=lambda vc: vc[0], reverse=order == "desc")
    except TypeError:  # mixed types: compare as text
        present.sort(key=lambda vc: str(vc[0]), reverse=order == "desc")
    return [c for _, c in present] + missing


class SelectType(StageType):
    kind = "select"
    model = SelectStage
    summary = "Fan-in over all accounts: keep the top K by a field and/or those matching `where`."
    fan_in = True
    calls_models = False

    def conditions(self, stage: SelectStage) -> list[tuple[str, str, str]]:
        return [("where", stage.where, "'where'")] if stage.where is not None else []

    def output_fields(self, stage: SelectStage) -> Fields:
        return SELECT_FIELDS

    def check(self, stage: SelectStage, here: str, pipeline) -> list[Problem]:
        return check_field_ref(stage.by, f"{here}.by", stage, pipeline) if stage.by else []

    def compile(self, stage: SelectStage, build) -> OutputField | None:
        """The field ``by`` ranks on, as its stage declares it (an enum ranks by its values)."""
        from agentctl.spec.outputs import output_fields

        if not stage.by:
            return None
        source, _, name = stage.by.partition(".")
        return output_fields(build.pipeline.stage(source)).get(name)

    def project(self, stage: SelectStage, measured, upstream: float, reached: int, *,
                spec=None) -> Projection:
        """The share ``where`` kept in the sample, capped at ``top``; no calls."""
        ran = measured["ok"] + measured["failed"] + measured.get("awaiting_approval", 0)
        considered = max(ran + measured["filtered"], 1)
        passing = upstream * (measured["ok"] / considered) if stage.where else upstream
        kept = min(stage.top, passing) if stage.top else passing
        return Projection(items=kept, reach=kept)

    async def decide(self, run) -> dict[str, CellResult]:
        """Rank the accounts that pass `where`. A `where` that raises on one account's values
        fails that account's cell alone, naming it, as a per-account `when` does; the others
        are ranked without it. (Failing rather than filtering: a condition that cannot be
        evaluated is a bug in the spec or the data, and a silent `filtered` would hide it as
        "did not qualify"; `retry --stage <select>` ranks again once it is fixed.)"""
        from agentctl.errors import AgentctlError
        from agentctl.spec.templates import eval_condition

        stage: SelectStage = run.plan.stage
        out: dict[str, CellResult] = {}
        candidates = []
        for c in run.items:
            try:
                if not stage.where or eval_condition(stage.where, c[2]):
                    candidates.append(c)
            except AgentctlError as exc:
                out[c[1]] = CellResult(
                    "failed", error=f"'where' of '{run.plan.id}' failed for account {c[1]}: "
                                    f"{exc.message}", error_type=type(exc).__name__)
        ranked = rank(candidates, stage.by, stage.order, run.plan.runtime)
        keep = ranked[: stage.top] if stage.top else ranked
        chosen = {key: n for n, (_, key, _) in enumerate(keep, start=1)}
        for _, key, _ in run.items:
            if key in out:
                continue
            if key in chosen:
                out[key] = CellResult("ok", {"selected": True, "rank": chosen[key]})
            else:
                out[key] = CellResult("filtered", {"selected": False, "rank": None},
                                      error=f"not selected by '{run.plan.id}'")
        return out
