"""The spec layer: loading, one clear SpecError per mistake, output schemas, templates."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jsonschema
import pytest

from agentctl.errors import ConfigError, OutputInvalid, SpecError
from agentctl.spec import LoadedSpec, Pipeline, load_spec, load_spec_text
from agentctl.spec.loader import MAX_ALIASED_VALUES
from agentctl.spec.models import AgentStage, OutputField, SelectStage
from agentctl.spec.outputs import (
    output_json_schema, output_model, parse_output, validate_output,
)
from agentctl.spec.templates import (
    build_context, compile_prompt, eval_condition, make_env, render_prompt,
)

SPECS = Path(__file__).parent / "data" / "specs"
VALID = (SPECS / "valid.yaml").read_text()
BAD = SPECS / "bad.yaml"  # never written: load_spec_text only needs its folder for prompt files


def mutate(old: str, new: str) -> str:
    assert VALID.count(old) == 1, f"fixture changed: {old!r}"
    return VALID.replace(old, new)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def spec_error(text: str, path: Path = BAD) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, path=path)
    err = info.value
    assert err.exit_code == 2
    return err


# --- the valid spec -----------------------------------------------------------------------

def test_valid_spec_loads():
    spec = load_spec(SPECS / "valid.yaml")
    assert isinstance(spec, LoadedSpec) and isinstance(spec.pipeline, Pipeline)
    assert spec.path == (SPECS / "valid.yaml").resolve() and spec.path.is_absolute()
    assert spec.text == VALID
    assert len(spec.sha256) == 64
    assert spec.order == ["research", "score", "shortlist", "write", "validate"]
    assert spec.prompts["research"].startswith("Research {{ account.name }}")
    assert "{{ research.summary }}" in spec.prompts["score"]
    assert set(spec.prompts) == {"research", "score", "write", "validate"}
    assert spec.systems["researcher"].startswith("You research companies")
    assert spec.systems["scorer"].startswith("You score accounts")
    assert spec.model_alias("research") == "fast"      # defaults.model
    assert spec.model_alias("write") == "smart"        # agent.model
    assert spec.model_alias("validate") == "smart"     # stage.model
    shortlist = spec.pipeline.stage("shortlist")
    assert isinstance(shortlist, SelectStage) and shortlist.top == 10


def test_order_is_yaml_order_among_ready_stages():
    text = mutate("  - id: research\n", "  - id: late\n    agent: scorer\n    needs: [validate]\n"
                  "    prompt: hi\n  - id: research\n")
    spec = load_spec_text(text, path=BAD)
    assert spec.order == ["research", "score", "shortlist", "write", "validate", "late"]


def test_model_override_replaces_every_alias_model():
    spec = load_spec(SPECS / "valid.yaml", model_override="mock/echo")
    assert {m.model for m in spec.pipeline.models.values()} == {"mock/echo"}
    smart = spec.pipeline.models["smart"]
    assert smart.temperature == 0.2 and smart.max_tokens == 2000 and smart.fallbacks == ["fast"]
    assert smart.price is None  # the price belonged to the old model
    assert spec.model_override == "mock/echo"
    with pytest.raises(ConfigError):
        load_spec(SPECS / "valid.yaml", model_override=" ")


def test_resolve_path_stays_inside_the_spec_folder(tmp_path):
    spec = load_spec(SPECS / "valid.yaml")
    assert spec.resolve_path("prompts/write.md", what="file", yaml_path="x") == \
        (SPECS / "prompts" / "write.md").resolve()
    with pytest.raises(SpecError, match="outside the spec's folder"):
        spec.resolve_path("../x", what="kb folder", yaml_path="tools.kb.path")
    with pytest.raises(SpecError, match="outside the spec's folder") as info:
        spec.resolve_path(str(tmp_path), what="kb folder", yaml_path="tools.kb.path")
    assert info.value.line == line_of(VALID, "path: kb/")


def test_a_home_folder_path_is_checked_where_the_tools_open_it(tmp_path, monkeypatch):
    # `~/outbox` was checked as <spec folder>/~/outbox and passed; send_email wrote to $HOME
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = load_spec(SPECS / "valid.yaml")
    with pytest.raises(SpecError, match=f"resolves to {tmp_path}/outbox, outside the spec's folder"):
        spec.resolve_path("~/outbox", what="outbox", yaml_path="tools.email.outbox")


# --- one SpecError per mistake ------------------------------------------------------------

# (id, old, new, words in the message, YAML path, a substring of the error's line, hint words)
CASES = [
    ("api-base-not-a-url", "    max_tokens: 2000\n", '    max_tokens: 2000\n    api_base: "${LLM_BASE}"\n',
     "'${LLM_BASE}' is not an http(s) URL (${VAR} is not expanded here", "models.smart.api_base",
     "api_base:", None),
    ("unknown-key", "    prompt_file: prompts/research.md", "    promt_file: prompts/research.md",
     "unknown key 'promt_file'", "stages[0].promt_file", "promt_file", "did you mean 'prompt_file'"),
    ("unknown-root-key", "name: account-outreach", "nmae: account-outreach",
     "unknown key 'nmae'", "nmae", "nmae:", "did you mean 'name'"),
    ("unknown-key-other-stage-type", "    top: 10", "    top: 10\n    agent: writer",
     "unknown key 'agent'", "stages[2].agent", "agent: writer", "type: agent"),
    ("wrong-type-int", "    top: 10", "    top: ten",
     "expected an integer, got a string ('ten')", "stages[2].top", "top: ten", None),
    ("wrong-type-list", "    needs: [research]\n    when", "    needs: research\n    when",
     "expected a list", "stages[1].needs", "needs: research", "[research]"),
    ("wrong-type-bool-for-str", "      summary: {type: str, description: Two-sentence company summary, min_length: 10}",
     "      summary: {type: str, description: yes}",
     "expected a string, got a boolean", "stages[0].output.summary.description", "description: yes",
     "quote it"),
    ("stage-not-a-mapping", "  - id: research\n", "  - research\n  - id: research\n",
     "expected a mapping", "stages[0]", "- research", "- id: <name>"),
    ("missing-key", "  - id: research\n    agent: researcher\n", "  - id: research\n",
     "missing required key 'agent'", "stages[0].agent", "- id: research", "researcher, scorer"),
    ("unknown-stage-type", "  - id: research\n", "  - id: research\n    type: selct\n",
     "unknown stage type 'selct'", "stages[0]", "- id: research", "did you mean 'select'"),
    ("secret-in-params", "  fast: openai/gpt-4o-mini\n",
     "  fast: {model: openai/gpt-4o-mini, params: {api_key: sk-1}}\n",
     "looks like a secret", "models.fast.params", "api_key", None),
    ("bad-identifier", "  kb:\n", "  kb-search:\n",
     "'kb-search' is not a valid name", "tools.kb-search", "kb-search:", "letters, digits"),
    ("duplicate-stage-id", "  - id: validate", "  - id: score",
     "duplicate stage id 'score'", "stages[4].id", "- id: score\n    agent: reviewer", "unique"),
    ("duplicate-yaml-key", "  scorer:\n    system: You", "  scorer:\n    model: fast\n    model: smart\n    system: You",
     "duplicate key 'model' (first on line", "agents.scorer.model", "model: smart\n    system: You",
     "only the last"),
    ("needs-unknown", "needs: [shortlist, research, score]", "needs: [shortlist, reserch, score]",
     "stage 'write' needs unknown stage 'reserch'", "stages[3].needs[1]", "reserch",
     "did you mean 'research'"),
    ("needs-itself", "needs: [shortlist, research, score]", "needs: [shortlist, write, score]",
     "stage 'write' needs itself", "stages[3].needs[1]", "needs: [shortlist, write", "before it"),
    ("cycle", "  - id: research\n    agent: researcher\n",
     "  - id: research\n    agent: researcher\n    needs: [write]\n",
     "cycle: research -> write -> research", "stages[0].needs[0]", "needs: [write]",
     "remove one of these needs"),
    ("long-cycle", "  - id: research\n    agent: researcher\n",
     "  - id: research\n    agent: researcher\n    needs: [validate]\n",
     "cycle: research -> validate -> write -> research", "stages[0].needs[0]", "needs: [validate]",
     "remove one of these needs"),
    ("unknown-agent", "    agent: scorer\n", "    agent: scorrer\n",
     "unknown agent 'scorrer'", "stages[1].agent", "agent: scorrer", "did you mean 'scorer'"),
    ("unknown-alias-defaults", "  model: fast\n  concurrency", "  model: fats\n  concurrency",
     "unknown model alias 'fats'", "defaults.model", "model: fats", "did you mean 'fast'"),
    ("unknown-alias-agent", "    model: smart\n  reviewer", "    model: gpt4\n  reviewer",
     "unknown model alias 'gpt4'", "agents.writer.model", "model: gpt4", "fast, smart"),
    ("unknown-alias-stage", "    model: smart\n    prompt:", "    model: smrt\n    prompt:",
     "unknown model alias 'smrt'", "stages[4].model", "model: smrt", "did you mean 'smart'"),
    ("unknown-alias-limits", "  openai: {rpm", "  opnai: {rpm",
     "limits key 'opnai' is neither a model alias nor a provider", "limits.opnai", "opnai",
     "did you mean 'openai'"),
    ("unknown-alias-fallback", "fallbacks: [fast]", "fallbacks: [fst]",
     "unknown model alias 'fst'", "models.smart.fallbacks[0]", "fallbacks: [fst]",
     "did you mean 'fast'"),
    ("no-model", "defaults:\n  model: fast\n", "defaults:\n",
     "no model for agent 'researcher'", "agents.researcher", "  researcher:", "defaults.model"),
    ("unknown-tool", "tools: [kb, time.get_current_time]", "tools: [kbb, time.get_current_time]",
     "unknown tool 'kbb'", "agents.researcher.tools[0]", "tools: [kbb", "did you mean 'kb'"),
    ("unknown-mcp-server", "tools: [kb, time.get_current_time]", "tools: [kb, tme.get_current_time]",
     "unknown tool 'tme.get_current_time'", "agents.researcher.tools[1]", "tme.get", "did you mean 'time'"),
    ("dotted-non-mcp-tool", "tools: [kb, time.get_current_time]", "tools: [kb.search]",
     "not an MCP server", "agents.researcher.tools[0]", "kb.search", "grant it as 'kb'"),
    ("missing-prompt-file", "prompt_file: prompts/write.md", "prompt_file: prompts/nope.md",
     f"prompt file not found: {(SPECS / 'prompts' / 'nope.md').resolve()}", "stages[3].prompt_file",
     "prompts/nope.md", "relative to the spec"),
    ("missing-system-file", "system_file: prompts/writer_system.md", "system_file: prompts/gone.md",
     "system file not found", "agents.writer.system_file", "prompts/gone.md", "relative"),
    ("escaping-prompt-file", "prompt_file: prompts/write.md", "prompt_file: ../../etc/passwd",
     "outside the spec's folder", "stages[3].prompt_file", "../../etc/passwd", "allow_paths"),
    ("absolute-prompt-file", "prompt_file: prompts/write.md", "prompt_file: /etc/passwd",
     "outside the spec's folder", "stages[3].prompt_file", "/etc/passwd", "allow_paths"),
    ("output-type-string", "summary: {type: str, description", "summary: {type: string, description",
     "invalid type 'string'", "stages[0].output.summary.type", "type: string",
     "did you mean 'str'"),
    ("output-type-shorthand", "      reason: str", "      reason: integer",
     "invalid type 'integer'", "stages[1].output.reason", "reason: integer", "did you mean 'int'"),
    ("enum-without-values", "tier: {type: enum, values: [A, B, C]}", "tier: {type: enum}",
     "enum field needs 'values", "stages[1].output.tier", "tier: {type: enum}", None),
    ("enum-yaml-booleans", "values: [A, B, C]", "values: [yes, no]",
     "expected a string, got a boolean", "stages[1].output.tier.values[0]", "values: [yes",
     "quote it"),
    ("min-greater-than-max", "score: {type: int, min: 0, max: 100}", "score: {type: int, min: 80, max: 10}",
     "min (80.0) is greater than max (10.0)", "stages[1].output.score", "min: 80", None),
    ("select-by-form", "by: score.score", "by: score",
     "not of the form <stage>.<field>", "stages[2].by", "by: score", "score.score"),
    ("select-by-not-in-needs", "by: score.score", "by: research.summary",
     "does not list in needs", "stages[2].by", "by: research", "add 'research' to needs"),
    ("select-by-unknown-field", "by: score.score", "by: score.scor",
     "stage 'score' has no output field 'scor'", "stages[2].by", "by: score.scor",
     "did you mean 'score'"),
    ("when-does-not-parse", "when: \"account.industry != 'gambling'\"", "when: \"account.industry !=\"",
     "'when' does not parse", "stages[1].when", "when:", "Jinja2 syntax"),
    ("prompt-does-not-parse", "{% endfor %}\n", "{% endfro %}\n",
     "prompt does not parse", "stages[1].prompt", "{% endfro %}", "Jinja2 syntax"),
    ("prompt-unknown-filter", "Score {{ account.name }}", "Score {{ account.name | shout }}",
     "No filter named 'shout'", "stages[1].prompt", "shout", None),
    ("template-stage-not-in-needs", "{{ write.subject }}", "{{ research.summary }}",
     "prompt uses 'research' but stage 'validate' does not list it in needs", "stages[4].prompt",
     "Check this email", "add 'research' to needs"),
    ("template-required-column", "Score {{ account.name }}", "Score {{ account.nmae }}",
     "account.nmae is not a required input column", "stages[1].prompt", "account.nmae",
     "add it to input.required or fix the name (did you mean 'name'?)"),
    ("template-subscript-column", "Score {{ account.name }}", "Score {{ item['nmae'] }}",
     "item.nmae is not a required input column", "stages[1].prompt", "item['nmae']", "'name'"),
    ("template-typo-root", "Summary: {{ research.summary }}", "Summary: {{ reserch.summary }}",
     "unknown name 'reserch'", "stages[1].prompt", "Summary:", "did you mean 'research'"),
    ("template-unknown-field", "Summary: {{ research.summary }}", "Summary: {{ research.sumary }}",
     "stage 'research' has no output field 'sumary'", "stages[1].prompt", "Summary:",
     "did you mean 'summary'"),
    ("template-run-field", "Score {{ account.name }}", "Score {{ run.user }}",
     "run.user does not exist", "stages[1].prompt", "run.user", "id, pipeline"),
    ("when-unknown-field", "account.industry != 'gambling'", "research.industry != 'gambling'",
     "stage 'research' has no output field 'industry'", "stages[1].when", "when:", "summary"),
    ("where-unknown-field", "where: \"score.tier != 'C'\"", "where: \"score.tierr != 'C'\"",
     "stage 'score' has no output field 'tierr'", "stages[2].where", "where:", "did you mean 'tier'"),
    ("reserved-stage-id", "  - id: validate", "  - id: account",
     "stage id 'account' is reserved", "stages[4].id", "id: account", "rename"),
    ("version", "version: 1", "version: 2",
     "unsupported spec version 2", "version", "version: 2", "version 1"),
]


@pytest.mark.parametrize("old,new,words,path,line_text,hint", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_spec_errors(old, new, words, path, line_text, hint):
    text = mutate(old, new)
    err = spec_error(text)
    message = str(err)
    assert words in message
    assert message.startswith(f"{BAD}:")
    assert err.path == path and f" at {path}: " in message
    expected_line = text[:text.index(line_text)].count("\n") + 1
    assert err.line == expected_line and f"bad.yaml:{expected_line} " in message
    if hint:
        assert err.hint and hint in err.hint
        assert hint in err.one_line()


def test_several_errors_report_the_first_by_line_and_count_the_rest():
    text = mutate("    agent: scorer\n", "    agent: scorrer\n").replace("[kb, time", "[kbb, time")
    err = spec_error(text)
    assert err.path == "agents.researcher.tools[0]"
    assert "(+1 more error)" in str(err)
    text = mutate("    top: 10", "    top: ten").replace("min_length: 10", "min_length: many")
    err = spec_error(text.replace("name: account-outreach", "nmae: x"))
    # the missing 'name' is the same typo as 'nmae', so it is not counted again
    assert err.path == "nmae" and "(+2 more errors)" in str(err)


def test_template_line_inside_inline_block_prompt():
    text = mutate("{% for s in research.signals %}", "{{ research.oops }}{% for s in research.signals %}")
    err = spec_error(text)
    assert err.line == line_of(text, "research.oops")


def test_template_error_in_prompt_file_points_at_the_file(tmp_path):
    shutil.copytree(SPECS, tmp_path / "specs")
    prompt = tmp_path / "specs" / "prompts" / "write.md"
    prompt.write_text("Hello {{ account.name }}\nscore {{ score.scoer }}\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "specs" / "valid.yaml")
    err = info.value
    assert err.file and err.file.endswith("prompts/write.md") and err.line == 2
    assert err.path == "stages[3].prompt_file"
    assert "write.md:2 at stages[3].prompt_file: stage 'score' has no output field 'scoer'" in str(err)


def test_symlink_escaping_the_spec_folder_is_refused(tmp_path):
    shutil.copytree(SPECS, tmp_path / "specs")
    (tmp_path / "secret.txt").write_text("{{ account.name }}")
    (tmp_path / "specs" / "prompts" / "link.md").symlink_to(tmp_path / "secret.txt")
    text = mutate("prompt_file: prompts/write.md", "prompt_file: prompts/link.md")
    err = spec_error(text, path=tmp_path / "specs" / "bad.yaml")
    assert "outside the spec's folder" in str(err) and err.path == "stages[3].prompt_file"


def test_account_columns_are_unchecked_without_input_required():
    text = mutate("  required: [name, domain, industry]\n", "").replace("account.name", "account.anything")
    load_spec_text(text, path=BAD)


def test_dict_methods_and_locals_are_not_columns():
    text = mutate("Score {{ account.name }}",
                  "{% for k, v in account.items() %}{{ k }}{{ loop.index }}{% endfor %}"
                  "{% set n = namespace(x=1) %}{{ n.x }}{{ range(3) | list }}")
    load_spec_text(text, path=BAD)


# A small spec for stage types the valid fixture does not have; the stage is on line 7.
MINI = """name: mini
input: {key: id}
models: {m: openai/gpt-4o-mini}
defaults: {model: m}
agents: {a: {}, b: {}, c: {}}
stages:
  - %s
"""


@pytest.mark.parametrize("stage_id", ["none", "None", "true", "false", "True", "False"])
def test_stage_ids_jinja_reads_as_constants_are_reserved(stage_id):
    # `{{ none.x }}` is the constant None, never the stage: the stage could not be read.
    text = mutate("  - id: validate", f'  - id: "{stage_id}"')
    err = spec_error(text)
    assert f"stage id '{stage_id}' is reserved" in str(err) and "constant" in str(err)
    assert err.path == "stages[4].id" and err.line == line_of(text, f'id: "{stage_id}"')
    assert "rename the stage" in err.one_line()


@pytest.mark.parametrize("stage_id", ["item_key", "status"])
def test_stage_ids_export_writes_beside_the_outputs_are_reserved(stage_id):
    # an export line is {"item_key": ..., <stage>: output, "status": {...}}: a stage of that
    # name lost the key or its whole output
    text = mutate("  - id: validate", f"  - id: {stage_id}")
    err = spec_error(text)
    assert f"stage id '{stage_id}' is reserved: `agentctl export` writes" in str(err)
    assert err.path == "stages[4].id" and "rename the stage" in err.one_line()


@pytest.mark.parametrize("old,new,path", [
    ("score: {type: int, min: 0, max: 100}", "score: {tpye: int, min: 0, max: 100}",
     "stages[1].output.score.tpye"),
    ("    agent: scorer\n", "    agnet: scorer\n", "stages[1].agnet"),
])
def test_a_misspelt_required_key_is_one_unknown_key_error(old, new, path):
    err = spec_error(mutate(old, new))
    typo = path.rsplit(".", 1)[1]
    assert err.path == path and f"unknown key '{typo}'" in str(err)
    assert "missing required key" not in str(err) and "more error" not in str(err)
    assert "did you mean" in (err.hint or "")


def test_a_misspelt_key_in_route_cases_names_the_typo():
    stage = '{id: r, type: route, prompt: q, default: b, cases: [{when: "true", agnet: a}]}'
    err = spec_error(MINI % stage)
    assert err.path == "stages[0].cases[0].agnet" and err.line == 7
    assert str(err).endswith("unknown key 'agnet'") and err.hint == "did you mean 'agent'?"


@pytest.mark.parametrize("old,new,choices", [
    ("    top: 10", "    top: 10\n    order: descending", "desc, asc"),
    ("  key: account_id", "  key: account_id\n  format: xlsx", "auto, csv, jsonl, parquet"),
    ("    model: smart\n    prompt:", "    model: smart\n    approval: maybe\n    prompt:",
     "required, auto, dry_run"),
])
def test_choice_errors_list_the_choices_once(old, new, choices):
    err = spec_error(mutate(old, new))
    assert err.one_line().count(f"expected one of: {choices}") == 1


def test_a_yaml_boolean_for_a_choice_shows_what_was_written():
    err = spec_error(mutate("    model: smart\n    prompt:",
                            "    model: smart\n    approval: yes\n    prompt:"))
    assert "invalid approval 'yes' (YAML reads it as true); expected one of: required" in str(err)


def test_a_route_with_neither_cases_nor_router_is_told_so():
    err = spec_error(MINI % "{id: r, type: route, prompt: q}")
    assert err.path == "stages[0]" and "has neither" in str(err) and "not both" not in str(err)
    both = '{id: r, type: route, prompt: q, cases: [{when: "true", agent: a}], ' \
           'router: {agent: a, prompt: x}, choices: [b, c]}'
    assert str(spec_error(MINI % both)).endswith("not both")


@pytest.mark.parametrize("old,new,path,hint", [
    ("name: account-outreach", 'name: ""', "name", "e.g. 'name: account-research'"),
    ("  key: account_id", '  key: ""', "input.key", "unique id"),
    ("  fast: openai/gpt-4o-mini", '  fast: {model: ""}', "models.fast.model", "litellm model"),
])
def test_an_empty_string_is_not_told_to_add_entries(old, new, path, hint):
    err = spec_error(mutate(old, new))
    assert err.path == path and "must not be empty" in str(err)
    assert "entry" not in err.one_line() and hint in (err.hint or "")


@pytest.mark.parametrize("panelists,got", [("[]", 0), ("[a]", 1)])
def test_too_few_list_entries_says_how_many_are_needed(panelists, got):
    err = spec_error(MINI % f"{{id: p, type: panel, prompt: q, moderator: c, panelists: {panelists}}}")
    assert err.path == "stages[0].panelists"
    assert f"'panelists' needs at least 2 entries, got {got}" in str(err)
    assert err.hint == f"add {2 - got} more" and "List should" not in str(err)


# --- file- and YAML-level errors ----------------------------------------------------------

def test_file_not_found(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert str(missing) in str(info.value) and "not found" in str(info.value)
    assert info.value.exit_code == 2 and info.value.hint


def test_directory_is_not_a_spec(tmp_path):
    with pytest.raises(SpecError, match="directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n"])
def test_empty_file(text):
    err = spec_error(text)
    assert "empty" in str(err) and str(BAD) in str(err) and err.hint


@pytest.mark.parametrize("text,kind", [("- a\n- b\n", "a list"), ("just text\n", "a string")])
def test_top_level_must_be_a_mapping(text, kind):
    err = spec_error(text)
    assert f"must be a YAML mapping, got {kind}" in str(err) and err.line == 1 and err.hint


@pytest.mark.parametrize("text,line,column,hint", [
    ("name: x\ninput: [a\nmodels: {}\n", 3, 7, "quoting"),
    ("name: x\nstages:\n\t- id: a\n", 3, 1, "tabs"),
    ("name: x\nprompt: {{ account.name }}\n", 2, 10, "quote"),
    ("name: x\n---\nname: y\n", 2, 1, None),
])
def test_yaml_syntax_error(text, line, column, hint):
    err = spec_error(text)
    assert "YAML syntax error" in str(err)
    assert err.line == line and f"bad.yaml:{line}:" in str(err) and f"(column {column})" in str(err)
    if hint:
        assert hint in (err.hint or "")


def test_duplicate_keys_at_top_level():
    err = spec_error(VALID + "name: again\n")
    assert "duplicate key 'name' (first on line 2)" in str(err) and err.path == "name"
    assert err.line == len(VALID.splitlines()) + 1


@pytest.mark.parametrize("text,code,line,column", [
    ("name: x\x1b[0m\ninput: {key: id}\n", "U+001B", 1, 8),             # pasted colour code
    ('name: x\nstages: [{id: s1, prompt: "hi\x00"}]\n', "U+0000", 2, 30),  # NUL in a string
    ("name: x\n\ninput: {key: id\x7f}\n", "U+007F", 3, 16),
    ("name: x\ndescription: \ufffe\n", "U+FFFE", 2, 14),
])
def test_characters_yaml_refuses_are_a_spec_error(text, code, line, column):
    err = spec_error(text)
    assert f"{code} at column {column} is not allowed in YAML" in str(err)
    assert err.line == line and str(err).startswith(f"{BAD}:{line}: ")
    assert "remove the" in (err.hint or "") and "\n" not in err.one_line()


def test_control_character_in_a_spec_file(tmp_path):
    spec_file = tmp_path / "esc.yaml"
    spec_file.write_bytes(b"name: x\x1b[0m\ninput: {key: id}\n")
    with pytest.raises(SpecError, match=r"esc\.yaml:1: control character U\+001B at column 8"):
        load_spec(spec_file)


def _laughs(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for n in range(1, levels + 1):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(10)  # without the limit this takes minutes and gigabytes
@pytest.mark.parametrize("text", [
    _laughs(9) + "name: x\n",                              # 9**10 values from 10 lines
    "x-lol:\n" + "".join(f"  {line}\n" for line in _laughs(9).splitlines())
    + mutate("description: Research accounts, score them, write to the best ten, check the drafts.",
             "description: *l9"),                          # used by an otherwise valid spec
])
def test_nested_aliases_are_refused_before_anything_expands_them(text):
    started = time.perf_counter()
    err = spec_error(text)
    assert time.perf_counter() - started < 1
    assert f"YAML aliases expand to more than {MAX_ALIASED_VALUES} values" in str(err)
    assert err.line and "past it at alias '*l" in str(err) and "nested aliases" in (err.hint or "")


def test_anchors_and_aliases_still_load_with_lines():
    text = mutate("signals: {type: list, items: str, max_items: 5}",
                  "signals: &listing {type: list, items: str, max_items: 5}")
    text = text.replace("issues: {type: list, items: str}", "issues: *listing")
    text = text.replace("  scorer:\n    system: You score", "  scorer: &plain\n    system: You score")
    text = text.replace("  reviewer:\n    system:", "  reviewer:\n    <<: *plain\n    system:")
    spec = load_spec_text(text, path=SPECS / "valid.yaml")
    assert spec.pipeline.stage("validate").output["issues"].max_items == 5
    assert spec.pipeline.agents["reviewer"].tools == ["time"]
    assert spec.pipeline.agents["reviewer"].system.startswith("You check")
    # an error after the aliases keeps its own line
    err = spec_error(text.replace("    top: 10", "    top: ten"))
    assert err.path == "stages[2].top" and err.line == line_of(text, "top: 10")
    # an error inside an anchor's value is at the anchor, wherever it is used
    err = spec_error(text.replace("max_items: 5}", "max_items: -5}"))
    assert err.line == line_of(text, "&listing") and err.path == "stages[0].output.signals.max_items"
    # a key misspelt next to a merge
    err = spec_error(text.replace("    tools: [time]", "    tols: [time]"))
    assert err.path == "agents.reviewer.tols" and err.line == line_of(text, "tools: [time]")


# --- outputs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec() -> LoadedSpec:
    return load_spec(SPECS / "valid.yaml")


def test_output_json_schema_is_valid_json_schema(spec):
    for stage in spec.pipeline.stages:
        schema = output_json_schema(stage)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
    score = output_json_schema(spec.pipeline.stage("score"))
    assert score["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 100}
    assert score["properties"]["tier"] == {"type": "string", "enum": ["A", "B", "C"]}
    assert score["required"] == ["score", "tier", "reason"]
    research = output_json_schema(spec.pipeline.stage("research"))
    assert research["properties"]["signals"] == {"type": "array", "items": {"type": "string"},
                                                 "maxItems": 5}
    assert research["properties"]["summary"]["minLength"] == 10
    assert research["properties"]["summary"]["description"] == "Two-sentence company summary"
    assert "employees" not in research["required"]
    shortlist = output_json_schema(spec.pipeline.stage("shortlist"))
    assert set(shortlist["properties"]) == {"selected", "rank"}


def test_free_text_stage_schema_and_parse():
    stage = AgentStage(id="note", agent="a", prompt="hi")
    assert output_json_schema(stage) == {"type": "object", "properties": {"text": {"type": "string"}},
                                         "required": ["text"], "additionalProperties": False}
    assert parse_output(stage, "  Just words.\n") == {"text": "Just words."}
    assert validate_output(stage, {"text": "x"}) == {"text": "x"}


def test_validate_output_accepts_what_the_schema_accepts(spec):
    stage = spec.pipeline.stage("research")
    good = {"summary": "Acme makes anvils for coyotes.", "signals": ["hiring"], "employees": None}
    jsonschema.validate(good, output_json_schema(stage))
    assert validate_output(stage, good) == good
    assert validate_output(stage, {"summary": "Acme makes anvils.", "signals": []})["employees"] is None


def test_validate_output_lists_every_problem(spec):
    stage = spec.pipeline.stage("score")
    with pytest.raises(OutputInvalid) as info:
        validate_output(stage, {"score": 140, "tier": "D", "extra": 1})
    message = str(info.value)
    assert "score: Input should be less than or equal to 100" in message
    assert "tier: Input should be 'A', 'B' or 'C'" in message
    assert "reason: Field required" in message
    assert "extra: unexpected field" in message
    assert len(info.value.problems) == 4
    with pytest.raises(OutputInvalid, match="must be a JSON object, got list"):
        validate_output(stage, [1, 2])


def test_parse_output_strips_fences_and_prose(spec):
    stage = spec.pipeline.stage("score")
    reply = {"score": 90, "tier": "A", "reason": "fits"}
    assert parse_output(stage, json.dumps(reply)) == reply
    assert parse_output(stage, "```json\n" + json.dumps(reply) + "\n```") == reply
    assert parse_output(stage, "Here you go:\n```\n" + json.dumps(reply) + "\n```\nThanks") == reply
    assert parse_output(stage, "Sure! " + json.dumps(reply) + " Hope that helps.") == reply
    with pytest.raises(OutputInvalid, match="reply is not valid JSON"):
        parse_output(stage, '{"score": 90,')


def test_parse_output_takes_json_as_models_write_it(spec):
    stage = spec.pipeline.stage("score")
    reply = {"score": 90, "tier": "A", "reason": "fits"}
    # prose after the object that holds braces of its own
    assert parse_output(stage, json.dumps(reply) + "\n\nNote: I chose {A} because {reasons}.") == reply
    # raw line breaks and tabs inside a string (strict JSON refuses them)
    assert parse_output(stage, '{"score": 90, "tier": "A", "reason": "fits\n\twell"}')["reason"] == "fits\n\twell"
    # half a character pair becomes U+FFFD; a whole pair its character
    assert parse_output(stage, '{"score": 9, "tier": "A", "reason": "cut \\ud83d, whole \\ud83d\\ude00"}'
                        )["reason"] == "cut \ufffd, whole \U0001f600"


def test_output_model_is_cached_and_forbids_extra(spec):
    stage = spec.pipeline.stage("score")
    model = output_model(stage)
    assert output_model(stage) is model
    assert model.model_config["extra"] == "forbid"


def test_enum_with_ints_and_optional_field():
    stage = AgentStage(id="s", agent="a", prompt="p", output={
        "level": OutputField(type="enum", values=[1, 2, "many"], required=False)})
    schema = output_json_schema(stage)
    assert schema["properties"]["level"] == {"type": ["integer", "string", "null"],
                                             "enum": [1, 2, "many", None]}
    jsonschema.validate({"level": None}, schema)
    assert validate_output(stage, {"level": 2}) == {"level": 2}
    with pytest.raises(OutputInvalid):
        validate_output(stage, {"level": 3})


# --- templates ----------------------------------------------------------------------------

ACCOUNT = {"account_id": "a1", "name": "Acme", "domain": "acme.test"}


def test_render_prompt_with_context():
    context = build_context(ACCOUNT, {"research": {"summary": "Anvils.", "items": ["x"]}},
                            {"id": "r1", "pipeline": "p"})
    out = render_prompt("{{ account.name }}/{{ item.domain }}: {{ research.summary }} "
                        "{{ research.items | join(',') }} {{ run.id }}\n", context)
    assert out == "Acme/acme.test: Anvils. x r1\n"  # keep_trailing_newline; keys beat dict methods


def test_render_undefined_raises_spec_error_naming_the_stage():
    with pytest.raises(SpecError, match="stage 'write'.*nmae"):
        render_prompt("{{ account.nmae }}", {"account": ACCOUNT}, stage="write")


def test_sandbox_blocks_python_internals():
    for source in ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
                   "{{ account.__class__ }}"]:
        with pytest.raises(SpecError, match="unsafe"):
            render_prompt(source, {"account": ACCOUNT}, stage="s")


def test_eval_condition():
    context = {"account": ACCOUNT, "score": {"score": 80, "tier": "A"}}
    assert eval_condition("score.score >= 70 and score.tier in ['A', 'B']", context) is True
    assert eval_condition("account.name == 'Other'", context) is False
    assert eval_condition("score.score", context) is True
    with pytest.raises(SpecError, match="stage 'x'"):
        eval_condition("account.missing", context, stage="x")


def test_every_prompt_of_the_valid_spec_renders(spec):
    outputs = {"research": {"summary": "Acme makes anvils.", "signals": ["hiring"], "employees": 5},
               "score": {"score": 91, "tier": "A", "reason": "fit"},
               "shortlist": {"selected": True, "rank": 1},
               "write": {"subject": "Hi", "body": "Hello"}}
    account = {"account_id": "a1", "name": "Acme", "domain": "acme.test", "industry": "tools"}
    for stage_id in spec.order:
        stage = spec.pipeline.stage(stage_id)
        context = build_context(account, {n: outputs[n] for n in stage.needs},
                                {"id": "r1", "pipeline": spec.pipeline.name})
        if stage.when:
            assert eval_condition(stage.when, context, stage=stage_id)
        if stage_id in spec.prompts:
            assert render_prompt(spec.prompts[stage_id], context, stage=stage_id).strip()
        if isinstance(stage, SelectStage) and stage.where:
            assert eval_condition(stage.where, context, stage=stage_id)


@pytest.mark.parametrize("expr", ["account.name account.domain", "account.name is shouty",
                                  "account.name ==", "{{ x }}"])
def test_bad_when_expressions(expr):
    err = spec_error(mutate("when: \"account.industry != 'gambling'\"", f"when: {json.dumps(expr)}"))
    assert "'when' does not parse" in str(err) and err.path == "stages[1].when"


def test_compiled_prompts_are_cached_and_env_is_sandboxed():
    assert compile_prompt("{{ account.name }}!") is compile_prompt("{{ account.name }}!")
    env = make_env()
    assert env.sandboxed and env.keep_trailing_newline and not env.autoescape
