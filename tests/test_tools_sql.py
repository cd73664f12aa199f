"""sql: read-only queries work; anything that writes, attaches or reads files is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest

from agentctl.errors import ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext
from agentctl.tools.sql import SqlTool, check_read_only

pytestmark = pytest.mark.timeout(10)

CTX = ToolContext(run_id="r", item_key="acme", stage_id="research", agent="analyst")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "crm.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name VARCHAR, arr DECIMAL(12,2), "
                     "signed DATE, tags VARCHAR[], uid UUID)")
        conn.execute("INSERT INTO accounts SELECT i, 'acct ' || i, i * 1000.5, DATE '2024-01-01' + i::INTEGER, "
                     "['a', 'b'], uuid() FROM range(1, 201) t(i)")
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    return path


def make_tool(db: Path, **settings) -> SqlTool:
    return SqlTool.from_spec("crm_db", ToolSpec(type="sql", database=str(db), **settings), spec_dir=db.parent)


def query(tool: SqlTool, sql: str) -> dict:
    return asyncio.run(tool.call(tool.validate_args({"query": sql}), CTX))


def test_select_returns_json_safe_rows(db: Path):
    result = query(make_tool(db), "SELECT id, name, arr, signed, tags, uid FROM accounts WHERE id <= 2 ORDER BY id")
    assert result["columns"] == ["id", "name", "arr", "signed", "tags", "uid"]
    assert result["row_count"] == 2 and result["truncated"] is False
    first = result["rows"][0]
    assert first[:5] == [1, "acct 1", 1000.5, "2024-01-02", ["a", "b"]]
    assert isinstance(first[5], str) and len(first[5]) == 36
    json.dumps(result)


@pytest.mark.parametrize("sql", [
    "WITH big AS (SELECT * FROM accounts WHERE arr > 100000) SELECT count(*) FROM big",
    "DESCRIBE accounts",
    "SHOW TABLES",
    "EXPLAIN SELECT * FROM accounts",
    "SUMMARIZE accounts",
    "FROM accounts LIMIT 1",
    "-- leading comment\nSELECT 1;",
])
def test_read_only_statements_are_allowed(db: Path, sql: str):
    assert query(make_tool(db), sql)["row_count"] >= 1


def test_row_limit_sets_truncated(db: Path):
    result = query(make_tool(db, max_rows=10), "SELECT id FROM accounts ORDER BY id")
    assert result["row_count"] == 10 and result["truncated"] is True
    assert result["rows"][-1] == [10]
    assert query(make_tool(db, max_rows=10), "SELECT id FROM accounts LIMIT 10")["truncated"] is False


def test_result_is_cut_to_max_chars_by_whole_rows(db: Path):
    result = query(make_tool(db, max_rows=200, max_chars=500), "SELECT id, name FROM accounts ORDER BY id")
    assert result["truncated"] is True
    assert 0 < result["row_count"] < 200 and len(result["rows"]) == result["row_count"]
    assert len(json.dumps(result)) <= 500
    assert result["note"] == f"{result['row_count']} of 200 rows shown"


@pytest.fixture
def wide_db(tmp_path: Path) -> Path:
    path = tmp_path / "notes.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER, note VARCHAR)")
        conn.execute("INSERT INTO notes VALUES (1, repeat('n', 10000)), (2, 'short')")
        conn.execute("CREATE TABLE wide AS SELECT " + ", ".join(f"{i} AS column_{i}" for i in range(100)))
    return path


def test_a_row_wider_than_max_chars_has_its_long_values_cut(wide_db: Path):
    result = query(make_tool(wide_db), "SELECT * FROM notes ORDER BY id")
    assert result["row_count"] == 2 and result["truncated"] is True
    (first_id, long_note), second = result["rows"]
    assert first_id == 1 and second == [2, "short"]
    assert long_note.startswith("nnn") and long_note.endswith("…[cut]") and len(long_note) > 6000
    assert "cut" in result["note"]
    assert len(json.dumps(result, ensure_ascii=False)) <= 7000
    # tighter still: rows are dropped, values cut further, but never down to no rows
    tight = query(make_tool(wide_db, max_chars=200), "SELECT * FROM notes ORDER BY id")
    assert tight["row_count"] == 1 and tight["rows"][0][0] == 1 and tight["rows"][0][1].endswith("…[cut]")
    assert tight["note"].startswith("1 of 2 rows shown; values over")
    assert len(json.dumps(tight, ensure_ascii=False)) <= 200


def test_rows_too_wide_to_show_at_all_still_say_they_exist(wide_db: Path):
    result = query(make_tool(wide_db, max_chars=200), "SELECT * FROM wide")
    assert result["rows"] == [] and result["row_count"] == 1 and result["truncated"] is True
    assert "1 row(s) found" in result["note"] and "select fewer columns" in result["note"]


@pytest.mark.parametrize("sql, reason", [
    ("INSERT INTO accounts (id) VALUES (999)", "INSERT"),
    ("UPDATE accounts SET name = 'x'", "UPDATE"),
    ("DELETE FROM accounts", "DELETE"),
    ("DROP TABLE accounts", "DROP"),
    ("CREATE TABLE x (a INT)", "CREATE"),
    ("ATTACH 'other.duckdb' AS other", "ATTACH"),
    ("COPY accounts TO 'out.csv'", "COPY"),
    ("INSTALL httpfs", "LOAD"),
    ("LOAD httpfs", "LOAD"),
    ("PRAGMA table_info('accounts')", "PRAGMA"),
    ("SET threads = 1", "SET"),
    ("CALL pragma_version()", "CALL"),
    ("EXPORT DATABASE 'dump'", "EXPORT"),
    ("SELECT 1; DROP TABLE accounts", "exactly one"),
    ("SELECT * FROM read_csv('secret.csv')", "read_csv"),
    ("SELECT * FROM read_csv_auto('secret.csv')", "read_csv_auto"),
    ("SELECT * FROM read_parquet('x.parquet')", "read_parquet"),
    ("SELECT * FROM read_json('x.json')", "read_json"),
    ("SELECT * FROM glob('/etc/*')", "glob"),
    ("SELECT * FROM read_text('/etc/hostname')", "read_text"),
    ("SELECT * FROM read_blob('/etc/hostname')", "read_blob"),
    ("SELECT * FROM query('SELECT 1')", "query"),
    ("WITH x AS (SELECT * FROM READ_CSV ('secret.csv')) SELECT * FROM x", "READ_CSV"),
])
def test_writes_and_file_access_are_refused(db: Path, sql: str, reason: str):
    with pytest.raises(ToolError, match=reason):
        query(make_tool(db), sql)
    with duckdb.connect(str(db), read_only=True) as conn:  # nothing changed
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (200,)


def test_connection_itself_cannot_reach_files(db: Path, monkeypatch):
    # bypass the statement checks: the read-only, no-external-access connection still refuses
    import agentctl.tools.sql as sql_module

    monkeypatch.setattr(sql_module, "check_read_only", lambda q: q)
    tool = make_tool(db)
    with pytest.raises(ToolError, match="SQL error"):
        query(tool, f"SELECT * FROM '{db.parent / 'secret.csv'}'")
    with pytest.raises(ToolError, match="SQL error"):
        query(tool, "INSERT INTO accounts (id) VALUES (999)")
    with pytest.raises(ToolError, match="SQL error"):
        query(tool, "SET enable_external_access = true")


def test_sql_errors_are_tool_errors_with_hints(db: Path):
    with pytest.raises(ToolError, match="accountz.*Did you mean"):
        query(make_tool(db), "SELECT * FROM accountz")
    with pytest.raises(ToolError, match="syntax"):
        query(make_tool(db), "SELEC 1")
    with pytest.raises(ToolError, match="empty"):
        check_read_only("  ;  ")


def test_slow_query_is_interrupted(db: Path):
    tool = make_tool(db, timeout=0.3)
    with pytest.raises(ToolError, match="timed out"):
        query(tool, "SELECT count(*) FROM range(1000000000000) a")


def test_reads_wait_for_a_writer_in_this_process(db: Path):
    tool = make_tool(db)

    async def main():
        writer = duckdb.connect(str(db))  # same file, different configuration: readers must wait
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, writer.close)
        return await tool.call({"query": "SELECT count(*) FROM accounts"}, CTX)

    assert asyncio.run(main())["rows"] == [[200]]


def test_mock_args_are_a_query_that_runs(db: Path):
    tool = make_tool(db)
    args = tool.validate_args(tool.mock_args({"name": "Acme", "domain": "acme.com"}))
    assert query(tool, args["query"])["rows"] == [["accounts"]]
