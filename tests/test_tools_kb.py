"""kb_search: BM25 ranking over passages, HTML handling, and the per-process index cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentctl.errors import ConfigError, SpecError
from agentctl.spec.models import ToolSpec
from agentctl.tools import ToolContext, kb_index
from agentctl.tools.kb_search import KbSearchTool

pytestmark = pytest.mark.timeout(10)

CTX = ToolContext(run_id="r", item_key="acme", stage_id="research", agent="researcher")

FILLER = ("Our team meets every Monday to plan the week, review open tickets and agree on priorities. "
          "Notes are kept in the shared drive and summarised for everyone who could not attend. ")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "kb"
    (folder / "guides").mkdir(parents=True)
    (folder / "pricing.md").write_text(
        "# Pricing\n\nThe enterprise plan costs 99 dollars per seat per month and includes SSO.\n\n"
        "## Discounts\n\nNon-profits get a 30 percent discount on every plan.\n")
    (folder / "guides" / "onboarding.txt").write_text(
        "Onboarding takes two weeks. A customer success manager schedules the kickoff call.\n")
    (folder / "about.html").write_text(
        "<html><head><title>About</title><style>p {color: red}</style></head><body>"
        "<h1>About us</h1><p>Our <b>headquarters</b> are in Lisbon, Portugal.</p>"
        "<p>We were founded in 2015.</p></body></html>")
    # a long document whose relevant paragraph sits in the middle
    long_doc = "\n\n".join([FILLER * 3] * 6 + ["Security: all customer data is encrypted at rest with "
                                                 "AES-256 and audited yearly (SOC 2 Type II)."] + [FILLER * 3] * 6)
    (folder / "handbook.md").write_text(long_doc)
    (folder / ".hidden.md").write_text("enterprise enterprise enterprise secret draft")
    (folder / "image.png").write_bytes(b"\x89PNG not a document")
    return folder


def make_tool(folder: Path, **settings) -> KbSearchTool:
    return KbSearchTool.from_spec("kb", ToolSpec(type="kb_search", corpus=str(folder), **settings),
                                  spec_dir=folder.parent)


def search(tool: KbSearchTool, query: str, **kw) -> list[dict]:
    return asyncio.run(tool.call(tool.validate_args({"query": query, **kw}), CTX))


def test_relevant_document_ranks_first(corpus: Path):
    tool = make_tool(corpus)
    hits = search(tool, "how much does the enterprise plan cost")
    assert hits[0]["source"] == "pricing.md"
    assert "99 dollars" in hits[0]["snippet"]
    assert set(hits[0]) == {"source", "score", "snippet"}
    assert hits[0]["score"] > 0
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert search(tool, "kickoff call onboarding")[0]["source"] == "guides/onboarding.txt"


def test_html_is_converted_to_text(corpus: Path):
    hits = search(make_tool(corpus), "where are the headquarters")
    assert hits[0]["source"] == "about.html"
    snippet = hits[0]["snippet"]
    assert "Lisbon" in snippet and "<p>" not in snippet and "color: red" not in snippet


def test_snippets_are_the_matching_passage_of_a_long_document(corpus: Path):
    hits = search(make_tool(corpus), "customer data encrypted at rest")
    assert hits[0]["source"] == "handbook.md"
    assert "AES-256" in hits[0]["snippet"]
    assert len(hits[0]["snippet"]) <= 800 + 1


def test_top_k_and_snippet_limit(corpus: Path):
    tool = make_tool(corpus, top_k=1, max_snippet_chars=60)
    hits = search(tool, "plan discount weeks headquarters")
    assert len(hits) == 1 and len(hits[0]["snippet"]) <= 61
    assert len(search(tool, "plan discount weeks headquarters", top_k=3)) == 3


def test_hidden_and_unsupported_files_are_ignored(corpus: Path):
    sources = {h["source"] for h in search(make_tool(corpus), "enterprise secret draft png", top_k=20)}
    assert ".hidden.md" not in sources and "image.png" not in sources


def test_no_match_returns_empty_list(corpus: Path):
    assert search(make_tool(corpus), "zyxwvut") == []


def test_index_is_built_once_and_rebuilt_when_files_change(corpus: Path, monkeypatch):
    builds = []
    real_build = kb_index.build_index

    def counting_build(*args, **kwargs):
        builds.append(args[0])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(kb_index, "build_index", counting_build)
    tool = make_tool(corpus)
    assert builds == []  # building is lazy
    search(tool, "pricing")
    search(tool, "onboarding")
    make_tool(corpus)  # a second tool on the same folder shares the cache
    search(tool, "lisbon")
    assert len(builds) == 1

    (corpus / "new.md").write_text("Quarterly roadmap review happens in March.")
    assert search(tool, "quarterly roadmap")[0]["source"] == "new.md"
    assert len(builds) == 2


def test_concurrent_first_searches_build_once(corpus: Path, monkeypatch):
    builds = []
    real_build = kb_index.build_index

    def slow_build(*args, **kwargs):
        builds.append(1)
        import time

        time.sleep(0.2)  # widen the race window
        return real_build(*args, **kwargs)

    monkeypatch.setattr(kb_index, "build_index", slow_build)
    tool = make_tool(corpus)

    async def main():
        ticks = 0

        async def ticker():  # the event loop keeps running while the index builds
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(*(tool.call({"query": "enterprise plan"}, CTX) for _ in range(5)))
        t.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert len(builds) == 1
    assert all(r[0]["source"] == "pricing.md" for r in results)
    assert ticks >= 5


def test_missing_folder_is_a_spec_error(tmp_path: Path):
    with pytest.raises(SpecError) as err:
        make_tool(tmp_path / "nope")
    assert err.value.path == "tools.kb.corpus"


def test_empty_folder_is_a_config_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "data.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="no .* files"):
        make_tool(tmp_path / "empty")


def test_split_passages_respects_size_and_headings():
    text = "# Title\n\nintro\n\n## Part\n\n" + ("word " * 400) + "\n\nlast."
    passages = kb_index.split_passages(text, max_chars=300)
    assert all(len(p) <= 300 for p in passages)
    assert passages[0].startswith("# Title")
    assert any(p.startswith("## Part") for p in passages)
    assert passages[-1].endswith("last.")


def test_single_letter_tokens_count(tmp_path: Path):
    folder = tmp_path / "news"
    folder.mkdir()
    (folder / "one.md").write_text("Acme raised a Series C round led by big investors.")
    (folder / "two.md").write_text("Globex raised a Series B round led by big investors.")
    hits = search(make_tool(folder), "Series B round")
    assert hits[0]["source"] == "two.md" and hits[0]["score"] > hits[1]["score"]
