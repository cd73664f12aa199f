"""The building blocks every spec model shares: strict models, identifiers, output fields and
the fields every stage has. A leaf module: stage types (``agentctl/stages/``) import it, and
``models.py`` builds the pipeline from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
Ident = Annotated[str, Field(pattern=IDENT)]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --- output schemas -----------------------------------------------------------------------

class OutputField(Strict):
    type: Literal["str", "int", "float", "bool", "list", "enum"]
    description: str | None = None
    required: bool = True
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    # Strict so that YAML's `yes`/`no` are refused instead of silently becoming 1/0.
    values: list[StrictStr | StrictInt] | None = None
    items: Literal["str", "int", "float", "bool"] = "str"
    min_items: int | None = Field(default=None, ge=0)
    max_items: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "OutputField":
        if self.type == "enum" and not self.values:
            raise ValueError("an enum field needs 'values: [...]'")
        if self.type != "enum" and self.values is not None:
            raise ValueError("'values' is only for type enum")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError("'min'/'max' are only for int and float fields")
        if (self.min_length is not None or self.max_length is not None) and self.type != "str":
            raise ValueError("'min_length'/'max_length' are only for str fields")
        if (self.min_items is not None or self.max_items is not None) and self.type != "list":
            raise ValueError("'min_items'/'max_items' are only for list fields")
        if "items" in self.model_fields_set and self.type != "list":
            raise ValueError("'items' is only for list fields")
        for low, high in (("min", "max"), ("min_length", "max_length"), ("min_items", "max_items")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) is greater than {high} ({hi})")
        return self


OUTPUT_TYPES = ("str", "int", "float", "bool", "list", "enum")
APPROVAL = Literal["required", "auto", "dry_run"]


def approval_field() -> Any:
    """A stage's `approval:` key (every stage type that can run side-effect tools has one)."""
    return Field(default=None, description=(
        "side-effect actions: wait for approval (default), run, or record only; "
        "--auto-approve/--dry-actions win over it"))


def prompt_file_field() -> Any:
    """The `<x>_file` twin of a prompt key."""
    return Field(default=None, description="the same, from a file next to the spec")


def _coerce_field(v: Any) -> Any:
    # `summary: str` is shorthand for `summary: {type: str}`
    return {"type": v} if isinstance(v, str) else v


class StageBase(Strict):
    id: Ident = Field(description="unique stage id; later stages read its output as `<id>.<field>`")
    needs: list[str] = Field(default_factory=list, description="stages whose outputs this one reads")
    when: str | None = Field(default=None, description="Jinja2 expression; false skips the item")
    description: str | None = Field(default=None, description="free text for the spec's readers")


def check_one_prompt(model: Any, *, what: str, text: str = "prompt", required: bool = True) -> None:
    """``<text>`` or ``<text>_file``: exactly one (or neither, when not ``required``)."""
    inline, file = getattr(model, text), getattr(model, f"{text}_file")
    if inline is None and file is None and required:
        raise ValueError(f"{what} needs '{text}' or '{text}_file'")
    if inline is not None and file is not None:
        raise ValueError(f"give either '{text}' or '{text}_file', not both")


def output_block(v: Any) -> Any:
    """`summary: str` is shorthand for `summary: {type: str}`, in every ``output:`` block."""
    if isinstance(v, dict):
        return {k: _coerce_field(f) for k, f in v.items()}
    return v
