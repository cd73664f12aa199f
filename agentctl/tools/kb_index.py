"""A BM25 passage index over a folder of .md/.txt/.html files, cached per process.

Documents are split into passages of about ``CHUNK_CHARS`` characters along paragraph
boundaries, so a hit points at the relevant part of a long document. Ranking is bm25s's.
The cache is keyed by the folder and invalidated when any file's mtime or size changes;
a per-folder lock makes concurrent first searches build the index once. Everything here
blocks, so callers run it in a thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import html2text

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".html", ".htm"})
CHUNK_CHARS = 800


def _stemmer():
    """PyStemmer's English stemmer when installed (better recall: "purrs" finds "purr"), else None."""
    try:
        import Stemmer  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Stemmer.Stemmer("english").stemWords


@dataclass(frozen=True)
class Passage:
    source: str  # path relative to the corpus folder, with forward slashes
    text: str


Fingerprint = tuple[tuple[str, int, int], ...]


def corpus_files(folder: Path) -> list[Path]:
    """Supported files under ``folder``, skipping hidden files and folders."""
    return sorted(_iter_supported(folder))


def has_documents(folder: Path) -> bool:
    return next(_iter_supported(folder), None) is not None


def _iter_supported(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES and path.is_file():
            yield path


def fingerprint(folder: Path, files: list[Path]) -> Fingerprint:
    out = []
    for path in files:
        st = path.stat()
        out.append((path.relative_to(folder).as_posix(), st.st_mtime_ns, st.st_size))
    return tuple(out)


def read_document(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        converter = html2text.HTML2Text()
        converter.body_width = 0  # no hard wrapping: paragraphs stay on one line
        converter.ignore_images = True
        converter.ignore_links = True
        text = converter.handle(text)
    return text


def split_passages(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Paragraph-aligned passages of at most ``max_chars`` (long paragraphs split by sentence)."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        sentence_buf = ""
        for sentence in re.split(r"(?<=[.!?])\s+", para):
            while len(sentence) > max_chars:  # a "sentence" with no full stop: cut hard
                if sentence_buf:
                    pieces.append(sentence_buf)
                    sentence_buf = ""
                pieces.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if sentence_buf and len(sentence_buf) + 1 + len(sentence) > max_chars:
                pieces.append(sentence_buf)
                sentence_buf = sentence
            else:
                sentence_buf = f"{sentence_buf} {sentence}".strip()
        if sentence_buf:
            pieces.append(sentence_buf)

    passages: list[str] = []
    current = ""
    for piece in pieces:
        # a heading starts a new passage so it stays with the text it introduces
        starts_section = piece.startswith("#")
        if current and (starts_section or len(current) + 2 + len(piece) > max_chars):
            passages.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        passages.append(current)
    return passages


class KbIndex:
    """BM25 over passages; ``search`` is read-only and safe to call from several threads."""

    def __init__(self, passages: list[Passage]):
        import bm25s  # numpy and friends: imported when the first index is built
        from bm25s.tokenization import Tokenizer

        self.passages = passages
        # single-character tokens count: "Series B" must not match "Series C" as well
        self._tokenizer = Tokenizer(stopwords="en", stemmer=_stemmer(), splitter=r"(?u)\b\w+\b")
        self._retriever = bm25s.BM25()
        if passages:
            corpus = [f"{_title(p.source)}\n{p.text}" for p in passages]
            tokens = self._tokenizer.tokenize(corpus, show_progress=False)
            self._retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[Passage, float]]:
        if not self.passages or not query.strip():
            return []
        tokens = self._tokenizer.tokenize([query], update_vocab=False, show_progress=False)
        k = min(k, len(self.passages))
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        hits = []
        for doc, score in zip(docs[0], scores[0]):
            if float(score) > 0:
                hits.append((self.passages[int(doc)], float(score)))
        return hits


def _title(source: str) -> str:
    return re.sub(r"[_\-/.]+", " ", source.rsplit(".", 1)[0])


def build_index(folder: Path, files: list[Path], chunk_chars: int = CHUNK_CHARS) -> KbIndex:
    passages = []
    for path in files:
        source = path.relative_to(folder).as_posix()
        for text in split_passages(read_document(path), chunk_chars):
            passages.append(Passage(source, text))
    return KbIndex(passages)


_CACHE: dict[tuple[Path, int], tuple[Fingerprint, KbIndex]] = {}
_LOCKS: dict[tuple[Path, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def get_index(folder: Path, chunk_chars: int = CHUNK_CHARS) -> KbIndex:
    """The cached index of ``folder``, (re)built if a file was added, removed or changed."""
    key = (folder.resolve(), chunk_chars)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:
        files = corpus_files(key[0])
        current = fingerprint(key[0], files)
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == current:
            return cached[1]
        index = build_index(key[0], files, chunk_chars)
        _CACHE[key] = (current, index)
        return index
