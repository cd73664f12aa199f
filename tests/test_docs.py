"""The generated parts of README.md and docs/reference.md match the code (`make docs`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_docs_match_the_code():
    res = subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md", "docs/reference.md"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"docs drifted from the code; run `make docs`\n{res.stdout}{res.stderr}"


def test_reference_covers_every_command_and_table():
    from agentctl.cli import app
    from agentctl.runlog.schema import MIGRATIONS

    text = (ROOT / "docs" / "reference.md").read_text()
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"### agentctl {name}" in text, f"docs/reference.md lacks `agentctl {name}`"
    for table in ("runs", "items", "cells", "llm_calls", "tool_calls", "actions"):
        assert f"#### `{table}`" in text
    assert f"{len(MIGRATIONS)}: " in text


def test_readme_fresh_clone_commands_exist_in_the_makefile():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
