"""``kb_search``: BM25 full-text search over a local folder of documents."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from agentctl.errors import ConfigError
from agentctl.spec.models import ToolSpec
from agentctl.tools import kb_index
from agentctl.tools.base import Tool, ToolContext
from agentctl.tools.settings import ToolSettings, check_side_effects, parse_settings, resolve_path, spec_error


class KbSearchSettings(ToolSettings):
    corpus: str = Field(min_length=1, description="folder of .md/.txt/.html files (spec-relative)")
    top_k: int = Field(default=5, ge=1, le=50, description="passages returned when the model does not ask")
    max_snippet_chars: int = Field(default=800, ge=50, le=20_000, description="longest snippet per hit")
    chunk_chars: int = Field(default=kb_index.CHUNK_CHARS, ge=100, le=20_000,
                             description="target passage size when splitting documents")


class KbSearchTool(Tool):
    kind = "kb_search"

    def __init__(self, name: str, folder: Path, settings: KbSearchSettings, *,
                 description: str | None = None, side_effects: bool = False):
        self.name = name
        self.folder = folder
        self.settings = settings
        self.side_effects = side_effects
        self.description = description or (
            f"Full-text search over the documents in '{folder.name}'. Returns the most relevant "
            "passages as {source, score, snippet}, best first.")
        self.parameters = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "keywords to search for"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50,
                          "description": f"number of passages to return (default {settings.top_k})"},
            },
            "required": ["query"],
            "additionalProperties": False,
        }

    @classmethod
    def from_spec(cls, name: str, spec: ToolSpec, *, spec_dir: Path, spec_file: str | None = None) -> "KbSearchTool":
        settings = parse_settings(KbSearchSettings, name, spec, spec_file=spec_file)
        folder = resolve_path(spec_dir, settings.corpus)
        if not folder.is_dir():
            raise spec_error(name, "corpus", f"folder {str(folder)!r} does not exist", spec_file=spec_file)
        if not kb_index.has_documents(folder):
            raise ConfigError(f"tool {name!r}: corpus folder {str(folder)!r} has no "
                              f"{'/'.join(sorted(kb_index.SUPPORTED_SUFFIXES))} files")
        side_effects = check_side_effects(name, spec, False, spec_file=spec_file)
        return cls(name, folder, settings, description=spec.description, side_effects=side_effects)

    async def call(self, args: dict, ctx: ToolContext) -> list[dict]:
        k = int(args.get("top_k") or self.settings.top_k)
        hits = await asyncio.to_thread(self._search, args["query"], k)
        limit = self.settings.max_snippet_chars
        return [
            {"source": passage.source, "score": round(score, 4), "snippet": _clip(passage.text, limit)}
            for passage, score in hits
        ]

    def _search(self, query: str, k: int) -> list[tuple[kb_index.Passage, float]]:
        index = kb_index.get_index(self.folder, self.settings.chunk_chars)
        return index.search(query, k)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut + "…"
