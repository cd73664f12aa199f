"""``sql``: read-only SQL over a DuckDB database file.

Three independent guards: the statement must be a single SELECT-like statement (checked
with DuckDB's own parser, ``duckdb.extract_statements``, and its first keyword); functions
that read files are refused by name; and the connection is opened ``read_only`` with
``enable_external_access = false`` and ``lock_configuration = true``, so even a query that
slips past the first two cannot write, attach, load extensions or touch the file system.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Callable

import duckdb
from pydantic import Field

from agentctl.errors import ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import duck
from agentctl.tools.base import Tool, ToolContext, to_jsonable
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, resolve_path, spec_error

ALLOWED_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
ALLOWED_FIRST_WORDS = {"select", "with", "describe", "show", "explain", "from", "summarize", "values"}
# Table and scalar functions that read files, URLs or other databases, or run SQL from a string.
FILE_FUNCTIONS = re.compile(
    r"\b(read_\w+|\w+_scan|glob|sniff_csv|parquet_\w+|st_read\w*|\w+_attach|query|query_table"
    r"|load_aws_credentials|from_json_file)\s*\(",
    re.IGNORECASE,
)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
CUT_MARK = "…[cut]"
MIN_VALUE_CHARS = 100  # values are cut this far before whole rows are dropped


class SqlSettings(ToolSettings):
    database: str = Field(min_length=1, description="DuckDB file (spec-relative)")
    max_rows: int = Field(default=50, ge=1, le=10_000, description="rows returned at most (truncated: true)")
    max_chars: int = Field(default=7_000, ge=200, le=1_000_000,
                           description=("rows are dropped from the end, and long values cut, until "
                                        "the JSON result fits"))
    timeout: float = Field(default=30, gt=0, description="seconds before the query is interrupted")
    lock_timeout: float = Field(default=5, ge=0, description="seconds to wait while another writer holds the file")


class SqlTool(Tool):
    kind = "sql"

    def __init__(self, name: str, database: Path, settings: SqlSettings, *,
                 description: str | None = None, side_effects: bool = False):
        self.name = name
        self.database = database
        self.settings = settings
        self.side_effects = side_effects
        self.description = description or (
            f"Run one read-only SQL query (DuckDB dialect: SELECT, WITH, DESCRIBE, SHOW, EXPLAIN) "
            f"against the '{database.stem}' database. Returns at most {settings.max_rows} rows as "
            "{columns, rows, row_count, truncated}; a result too large to show whole says so in "
            "'note'. Use SHOW TABLES and DESCRIBE <table> to explore.")
        self.parameters = {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1, "description": "one SQL statement"}},
            "required": ["query"],
            "additionalProperties": False,
        }

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "SqlTool":
        settings = parse_settings(SqlSettings, name, spec, spec_file=spec_file)
        database = resolve_path(spec_dir, settings.database)
        if not database.is_file():
            raise spec_error(name, "database", f"file {str(database)!r} does not exist", spec_file=spec_file)
        side_effects = check_side_effects(name, spec, False, spec_file=spec_file)
        return cls(name, database, settings, description=spec.description, side_effects=side_effects)

    _tables: dict[str, list[str]] | None = None

    async def start(self) -> None:
        # The table -> columns map lets --mock runs ask account-specific questions.
        def read() -> dict[str, list[str]]:
            conn = duck.connect(self.database, read_only=True, config=duck.READ_ONLY_CONFIG,
                                lock_timeout=self.settings.lock_timeout)
            try:
                rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                                    "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
                                    ).fetchall()
            finally:
                conn.close()
            tables: dict[str, list[str]] = {}
            for table, column in rows:
                tables.setdefault(table, []).append(column)
            return tables

        try:
            self._tables = await asyncio.to_thread(read)
        except Exception:  # the real calls report database problems; the mock just falls back
            self._tables = {}

    def mock_args(self, account: dict) -> dict:
        """Arguments for ``--mock`` runs: the rows of the first table that has a column named
        like one of the account's fields (e.g. contacts.account_id), else SHOW TABLES."""
        for table, columns in (self._tables or {}).items():
            for column in columns:
                value = account.get(column)
                if value not in (None, "") and column.endswith(("_id", "id", "domain", "name")):
                    text = str(value).replace("'", "''")
                    return {"query": f'SELECT * FROM "{table}" WHERE "{column}" = \'{text}\' LIMIT 5'}
        return {"query": "SHOW TABLES"}

    async def call(self, args: dict, ctx: ToolContext) -> dict:
        query = check_read_only(args["query"])
        running: dict[str, duckdb.DuckDBPyConnection] = {}
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run, query, running), self.settings.timeout)
        except TimeoutError:
            conn = running.get("conn")
            if conn is not None:
                conn.interrupt()
            raise ToolError(f"query timed out after {self.settings.timeout:g}s") from None

    def _run(self, query: str, running: dict[str, Any]) -> dict:
        conn = duck.connect(self.database, read_only=True, config=duck.READ_ONLY_CONFIG,
                            lock_timeout=self.settings.lock_timeout)
        running["conn"] = conn
        try:
            cursor = conn.execute(query)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(self.settings.max_rows + 1) if columns else []
        except duckdb.Error as exc:
            raise ToolError(f"SQL error: {_message(exc)}") from exc
        finally:
            conn.close()
        truncated = len(rows) > self.settings.max_rows
        rows = [to_jsonable(list(r)) for r in rows[: self.settings.max_rows]]
        return _fit({"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated},
                    self.settings.max_chars)


def check_read_only(query: str) -> str:
    """Return the statement if it is one read-only query, else raise ToolError saying why."""
    text = query.strip().rstrip(";").strip()
    bare = _COMMENTS.sub(" ", text).strip().lstrip("(").strip()
    if not bare:
        raise ToolError("empty query")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise ToolError(f"SQL syntax error: {_message(exc)}") from exc
    if len(statements) != 1:
        raise ToolError(f"send exactly one SQL statement (got {len(statements)})")
    first_word = re.split(r"\W", bare, maxsplit=1)[0].lower()
    kind = statements[0].type
    if kind not in ALLOWED_TYPES or first_word not in ALLOWED_FIRST_WORDS:
        shown = kind.name if kind not in ALLOWED_TYPES else first_word.upper()
        raise ToolError(f"only read-only queries are allowed (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN); "
                        f"refused a {shown} statement")
    found = FILE_FUNCTIONS.search(_COMMENTS.sub(" ", text))
    if found:
        raise ToolError(f"function {found.group(1)}() is not allowed: this tool reads only the "
                        "tables in its database")
    return text


def _fit(result: dict, max_chars: int) -> dict:
    """Make the JSON result fit in ``max_chars``; ``note`` says what was left out.

    Long values are cut first (to no less than ``MIN_VALUE_CHARS``), then rows are dropped from
    the end; when not even one row fits, its values are cut further. Only a row with too many
    columns to show at all gives no rows: then ``row_count`` is the number found (otherwise it
    is the number shown), so rows that exist never look like none.
    """
    rows = result["rows"]
    if not rows or _size(result) <= max_chars:
        return result

    def fits(n: int, cap: int) -> bool:
        return _size(_cut_result(result, rows[:n], cap)) <= max_chars

    widest = max(len(_json(v)) for row in rows for v in row)
    cap = _largest(widest, lambda c: fits(len(rows), c))
    if cap >= MIN_VALUE_CHARS:
        return _cut_result(result, rows, cap)
    cap = MIN_VALUE_CHARS
    shown = _largest(len(rows), lambda n: fits(n, cap))
    if shown == 0:
        cap = _largest(MIN_VALUE_CHARS, lambda c: fits(1, c))
        if not fits(1, cap):
            return dict(result, rows=[], row_count=len(rows), truncated=True, note=(
                f"{len(rows)} row(s) found, but not even one fits in {max_chars} characters "
                "with its values cut; select fewer columns"))
        shown = 1
    return _cut_result(result, rows[:shown], cap)


def _cut_result(result: dict, rows: list[list], cap: int) -> dict:
    """``rows`` with values longer than ``cap`` characters cut, and a note on what is missing."""
    cut = [[_cut_value(v, cap) for v in row] for row in rows]
    found = len(result["rows"])
    notes = []
    if len(rows) < found:
        of = f"the first {found}" if result["truncated"] else str(found)  # max_rows cut already
        notes.append(f"{len(rows)} of {of} rows shown")
    if cut != rows:
        notes.append(f"values over {cap} chars cut, marked {CUT_MARK}")
    return dict(result, rows=cut, row_count=len(cut), truncated=True, note="; ".join(notes))


def _cut_value(value: Any, cap: int) -> Any:
    text = value if isinstance(value, str) else _json(value)
    if len(text) <= cap:
        return value
    return text[:cap] + CUT_MARK


def _largest(high: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 0..high with ``fits(n)`` (fits is monotone), or 0."""
    lo, hi = 0, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _size(result: dict) -> int:
    return len(_json(result))


def _message(exc: Exception) -> str:
    """DuckDB's message without the caret diagram (keeps hints like 'Did you mean "t"?')."""
    text = str(exc).split("\nLINE ", 1)[0]
    return " ".join(text.split())[:500] or type(exc).__name__
