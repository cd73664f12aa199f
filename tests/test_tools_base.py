"""The tool contract and the registry: names, schemas, argument checks, result rendering,
settings validation and grants (MCP grants are covered in test_tools_mcp.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest

from agentctl.errors import ConfigError, SpecError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import TOOL_TYPES, Tool, ToolContext, ToolRegistry, openai_safe_name, render_result
from agentctl.tools.base import to_jsonable
from agentctl.tools.registry import tool_class

pytestmark = pytest.mark.timeout(10)


def spec(type_: str, **settings) -> ToolSpec:
    return ToolSpec(type=type_, **settings)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "a.md").write_text("# Pricing\n\nThe enterprise plan costs 99 dollars.")
    return folder


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "crm.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE contacts (email VARCHAR PRIMARY KEY, name VARCHAR)")
    return path


class Echo(Tool):
    name = "echo"
    description = "Echo"
    parameters = {"type": "object", "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
                  "required": ["text"], "additionalProperties": False}

    async def call(self, args, ctx):
        return args


# --- names and schemas ---------------------------------------------------------------------

def test_openai_names_are_model_safe_and_distinct():
    assert openai_safe_name("time.get_current_time") == "time__get_current_time"
    assert openai_safe_name("kb") == "kb"
    assert openai_safe_name("srv.tool/with spaces") == "srv__tool_with_spaces"
    long_a, long_b = openai_safe_name("s." + "a" * 80), openai_safe_name("s." + "a" * 79 + "b")
    for name in (long_a, long_b):
        assert len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name)
    assert long_a != long_b


def test_openai_schema_shape():
    schema = Echo().openai_schema()
    assert schema == {"type": "function", "function": {"name": "echo", "description": "Echo",
                                                       "parameters": Echo.parameters}}


def test_validate_args_lists_every_problem():
    with pytest.raises(ToolError) as err:
        Echo().validate_args({"n": "three", "extra": 1})
    message = err.value.message
    assert message.startswith("invalid arguments: ")
    assert "'text' is a required property" in message
    assert "n: 'three' is not of type 'integer'" in message
    assert "extra" in message
    with pytest.raises(ToolError, match="expected a JSON object"):
        Echo().validate_args(["text"])  # type: ignore[arg-type]
    assert Echo().validate_args({"text": "hi"}) == {"text": "hi"}


# --- results -------------------------------------------------------------------------------

def test_render_result_passes_small_results_through():
    assert render_result("plain") == ("plain", 5)
    text, size = render_result({"a": [1, 2], "b": "é"})
    assert json.loads(text) == {"a": [1, 2], "b": "é"} and size == len(text)


def test_render_result_truncates_and_reports_original_size():
    big = {"rows": ["x" * 100] * 200}
    full = json.dumps(big)
    text, size = render_result(big, max_chars=500)
    assert size == len(full)
    assert len(text) <= 500
    assert text.startswith(full[:300])
    assert f"of {len(full)} chars" in text


def test_to_jsonable_handles_database_values():
    import datetime as dt
    import decimal
    import uuid

    value = {"d": decimal.Decimal("1.50"), "i": decimal.Decimal("3"), "t": dt.date(2024, 1, 2),
             "u": uuid.UUID(int=1), "b": b"ab", "l": (1, 2), "f": float("nan")}
    out = to_jsonable(value)
    assert out == {"d": 1.5, "i": 3, "t": "2024-01-02", "u": str(uuid.UUID(int=1)),
                   "b": {"base64": "YWI="}, "l": [1, 2], "f": "nan"}
    json.dumps(out)


# --- settings validation -------------------------------------------------------------------

def test_every_spec_type_has_an_implementation():
    from typing import get_args

    assert set(get_args(ToolSpec.model_fields["type"].annotation)) == set(TOOL_TYPES)
    for type_ in TOOL_TYPES:
        assert hasattr(tool_class(type_), "from_spec"), type_


def test_unknown_setting_names_the_yaml_path(corpus: Path, tmp_path: Path):
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"kb": spec("kb_search", corpus=str(corpus), colour="red")},
                               spec_dir=tmp_path, spec_file="pipeline.yaml")
    assert err.value.path == "tools.kb.colour"
    assert "pipeline.yaml" in err.value.message and "allowed:" in err.value.message


def test_bad_setting_value_names_the_key(corpus: Path, tmp_path: Path):
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"kb": spec("kb_search", corpus=str(corpus), top_k=0)}, spec_dir=tmp_path)
    assert err.value.path == "tools.kb.top_k"


def test_missing_required_settings(tmp_path: Path):
    cases = {
        "kb_search": "tools.t.corpus", "sql": "tools.t.database", "crm_upsert": "tools.t.database",
        "send_email": "tools.t.outbox", "python": "tools.t.function", "http_get": "tools.t.allow_domains",
    }
    for type_, path in cases.items():
        with pytest.raises(SpecError) as err:
            ToolRegistry.from_spec({"t": spec(type_)}, spec_dir=tmp_path)
        assert err.value.path == path, type_


def test_spec_relative_paths(corpus: Path, db: Path, tmp_path: Path):
    registry = ToolRegistry.from_spec(
        {"kb": spec("kb_search", corpus="kb"), "q": spec("sql", database="crm.duckdb")}, spec_dir=tmp_path)
    assert registry.get("kb").folder == corpus.resolve()
    assert registry.get("q").database == db.resolve()
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"q": spec("sql", database="nope.duckdb")}, spec_dir=tmp_path)
    assert err.value.path == "tools.q.database" and "does not exist" in err.value.message


def test_side_effect_flags_and_overrides(corpus: Path, db: Path, tmp_path: Path):
    registry = ToolRegistry.from_spec({
        "kb": spec("kb_search", corpus=str(corpus)),
        "crm": spec("crm_upsert", database=str(db)),
        "mail": spec("send_email", outbox="out"),
        "web": spec("http_get", allow_domains=["example.com"], side_effects=True),
    }, spec_dir=tmp_path)
    flags = {t.name: (t.side_effects, t.accepts_idempotency_key) for t in registry.all()}
    assert flags == {"kb": (False, False), "crm": (True, True), "mail": (True, True), "web": (True, False)}
    with pytest.raises(SpecError) as err:
        ToolRegistry.from_spec({"mail": spec("send_email", outbox="out", side_effects=False)}, spec_dir=tmp_path)
    assert err.value.path == "tools.mail.side_effects"


def test_spec_description_overrides_the_default(corpus: Path, tmp_path: Path):
    registry = ToolRegistry.from_spec({"kb": spec("kb_search", corpus=str(corpus), description="Product docs")},
                                      spec_dir=tmp_path)
    assert registry.get("kb").description == "Product docs"


# --- grants --------------------------------------------------------------------------------

def test_granted_and_lookup(corpus: Path, db: Path, tmp_path: Path):
    registry = ToolRegistry.from_spec({
        "kb": spec("kb_search", corpus=str(corpus)),
        "crm": spec("crm_upsert", database=str(db)),
    }, spec_dir=tmp_path)

    async def main():
        async with registry:
            assert [t.name for t in registry.granted(["crm", "kb", "crm"])] == ["crm", "kb"]
            assert registry.granted([]) == []
            with pytest.raises(ConfigError, match="unknown tool 'web'"):
                registry.granted(["web"])
            assert registry.get("kb") is registry.get("kb") is not None
            assert registry.get("nope") is None
            assert {t.name for t in registry.all()} == {"kb", "crm"}

    asyncio.run(main())


def test_start_failure_is_a_config_error(db: Path, tmp_path: Path):
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE nokey (email VARCHAR, name VARCHAR)")
    registry = ToolRegistry.from_spec({"crm": spec("crm_upsert", database=str(db), table="nokey")},
                                      spec_dir=tmp_path)
    with pytest.raises(ConfigError, match="PRIMARY KEY or UNIQUE"):
        asyncio.run(registry.start())


def test_tool_context_defaults():
    ctx = ToolContext(run_id="r", item_key="i", stage_id="s", agent="a")
    assert ctx.idempotency_key is None


def test_settings_reference_covers_every_tool_type():
    from agentctl.tools.reference import SETTINGS_MODELS, settings_markdown, settings_rows

    assert set(SETTINGS_MODELS) == set(TOOL_TYPES)
    assert {r["setting"] for r in settings_rows("send_email")} >= {"outbox", "from", "smtp.host", "smtp.password_env"}
    assert next(r for r in settings_rows("sql") if r["setting"] == "database")["default"] == "(required)"
    text = settings_markdown()
    for type_ in TOOL_TYPES:
        assert f"### `{type_}`" in text
    assert all(line.count("|") == 5 for line in text.splitlines() if line.startswith("| `"))


# --- the built-in spawn tool of orchestrate stages ------------------------------------------

def orchestrate_spec(tmp_path: Path, *, tools: dict, lead_tools: list[str], sub_tools: list[str],
                     max_depth: int = 1) -> Path:
    from tests.helpers import write_spec

    (tmp_path / "pylib").mkdir(exist_ok=True)
    (tmp_path / "pylib" / "mytools.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    return write_spec(tmp_path, "http://127.0.0.1:9/v1", stages=[
        {"id": "o", "type": "orchestrate", "lead": "lead", "agents": ["sub"], "max_depth": max_depth,
         "prompt": "Research {{ account.name }}", "output": {"x": "str"}}], extra={
        "tools": tools,
        "agents": {"lead": {"system": "lead", "tools": lead_tools},
                   "sub": {"system": "sub", "tools": sub_tools}}})


SPAWN_TOOL = {"spawn": {"type": "python", "function": "mytools:add", "path": "pylib"}}


@pytest.mark.parametrize("lead_tools, sub_tools, max_depth, agent", [
    (["spawn"], [], 1, "lead"),
    ([], ["spawn"], 2, "sub"),  # depth 2: sub-agents get the built-in spawn too
])
def test_a_tool_named_spawn_on_a_spawning_agent_is_a_spec_error(tmp_path: Path, lead_tools, sub_tools,
                                                                 max_depth, agent):
    from tests.helpers import run_inproc

    path = orchestrate_spec(tmp_path, tools=SPAWN_TOOL, lead_tools=lead_tools, sub_tools=sub_tools,
                            max_depth=max_depth)
    res = run_inproc("validate", str(path))
    assert res.exit_code == 2, res.stdout
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"at agents.{agent}.tools[0]: tool 'spawn' is reserved in orchestrate stages" in err
    assert "rename the tool" in err


def test_spawn_as_a_tool_name_is_fine_where_nothing_else_is_called_spawn(tmp_path: Path):
    from tests.helpers import run_inproc

    # a depth-1 sub-agent gets no built-in spawn; an MCP server named spawn offers spawn__<tool>
    for tools, lead_tools, sub_tools in (
            (SPAWN_TOOL, [], ["spawn"]),
            ({"spawn": {"type": "mcp", "command": ["python", "server.py"]}}, ["spawn"], [])):
        path = orchestrate_spec(tmp_path, tools=tools, lead_tools=lead_tools, sub_tools=sub_tools)
        res = run_inproc("validate", str(path))
        assert res.exit_code == 0, res.stderr
