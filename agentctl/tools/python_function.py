"""``python``: a Python function offered as a tool, its JSON schema taken from its signature.

``function: "package.module:function"`` is imported when the registry is built. With
``path:`` (a folder, resolved against the spec's folder) a module found in that folder is
loaded from it under a package name private to the folder, so two tools whose modules share
a name but live in different folders each run their own code; the folder also goes on
``sys.path`` so the module can import its neighbours (those are shared by name, as usual).
Parameters need type hints pydantic understands; the docstring is the description. A
parameter annotated ``ToolContext`` is not shown to the model: it receives the call's
context (run id, item, idempotency key), and its presence marks the tool as one that
deduplicates by that key. Sync functions run in a worker thread; coroutine functions are
awaited.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import pydantic
import pydantic_core
from pydantic import Field

from agentctl.errors import AgentctlError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools.base import Tool, ToolContext
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, resolve_path, spec_error


class PythonSettings(ToolSettings):
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description='"module:function"')
    path: str | None = Field(default=None, description="folder the module is loaded from (spec-relative)")


class PythonTool(Tool):
    kind = "python"

    def __init__(self, name: str, func: Callable[..., Any], *, description: str | None = None,
                 side_effects: bool = False):
        self.name = name
        self.func = func
        self.side_effects = side_effects
        self.is_async = inspect.iscoroutinefunction(func)
        self._model, self._context_param = args_model(func, name)
        self.accepts_idempotency_key = self._context_param is not None
        self.description = description or inspect.getdoc(func) or f"Python function {func.__qualname__}"
        self.parameters = json_schema(self._model)

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "PythonTool":
        settings = parse_settings(PythonSettings, name, spec, spec_file=spec_file)
        folder = None
        if settings.path is not None:
            folder = resolve_path(spec_dir, settings.path)
            if not folder.is_dir():
                raise spec_error(name, "path", f"folder {str(folder)!r} does not exist", spec_file=spec_file)
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
        try:
            func = import_function(settings.function, folder)
            side_effects = check_side_effects(name, spec, False, spec_file=spec_file)
            return cls(name, func, description=spec.description, side_effects=side_effects)
        except AgentctlError:
            raise
        except Exception as exc:
            raise spec_error(name, "function", f"cannot use {settings.function!r}: {type(exc).__name__}: {exc}",
                             spec_file=spec_file) from exc

    def validate_args(self, args: dict) -> dict:
        args = super().validate_args(args)
        try:
            self._model.model_validate(args)
        except pydantic.ValidationError as exc:
            raise ToolError("invalid arguments: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        return args

    async def call(self, args: dict, ctx: ToolContext) -> Any:
        try:
            validated = self._model.model_validate(args)
        except pydantic.ValidationError as exc:
            raise ToolError(f"invalid arguments: {exc.errors()[0]['msg']}") from exc
        kwargs = {field: getattr(validated, field) for field in type(validated).model_fields}
        if self._context_param is not None:
            kwargs[self._context_param] = ctx
        try:
            if self.is_async:
                result = await self.func(**kwargs)
            else:
                result = await asyncio.to_thread(self.func, **kwargs)
        except ToolError:
            raise
        except Exception as exc:  # the function's own failure goes back to the model
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc
        if isinstance(result, str):
            return result
        return pydantic_core.to_jsonable_python(result, fallback=str)


def import_function(target: str, folder: Path | None = None) -> Callable[..., Any]:
    """``module:attr.path`` imported; with ``folder``, a module found there is loaded from it."""
    module_name, _, attr = target.partition(":")
    top = module_name.split(".", 1)[0]
    if folder is not None and importlib.machinery.PathFinder.find_spec(top, [str(folder)]) is not None:
        module_name = f"{_folder_package(folder)}.{module_name}"
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _folder_package(folder: Path) -> str:
    """A package private to ``folder`` (created once): its modules are imported as
    ``<package>.<module>``, so same-named modules in other folders do not clash in sys.modules."""
    name = "_agentctl_tools_" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return name


def args_model(func: Callable[..., Any], name: str) -> tuple[type[pydantic.BaseModel], str | None]:
    """A pydantic model of ``func``'s parameters, and the name of its ToolContext parameter."""
    hints = typing.get_type_hints(func, include_extras=True)
    fields: dict[str, Any] = {}
    context_param = None
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise TypeError(f"positional-only parameter {param.name!r} cannot be passed by name")
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = pydantic.create_model(f"{name}_args", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
    return model, context_param


def json_schema(model: type[pydantic.BaseModel]) -> dict:
    """The model's JSON schema with local ``$ref``s inlined (some providers reject ``$defs``)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    defs = schema.pop("$defs", {})
    schema.setdefault("properties", {})
    try:
        return _inline(schema, defs, ())
    except RecursionError:  # a recursive model: keep the references
        return {**schema, "$defs": defs}


def _inline(node: Any, defs: dict, seen: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = ref.rsplit("/", 1)[1]
            if target in seen:
                raise RecursionError(target)
            merged = {**copy.deepcopy(defs[target]), **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline(merged, defs, seen + (target,))
        return {k: _inline(v, defs, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, seen) for v in node]
    return node
