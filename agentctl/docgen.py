"""Reference text generated from the code, for README.md and docs/reference.md (via cog).

`make docs` rewrites the generated blocks; `tests/test_docs.py` fails when they drift.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel


def cli_help(*command: str) -> str:
    """`agentctl [command] --help` exactly as a user sees it (80 columns, no colour)."""
    import os

    from typer.testing import CliRunner

    from agentctl.cli import app

    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = CliRunner().invoke(app, [*command, "--help"], prog_name="agentctl", env=env)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return "\n".join(line.rstrip() for line in result.output.strip().splitlines())


def command_names() -> list[str]:
    """Every `agentctl` command, in the order `--help` lists them."""
    from agentctl.cli import app

    return [c.name or c.callback.__name__ for c in app.registered_commands]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" (optional)" if type(None) in args else "")
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} → {_type_name(args[1])}" if args else "map"
    if isinstance(tp, type):
        if issubclass(tp, BaseModel):
            return f"`{tp.__name__}`"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def model_table(model: type[BaseModel]) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else (
            "" if field.default_factory is not None else repr(field.default))
        if field.default_factory is not None:
            default = "empty"
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {default} | {desc} |")
    return "\n".join(rows)


def spec_reference() -> str:
    from agentctl.spec import models as m

    sections = [
        ("Pipeline (top level)", m.Pipeline,
         "The whole file. Unknown keys are errors everywhere."),
        ("input", m.InputSpec, "Which column identifies an account and which must exist."),
        ("models.<alias>", m.ModelAlias,
         "A model alias. `fast: openai/gpt-4o-mini` is shorthand for `fast: {model: ...}`."),
        ("models.<alias>.price", m.Price, "Overrides litellm's price map for this alias."),
        ("defaults", m.Defaults, "Defaults for every agent stage."),
        ("limits.<alias or provider>", m.Limit,
         "Shared rate limits, keyed by a model alias or a provider (the part of the model string "
         "before `/`). A call goes through both its alias's and its provider's limits when both "
         "are set: an alias entry narrows its provider's limit. Without either, the alias's "
         "lane adapts to 429s by itself."),
        ("budget", m.Budget, "Spending limits; `--max-cost` on the CLI also applies."),
        ("tools.<name>", m.ToolSpec,
         "A tool declared once and granted to agents by name; other keys are the tool's settings."),
        ("agents.<name>", m.Agent, "A specialist: system prompt, model, granted tools."),
    ]
    from agentctl.stages import REGISTRY

    for kind, stage_type in REGISTRY.items():  # one section per stage type, from the registry
        title = f"stages[] with type: {kind}" + (" (default)" if kind == "agent" else "")
        sections.append((title, stage_type.model, stage_type.summary))
        for name, field in stage_type.model.model_fields.items():
            for nested in _nested_models(field.annotation):
                sections.append((f"stages[].{name} (type: {kind})", nested,
                                  field.description or ""))
    sections.append(("stages[].output.<field>", m.OutputField,
                     "Output schema fields (also `panelist_output`, `subagent_output`). "
                     "`summary: str` is shorthand for `summary: {type: str}`."))
    out = []
    for title, model, blurb in sections:
        out.append(f"### {title}\n\n{blurb}\n\n{model_table(model)}\n")
    return "\n".join(out).rstrip()


def _nested_models(tp: Any) -> list[type[BaseModel]]:
    """Spec models nested in a stage field (a route's `cases`, a panel's `panelists`)."""
    from agentctl.spec.base import OutputField

    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [] if tp is OutputField else [tp]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(tp):
        found += [a for a in _nested_models(arg) if a not in found]
    return found


def runlog_schema() -> str:
    """Each table of the run log with its columns and comments, from the migrations."""
    from agentctl.runlog.schema import MIGRATIONS

    tables: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    order: list[str] = []
    for number, name, sql in MIGRATIONS:
        for create in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n\);", sql, re.S):
            table = create.group(1)
            order.append(table)
            tables[table] = [line.rstrip() for line in create.group(2).strip("\n").splitlines()]
        for alter in re.finditer(r"ALTER TABLE (\w+) ADD COLUMN (.*?);(.*)", sql):
            tables[alter.group(1)].append(
                f"    {alter.group(2)}{alter.group(3).rstrip()}  -- (migration {number})")
        for rebuilt in re.finditer(r"CREATE TABLE (\w+)_v\d+ AS SELECT \* FROM (\w+);", sql):
            table = rebuilt.group(2)  # copied without its primary key
            tables[table] = [line.replace(" PRIMARY KEY", "").replace(" NOT NULL", "")
                             for line in tables[table]]
            notes[table] = f"append-only, no primary key (migration {number})"
        for logged in re.finditer(r"CREATE TABLE (\w+) AS SELECT \*, 0::BIGINT AS version FROM (\w+);", sql):
            log, table = logged.group(1), logged.group(2)
            tables[table] = [line.replace(" NOT NULL", "") for line in tables[table]
                             if not line.strip().startswith("PRIMARY KEY")]
            tables[table][-1] = tables[table][-1].rstrip().rstrip(",") if not \
                tables[table][-1].strip().startswith("--") else tables[table][-1]
            notes[table] = (f"a view over the append-only table `{log}` (the same columns plus "
                            f"`version BIGINT`), showing the newest version of each row "
                            f"(migration {number})")
    out = []
    for table in order:
        note = f"\n\n{notes[table][0].upper()}{notes[table][1:]}." if table in notes else ""
        out.append(f"#### `{table}`{note}\n\n```sql\n" + "\n".join(tables[table]) + "\n```\n")
    versions = ", ".join(f"{n}: {name}" for n, name, _ in MIGRATIONS)
    out.append(f"Migrations (table `agentctl_migrations`): {versions}.")
    return "\n".join(out)
