"""A stage's ``output:`` block as a JSON Schema (for the model) and a pydantic model (to check
the reply). Failures become ``OutputInvalid`` with one short line per problem, worded so it
can go straight back to the model in a repair prompt.

A stage with an empty ``output`` is free text: its output is ``{"text": "..."}``.
What a stage *type* outputs (a select stage's ``{"selected", "rank"}``, a route stage's
``route``) comes from its entry in the stage registry (``agentctl/stages``); the functions
here take either a stage or a plain ``{name: OutputField}`` mapping.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Optional

import pydantic
from pydantic import ConfigDict, Field

from agentctl.errors import OutputInvalid
from agentctl.spec.base import OutputField
from agentctl.text import may_hold_surrogates, valid_strings, valid_text

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "list": "array"}
_PY_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}

TEXT_FIELDS = {"text": OutputField(type="str")}
SELECT_FIELDS = {"selected": OutputField(type="bool"),
                 "rank": OutputField(type="int", required=False, min=1)}


Fields = dict[str, OutputField]


def output_fields(stage: Any) -> Fields:
    """The fields later stages can read from this stage's output (per its stage type)."""
    from agentctl.stages import stage_type

    return stage_type(stage).output_fields(stage)


def _fields(stage_or_fields: Any) -> Fields:
    return stage_or_fields if isinstance(stage_or_fields, dict) else output_fields(stage_or_fields)


def is_free_text(stage_or_fields: Any) -> bool:
    """A stage whose output block is empty answers in prose: ``{"text": reply}``."""
    fields = _fields(stage_or_fields)
    return fields is TEXT_FIELDS or not fields


# --- JSON Schema --------------------------------------------------------------------------

def _field_schema(f: OutputField) -> dict[str, Any]:
    if f.type == "enum":
        values = list(f.values or [])
        kinds = sorted({"string" if isinstance(v, str) else "integer" for v in values})
        schema: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": values}
    else:
        schema = {"type": _JSON_TYPES[f.type]}
    if f.type in ("int", "float"):
        if f.min is not None:
            schema["minimum"] = f.min
        if f.max is not None:
            schema["maximum"] = f.max
    if f.type == "str":
        if f.min_length is not None:
            schema["minLength"] = f.min_length
        if f.max_length is not None:
            schema["maxLength"] = f.max_length
    if f.type == "list":
        schema["items"] = {"type": _JSON_TYPES[f.items]}
        if f.min_items is not None:
            schema["minItems"] = f.min_items
        if f.max_items is not None:
            schema["maxItems"] = f.max_items
    if not f.required:
        # Optional fields may be left out or sent as null; the validator accepts both.
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*kinds, "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if f.description:
        schema["description"] = f.description
    return schema


def output_json_schema(stage: Any) -> dict[str, Any]:
    fields = _fields(stage)
    return {
        "type": "object",
        "properties": {name: _field_schema(f) for name, f in fields.items()},
        "required": [name for name, f in fields.items() if f.required],
        "additionalProperties": False,
    }


# --- pydantic model -----------------------------------------------------------------------

def _annotation(f: OutputField) -> Any:
    if f.type == "enum":
        return Literal[tuple(f.values or ())]
    if f.type == "list":
        return list[_PY_TYPES[f.items]]
    return _PY_TYPES[f.type]


def _field_info(f: OutputField) -> Any:
    kwargs: dict[str, Any] = {"description": f.description}
    if f.type in ("int", "float"):
        kwargs.update(ge=f.min, le=f.max)
    elif f.type == "str":
        kwargs.update(min_length=f.min_length, max_length=f.max_length)
    elif f.type == "list":
        kwargs.update(min_length=f.min_items, max_length=f.max_items)
    if not f.required:
        kwargs["default"] = None
    return Field(**{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def _build_model(name: str, fields: Fields) -> type[pydantic.BaseModel]:
    definitions: dict[str, Any] = {}
    for field_name, f in fields.items():
        annotation = _annotation(f)
        definitions[field_name] = (annotation if f.required else Optional[annotation], _field_info(f))
    return pydantic.create_model(  # type: ignore[call-overload]
        f"{name}_output", __config__=ConfigDict(extra="forbid"), **definitions)


# Keyed by id(); the key object is kept alongside so a recycled id can never hit a stale model.
_MODELS: dict[int, tuple[Any, type[pydantic.BaseModel]]] = {}


def output_model(stage: Any, name: str | None = None) -> type[pydantic.BaseModel]:
    """The pydantic model of a stage's (or a field mapping's) output; built once per object."""
    cached = _MODELS.get(id(stage))
    if cached is None or cached[0] is not stage:
        label = name or getattr(stage, "id", "reply")
        cached = _MODELS[id(stage)] = (stage, _build_model(label, _fields(stage)))
    return cached[1]


# --- validating replies -------------------------------------------------------------------

def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _invalid(problems: list[str]) -> OutputInvalid:
    exc = OutputInvalid("; ".join(problems),
                        hint="reply with one JSON object that matches the output schema")
    exc.problems = problems  # type: ignore[attr-defined]
    return exc


def validate_output(stage: Any, data: Any) -> dict[str, Any]:
    """Check a decoded reply against the stage's schema; returns the validated dict."""
    if is_free_text(stage) and isinstance(data, str):
        data = {"text": data}
    if not isinstance(data, dict):
        raise _invalid([f"reply must be a JSON object, got {type(data).__name__}"])
    try:
        return output_model(stage).model_validate(data).model_dump()
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = _loc(err["loc"])
            msg = "unexpected field, remove it" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{where}: {msg}" if where else msg)
        raise _invalid(problems) from None


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)```", re.S)


def strip_fences(text: str) -> str:
    """The JSON inside a ```json fence if the reply has one, else the reply stripped."""
    match = _FENCE.search(text)
    return (match.group(1) if match else text).strip()


def parse_output(stage: Any, text: str) -> dict[str, Any]:
    """Decode a model's reply (JSON, possibly fenced or wrapped in prose) and validate it.

    A free-text stage takes the reply as is: ``{"text": reply}``.
    """
    if is_free_text(stage):
        body = strip_fences(text)
        if body.startswith("{") and '"text"' in body:  # the requested {"text": ...} object
            try:
                data = _decode(body)
            except ValueError:
                data = None
            if isinstance(data, dict) and set(data) == {"text"} and isinstance(data["text"], str):
                return validate_output(stage, {"text": data["text"].strip()})
        return validate_output(stage, {"text": valid_text(text.strip())})
    return validate_output(stage, _loads(strip_fences(text)))


def _decode(body: str) -> Any:
    """JSON as models write it: raw tabs and line breaks inside strings are kept (strict JSON
    refuses them; local models often send them), and half a character pair ("\\ud83d"
    alone) becomes U+FFFD."""
    data = json.loads(body, strict=False)
    return valid_strings(data) if may_hold_surrogates(body) else data


def _loads(body: str) -> Any:
    try:
        return _decode(body)
    except json.JSONDecodeError as exc:
        first = exc
    # Models sometimes wrap the object in prose: the first object that decodes from the first
    # brace on (the prose after it may hold braces too), else the outermost braces.
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        try:
            data, _ = json.JSONDecoder(strict=False).raw_decode(body, start)
            return valid_strings(data) if may_hold_surrogates(body) else data
        except json.JSONDecodeError:
            pass
        try:
            return _decode(body[start:end + 1])
        except json.JSONDecodeError:
            pass
    raise _invalid([f"reply is not valid JSON: {first}"])
