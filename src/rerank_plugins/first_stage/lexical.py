"""The lexical first stage: BM25 (bm25s) over tokens from a language-aware analyzer.

Each document is analysed once, when it is added; its tokens are kept, so adding, deleting and loading
rebuild bm25s's sparse score matrix from them (fast) instead of analysing the corpus again.

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
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_number, check_texts
from rerank_plugins.first_stage.analyzers import Analyzer, require_optional, resolve_analyzer
from rerank_plugins.first_stage.base import DocumentStore, check_new_ids, check_search_args
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
METHODS: tuple[str, ...] = ("lucene", "robertson", "atire")
"""bm25s's variants that score a document without any query term 0 (its BM25L and BM25+ do not)."""
PROBE_DOCUMENTS = 3
"""On load, this many stored documents are analysed again to check the analyzer still gives their tokens."""

AnalyzerSpec = str | Analyzer | Callable[[str], Sequence[str]]


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
        self.documents: list[Document] = []
        self._tokens: list[list[str]] = []
        self._ids: set[str] = set()
        self._bm25: Any = None
        """bm25s.BM25 over :attr:`_tokens`; None while no document has a token."""
        self.last_add_without_tokens = 0
        """How many documents of the last add had no tokens (stored, but no query can find them)."""
        self._lock = threading.RLock()

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
        with self._lock:
            check_new_ids(documents, self._ids)
            if not documents:
                return []
            analyzer = self.analyzer or resolve_analyzer("auto", texts)
            tokens = analyzer.analyze(texts)
            without = sum(not t for t in tokens)
            if without:
                logger.warning(
                    "%d of %d documents have no tokens for the %r analyzer; they are stored but no query can find them",
                    without,
                    len(documents),
                    analyzer.name,
                )
            all_tokens = self._tokens + tokens
            bm25 = self._build_bm25(all_tokens)
            self.analyzer = analyzer
            self.documents = self.documents + documents
            self._tokens = all_tokens
            self._ids = self._ids | {d.id for d in documents}
            self._bm25 = bm25
            self.last_add_without_tokens = without
        return [d.id for d in documents]

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids; returns how many were removed."""
        wanted = set(check_texts(ids, "ids"))
        with self._lock:
            keep = [d.id not in wanted for d in self.documents]
            removed = len(keep) - sum(keep)
            if removed:
                tokens = [t for t, kept in zip(self._tokens, keep) if kept]
                self._bm25 = self._build_bm25(tokens)
                self._tokens = tokens
                self.documents = [d for d, kept in zip(self.documents, keep) if kept]
                self._ids = {d.id for d in self.documents}
            return removed

    def _build_bm25(self, tokens: list[list[str]]) -> Any:
        """bm25s's score matrix for these token lists (None when there is no token at all)."""
        bm25s = require_optional("bm25s", "bm25s")
        vocab: dict[str, int] = {}
        token_ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in tokens]
        if not vocab:
            return None
        bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        bm25.index((token_ids, vocab), create_empty_token=False, show_progress=False)
        return bm25

    # -- searching -------------------------------------------------------------------------------------

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` best documents by BM25 for each query, best first, ties by position.

        Only documents sharing a term with the query are returned, so a query can get fewer than ``k``; one
        that analyses to no tokens (only stopwords or punctuation) gets none, with a warning.
        """
        queries = check_search_args(queries, k)
        with self._lock:  # a consistent snapshot: add and delete replace these objects, never change them
            analyzer, bm25, documents = self.analyzer, self._bm25, self.documents
        if bm25 is None:
            return [[] for _ in queries]
        results: list[list[SearchHit]] = []
        empty = 0
        for tokens in analyzer.analyze(queries):
            empty += not tokens
            token_ids = bm25.get_tokens_ids(tokens)
            results.append(_top_k(bm25.get_scores_from_ids(token_ids), k, documents) if token_ids else [])
        if empty:
            logger.warning(
                "%d of %d queries have no tokens for the %r analyzer (only stopwords or punctuation?); "
                "they match nothing",
                empty,
                len(queries),
                analyzer.name,
            )
        return results

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to directory ``path`` atomically (a complete new index or the old one, never half)."""
        with self._lock:
            if not self.documents:
                raise ValueError("cannot save an empty index; add documents first")
            documents, tokens = self.documents, self._tokens
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "count": len(documents),
                "analyzer": self.analyzer.config(),
                "k1": self.k1,
                "b": self.b,
                "method": self.method,
                "bm25s_version": require_optional("bm25s", "bm25s").__version__,
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
        index._bm25 = index._build_bm25(tokens)
        index.documents, index._tokens, index._ids = documents, tokens, {d.id for d in documents}
        return index


def _top_k(scores: np.ndarray, k: int, documents: list[Document]) -> list[SearchHit]:
    """The ``k`` best positive scores, best first, ties by position (exact at the cut-off too)."""
    positions = np.flatnonzero(scores > 0)
    values = scores[positions]
    if len(positions) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth  # every tie of the k-th score, so the position order decides among them
        positions, values = positions[keep], values[keep]
    order = np.lexsort((positions, -values))[:k]
    return [SearchHit(documents[p], int(p), float(s)) for p, s in zip(positions[order], values[order])]


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
