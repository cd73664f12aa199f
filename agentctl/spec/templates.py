"""Jinja2 for prompts and conditions: one sandboxed environment, compiled once, rendered often.

Prompts (``prompt``/``prompt_file``) are templates; ``when`` and ``where`` are expressions.
Both see the same context, built by :func:`build_context`:

    account   the input row (a dict of column -> value); ``item`` is the same dict
    <stage>   the validated output of every stage listed in ``needs`` (by stage id)
    run       {"id": ..., "pipeline": ...}

System prompts are plain text, not templates, so they stay identical across items.

The environment is sandboxed (no ``__class__``-style escapes) and strict (an undefined
name raises instead of rendering as ""). For dicts, ``a.b`` looks up the key ``b`` before
the attribute, so an output field called ``items`` or ``values`` works as ``stage.items``.
:func:`template_refs` reports what a template reads, for the static checks in ``checks.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from agentctl.errors import SpecError

# Names a template may read besides the stage ids in ``needs``.
CONTEXT_NAMES = ("account", "item", "run")
RUN_FIELDS = ("id", "pipeline")
# Names Jinja's parser reads as literals, so no context variable can ever have them.
CONSTANTS: dict[str, Any] = {"true": True, "false": False, "none": None,
                             "True": True, "False": False, "None": None}
# Only meaningful inside loops and macros; find_undeclared_variables already scopes them.
_SCOPED_NAMES = ("loop", "caller", "varargs", "kwargs")
_DICT_METHODS = frozenset(n for n in dir(dict) if not n.startswith("_"))


class _SpecEnvironment(SandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # Prefer the key so output fields and CSV columns win over dict methods.
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def make_env() -> SandboxedEnvironment:
    return _SpecEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                            keep_trailing_newline=True)


_ENV = make_env()


def allowed_globals() -> frozenset[str]:
    return frozenset(_ENV.globals) | frozenset(_SCOPED_NAMES)


def build_context(account: Mapping[str, Any], upstream: Mapping[str, Any],
                  run: Mapping[str, Any]) -> dict[str, Any]:
    """The context for one item at one stage: ``upstream`` maps needed stage id -> output."""
    return {**upstream, "account": account, "item": account, "run": run}


# --- runtime ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def compile_prompt(template_text: str) -> jinja2.Template:
    """Compile once; the cache is keyed on the text, so each stage's prompt compiles once."""
    return _ENV.from_string(template_text)


@functools.lru_cache(maxsize=512)
def compile_condition(expr: str) -> Any:
    return _ENV.compile_expression(expr, undefined_to_none=False)


def _where(stage: str | None) -> str:
    return f"stage '{stage}'" if stage else "template"


# Errors a template can raise while evaluating (Jinja lets Python's own through, e.g.
# TypeError for `{{ account.name + 1 }}`); they become one SpecError naming the stage.
_RENDER_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
                  AttributeError)


def render_prompt(template_text: str, context: Mapping[str, Any], *,
                  stage: str | None = None) -> str:
    try:
        return compile_prompt(template_text).render(context)
    except _RENDER_ERRORS as exc:
        raise SpecError(f"{_where(stage)}: prompt failed to render: {exc}",
                        hint=_render_hint(exc)) from exc


def eval_condition(expr: str, context: Mapping[str, Any], *, stage: str | None = None) -> bool:
    try:
        return bool(compile_condition(expr)(**context))
    except _RENDER_ERRORS as exc:
        raise SpecError(f"{_where(stage)}: condition {expr!r} failed: {exc}",
                        hint=_render_hint(exc)) from exc


def _render_hint(exc: Exception) -> str | None:
    if isinstance(exc, jinja2.UndefinedError):
        return "check the name against the input columns and the needed stages' outputs"
    if isinstance(exc, SecurityError):
        return "templates may not reach into Python internals"
    if isinstance(exc, TypeError) and "not supported between" in str(exc):
        return ("values read from a CSV are text: compare numbers as numbers, e.g. "
                "account.employees | int > 100")
    return None


# --- static analysis ----------------------------------------------------------------------

def parse_template(text: str) -> nodes.Template:
    """Parse and compile-check (unknown filters/tests fail here). Raises TemplateSyntaxError."""
    ast = _ENV.parse(text)
    _ENV.compile(ast)
    return ast


def parse_expression(expr: str) -> nodes.Template:
    """Parse a ``when``/``where`` expression into a template AST the way Jinja compiles it."""
    parser = Parser(_ENV, expr, state="variable")
    body = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    ast = nodes.Template([nodes.Assign(nodes.Name("result", "store"), body)], lineno=1)
    ast.set_environment(_ENV)
    _ENV.compile(ast)
    return ast


@dataclass
class TemplateRefs:
    """What a template reads from its context."""
    roots: dict[str, int] = field(default_factory=dict)          # name -> first line
    attrs: list[tuple[str, str, int]] = field(default_factory=list)  # (root, key, line)


def template_refs(ast: nodes.Template) -> TemplateRefs:
    """Root names read from the context, and ``root.key`` / ``root['key']`` accesses on them.

    Names assigned anywhere in the template (set/for/macro/with) are left out of ``attrs``,
    since a local may shadow a context name.
    """
    undeclared = jinja2.meta.find_undeclared_variables(ast) - {"result"}
    refs = TemplateRefs()
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared and name.name not in refs.roots:
            refs.roots[name.name] = name.lineno
    local = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    # `account.items()` calls the dict method; it is not a column named "items".
    method_calls = {id(c.node) for c in ast.find_all(nodes.Call)
                    if isinstance(c.node, nodes.Getattr) and c.node.attr in _DICT_METHODS}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        base = node.node
        if not (isinstance(base, nodes.Name) and base.ctx == "load"):
            continue
        if base.name not in undeclared or base.name in local:
            continue
        if id(node) in method_calls:
            continue
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            continue
        refs.attrs.append((base.name, key, node.lineno))
    refs.attrs.sort(key=lambda a: a[2])
    return refs
