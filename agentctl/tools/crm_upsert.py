"""``crm_upsert``: insert or update one record, by key, in a DuckDB table (a side effect).

At start the table's columns are read and offered to the model as the properties of
``record`` (the key column required). With an idempotency key the write is recorded in an
``agentctl_actions`` table of the same database, in the same transaction as the upsert, so
a retried or resumed call with the same key is applied once and then answered from that
table. Writes to one database are serialised within the process (DuckDB allows one writing
process per file; other processes are waited out, see ``duck.connect``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from pydantic import Field

from agentctl.errors import ConfigError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import duck
from agentctl.tools.base import Tool, ToolContext, to_jsonable
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, resolve_path, spec_error

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
ACTIONS_TABLE = "agentctl_actions"

_WRITE_LOCKS: dict[Path, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB type name
    nullable: bool
    has_default: bool
    choices: tuple[str, ...] = ()  # from a CHECK (col IN (...)) constraint


class CrmUpsertSettings(ToolSettings):
    database: str = Field(min_length=1, description="DuckDB file (spec-relative)")
    table: str = Field(default="contacts", pattern=IDENT, description="table in the main schema")
    key: str = Field(default="email", pattern=IDENT, description="column with a PRIMARY KEY or UNIQUE constraint")
    lock_timeout: float = Field(default=10, ge=0, description="seconds to wait while another process holds the file")


class CrmUpsertTool(Tool):
    kind = "crm_upsert"
    side_effects = True
    accepts_idempotency_key = True

    def __init__(self, name: str, database: Path, settings: CrmUpsertSettings, *, description: str | None = None):
        self.name = name
        self.database = database
        self.settings = settings
        self.table, self.key = settings.table, settings.key
        self.columns: dict[str, Column] = {}  # filled by start()
        self._given_description = description
        self.description = description or self._default_description()
        self.parameters = self._schema({})

    def _default_description(self) -> str:
        needed = [c.name for c in self.columns.values()
                  if not c.nullable and not c.has_default and c.name != self.key]
        return (f"Create or update one record in the '{self.table}' table, matched on '{self.key}'. "
                "Fields you leave out keep their current values."
                + (f" New records also need: {', '.join(needed)}." if needed else "")
                + " Returns {upserted, created}.")

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "CrmUpsertTool":
        settings = parse_settings(CrmUpsertSettings, name, spec, spec_file=spec_file)
        database = resolve_path(spec_dir, settings.database)
        if not database.is_file():
            raise spec_error(name, "database", f"file {str(database)!r} does not exist", spec_file=spec_file)
        check_side_effects(name, spec, True, fixed=True, spec_file=spec_file)
        return cls(name, database, settings, description=spec.description)

    async def start(self) -> None:
        try:
            self.columns = await asyncio.to_thread(self._describe)
        except ToolError as exc:
            raise ConfigError(f"tool {self.name!r}: {exc.message}") from exc
        self.parameters = self._schema(self.columns)
        self.description = self._given_description or self._default_description()

    def _describe(self) -> dict[str, Column]:
        with _write_lock(self.database):
            conn = duck.connect(self.database, read_only=False, lock_timeout=self.settings.lock_timeout)
            try:
                rows = conn.execute(
                    "SELECT column_name, data_type, is_nullable = 'YES', column_default IS NOT NULL "
                    "FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main' "
                    "ORDER BY ordinal_position", [self.table]).fetchall()
                checks = conn.execute(
                    "SELECT constraint_column_names, expression FROM duckdb_constraints() WHERE table_name = ? "
                    "AND schema_name = 'main' AND constraint_type = 'CHECK'", [self.table]).fetchall()
                unique_sets = [c[0] for c in conn.execute(
                    "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                    "AND schema_name = 'main' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
                    [self.table]).fetchall()]
            finally:
                conn.close()
        choices = {cols[0]: _in_list(expr) for cols, expr in checks if len(cols) == 1 and expr}
        columns = {name: Column(name, dtype, bool(nullable), bool(has_default), choices.get(name) or ())
                   for name, dtype, nullable, has_default in rows}
        if not columns:
            raise ToolError(f"table {self.table!r} does not exist in {self.database}")
        if self.key not in columns:
            raise ToolError(f"table {self.table!r} has no column {self.key!r} (columns: {', '.join(columns)})")
        if [self.key] not in unique_sets:
            raise ToolError(f"column {self.table}.{self.key} needs a PRIMARY KEY or UNIQUE constraint "
                            "for upserts")
        return {c: col for c, col in columns.items() if not c.startswith("_agentctl")}

    def _schema(self, columns: dict[str, Column]) -> dict:
        record: dict[str, Any] = {"type": "object", "required": [self.key],
                                  "properties": {self.key: {"not": {"type": "null"}}}}
        if columns:
            record["properties"] = {c: _json_type(col, is_key=c == self.key) for c, col in columns.items()}
            record["additionalProperties"] = False
        return {
            "type": "object",
            "properties": {"record": {**record, "description": f"the {self.table} record; '{self.key}' identifies it"}},
            "required": ["record"],
            "additionalProperties": False,
        }

    async def call(self, args: dict, ctx: ToolContext) -> dict:
        record = dict(args["record"])
        if record.get(self.key) in (None, ""):
            raise ToolError(f"record needs a value for {self.key!r}")
        unknown = [c for c in record if self.columns and c not in self.columns]
        if unknown:
            raise ToolError(f"unknown column(s) {', '.join(unknown)}; the table has {', '.join(self.columns)}")
        return await asyncio.to_thread(self._upsert, record, ctx.idempotency_key)

    def _upsert(self, record: dict, idempotency_key: str | None) -> dict:
        with _write_lock(self.database):
            conn = duck.connect(self.database, read_only=False, lock_timeout=self.settings.lock_timeout)
            try:
                conn.execute("BEGIN TRANSACTION")
                try:
                    result = self._apply(conn, record, idempotency_key)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except duckdb.Error as exc:
                raise ToolError(f"upsert into {self.table} failed: {' '.join(str(exc).split())[:400]}") from exc
            finally:
                conn.close()
        return result

    def _apply(self, conn: duckdb.DuckDBPyConnection, record: dict, idempotency_key: str | None) -> dict:
        if idempotency_key is not None:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {ACTIONS_TABLE} (idempotency_key VARCHAR PRIMARY KEY, "
                         "tool VARCHAR, applied_at TIMESTAMP DEFAULT current_timestamp, result JSON)")
            done = conn.execute(f"SELECT result FROM {ACTIONS_TABLE} WHERE idempotency_key = ?",
                                [idempotency_key]).fetchone()
            if done is not None:
                return {**json.loads(done[0]), "already_applied": True}
        table, key = _quote(self.table), _quote(self.key)
        existed = conn.execute(f"SELECT count(*) FROM {table} WHERE {key} = ?", [record[self.key]]).fetchone()[0]
        columns = list(record)
        updates = [c for c in columns if c != self.key]
        conflict = ("DO UPDATE SET " + ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in updates)
                    if updates else "DO NOTHING")
        conn.execute(
            f"INSERT INTO {table} ({', '.join(map(_quote, columns))}) "
            f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT ({key}) {conflict}",
            [record[c] for c in columns],
        )
        result = {"upserted": to_jsonable(record[self.key]), "created": not existed}
        if idempotency_key is not None:
            conn.execute(f"INSERT INTO {ACTIONS_TABLE} (idempotency_key, tool, result) VALUES (?, ?, ?)",
                         [idempotency_key, self.name, json.dumps(result)])
        return result


def _write_lock(database: Path) -> threading.Lock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(database.resolve(), threading.Lock())


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_INTEGER = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "UHUGEINT"}


def _in_list(expression: str) -> tuple[str, ...]:
    """The allowed values of a ``(col IN ('a', 'b'))`` CHECK expression, else ()."""
    match = re.fullmatch(r"\(*\s*\"?\w+\"?\s+IN\s*\((.*)\)\s*\)*", expression.strip(), re.IGNORECASE | re.DOTALL)
    if not match:
        return ()
    values = re.findall(r"'((?:[^']|'')*)'", match.group(1))
    return tuple(v.replace("''", "'") for v in values)


def _json_type(column: Column, *, is_key: bool) -> dict:
    t = column.type.upper()
    schema: dict[str, Any]
    if t.endswith("]"):
        schema = {"type": "array"}
    elif t in _INTEGER:
        schema = {"type": "integer"}
    elif t in ("DOUBLE", "FLOAT", "REAL") or t.startswith("DECIMAL"):
        schema = {"type": "number"}
    elif t == "BOOLEAN":
        schema = {"type": "boolean"}
    elif t == "DATE":
        schema = {"type": "string", "format": "date"}
    elif t.startswith("TIMESTAMP"):
        schema = {"type": "string", "format": "date-time"}
    elif t in ("VARCHAR", "UUID", "TIME") or t.startswith(("VARCHAR", "ENUM")):
        schema = {"type": "string"}
    else:  # STRUCT, MAP, JSON, BLOB...: let DuckDB convert
        return {"description": column.type}
    if column.choices and schema["type"] == "string":
        schema["enum"] = list(column.choices)
    if column.nullable and not is_key:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    return schema
