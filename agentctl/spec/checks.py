"""Cross-field checks of a validated :class:`Pipeline`: what pydantic cannot see field by field.

``check_pipeline``: stage ids, ``needs`` (unknown, self, cycles), agents, model aliases
(defaults, agents, stages, limits, fallbacks), a model for every agent, granted tools and
select stages' ``by``. It returns the stages in a topological order.
``check_templates``: prompts, ``when`` and ``where`` parse, and every name they read exists:
``account.<col>`` (against ``input.required`` when that list is given), ``<stage>.<field>``
for stages in ``needs``, ``run.id``/``run.pipeline``.

Problems are collected per phase; the first by line is raised as one :class:`SpecError`
that says how many more there are.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import jinja2

from agentctl.spec import templates
from agentctl.spec.models import Pipeline
from agentctl.spec.outputs import output_fields
from agentctl.spec.problems import Problem, _raise, did_you_mean, first_error, join_path  # noqa: F401
from agentctl.stages import PromptSlot, stage_type

if TYPE_CHECKING:
    from agentctl.spec.loader import SourceMap


# --- structure and graph ------------------------------------------------------------------

def providers(pipeline: Pipeline) -> set[str]:
    """Provider prefixes of the aliases' model strings ("openai" in "openai/gpt-4o-mini")."""
    return {m.model.split("/", 1)[0] for m in pipeline.models.values() if "/" in m.model}


def _alias_problem(alias: str, path: str, pipeline: Pipeline) -> Problem | None:
    if alias in pipeline.models:
        return None
    return Problem(path, f"unknown model alias '{alias}'",
                   did_you_mean(alias, pipeline.models, what="aliases (under models:)"))


def _check_models(pipeline: Pipeline) -> list[Problem]:
    found: list[Problem | None] = []
    if pipeline.defaults.model is not None:
        found.append(_alias_problem(pipeline.defaults.model, "defaults.model", pipeline))
    for name, alias in pipeline.models.items():
        for j, fallback in enumerate(alias.fallbacks):
            path = f"{join_path(join_path('models', name), 'fallbacks')}[{j}]"
            if fallback == name:
                found.append(Problem(path, f"alias '{name}' lists itself as a fallback",
                                     "name a different alias"))
            else:
                found.append(_alias_problem(fallback, path, pipeline))
    known = providers(pipeline)
    for key in pipeline.limits:
        if key not in pipeline.models and key not in known:
            choices = [*pipeline.models, *sorted(known)]
            found.append(Problem(join_path("limits", key),
                                 f"limits key '{key}' is neither a model alias nor a provider",
                                 did_you_mean(key, choices, what="aliases and providers")))
    for name, agent in pipeline.agents.items():
        if agent.model is not None:
            found.append(_alias_problem(agent.model, join_path(join_path("agents", name), "model"), pipeline))
    return [p for p in found if p]


def _check_tools(pipeline: Pipeline) -> list[Problem]:
    found = []
    for name, agent in pipeline.agents.items():
        for j, granted in enumerate(agent.tools):
            path = f"{join_path(join_path('agents', name), 'tools')}[{j}]"
            server, _, tool = granted.partition(".")
            spec = pipeline.tools.get(server)
            if spec is None:
                found.append(Problem(path, f"unknown tool '{granted}'",
                                     did_you_mean(server, pipeline.tools, what="tools (under tools:)")))
            elif tool and spec.type != "mcp":
                found.append(Problem(path, f"tool '{server}' is a {spec.type} tool, not an MCP "
                                           f"server, so '{granted}' names nothing",
                                     f"grant it as '{server}'"))
    return found


def _check_agent_models(pipeline: Pipeline) -> list[Problem]:
    if pipeline.defaults.model is not None:
        return []
    found = []
    refs = [ref for s in pipeline.stages for ref in stage_type(s).agents(s)]
    for name, agent in pipeline.agents.items():
        if agent.model is not None:
            continue
        using = [ref for ref in refs if ref.name == name]
        if not using or any(ref.model is None for ref in using):
            found.append(Problem(join_path("agents", name),
                                 f"no model for agent '{name}': it has no 'model' and "
                                 "defaults.model is not set",
                                 f"set agents.{name}.model or defaults.model to one of: "
                                 f"{', '.join(pipeline.models)}"))
    return found


# `agentctl export` writes each account as {"item_key": ..., <stage>: output, "status": {...}}
_EXPORT_KEYS = {"item_key": "the account's key", "status": "the cells' statuses"}
_RESERVED = (set(templates.CONTEXT_NAMES) | templates.allowed_globals() | set(templates.CONSTANTS)
             | set(_EXPORT_KEYS))


def _reserved_because(name: str) -> str:
    if name in templates.CONSTANTS:
        return f"templates read '{name}' as the constant {templates.CONSTANTS[name]}, not a stage"
    if name in _EXPORT_KEYS:
        return f"`agentctl export` writes {_EXPORT_KEYS[name]} under '{name}'"
    return "templates use that name for something else"


def _check_stages(pipeline: Pipeline) -> list[Problem]:
    found: list[Problem] = []
    first_at: dict[str, int] = {}
    ids = [s.id for s in pipeline.stages]
    for i, stage in enumerate(pipeline.stages):
        here = f"stages[{i}]"
        if stage.id in first_at:
            found.append(Problem(f"{here}.id", f"duplicate stage id '{stage.id}' "
                                 f"(also stages[{first_at[stage.id]}])",
                                 "stage ids must be unique; rename one"))
        first_at.setdefault(stage.id, i)
        if stage.id in _RESERVED:
            found.append(Problem(f"{here}.id", f"stage id '{stage.id}' is reserved: "
                                 f"{_reserved_because(stage.id)}", "rename the stage"))
        seen: set[str] = set()
        for j, need in enumerate(stage.needs):
            path = f"{here}.needs[{j}]"
            if need == stage.id:
                found.append(Problem(path, f"stage '{stage.id}' needs itself",
                                     "a stage can only need stages that run before it"))
            elif need not in ids:
                found.append(Problem(path, f"stage '{stage.id}' needs unknown stage '{need}'",
                                     did_you_mean(need, ids, what="stages")))
            elif need in seen:
                found.append(Problem(path, f"stage '{stage.id}' lists '{need}' twice in needs",
                                     "remove the repeat"))
            seen.add(need)
        kind = stage_type(stage)
        for ref in kind.agents(stage):
            if ref.name not in pipeline.agents:
                found.append(Problem(f"{here}.{ref.path}", f"unknown agent '{ref.name}'",
                                     did_you_mean(ref.name, pipeline.agents,
                                                  what="agents (under agents:)")))
        model = getattr(stage, "model", None)
        if model is not None:
            problem = _alias_problem(model, f"{here}.model", pipeline)
            found.extend([problem] if problem else [])
        found.extend(kind.check(stage, here, pipeline))
    return found


def _topological(pipeline: Pipeline, src: "SourceMap") -> list[str]:
    """Kahn's algorithm, always taking the earliest ready stage in YAML order."""
    pending = {s.id: set(s.needs) for s in pipeline.stages}
    order: list[str] = []
    while pending:
        ready = next((sid for sid, needs in pending.items() if not needs), None)
        if ready is None:
            break
        order.append(ready)
        del pending[ready]
        for needs in pending.values():
            needs.discard(ready)
    if not pending:
        return order
    cycle = _find_cycle(pipeline, set(pending))
    index = {s.id: i for i, s in enumerate(pipeline.stages)}
    start, nxt = cycle[0], cycle[1]
    j = pipeline.stages[index[start]].needs.index(nxt)
    raise first_error([Problem(f"stages[{index[start]}].needs[{j}]",
                               "stages form a cycle: " + " -> ".join(cycle),
                               "remove one of these needs; a stage can only use stages "
                               "that run before it")], src)


def _find_cycle(pipeline: Pipeline, stuck: set[str]) -> list[str]:
    """The shortest cycle through the first stuck stage (in YAML order) that is on one."""
    needs = {s.id: [n for n in s.needs if n in stuck] for s in pipeline.stages if s.id in stuck}
    for start in [s.id for s in pipeline.stages if s.id in stuck]:
        came_from: dict[str, str] = {}
        frontier = [start]
        while frontier:
            nxt_frontier = []
            for node in frontier:
                for nxt in needs[node]:
                    if nxt == start:
                        path = [node]
                        while path[-1] != start:
                            path.append(came_from[path[-1]])
                        return [*reversed(path), start]
                    if nxt not in came_from:
                        came_from[nxt] = node
                        nxt_frontier.append(nxt)
            frontier = nxt_frontier
    return sorted(stuck)  # unreachable: stuck stages always include a cycle


def check_pipeline(pipeline: Pipeline, src: "SourceMap") -> list[str]:
    """Raise on the first structural problem; return the stage ids in run order."""
    if pipeline.version != 1:
        _raise([Problem("version", f"unsupported spec version {pipeline.version}",
                        "this agentctl reads version 1")], src)
    _raise(_check_stages(pipeline) + _check_models(pipeline) + _check_tools(pipeline)
           + _check_agent_models(pipeline), src)
    return _topological(pipeline, src)


# --- templates ----------------------------------------------------------------------------

@dataclass
class _Where:
    """Where a template lives, to turn its line numbers into file lines."""
    path: str
    src: "SourceMap"
    file: str | None = None   # a prompt file; None for text inside the spec

    def problem(self, message: str, hint: str | None, template_line: int | None) -> Problem:
        if self.file:
            return Problem(self.path, message, hint, line=template_line, file=self.file)
        return Problem(self.path, message, hint,
                       line=self.src.template_line(self.path, template_line or 1))


def _check_refs(refs: templates.TemplateRefs, what: str, stage: Any, pipeline: Pipeline,
                at: _Where, slot: PromptSlot | None = None,
                columns_read: list[tuple[str, Problem]] | None = None) -> list[Problem]:
    found = []
    stage_ids = {s.id for s in pipeline.stages}
    item_scope = slot is None or slot.item_scope
    extra = set(slot.names) if slot else set()
    base = set(templates.CONTEXT_NAMES) if item_scope else {"run"}
    needs = set(stage.needs) if item_scope else set()
    allowed = base | needs | extra | templates.allowed_globals()
    for root, line in refs.roots.items():
        if root in allowed:
            continue
        if not item_scope and (root in templates.CONTEXT_NAMES or root in stage.needs):
            found.append(at.problem(f"{what} uses '{root}', but a {stage.type} stage's {what} "
                                    f"sees {', '.join(sorted(extra))} and run, not one account",
                                    f"loop over them, e.g. {{% for it in {sorted(extra)[-1]} %}}"
                                    f"{{{{ it.{root if root != 'item' else 'account'} }}}}{{% endfor %}}",
                                    line))
        elif root == stage.id:
            found.append(at.problem(f"{what} uses '{root}', the stage's own output",
                                    "a stage can only read the stages it needs", line))
        elif root in stage_ids:
            found.append(at.problem(f"{what} uses '{root}' but stage '{stage.id}' does not "
                                    "list it in needs", f"add '{root}' to needs", line))
        else:
            names = [*sorted(base), *stage.needs, *sorted(extra)] if item_scope else [*sorted(extra), "run"]
            found.append(at.problem(f"{what} uses unknown name '{root}'",
                                    did_you_mean(root, names, what="names here"), line))
    required = pipeline.input.required
    for root, key, line in refs.attrs:
        if root in extra:
            continue
        if root in ("account", "item") and required and item_scope:
            columns = [*required, pipeline.input.key]
            if key not in columns:
                close = difflib.get_close_matches(key, columns, n=1, cutoff=0.6)
                guess = f" (did you mean '{close[0]}'?)" if close else ""
                found.append(at.problem(
                    f"{root}.{key} is not a required input column",
                    f"add it to input.required or fix the name{guess}", line))
        elif root in ("account", "item") and item_scope and columns_read is not None:
            columns_read.append((key, at.problem(f"{root}.{key}", None, line)))
        elif root == "run" and key not in templates.RUN_FIELDS:
            found.append(at.problem(f"run.{key} does not exist",
                                    did_you_mean(key, templates.RUN_FIELDS, what="run fields"),
                                    line))
        elif root in needs and root in stage_ids:
            fields = output_fields(pipeline.stage(root))
            if key not in fields:
                found.append(at.problem(f"stage '{root}' has no output field '{key}'",
                                        did_you_mean(key, fields, what=f"fields of '{root}'"),
                                        line))
    return found


def _check_one(text: str, kind: str, stage: Any, pipeline: Pipeline, at: _Where,
               parse: Callable[[str], Any], slot: PromptSlot | None = None,
               columns_read: list[tuple[str, Problem]] | None = None) -> list[Problem]:
    try:
        ast = parse(text)
        refs = templates.template_refs(ast)
    except jinja2.TemplateSyntaxError as exc:
        return [at.problem(f"{kind} does not parse: {exc.message}",
                           "check the Jinja2 syntax: {{ value }}, {% if %}...{% endif %}",
                           exc.lineno)]
    return _check_refs(refs, kind, stage, pipeline, at, slot, columns_read)


def check_templates(pipeline: Pipeline, prompts: dict[str, str], prompt_files: dict[str, str],
                    src: "SourceMap") -> list[tuple[str, Problem]]:
    """Parse every prompt and condition and check the names they read. Returns the input
    columns they read (with where), when `input.required` does not list them, so that the
    accounts file can be checked once it is known (`unknown_columns`)."""
    found: list[Problem] = []
    columns_read: list[tuple[str, Problem]] = []
    for i, stage in enumerate(pipeline.stages):
        here = f"stages[{i}]"
        kind = stage_type(stage)
        for slot in kind.prompt_slots(stage):
            if slot.key not in prompts:
                continue
            if slot.key in prompt_files:
                at = _Where(f"{here}.{slot.file_path}", src, prompt_files[slot.key])
            else:
                at = _Where(f"{here}.{slot.path}", src)
            found += _check_one(prompts[slot.key], slot.what, stage, pipeline, at,
                                templates.parse_template, slot, columns_read)
        for path, expr, label in kind.conditions(stage):
            found += _check_one(expr, label, stage, pipeline, _Where(f"{here}.{path}", src),
                                templates.parse_expression, columns_read=columns_read)
        if stage.when is not None:
            found += _check_one(stage.when, "'when'", stage, pipeline,
                                _Where(f"{here}.when", src), templates.parse_expression,
                                columns_read=columns_read)
    _raise(found, src)
    return columns_read


def unknown_columns(columns_read: list[tuple[str, Problem]], columns: list[str],
                    accounts: str, src: "SourceMap") -> list[str]:
    """Warnings for the input columns templates read that the accounts file does not have
    (a template may guard them with `is defined`, so these warn rather than refuse)."""
    out, seen = [], set()
    for key, where in columns_read:
        if key in columns or (key, where.path) in seen:
            continue
        seen.add((key, where.path))
        line = where.line if where.line is not None else src.line(where.path)
        close = difflib.get_close_matches(key, columns, n=1, cutoff=0.6)
        out.append(f"{where.file or src.file}:{line} at {where.path}: {where.message} is not a "
                   f"column of {accounts}" + (f" (did you mean '{close[0]}'?)" if close else
                                              f" (columns: {', '.join(columns)})")
                   + "; cells that read it will fail")
    return out
