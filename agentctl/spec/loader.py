"""Load a pipeline spec in layers: file -> text -> dict -> checked :class:`LoadedSpec`.

Every failure is one :class:`SpecError` naming the file, the YAML path (``stages[2].needs[0]``)
and, where the YAML gives one, the line. Lines come from composing the YAML into nodes first
(:class:`SourceMap`); pydantic's error locations are mapped back onto those paths.

Prompt and system files are read relative to the spec's folder and must stay inside it.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from agentctl.errors import ConfigError, SpecError
from agentctl.spec import checks
from agentctl.spec.checks import Problem, did_you_mean, join_path
from agentctl.spec.models import OUTPUT_TYPES, Pipeline
from agentctl.stages import STAGE_MODELS, STAGE_TYPES, stage_type

_MERGE_TAG = "tag:yaml.org,2002:merge"


# --- YAML with a source map ---------------------------------------------------------------

_LAST_PART = re.compile(r'(\.[^.\[]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')


@dataclass
class SourceMap:
    """Where each YAML path starts in the spec file (1-based lines)."""
    file: str
    lines: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, yaml.Node] = field(default_factory=dict, repr=False)

    def line(self, path: str) -> int | None:
        """The line of ``path``, or of its nearest ancestor the file has (for missing keys)."""
        while True:
            if path in self.lines:
                return self.lines[path]
            shorter = _LAST_PART.sub("", path)
            if shorter == path or not path:
                return self.lines.get("")
            path = shorter

    def template_line(self, path: str, template_line: int) -> int | None:
        """The file line of line ``template_line`` of the string value at ``path``."""
        node = self.nodes.get(path)
        if not isinstance(node, yaml.ScalarNode):
            return self.line(path)
        first = node.start_mark.line + 1 + (1 if node.style in ("|", ">") else 0)
        return first + max(template_line, 1) - 1

    def scalar_text(self, path: str) -> str | None:
        node = self.nodes.get(path)
        return node.value if isinstance(node, yaml.ScalarNode) else None


# How many values aliases may add to a spec (each use of an alias adds every value under its
# anchor). Hand-written specs add a few hundred; a "billion laughs" spec of nested aliases adds
# billions from a few lines, and everything that walks the data (the source map, pydantic, the
# run log) would pay for each one.
MAX_ALIASED_VALUES = 100_000


class _AliasBomb(Exception):
    def __init__(self, anchor: str, mark: yaml.Mark):
        super().__init__(anchor)
        self.anchor, self.mark = anchor, mark


class _SpecYamlLoader(yaml.SafeLoader):
    """Our own SafeLoader, so constructors other code adds to SafeLoader cannot leak in.
    Lines are recorded by walking the composed nodes (:func:`_map`) before construction.

    While composing, it counts how many values the aliases expand to and stops past
    :data:`MAX_ALIASED_VALUES`, before anything walks the expanded data."""
    yaml_constructors = yaml.SafeLoader.yaml_constructors.copy()

    def __init__(self, stream: str):
        super().__init__(stream)
        self.expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
        self.aliased = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        alias = self.peek_event() if self.check_event(yaml.AliasEvent) else None
        node = super().compose_node(parent, index)
        if alias is not None:
            # An anchor still being composed (a recursive alias) counts once.
            self.aliased += self.expanded.get(id(node), 1)
            if self.aliased > MAX_ALIASED_VALUES:
                raise _AliasBomb(alias.anchor, alias.start_mark)
        else:
            self.expanded[id(node)] = 1 + sum(self.expanded.get(id(c), 1) for c in _children(node))
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _map(node: yaml.Node, path: str, src: SourceMap, active: set[int]) -> None:
    if id(node) in active:  # a recursive anchor; pydantic will reject the value anyway
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key_node, value in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            child = join_path(path, key_node.value)
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise SpecError(
                    f"duplicate key '{key_node.value}' (first on line {seen[ident]})",
                    file=src.file, path=child, line=line,
                    hint="YAML would silently keep only the last one; remove or rename one")
            seen[ident] = line
            src.lines[child], src.nodes[child] = line, value
            _map(value, child, src, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = join_path(path, i, index=True)
            src.lines[child], src.nodes[child] = item.start_mark.line + 1, item
            _map(item, child, src, active)
    active.discard(id(node))


def _open_quote_line(text: str, before: int | None) -> int | None:
    """The first line above ``before`` whose double quotes do not pair up."""
    for n, source_line in enumerate(text.splitlines()[: (before or 1) - 1], 1):
        code = source_line.split(" #", 1)[0]
        if (code.count('"') - code.count('\\"')) % 2:
            return n
    return None


def _yaml_hint(text: str, line: int | None) -> str:
    source_line = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
    if "\t" in source_line[: len(source_line) - len(source_line.lstrip())]:
        return "indent with spaces; YAML does not allow tabs"
    opened = _open_quote_line(text, line)
    if opened:
        return f"the double quote opened on line {opened} is probably never closed"
    if "{{" in source_line or "{%" in source_line:
        return "quote a value that starts with '{{' or '{%', or write it as a block: 'prompt: |'"
    return "check indentation and quoting on that line or the one before"


def _unprintable(exc: yaml.reader.ReaderError, text: str, file: str) -> SpecError:
    """YAML refuses control characters (NUL, ESC, ...) anywhere in the file."""
    code, at = exc.character, exc.position
    line = text.count("\n", 0, at) + 1
    column = at - (text.rfind("\n", 0, at) + 1) + 1
    control = unicodedata.category(chr(code)) == "Cc"
    what = "control character" if control else "character"
    escape = f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    pasted = "terminal colour codes start with it; " if code == 0x1B else ""
    return SpecError(f"{what} U+{code:04X} at column {column} is not allowed in YAML",
                     file=file, line=line,
                     hint=f"{pasted}remove the {what}, or if the text needs it, write it as "
                          f"\"{escape}\" inside a double-quoted string")


def parse_yaml(text: str, file: str) -> tuple[dict[str, Any], SourceMap]:
    src = SourceMap(file)
    try:
        loader = _SpecYamlLoader(text)  # the reader checks every character up front
    except yaml.reader.ReaderError as exc:
        raise _unprintable(exc, text, file) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError("the spec is empty", file=file,
                            hint="a spec needs at least name, input, models, agents and stages")
        src.nodes[""] = root
        _map(root, "", src, set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f" (column {mark.column + 1})" if mark else ""
        problem = ": ".join(filter(None, (exc.context, exc.problem))) or "invalid YAML"
        raise SpecError(f"YAML syntax error: {problem}{where}", file=file, line=line,
                        hint=_yaml_hint(text, line)) from exc
    except _AliasBomb as exc:
        raise SpecError(f"YAML aliases expand to more than {MAX_ALIASED_VALUES} values, "
                        f"past it at alias '*{exc.anchor}' (column {exc.mark.column + 1})",
                        file=file, line=exc.mark.line + 1,
                        hint="nested aliases multiply; write the values out, or reuse an "
                             "anchor without nesting aliases inside it") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML error: {exc}", file=file) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"the spec must be a YAML mapping, got {_kind(data)}", file=file, line=1,
                        hint="start with top-level keys: name, input, models, agents, stages")
    return data, src


# --- pydantic errors -> YAML paths --------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _unwrap(tp: Any) -> Any:
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [t for t in typing.get_args(tp) if t is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _model_at(loc: tuple[Any, ...]) -> type[pydantic.BaseModel] | None:
    """The spec model holding the field at ``loc`` (pydantic's loc, tags included)."""
    tp: Any = Pipeline
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
            info = tp.model_fields.get(part) if isinstance(part, str) else None
            if info is None:
                return None
            tp = info.annotation
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            tp = STAGE_MODELS.get(part)
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel) else None


def _yaml_path(loc: tuple[Any, ...], data: Any, missing: bool) -> str:
    """Follow ``loc`` through the data; parts that are not in the data (union member
    names like 'str'/'int') are skipped, except a missing key, which ends the path."""
    if len(loc) > 2 and loc[0] == "stages" and loc[2] in STAGE_TYPES:
        loc = loc[:2] + loc[3:]  # drop the discriminated union's tag
    path, cur = "", data
    for part in loc:
        if part == "[key]":
            break
        if isinstance(cur, dict) and part in cur:
            path, cur = join_path(path, part), cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            path, cur = join_path(path, part, index=True), cur[part]
        elif missing and isinstance(cur, dict) and isinstance(part, str):
            return join_path(path, part)
    return path


_TOP_LEVEL_EXAMPLES = {
    "name": "'name: account-research'",
    "input": "'input: {key: account_id}'",
    "models": "'models: {fast: openai/gpt-4o-mini}'",
    "agents": "'agents: {researcher: {system: ...}}'",
    "stages": "'stages:' with items like '- {id: research, agent: researcher, prompt: ...}'",
}
_TYPE_SYNONYMS = {"string": "str", "text": "str", "integer": "int", "number": "float",
                  "double": "float", "boolean": "bool", "array": "list", "choice": "enum"}


def _unknown_key(loc: tuple[Any, ...], key: str) -> tuple[str, str | None]:
    """The hint for an unknown key at ``loc``, and the known key it is probably a typo of."""
    model = _model_at(loc[:-1])
    fields = list(model.model_fields) if model else []
    if model in STAGE_MODELS.values() and key not in fields:
        owners = [k for k, m in STAGE_MODELS.items() if key in m.model_fields]
        if owners:
            kinds = " or ".join(owners)
            return f"'{key}' belongs to {kinds} stages; set 'type: {owners[0]}' or remove it", None
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    return did_you_mean(key, fields, what="keys"), (close[0] if close else None)


def _typo_targets(errors: list[Any]) -> set[tuple[Any, ...]]:
    """The locs of required keys that an unknown sibling key is a typo of (``tpye`` for
    ``type``): pydantic reports both, but it is one mistake, told as the unknown key."""
    targets = set()
    for err in errors:
        loc = err["loc"]
        if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            meant = _unknown_key(loc, loc[-1])[1]
            if meant is not None:
                targets.add((*loc[:-1], meant))
    return targets


def _empty_value_hint(loc: tuple[Any, ...], key: str) -> str:
    if len(loc) == 1 and key in _TOP_LEVEL_EXAMPLES:
        return f"give it a value, e.g. {_TOP_LEVEL_EXAMPLES[key]}"
    model = _model_at(loc[:-1])
    info = model.model_fields.get(key) if model else None
    return f"give it a value: {info.description}" if info and info.description \
        else "give it a value, or remove the key"


def _describe(err: dict[str, Any], data: Any, path: str, src: SourceMap) -> tuple[str, str | None]:
    kind, loc, value = err["type"], err["loc"], err.get("input")
    msg = str(err["msg"])
    key = next((p for p in reversed(loc) if isinstance(p, str) and p != "[key]"), "")
    if kind == "extra_forbidden":
        return f"unknown key '{key}'", _unknown_key(loc, key)[0]
    if kind == "missing":
        if key == "agent" and isinstance(data.get("agents"), dict):
            return "missing required key 'agent'", \
                f"add 'agent: <name>' naming one of: {', '.join(map(str, data['agents']))}"
        if len(loc) == 1 and key in _TOP_LEVEL_EXAMPLES:
            return f"missing required key '{key}'", f"add it, e.g. {_TOP_LEVEL_EXAMPLES[key]}"
        model = _model_at(loc[:-1])
        info = model.model_fields.get(key) if model else None
        about = f" ({info.description})" if info and info.description else ""
        return f"missing required key '{key}'", f"add '{key}: ...'{about}"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        shown, raw = repr(value), src.scalar_text(path)
        if isinstance(value, bool) and raw is not None:  # `approval: yes`
            shown = f"{raw!r} (YAML reads it as {str(value).lower()})"
        hint: str | None = None
        if key == "type" and str(value).lower() in _TYPE_SYNONYMS:
            hint = f"did you mean '{_TYPE_SYNONYMS[str(value).lower()]}'?"
        elif (guess := did_you_mean(value, expected)).startswith("did you mean"):
            hint = guess  # otherwise the message already lists the choices
        return f"invalid {key} {shown}; expected one of: {', '.join(expected)}", hint
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag")
        return f"unknown stage type {tag!r}", did_you_mean(tag, STAGE_TYPES, what="stage types")
    if kind == "union_tag_not_found":
        return "a stage's 'type' must be a string", f"use one of: {', '.join(STAGE_TYPES)}"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", msg), None
    if kind == "string_pattern_mismatch":
        is_key = loc and loc[-1] == "[key]"
        what = "name" if is_key else f"value for '{key}'"
        hint = "use letters, digits and '_', starting with a letter or '_'"
        if "\\-" in str((err.get("ctx") or {}).get("pattern", "")):
            hint = "use letters, digits, '_' and '-', with at most one '.' (server.tool)"
        return f"{value!r} is not a valid {what}", hint
    if kind == "string_too_short" and value == "":
        return f"'{key}' must not be empty", _empty_value_hint(loc, key)
    if kind == "too_short" and isinstance(value, (dict, list)):
        least = int((err.get("ctx") or {}).get("min_length", 1))
        if least <= 1:
            return f"'{key}' must not be empty", "add at least one entry"
        return f"'{key}' needs at least {least} entries, got {len(value)}", \
            f"add {least - len(value)} more"
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_type":
        wanted = re.sub(r"^Input should be (a valid )?", "", msg).split(",")[0]
        wanted = re.sub(r"dictionary or instance of \w+", "mapping", wanted)
        hint = None
        raw = src.scalar_text(path)
        if kind == "string_type" and raw is not None and not isinstance(value, (dict, list)):
            hint = f"quote it if you meant the text: '{raw}'"
        elif kind == "list_type" and isinstance(value, str):
            hint = f"write a list, e.g. [{value}]"
        elif wanted == "mapping" and re.fullmatch(r"stages\[\d+\]", path):
            hint = "each stage is a mapping: '- id: <name>' with 'agent:' and 'prompt:' below it"
        elif wanted == "mapping" and ".output." in path:
            hint = f"give a type ({', '.join(OUTPUT_TYPES)}) or a mapping like {{type: int, min: 0}}"
        elif wanted == "mapping":
            hint = "write it as 'key: value' lines indented under this key"
        return f"expected {_article(wanted)}, got {_kind(value)}" + \
            (f" ({value!r})" if isinstance(value, (str, int, float)) else ""), hint
    text = re.sub(r"^Input should be", "must be", msg)
    return f"'{key}' {text}" + (f", got {value!r}" if not isinstance(value, (dict, list)) else ""), None


def _article(noun: str) -> str:
    if noun.startswith(("a ", "an ", "mapping")):
        return "a mapping" if noun == "mapping" else noun
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _pydantic_error(exc: pydantic.ValidationError, data: dict[str, Any], src: SourceMap) -> SpecError:
    problems: dict[str, Problem] = {}
    errors = exc.errors(include_url=False)
    typos = _typo_targets(errors)
    for err in errors:
        if err["type"] == "missing" and tuple(err["loc"]) in typos:
            continue  # reported as the unknown key that misspells it
        path = _yaml_path(err["loc"], data, err["type"] == "missing")
        if path in problems:
            continue  # one problem per place (union members report once each)
        message, hint = _describe(err, data, path, src)
        problems[path] = Problem(path, message, hint)
    return checks.first_error(list(problems.values()), src)


# --- the loaded spec ----------------------------------------------------------------------

def _resolve(base: Path, rel: str, *, what: str, yaml_path: str, src: SourceMap,
             must_exist: bool, allowed: tuple[Path, ...] = ()) -> Path:
    base = base.resolve()
    candidate = Path(rel).expanduser()  # as the tools open it: `~/x` is $HOME/x, not <spec>/~/x
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    line = src.line(yaml_path)
    if not resolved.is_relative_to(base) and not any(resolved.is_relative_to(a) for a in allowed):
        raise SpecError(f"{what} '{rel}' resolves to {resolved}, outside the spec's folder {base}",
                        file=src.file, path=yaml_path, line=line,
                        hint="keep files in the spec's folder or below it, or list the folder "
                             "under `allow_paths:` in the spec to allow it explicitly")
    if must_exist and not resolved.is_file():
        state = "is a directory" if resolved.is_dir() else "not found"
        raise SpecError(f"{what} {state}: {resolved}", file=src.file, path=yaml_path, line=line,
                        hint="paths are relative to the spec file's folder")
    return resolved


# Tool settings that name files or folders: checked like prompt files.
TOOL_PATH_SETTINGS = {"kb_search": ("corpus",), "sql": ("database",), "crm_upsert": ("database",),
                      "send_email": ("outbox",), "python": ("path",), "mcp": ("cwd",)}


def _allowed_roots(pipeline: Pipeline, base: Path, src: SourceMap) -> tuple[Path, ...]:
    roots = []
    for i, folder in enumerate(pipeline.allow_paths):
        p = Path(folder)
        root = (p if p.is_absolute() else base / p).resolve()
        if root == Path(root.anchor):
            raise SpecError(f"allow_paths entry '{folder}' allows the whole filesystem",
                            file=src.file, path=f"allow_paths[{i}]", line=src.line(f"allow_paths[{i}]"),
                            hint="name the specific folders the pipeline needs")
        roots.append(root)
    return tuple(roots)


def _check_tool_paths(pipeline: Pipeline, base: Path, src: SourceMap,
                      allowed: tuple[Path, ...]) -> None:
    for name, tool in pipeline.tools.items():
        extra = tool.model_extra or {}
        for key in TOOL_PATH_SETTINGS.get(tool.type, ()):
            value = extra.get(key)
            if isinstance(value, str) and value:
                _resolve(base, value, what=f"{tool.type} {key}",
                         yaml_path=join_path(join_path("tools", name), key), src=src,
                         must_exist=False, allowed=allowed)


@dataclass
class LoadedSpec:
    pipeline: Pipeline
    path: Path
    text: str
    sha256: str
    prompts: dict[str, str]
    systems: dict[str, str]
    order: list[str]
    source: SourceMap = field(repr=False)
    model_override: str | None = None
    columns_read: list = field(default_factory=list, repr=False)  # see checks.unknown_columns

    def resolve_path(self, rel: str, *, what: str, yaml_path: str,
                     must_exist: bool = False) -> Path:
        """A path from the spec, relative to its folder; refuses anything that resolves
        (after '..' and symlinks) outside that folder, absolute paths included."""
        return _resolve(self.path.parent, rel, what=what, yaml_path=yaml_path,
                        src=self.source, must_exist=must_exist,
                        allowed=_allowed_roots(self.pipeline, self.path.parent, self.source))

    def model_alias(self, stage_id: str) -> str:
        """The model alias a single-agent stage runs with: stage.model, else its agent's,
        else defaults (see `model_aliases` for stages that call several agents)."""
        aliases = self.model_aliases(stage_id)
        if not aliases:
            stage = self.pipeline.stage(stage_id)
            raise ValueError(f"stage '{stage_id}' is a {stage.type} stage and calls no model")
        return aliases[0]

    def model_aliases(self, stage_id: str) -> list[str]:
        """Every model alias a stage may call, in the order its agents are named."""
        stage = self.pipeline.stage(stage_id)
        out: list[str] = []
        for ref in stage_type(stage).agents(stage):
            agent = self.pipeline.agents[ref.name]
            alias = ref.model or agent.model or self.pipeline.defaults.model
            assert alias is not None  # checks.py guarantees one
            if alias not in out:
                out.append(alias)
        return out


def _read(path: Path, *, what: str, yaml_path: str, src: SourceMap) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {what} {path}: {exc}", file=src.file, path=yaml_path,
                        line=src.line(yaml_path)) from exc


def _file_display(src: SourceMap, rel: str) -> str:
    return str(Path(src.file).parent / rel)


def load_spec_data(data: dict[str, Any], *, path: Path, text: str = "",
                   source: SourceMap | None = None,
                   stored_prompts: dict[str, dict[str, str]] | None = None) -> LoadedSpec:
    """The dict layer: validate the models, run the cross-field checks, read prompt files.

    ``stored_prompts`` (a stored run's ``{"stages": ..., "agents": ...}``) stand in for the
    prompt and system files, so a resumed run neither reads them again nor needs them."""
    src = source or SourceMap(str(path))
    try:
        pipeline = Pipeline.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _pydantic_error(exc, data, src) from None
    order = checks.check_pipeline(pipeline, src)

    base = Path(path).parent
    allowed = _allowed_roots(pipeline, base.resolve(), src)
    _check_tool_paths(pipeline, base, src, allowed)
    kept_prompts = (stored_prompts or {}).get("stages") or {}
    kept_systems = (stored_prompts or {}).get("agents") or {}
    prompts: dict[str, str] = {}
    prompt_files: dict[str, str] = {}
    for i, stage in enumerate(pipeline.stages):
        for slot in stage_type(stage).prompt_slots(stage):
            if slot.file is not None and slot.key in kept_prompts:
                prompts[slot.key] = kept_prompts[slot.key]
                prompt_files[slot.key] = _file_display(src, slot.file)
            elif slot.file is not None:
                where = f"stages[{i}].{slot.file_path}"
                file = _resolve(base, slot.file, what=f"{slot.what} file", yaml_path=where,
                                src=src, must_exist=True, allowed=allowed)
                prompts[slot.key] = _read(file, what=f"{slot.what} file", yaml_path=where, src=src)
                prompt_files[slot.key] = _file_display(src, slot.file)
            elif slot.text is not None:
                prompts[slot.key] = slot.text
    systems: dict[str, str] = {}
    for name, agent in pipeline.agents.items():
        if agent.system_file is not None and name in kept_systems:
            systems[name] = kept_systems[name]
        elif agent.system_file is not None:
            where = join_path(join_path("agents", name), "system_file")
            file = _resolve(base, agent.system_file, what="system file", yaml_path=where,
                            src=src, must_exist=True, allowed=allowed)
            systems[name] = _read(file, what="system file", yaml_path=where, src=src)
        else:
            systems[name] = agent.system or ""
    columns_read = checks.check_templates(pipeline, prompts, prompt_files, src)

    resolved_path = Path(path).resolve()
    return LoadedSpec(pipeline=pipeline, path=resolved_path, text=text,
                      sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                      prompts=prompts, systems=systems, order=order, source=src,
                      columns_read=columns_read)


def load_spec_text(text: str, *, path: Path,
                   stored_prompts: dict[str, dict[str, str]] | None = None) -> LoadedSpec:
    """The text layer: parse YAML (with lines) and hand the dict on."""
    data, src = parse_yaml(text, str(path))
    return load_spec_data(data, path=Path(path), text=text, source=src,
                          stored_prompts=stored_prompts)


def load_spec(path: str | Path, *, model_override: str | None = None) -> LoadedSpec:
    """The file layer. ``model_override`` (CLI ``--model``) replaces every alias's model
    string after the checks, keeping its other settings but not its price."""
    file = Path(path)
    if file.is_dir():
        raise SpecError("is a directory, not a spec file", file=str(file),
                        hint="pass the pipeline's .yaml file")
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"spec file not found (looked in {file.resolve().parent})",
                        file=str(file), hint="check the path to the pipeline .yaml") from None
    except OSError as exc:
        raise SpecError(f"cannot read the spec: {exc.strerror or exc}", file=str(file)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the spec is not UTF-8 text ({exc.reason} at byte {exc.start})",
                        file=str(file), hint="save the file as UTF-8") from None
    spec = load_spec_text(text, path=file)
    if model_override is not None:
        _override_models(spec, model_override)
    return spec


def _override_models(spec: LoadedSpec, model: str) -> None:
    if not model.strip():
        raise ConfigError("--model must name a model, e.g. openai/gpt-4o-mini")
    # The alias's price was for its own model, so it no longer applies.
    spec.pipeline.models = {name: alias.model_copy(update={"model": model, "price": None})
                            for name, alias in spec.pipeline.models.items()}
    spec.model_override = model
