"""The lexical first stage: BM25 over tokens from a language-aware analyzer.

Each document is analysed once, when it is added, and its tokens are kept: adds and deletes update the postings
in proportion to the change (see :mod:`rerank_plugins.first_stage.bm25`), and loading indexes the stored tokens
instead of analysing the corpus again.

Saved as a directory (see :mod:`rerank_plugins.first_stage.persistence`): ``documents.jsonl``,
``tokens.jsonl`` (one JSON list of tokens per document, in the same order) and ``manifest.json`` (format
version, count, analyzer, BM25 parameters, bm25s version, checksums). Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_number, check_texts
from rerank_plugins.first_stage.analyzers import Analyzer, resolve_analyzer
from rerank_plugins.first_stage.base import DocumentStore, check_new_ids, check_search_args
from rerank_plugins.first_stage.bm25 import METHODS, CorpusStatistics, Postings
from rerank_plugins.first_stage.persistence import (
    DOCUMENTS_FILE,
    IndexLoadError,
    read_documents,
    read_manifest,
    save_directory,
    verify_files,
    write_documents,
)
from rerank_plugins.schema import Document, SearchHit

logger = logging.getLogger(__name__)

FORMAT_NAME = "rerank-plugins-bm25"
FORMAT_VERSION = 1
TOKENS_FILE = "tokens.jsonl"
PROBE_DOCUMENTS = 3
"""On load, this many stored documents are analysed again to check the analyzer still gives their tokens."""

AnalyzerSpec = str | Analyzer | Callable[[str], Sequence[str]]


@dataclass(frozen=True, eq=False)
class _State:
    """One version of the index; updates build a new one and swap it in, so a search reads one version.

    ``by_slot`` and ``tokens`` hold every document added since the last compaction, deleted ones too, in slot order;
    versions share these lists and an update only appends past the slots its version knows.
    """

    by_slot: list[Document] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    postings: Postings = field(default_factory=Postings)

    @cached_property
    def documents(self) -> list[Document]:
        """The live documents in position order."""
        return [d for d, alive in zip(self.by_slot, self.postings.alive) if alive]

    @cached_property
    def live_tokens(self) -> list[list[str]]:
        return [t for t, alive in zip(self.tokens, self.postings.alive) if alive]


class LexicalIndex(DocumentStore):
    """BM25 search over documents; hits are scored by BM25 (higher is better) and need a query term in common.

    ``analyzer``: ``"auto"`` (chosen from the first documents added: ``korean-bigram``, ``english`` or
    ``generic``), a name in :data:`~rerank_plugins.first_stage.analyzers.ANALYZERS`, an
    :class:`~rerank_plugins.first_stage.analyzers.Analyzer`, or a callable ``str -> list[str]``.
    ``k1``, ``b``, ``method``: bm25s's BM25 parameters and variant (one of :data:`METHODS`).
    """

    def __init__(
        self, analyzer: AnalyzerSpec = "auto", *, k1: float = 1.5, b: float = 0.75, method: str = "lucene"
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.k1 = check_number(k1, "k1", 0.0)
        self.b = check_number(b, "b", 0.0, 1.0)
        self.method = method
        self.analyzer: Analyzer | None = (
            None if isinstance(analyzer, str) and analyzer == "auto" else resolve_analyzer(analyzer)
        )
        """None until the first documents are added when ``analyzer="auto"``."""
        self._state = _State()
        self._slot_of: dict[str, int] = {}
        """Id -> slot of every live document (the latest version's)."""
        self.last_add_without_tokens = 0
        """How many documents of the last add had no tokens (stored, but no query can find them)."""
        self._write_lock = threading.RLock()
        """Serialises adds and deletes; searches never take it (they read :attr:`_state` once)."""

    @property
    def documents(self) -> list[Document]:  # type: ignore[override]
        """The documents in position order (hit positions index this list); do not change it in place."""
        return self._state.documents

    @property
    def _ids(self) -> dict[str, int]:
        return self._slot_of

    def __len__(self) -> int:
        return self._state.postings.documents

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        by_slot, slot_of = self._state.by_slot, self._slot_of
        return [by_slot[slot_of[i]] for i in ids if i in slot_of]

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        metadatas: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
        **options: Any,
    ) -> LexicalIndex:
        index = cls(**options)
        index.add_texts(texts, metadatas=metadatas, ids=ids)
        return index

    def describe(self) -> dict[str, Any]:
        analyzer = {"name": "auto"} if self.analyzer is None else self.analyzer.config()
        return {"kind": "lexical", "analyzer": analyzer, "k1": self.k1, "b": self.b, "method": self.method}

    # -- building --------------------------------------------------------------------------------------

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Analyse and add ``documents``; returns their ids. Ids must be new (see :meth:`upsert_documents`)."""
        documents = list(documents)
        for i, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(f"documents[{i}] must be a Document, got {type(document).__name__}")
        texts = check_texts([d.text for d in documents], "documents")
        with self._write_lock:
            check_new_ids(documents, self._ids)
            if not documents:
                return []
            analyzer = self.analyzer or resolve_analyzer("auto", texts)
            tokens = analyzer.analyze(texts)  # searches go on meanwhile: they never take the write lock
            without = sum(not t for t in tokens)
            if without:
                logger.warning(
                    "%d of %d documents have no tokens for the %r analyzer; they are stored but no query can find them",
                    without,
                    len(documents),
                    analyzer.name,
                )
            state = self._state
            first = len(state.postings.lengths)
            del state.by_slot[first:], state.tokens[first:]  # anything a failed add left behind
            state.by_slot.extend(documents)
            state.tokens.extend(tokens)
            postings = state.postings.add(tokens)
            self.analyzer = analyzer  # before the new version: a search that sees it has its analyzer
            self._state = _State(state.by_slot, state.tokens, postings)
            self._slot_of.update((d.id, slot) for slot, d in enumerate(documents, first))
            self.last_add_without_tokens = without
        return [d.id for d in documents]

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids; returns how many were removed."""
        wanted = set(check_texts(ids, "ids"))
        with self._write_lock:
            state = self._state
            slots = [self._slot_of[i] for i in wanted if i in self._slot_of]
            if not slots:
                return 0
            postings = state.postings.delete(slots, [state.tokens[s] for s in slots])
            if postings.wasteful:
                live = np.flatnonzero(postings.alive)
                by_slot = [state.by_slot[s] for s in live]
                self._state = _State(by_slot, [state.tokens[s] for s in live], postings.compacted())
                self._slot_of = {d.id: slot for slot, d in enumerate(by_slot)}
            else:
                self._state = _State(state.by_slot, state.tokens, postings)
                for doc_id in wanted:
                    self._slot_of.pop(doc_id, None)
            return len(slots)

    # -- searching -------------------------------------------------------------------------------------

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` best documents by BM25 for each query, best first, ties by position.

        Only documents sharing a term with the query are returned, so a query can get fewer than ``k``; one
        that analyses to no tokens (only stopwords or punctuation) gets none, with a warning.
        """
        queries = check_search_args(queries, k)
        analyzer = self.analyzer
        if analyzer is None or not len(self):
            return [[] for _ in queries]
        token_lists = analyzer.analyze(queries)
        self._warn_without_tokens(token_lists)
        return self.search_tokens(token_lists, k)

    def term_statistics(self, token_lists: Sequence[Sequence[str]]) -> CorpusStatistics:
        """This index's BM25 statistics for the terms of these analysed queries (shards add theirs up)."""
        return self._state.postings.statistics(t for tokens in token_lists for t in tokens)

    def search_tokens(
        self, token_lists: Sequence[Sequence[str]], k: int, statistics: CorpusStatistics | None = None
    ) -> list[list[SearchHit]]:
        """:meth:`search_batch` for queries already analysed; ``statistics`` (default: this index's own) are
        the corpus's, so that a shard scores its documents as one index over the whole corpus would."""
        state = self._state  # one version for the whole search: updates swap in a new one
        results = []
        for tokens in token_lists:
            scores = state.postings.scores(tokens, self.k1, self.b, self.method, statistics)
            results.append(_top_k(scores, state.postings.positions, k, state.by_slot))
        return results

    def _warn_without_tokens(self, token_lists: Sequence[Sequence[str]]) -> None:
        empty = sum(not tokens for tokens in token_lists)
        if empty:
            logger.warning(
                "%d of %d queries have no tokens for the %r analyzer (only stopwords or punctuation?); "
                "they match nothing",
                empty,
                len(token_lists),
                self.analyzer.name,
            )

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to directory ``path`` atomically (a complete new index or the old one, never half)."""
        state = self._state
        if not state.postings.documents:
            raise ValueError("cannot save an empty index; add documents first")
        documents, tokens = state.documents, state.live_tokens
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "count": len(documents),
            "analyzer": self.analyzer.config(),
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
        }

        def write_files(staging: Path) -> None:
            write_documents(staging / DOCUMENTS_FILE, documents)
            with (staging / TOKENS_FILE).open("w", encoding="utf-8") as handle:
                for doc_tokens in tokens:
                    handle.write(json.dumps(doc_tokens, ensure_ascii=False))
                    handle.write("\n")

        return save_directory(path, write_files, manifest)

    @classmethod
    def load(cls, path: str | os.PathLike[str], analyzer: AnalyzerSpec | None = None, **options: Any) -> LexicalIndex:
        """Load an index saved by :meth:`save`, checking it fully; raises :class:`IndexLoadError`.

        ``analyzer``: None or ``"auto"`` restores the stored one; a name or analyzer must match it; an index
        built with a callable needs that callable again. ``options`` (``k1``, ``b``, ``method``) must match too.
        """
        directory = Path(path)
        manifest = read_manifest(directory, FORMAT_NAME, FORMAT_VERSION, ("count", "analyzer", "k1", "b", "method"))
        verify_files(directory, manifest, {DOCUMENTS_FILE, TOKENS_FILE})
        stored = manifest["analyzer"]
        if not isinstance(stored, dict) or not isinstance(stored.get("name"), str):
            raise IndexLoadError(f"{directory}: the manifest's analyzer is invalid: {stored!r}")
        chosen = _load_analyzer(directory, stored, analyzer)
        for key in ("k1", "b", "method"):
            requested = options.pop(key, manifest[key])
            if requested != manifest[key]:
                raise IndexLoadError(f"{directory} was built with {key}={manifest[key]!r}, not {requested!r}")
        if options:
            raise TypeError(f"unexpected options {sorted(options)}; LexicalIndex.load takes analyzer, k1, b, method")
        try:
            index = cls(chosen, k1=manifest["k1"], b=manifest["b"], method=manifest["method"])
        except (TypeError, ValueError) as error:
            raise IndexLoadError(f"{directory}: invalid BM25 parameters in the manifest: {error}") from None
        documents = read_documents(directory / DOCUMENTS_FILE)
        tokens = _read_tokens(directory / TOKENS_FILE)
        if not len(documents) == len(tokens) == manifest["count"]:
            raise IndexLoadError(
                f"{directory}: counts disagree (manifest {manifest['count']}, documents "
                f"{len(documents)}, token lines {len(tokens)})"
            )
        _check_reproduces(directory, chosen, documents[:PROBE_DOCUMENTS], tokens[:PROBE_DOCUMENTS])
        index._state = _State(documents, tokens, Postings().add(tokens))
        index._slot_of = {d.id: slot for slot, d in enumerate(documents)}
        return index


def _top_k(scores: np.ndarray, slot_positions: np.ndarray, k: int, by_slot: list[Document]) -> list[SearchHit]:
    """The ``k`` best positive scores, best first, ties by position (exact at the cut-off too)."""
    slots = np.flatnonzero(scores > 0)
    values = scores[slots]
    if len(slots) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth  # every tie of the k-th score, so the position order decides among them
        slots, values = slots[keep], values[keep]
    positions = slot_positions[slots]
    order = np.lexsort((positions, -values))[:k]
    return [
        SearchHit(by_slot[slot], int(position), float(score))
        for slot, position, score in zip(slots[order], positions[order], values[order])
    ]


def _load_analyzer(directory: Path, stored: dict[str, Any], requested: AnalyzerSpec | None) -> Analyzer:
    """The analyzer to load with: the stored one, or the requested one if it is the same."""
    name = stored["name"]
    if requested is None or (isinstance(requested, str) and requested == "auto"):
        if name == "custom":
            raise IndexLoadError(
                f"{directory} was built with a custom analyzer ({stored.get('function')}); pass "
                "the same function again: LexicalIndex.load(path, analyzer=function)"
            )
        try:
            analyzer = resolve_analyzer(name)
        except ValueError:
            raise IndexLoadError(
                f"{directory} was built with an analyzer this version does not know: {name!r}"
            ) from None
        analyzer.chosen_by = stored.get("chosen_by")
        return analyzer
    analyzer = resolve_analyzer(requested)
    if analyzer.name != name:
        raise IndexLoadError(f"{directory} was built with the {name!r} analyzer, not {analyzer.name!r}")
    return analyzer


def _read_tokens(path: Path) -> list[list[str]]:
    tokens = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
            except ValueError as error:
                raise IndexLoadError(f"{path.parent}: {path.name} line {line_number} is malformed: {error}") from None
            if not isinstance(row, list) or not all(isinstance(t, str) for t in row):
                raise IndexLoadError(f"{path.parent}: {path.name} line {line_number} is not a list of strings")
            tokens.append(row)
    return tokens


def _check_reproduces(directory: Path, analyzer: Analyzer, documents: list[Document], tokens: list[list[str]]) -> None:
    """Refuse a custom analyzer that tokenises stored documents differently (the wrong function), and warn
    when a named one does (a different library version: queries may match the stored tokens less well)."""
    if analyzer.analyze([d.text for d in documents]) == tokens:
        return
    if not analyzer.restorable:
        raise IndexLoadError(
            f"{directory}: the analyzer given does not reproduce the stored tokens; pass the "
            "function the index was built with"
        )
    logger.warning(
        "%s: the %r analyzer now tokenises stored documents differently (library version changed?); "
        "rebuild the index for best results",
        directory,
        analyzer.name,
    )
