"""python tools: JSON schema from the signature, sync and async calls, errors, and importing."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import threading
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from agentctl.errors import SpecError, ToolError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext
from agentctl.tools.python_function import PythonTool

pytestmark = pytest.mark.timeout(10)

CTX = ToolContext(run_id="r", item_key="acme", stage_id="enrich", agent="a", idempotency_key="act-9")


class Address(BaseModel):
    city: str
    country: str = "PT"


def score_account(domain: str, employees: int, tags: list[str], region: str | None = None,
                  address: Address | None = None,
                  tier: Literal["smb", "enterprise"] = "smb",
                  weight: Annotated[float, Field(ge=0, le=1, description="how much size counts")] = 0.5) -> dict:
    """Score an account from its size and tags."""
    return {"domain": domain, "score": employees * weight + len(tags), "region": region,
            "city": address.city if address else None, "address_type": type(address).__name__,
            "tier": tier, "thread": threading.current_thread().name}


async def fetch_domains(limit: int = 2) -> list[str]:
    """List known domains."""
    await asyncio.sleep(0)
    return ["acme.com", "globex.io", "initech.com"][:limit]


def broken(x: int) -> int:
    raise ValueError(f"cannot handle {x}")


def refuse(x: int) -> int:
    raise ToolError("refused on purpose")


def needs_context(note: str, ctx: ToolContext) -> str:
    return f"{note} for {ctx.item_key} with key {ctx.idempotency_key}"


def returns_model() -> Address:
    return Address(city="Porto")


def run(tool: PythonTool, args: dict) -> object:
    return asyncio.run(tool.call(tool.validate_args(args), CTX))


def test_schema_from_signature():
    tool = PythonTool("score", score_account)
    assert tool.description == "Score an account from its size and tags."
    schema = tool.parameters
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["domain", "employees", "tags"]
    props = schema["properties"]
    assert props["domain"]["type"] == "string"
    assert props["employees"]["type"] == "integer"
    assert props["tags"] == {"items": {"type": "string"}, "title": "Tags", "type": "array"}
    assert {"type": "null"} in props["region"]["anyOf"] and props["region"]["default"] is None
    assert props["tier"]["enum"] == ["smb", "enterprise"] and props["tier"]["default"] == "smb"
    assert props["weight"]["maximum"] == 1 and props["weight"]["description"] == "how much size counts"
    # nested models are inlined: no $ref/$defs for providers that reject them
    address = next(s for s in props["address"]["anyOf"] if s.get("type") == "object")
    assert address["properties"]["city"]["type"] == "string" and address["required"] == ["city"]
    assert "$defs" not in schema and "$ref" not in str(schema)
    assert tool.openai_schema()["function"]["name"] == "score"


def test_sync_function_runs_in_a_worker_thread_with_validated_args():
    tool = PythonTool("score", score_account)
    result = run(tool, {"domain": "acme.com", "employees": 10, "tags": ["a", "b"],
                        "address": {"city": "Lisbon"}, "weight": 1})
    assert result["score"] == 12 and result["city"] == "Lisbon" and result["address_type"] == "Address"
    assert result["thread"] != threading.main_thread().name


def test_async_function_is_awaited():
    tool = PythonTool("domains", fetch_domains)
    assert tool.description == "List known domains."
    assert run(tool, {}) == ["acme.com", "globex.io"]
    assert run(tool, {"limit": 3})[-1] == "initech.com"


def test_validate_args_rejects_bad_arguments():
    tool = PythonTool("score", score_account)
    with pytest.raises(ToolError, match="invalid arguments") as err:
        tool.validate_args({"domain": 3, "employees": "many", "tier": "huge", "extra": 1})
    message = err.value.message
    for expected in ("tags", "employees", "tier", "extra"):
        assert expected in message
    with pytest.raises(ToolError, match="weight"):
        tool.validate_args({"domain": "a", "employees": 1, "tags": [], "weight": 2})


def test_raising_function_becomes_a_tool_error():
    with pytest.raises(ToolError, match="ValueError: cannot handle 3"):
        run(PythonTool("broken", broken), {"x": 3})
    with pytest.raises(ToolError, match="^refused on purpose$"):
        run(PythonTool("refuse", refuse), {"x": 1})


def test_context_parameter_is_injected_and_hidden():
    tool = PythonTool("note", needs_context, side_effects=True)
    assert list(tool.parameters["properties"]) == ["note"]
    assert tool.accepts_idempotency_key and tool.side_effects
    assert run(tool, {"note": "hello"}) == "hello for acme with key act-9"
    assert not PythonTool("score", score_account).accepts_idempotency_key


def test_results_are_made_json_safe():
    assert run(PythonTool("model", returns_model), {}) == {"city": "Porto", "country": "PT"}


@pytest.fixture
def module_dir(tmp_path: Path):
    folder = tmp_path / "mytools"
    folder.mkdir()
    (folder / "crm_helpers.py").write_text(textwrap.dedent('''
        """Helpers the pipeline imports."""

        def normalise_domain(url: str, keep_www: bool = False) -> str:
            """Reduce a URL to its bare domain."""
            host = url.split("//")[-1].split("/")[0].lower()
            return host if keep_www else host.removeprefix("www.")

        class Formatter:
            @staticmethod
            def title(text: str) -> str:
                return text.title()

        NOT_CALLABLE = 3
    '''))
    yield tmp_path
    sys.modules.pop("crm_helpers", None)


def from_spec(spec_dir: Path, **settings) -> PythonTool:
    return PythonTool.from_spec("helper", ToolSpec(type="python", **settings), spec_dir=spec_dir)


def test_import_from_a_spec_relative_path(module_dir: Path):
    tool = from_spec(module_dir, function="crm_helpers:normalise_domain", path="mytools")
    assert tool.description == "Reduce a URL to its bare domain."
    assert tool.side_effects is False
    assert run(tool, {"url": "https://www.Acme.com/about"}) == "acme.com"
    nested = from_spec(module_dir, function="crm_helpers:Formatter.title", path="mytools",
                       side_effects=True, description="Title-case text")
    assert nested.side_effects is True and nested.description == "Title-case text"
    assert run(nested, {"text": "hello world"}) == "Hello World"


@pytest.mark.parametrize("function, message", [
    ("no_such_module_xyz:f", "ModuleNotFoundError"),
    ("crm_helpers:missing", "AttributeError"),
    ("crm_helpers:NOT_CALLABLE", "not callable"),
])
def test_import_failures_name_the_function_setting(module_dir: Path, function: str, message: str):
    with pytest.raises(SpecError, match=message) as err:
        from_spec(module_dir, function=function, path="mytools")
    assert err.value.path == "tools.helper.function"


def test_bad_function_reference_and_path(module_dir: Path):
    with pytest.raises(SpecError) as err:
        from_spec(module_dir, function="crm_helpers.normalise_domain")
    assert err.value.path == "tools.helper.function"
    with pytest.raises(SpecError) as err:
        from_spec(module_dir, function="crm_helpers:normalise_domain", path="nope")
    assert err.value.path == "tools.helper.path"


def test_same_named_modules_in_two_folders_each_run_their_own_code(tmp_path: Path):
    for folder, offset in (("pylib", 0), ("pylib2", 1000)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "mytools.py").write_text(textwrap.dedent(f'''
            def add(a: int, b: int) -> int:
                return {offset} + a + b
        '''))
    (tmp_path / "pylib2" / "mytools.py").write_text(
        (tmp_path / "pylib2" / "mytools.py").read_text() + "\ndef mul(a: int, b: int) -> int:\n    return a * b\n")
    add1 = from_spec(tmp_path, function="mytools:add", path="pylib")
    add2 = from_spec(tmp_path, function="mytools:add", path="pylib2")
    mul2 = from_spec(tmp_path, function="mytools:mul", path="pylib2")  # not in pylib's mytools
    assert run(add1, {"a": 1, "b": 2}) == 3
    assert run(add2, {"a": 1, "b": 2}) == 1003
    assert run(mul2, {"a": 3, "b": 4}) == 12
    assert from_spec(tmp_path, function="mytools:add", path="pylib").func is add1.func  # loaded once


def test_a_package_in_the_folder_keeps_its_relative_imports(tmp_path: Path):
    package = tmp_path / "lib" / "scoring"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights.py").write_text("WEIGHT = 7\n")
    (package / "core.py").write_text(textwrap.dedent('''
        from .weights import WEIGHT

        def score(n: int) -> int:
            return n * WEIGHT
    '''))
    assert run(from_spec(tmp_path, function="scoring.core:score", path="lib"), {"n": 2}) == 14


def test_a_module_not_in_the_folder_is_imported_as_usual(tmp_path: Path):
    (tmp_path / "lib").mkdir()
    tool = from_spec(tmp_path, function="colorsys:rgb_to_hls", path="lib")
    assert run(tool, {"r": 1.0, "g": 1.0, "b": 1.0}) == [0.0, 1.0, 0.0]
