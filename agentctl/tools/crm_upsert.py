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
import threading
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


class CrmUpsertSettings(ToolSettings):
    database: str = Field(min_length=1, description="DuckDB file (spec-relative)")
    table: str = Field(default="contacts", pattern=IDENT)
    key: str = Field(default="email", pattern=IDENT, description="column with a PRIMARY KEY or UNIQUE constraint")
    lock_timeout: float = Field(default=10, ge=0)


class CrmUpsertTool(Tool):
    kind = "crm_upsert"
    side_effects = True
    accepts_idempotency_key = True

    def __init__(self, name: str, database: Path, settings: CrmUpsertSettings, *, description: str | None = None):
        self.name = name
        self.database = database
        self.settings = settings
        self.table, self.key = settings.table, settings.key
        self.columns: dict[str, str] = {}  # column -> DuckDB type, filled by start()
        self.description = description or (
            f"Create or update one record in the '{self.table}' table, matched on '{self.key}'. "
            "Fields you leave out keep their current values. Returns {upserted, created}.")
        self.parameters = self._schema({})

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

    def _describe(self) -> dict[str, str]:
        with _write_lock(self.database):
            conn = duck.connect(self.database, read_only=False, lock_timeout=self.settings.lock_timeout)
            try:
                columns = dict(conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = ? AND table_schema = 'main' ORDER BY ordinal_position",
                    [self.table]).fetchall())
                unique_sets = [c[0] for c in conn.execute(
                    "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
                    "AND schema_name = 'main' AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')",
                    [self.table]).fetchall()]
            finally:
                conn.close()
        if not columns:
            raise ToolError(f"table {self.table!r} does not exist in {self.database}")
        if self.key not in columns:
            raise ToolError(f"table {self.table!r} has no column {self.key!r} (columns: {', '.join(columns)})")
        if [self.key] not in unique_sets:
            raise ToolError(f"column {self.table}.{self.key} needs a PRIMARY KEY or UNIQUE constraint "
                            "for upserts")
        return {c: t for c, t in columns.items() if not c.startswith("_agentctl")}

    def _schema(self, columns: dict[str, str]) -> dict:
        record: dict[str, Any] = {"type": "object", "required": [self.key],
                                  "properties": {self.key: {"not": {"type": "null"}}}}
        if columns:
            record["properties"] = {c: _json_type(t, nullable=c != self.key) for c, t in columns.items()}
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


def _json_type(duck_type: str, *, nullable: bool) -> dict:
    t = duck_type.upper()
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
        return {"description": duck_type}
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema
