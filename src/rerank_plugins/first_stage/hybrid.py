"""The hybrid first stage: a dense index and a BM25 index over the same documents, their candidates fused.

Dense retrieval finds paraphrases, BM25 finds rare exact terms (names, codes, numbers) that embeddings blur;
fusing the two candidate lists recovers documents that either side alone ranks too low.

Saved as a directory holding the two sides' own directories, ``dense/`` and ``lexical/``, and a manifest
(format, fusion settings, and the checksums of every file of both sides).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from rerank_plugins._validation import check_non_negative_int, check_number, check_positive_int, check_texts
from rerank_plugins.first_stage.base import DocumentStore, check_search_args, make_documents
from rerank_plugins.first_stage.dense import FaissIndex
from rerank_plugins.first_stage.lexical import AnalyzerSpec, LexicalIndex
from rerank_plugins.first_stage.persistence import (
    MANIFEST_FILE,
    IndexLoadError,
    read_manifest,
    save_directory,
    verify_files,
)
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import DENSE_SCORE, LEXICAL_SCORE, Document, SearchHit

FORMAT_NAME = "rerank-plugins-hybrid"
FORMAT_VERSION = 1
DENSE_DIR, LEXICAL_DIR = "dense", "lexical"
FUSIONS: tuple[str, ...] = ("weighted", "rrf")
DEFAULT_DENSE_WEIGHT = 0.3
"""Measured on training splits of SciFact and KorQuAD (see :class:`HybridIndex`)."""
FUSION_OPTIONS: tuple[str, ...] = ("fusion", "dense_weight", "rrf_k", "candidates")
LEXICAL_OPTIONS: tuple[str, ...] = ("k1", "b", "method")


class HybridIndex(DocumentStore):
    """Dense + lexical search over the same documents (same ids, same order), fused per query.

    Each side returns its ``max(k, candidates)`` best; the union is scored by

    - ``"weighted"`` (default): ``dense_weight * dense + (1 - dense_weight) * lexical``, each side's scores
      min-max normalised over the candidates it returned (0 for a document it did not return);
    - ``"rrf"``: ``dense_weight / (rrf_k + dense_rank) + (1 - dense_weight) / (rrf_k + lexical_rank)``
      (ranks from 1; a side that did not return the document adds 0).

    Ties go to the better rank on the side with the larger weight (dense at 0.5), then the other side, then
    position, so ``dense_weight=1.0`` gives exactly the dense order and ``0.0`` the lexical one. Each hit's
    ``sources`` holds the two sides' own scores (cosine, BM25; None for a side that did not return it).

    The default (weighted, ``dense_weight=0.3``) was chosen on training queries only (nDCG@10, packaged MiniLM;
    ``bench/results/first-stage-*``): on SciFact train it is within 0.005 of the best weight (0.4: 0.7289 vs 0.7236)
    and on KorQuAD train, where the English embedding model is far weaker than Korean BM25, within 0.005 of
    the best (0.1: 0.9658 vs 0.9616), while 0.5 would fall to 0.6925 there. RRF was below weighted fusion on
    both. Tune it for your data with ``rerank_plugins.evaluation.tune_hybrid_weight`` (CLI ``--tune-fusion``).

    Add and delete through the hybrid index only, so that the two sides stay in step.
    """

    def __init__(
        self,
        dense: FaissIndex,
        lexical: LexicalIndex,
        *,
        fusion: str = "weighted",
        dense_weight: float = DEFAULT_DENSE_WEIGHT,
        rrf_k: int = 60,
        candidates: int = 100,
    ) -> None:
        if not isinstance(dense, FaissIndex):
            raise TypeError(f"dense must be a FaissIndex, got {type(dense).__name__}")
        if not isinstance(lexical, LexicalIndex):
            raise TypeError(f"lexical must be a LexicalIndex, got {type(lexical).__name__}")
        settings = _fusion_settings(fusion=fusion, dense_weight=dense_weight, rrf_k=rrf_k, candidates=candidates)
        _check_same_documents(dense, lexical)
        self.dense = dense
        self.lexical = lexical
        self.fusion: str = settings["fusion"]
        self.dense_weight: float = settings["dense_weight"]
        self.rrf_k: int = settings["rrf_k"]
        self.candidates: int = settings["candidates"]
        self._lock = threading.RLock()
        """Serialises adds and deletes, so the two sides change together."""

    @property
    def documents(self) -> list[Document]:  # type: ignore[override]
        """The documents, in the order both sides hold them (hit positions index this list)."""
        return self.dense.documents

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        embedder: BiEncoderBackend,
        metadatas: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
        *,
        analyzer: AnalyzerSpec = "auto",
        **options: Any,
    ) -> HybridIndex:
        """Build both sides. ``options``: fusion settings (see the class), ``k1``/``b``/``method`` for BM25, and
        the rest for :class:`FaissIndex` (``index_type``, ``long_documents``...)."""
        fusion, lexical, dense = _split_options(options)
        index = cls(FaissIndex(embedder, **dense), LexicalIndex(analyzer, **lexical), **fusion)
        index.add_documents(make_documents(texts, metadatas, ids))
        return index

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hybrid",
            "fusion": self.fusion,
            "dense_weight": self.dense_weight,
            "rrf_k": self.rrf_k,
            "candidates": self.candidates,
            "dense": self.dense.describe(),
            "lexical": self.lexical.describe(),
        }

    # -- building --------------------------------------------------------------------------------------

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Add ``documents`` to both sides; if the dense side fails, the lexical add is undone."""
        documents = list(documents)
        with self._lock:
            ids = self.lexical.add_documents(documents)  # the cheap side first: undoing it is cheap too
            try:
                self.dense.add_documents(documents)
            except BaseException:
                self.lexical.delete(ids)
                raise
            return ids

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids from both sides; returns how many were removed."""
        ids = check_texts(ids, "ids")
        with self._lock:
            removed = self.dense.delete(ids)
            self.lexical.delete(ids)
            return removed

    # -- searching -------------------------------------------------------------------------------------

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` best documents for each query by fused score, best first.

        Searches do not wait for each other or for adds; a document is returned only while both sides hold it.
        """
        queries = check_search_args(queries, k)
        depth = max(k, self.candidates)
        dense = self.dense.search_batch(queries, depth)
        lexical = self.lexical.search_batch(queries, depth)
        return [self._fuse(d, lex, k) for d, lex in zip(dense, lexical)]

    async def asearch_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """Both sides searched concurrently (dense query encoding is micro-batched with other callers)."""
        queries = check_search_args(queries, k)
        depth = max(k, self.candidates)
        dense, lexical = await asyncio.gather(
            self.dense.asearch_batch(queries, depth), self.lexical.asearch_batch(queries, depth)
        )
        return [self._fuse(d, lex, k) for d, lex in zip(dense, lexical)]

    def _fuse(self, dense: list[SearchHit], lexical: list[SearchHit], k: int) -> list[SearchHit]:
        weights = (self.dense_weight, 1.0 - self.dense_weight)
        sides = (_side_values(dense, self.fusion, self.rrf_k), _side_values(lexical, self.fusion, self.rrf_k))
        found: dict[str, SearchHit] = {}
        dense_ids, lexical_ids = self.dense._ids, self.lexical._ids
        for hit in (*dense, *lexical):
            # A document is visible once both sides hold it and until one side drops it: an add or delete runs on
            # the two sides one after the other, and a search between them must not return a half-added or
            # half-deleted document.
            if hit.document.id in dense_ids and hit.document.id in lexical_ids:
                found.setdefault(hit.document.id, hit)
        fused = {i: sum(w * side[i][1] for w, side in zip(weights, sides) if i in side) for i in found}
        missing = len(found) + 1  # the rank of a document a side did not return, for tie-breaking only
        primary, secondary = sides if weights[0] >= weights[1] else sides[::-1]

        def sort_key(doc_id: str) -> tuple[float, int, int, int]:
            rank_1, rank_2 = (side[doc_id][0] if doc_id in side else missing for side in (primary, secondary))
            return -fused[doc_id], rank_1, rank_2, found[doc_id].position

        hits = []
        for doc_id in sorted(found, key=sort_key)[:k]:
            scores = {
                name: side[doc_id][2] if doc_id in side else None
                for name, side in zip((DENSE_SCORE, LEXICAL_SCORE), sides)
            }
            hits.append(SearchHit(found[doc_id].document, found[doc_id].position, fused[doc_id], scores))
        return hits

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write both sides to directory ``path`` atomically (``dense/``, ``lexical/`` and a manifest)."""
        with self._lock:
            if not len(self):
                raise ValueError("cannot save an empty index; add documents first")
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "count": len(self),
                "fusion": self.fusion,
                "dense_weight": self.dense_weight,
                "rrf_k": self.rrf_k,
                "candidates": self.candidates,
            }

            def write_files(staging: Path) -> None:
                self.dense.save(staging / DENSE_DIR)
                self.lexical.save(staging / LEXICAL_DIR)

            return save_directory(path, write_files, manifest)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: BiEncoderBackend,
        analyzer: AnalyzerSpec | None = None,
        **options: Any,
    ) -> HybridIndex:
        """Load an index saved by :meth:`save`, checking every file; raises :class:`IndexLoadError`.

        ``options``: fusion settings replace the stored ones (they only affect searching); ``k1``/``b``/
        ``method`` and the dense options are checked or applied by each side's own ``load``.
        """
        directory = Path(path)
        manifest = read_manifest(directory, FORMAT_NAME, FORMAT_VERSION, ("count", *FUSION_OPTIONS))
        names = [PurePosixPath(name).parts for name in manifest["files"]]
        if any(len(parts) < 2 or parts[0] not in (DENSE_DIR, LEXICAL_DIR) or ".." in parts for parts in names):
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} lists files outside {DENSE_DIR}/ and {LEXICAL_DIR}/")
        side_manifests = {f"{DENSE_DIR}/{MANIFEST_FILE}", f"{LEXICAL_DIR}/{MANIFEST_FILE}"}
        if not side_manifests <= set(manifest["files"]):
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} does not list both sides' manifests")
        verify_files(directory, manifest, manifest["files"])
        fusion, lexical_options, dense_options = _split_options(options)
        dense = FaissIndex.load(directory / DENSE_DIR, embedder, **dense_options)
        lexical = LexicalIndex.load(directory / LEXICAL_DIR, analyzer, **lexical_options)
        if not len(dense) == len(lexical) == manifest["count"]:
            raise IndexLoadError(
                f"{directory}: counts disagree (manifest {manifest['count']}, dense {len(dense)}, "
                f"lexical {len(lexical)})"
            )
        try:
            stored = _fusion_settings(**{key: manifest[key] for key in FUSION_OPTIONS})
            _check_same_documents(dense, lexical)
        except (TypeError, ValueError) as error:
            raise IndexLoadError(f"{directory}: {error}") from None
        return cls(dense, lexical, **(stored | fusion))


def _side_values(hits: list[SearchHit], fusion: str, rrf_k: int) -> dict[str, tuple[int, float, float]]:
    """Per document id a side returned: (rank from 1, its contribution before weighting, its own score)."""
    if fusion == "rrf":
        return {h.document.id: (r, 1.0 / (rrf_k + r), h.score) for r, h in enumerate(hits, 1)}
    scores = [h.score for h in hits]
    low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
    span = high - low
    # a side whose candidates all score the same gives each of them full marks
    return {h.document.id: (r, (h.score - low) / span if span > 0 else 1.0, h.score) for r, h in enumerate(hits, 1)}


def _fusion_settings(*, fusion: Any, dense_weight: Any, rrf_k: Any, candidates: Any) -> dict[str, Any]:
    """The fusion settings, checked."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    dense_weight = check_number(dense_weight, "dense_weight", 0, 1)
    return {
        "fusion": fusion,
        "dense_weight": float(dense_weight),
        "rrf_k": check_non_negative_int(rrf_k, "rrf_k"),
        "candidates": check_positive_int(candidates, "candidates"),
    }


def _check_same_documents(dense: FaissIndex, lexical: LexicalIndex) -> None:
    dense_ids = [d.id for d in dense.documents]
    lexical_ids = [d.id for d in lexical.documents]
    if dense_ids == lexical_ids:
        return
    only_dense, only_lexical = set(dense_ids) - set(lexical_ids), set(lexical_ids) - set(dense_ids)
    if only_dense or only_lexical:
        raise ValueError(
            f"dense and lexical must hold the same documents: {len(only_dense)} ids only in dense "
            f"(e.g. {sorted(only_dense)[:3]}), {len(only_lexical)} only in lexical "
            f"(e.g. {sorted(only_lexical)[:3]})"
        )
    raise ValueError(
        "dense and lexical hold the same ids in a different order; add the documents to both in the "
        "same order (HybridIndex.from_texts does)"
    )


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(fusion settings, BM25 parameters, dense options) from one set of keyword options."""
    fusion = {k: v for k, v in options.items() if k in FUSION_OPTIONS}
    lexical = {k: v for k, v in options.items() if k in LEXICAL_OPTIONS}
    dense = {k: v for k, v in options.items() if k not in FUSION_OPTIONS and k not in LEXICAL_OPTIONS}
    return fusion, lexical, dense
