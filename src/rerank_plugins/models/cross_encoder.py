"""Cross-encoder backend: one relevance score per (query, document) pair, behind a small framework-free API.

The scoring loop itself (tokenization, length-sorted batches, long-document windows) lives in
:mod:`rerank_plugins.models.pair_scoring`; this module adds loading, the public API, the score cache and
the micro-batcher for async callers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_query, check_rank_options, check_scale, check_texts
from rerank_plugins.batching import MicroBatcher, run_grouped
from rerank_plugins.fusion import training_record
from rerank_plugins.models._base import LazyModelBackend
from rerank_plugins.models.lru import LRUCache, text_digest
from rerank_plugins.models.pair_scoring import (
    LONG_DOCUMENT_POLICIES,
    WINDOW_OVERLAP,
    LongDocuments,
    PairScores,
    apply_scale,
    check_scoring_options,
    fit_query,
    max_length_of,
    query_room,
    score_pairs,
    select,
    torch_forward,
)
from rerank_plugins.schema import RankedItem, ScoreScale

logger = logging.getLogger(__name__)

DEFAULT_SCORE_CACHE_SIZE = 20_000
"""(query, document) scores remembered per backend (a few MB); 0 turns the cache off."""


class CrossEncoderBackend(LazyModelBackend):
    """A sequence-classification cross-encoder (one logit, or two classes) behind a small API.

    Scores are raw logits unless ``scale="sigmoid"`` is asked for. Pairs longer than the model's max
    length are handled by ``long_documents``: ``"truncate"`` cuts the document only and flags it,
    ``"window"`` scores overlapping windows of ``window_overlap`` tokens and keeps the best (max), ``"auto"``
    (default) does what the reranker was trained for (:attr:`trained_long_documents`).

    An LRU cache of ``cache_size`` (query, document) scores, keyed by both texts' hashes and the long-document
    policy, makes repeated pairs free; it lives with this backend, so it is specific to its model and runtime.
    """

    window_overlap: int = WINDOW_OVERLAP
    max_pairs_per_batch: int = 512
    """Upper bound on (query, document) pairs that concurrent async requests share in one pass (a request
    larger than this is processed alone)."""

    def __init__(
        self, model: str | os.PathLike[str], *, cache_size: int = DEFAULT_SCORE_CACHE_SIZE, **options: Any
    ) -> None:
        super().__init__(model, **options)
        self._cache: LRUCache[tuple[float, bool, int]] = LRUCache(cache_size)
        self._batcher: MicroBatcher | None = None
        self._onnx: Any = None

    def _load(self, path: Path) -> Any:
        from sentence_transformers import CrossEncoder

        self._check_is_classifier(path)
        model = CrossEncoder(
            str(path),
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            local_files_only=True,
            max_length=self._requested_max_length,
        )
        labels = model.num_labels
        if model.model is None or labels not in (1, 2):
            raise ValueError(
                f"{self.model_name} is not a sequence-classification cross-encoder with 1 or 2 labels "
                f"(num_labels={labels}); rerank-plugins cannot score with it"
            )
        model.eval()
        if self.runtime != "torch":
            from rerank_plugins.models.runtimes.select import load_runtime

            self._onnx, self.effective_runtime = load_runtime(
                path,
                model.model,
                model.tokenizer,
                self.runtime,
                lambda run: self._runtime_agreement(model, run),
                max_length=max_length_of(model),
                pairs=True,
            )
        return model

    def _runtime_agreement(self, model: Any, candidate: Any) -> dict[str, float]:
        """Rankings of a reduced-precision candidate against this model in fp32 torch, on the check set."""
        from rerank_plugins.models.runtimes.guard import check_set, ranking_agreement, reads_hangul

        requests = check_set(korean=reads_hangul(model.tokenizer))
        budget = query_room(model.tokenizer, max_length_of(model))  # called while loading: self.model is not set yet
        queries, documents = [fit_query(model.tokenizer, q, budget) for q, _ in requests], [d for _, d in requests]
        reference = score_pairs(model, torch_forward(model.model), queries, documents, "truncate", 32)
        quantized = score_pairs(model, candidate, queries, documents, "truncate", 32)
        return ranking_agreement([r.raw for r in reference], [q.raw for q in quantized])

    def _check_is_classifier(self, path: Path) -> None:
        """Refuse a model without a trained scoring head (sentence-transformers would add a random one)."""
        try:
            architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, ValueError):
            return  # let the loader report what is wrong with the directory
        if not any(name.endswith("ForSequenceClassification") for name in architectures):
            raise ValueError(
                f"{self.model_name} is not a sequence-classification cross-encoder (architectures: {architectures}); "
                "its scoring head would be random. Train one with `rerank-plugins train-cross` or pass a reranker."
            )

    @property
    def max_length(self) -> int:
        """Longest (query, document) pair in tokens, special tokens included."""
        return max_length_of(self.model)

    @property
    def trained_long_documents(self) -> str:
        """How the reranker learned to read long documents (its training record): ``long_documents="auto"``."""
        parameters = training_record(self.path).get("parameters", {})
        policy = parameters.get("long_documents", "truncate") if isinstance(parameters, dict) else "truncate"
        return policy if policy in LONG_DOCUMENT_POLICIES and policy != "auto" else "truncate"

    def resolve_long_documents(self, long_documents: str) -> str:
        """``long_documents`` with ``"auto"`` replaced by :attr:`trained_long_documents`."""
        return self.trained_long_documents if long_documents == "auto" else long_documents

    def query_room(self) -> int:
        """Most query tokens that still leave ``MIN_DOCUMENT_TOKENS`` for the document in a pair."""
        return query_room(self.model.tokenizer, self.max_length)

    def shorten_query(self, query: str) -> tuple[str, int]:
        """``query`` cut to its first :meth:`query_room` tokens (unchanged when it fits), and its length in tokens."""
        room = self.query_room()
        with self.lock:
            encoded = self.model.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
        length = len(encoded["input_ids"])
        if length <= room:
            return query, length
        return query[: encoded["offset_mapping"][room - 1][1] if room > 0 else 0], length

    # -- public API ------------------------------------------------------------------------------------

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> np.ndarray:
        """Scores of ``documents`` for ``query`` in input order (float32, in ``scale``)."""
        return self.score_batch(
            [(query, documents)], scale=scale, long_documents=long_documents, batch_size=batch_size
        )[0]

    def score_batch(
        self,
        requests: Sequence[tuple[str, Sequence[str]]],
        *,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> list[np.ndarray]:
        """Score many ``(query, documents)`` requests in one length-sorted pass; results in input order."""
        check_scale(scale)
        return [apply_scale(s.raw, scale) for s in self.score_details(requests, long_documents, batch_size)]

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        score_threshold: float | None = None,
        min_keep: int = 0,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> list[RankedItem]:
        """Rank ``documents`` for ``query``, best first. See :meth:`rank_batch`."""
        return self.rank_batch(
            [(query, documents)],
            top_n=top_n,
            score_threshold=score_threshold,
            min_keep=min_keep,
            scale=scale,
            long_documents=long_documents,
            batch_size=batch_size,
        )[0]

    def rank_batch(
        self,
        requests: Sequence[tuple[str, Sequence[str]]],
        *,
        top_n: int | None = None,
        score_threshold: float | None = None,
        min_keep: int = 0,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> list[list[RankedItem]]:
        """Rank each request's documents, best first, in one batched pass.

        Each result is a subset of its request's positions, each at most once. ``score_threshold`` is in
        ``scale`` units; documents below it are dropped, except that the ``min_keep`` best always stay.
        """
        check_rank_options(top_n, score_threshold, min_keep)
        check_scale(scale)
        return [
            select(details, top_n, score_threshold, min_keep, scale)
            for details in self.score_details(requests, long_documents, batch_size)
        ]

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        score_threshold: float | None = None,
        min_keep: int = 0,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> list[RankedItem]:
        """:meth:`rank` for async callers: concurrent calls are micro-batched into shared forward passes
        run in a worker thread, so the event loop is never blocked by model work."""
        check_rank_options(top_n, score_threshold, min_keep)
        check_scale(scale)
        check_scoring_options(long_documents, batch_size)
        long_documents = self.resolve_long_documents(long_documents)
        request = (check_query(query), check_texts(documents, "documents"))
        details = await self.batcher.submit((request, long_documents, batch_size))
        return select(details, top_n, score_threshold, min_keep, scale)

    @property
    def batcher(self) -> MicroBatcher:
        """The micro-batcher behind :meth:`arank` (one per backend, shared by every adapter)."""
        if self._batcher is None:
            self._batcher = MicroBatcher(
                lambda items: run_grouped(
                    items,
                    key=lambda item: (item[1], item[2]),
                    process_group=lambda group: self.score_details([g[0] for g in group], group[0][1], group[0][2]),
                ),
                weight=lambda item: max(1, len(item[0][1])),
                max_weight=self.max_pairs_per_batch,
            )
        return self._batcher

    # -- scoring ---------------------------------------------------------------------------------------

    def score_details(
        self,
        requests: Sequence[tuple[str, Sequence[str]]],
        long_documents: LongDocuments = "auto",
        batch_size: int = 32,
    ) -> list[PairScores]:
        """Raw scores with truncation/window details for every request, in one pass."""
        check_scoring_options(long_documents, batch_size)
        long_documents = self.resolve_long_documents(long_documents)
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
            raise TypeError(f"requests must be a sequence of (query, documents) pairs, got {type(requests).__name__}")
        queries: list[str] = []
        documents: list[list[str]] = []
        for r, request in enumerate(requests):
            if not isinstance(request, (tuple, list)) or len(request) != 2:
                raise TypeError(f"requests[{r}] must be a (query, documents) pair")
            queries.append(check_query(request[0], f"requests[{r}] query" if len(requests) > 1 else "query"))
            documents.append(check_texts(request[1], "documents"))
        if not any(documents):
            return [PairScores(np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, np.int64)) for _ in documents]
        with self.lock:
            model = self.model
            forward = self._onnx or torch_forward(model.model)
            if not self.cache_size:
                return score_pairs(model, forward, queries, documents, long_documents, batch_size, self.window_overlap)
            return self._score_cached(model, forward, queries, documents, long_documents, batch_size)

    def _score_cached(
        self,
        model: Any,
        forward: Any,
        queries: list[str],
        documents: list[list[str]],
        long_documents: str,
        batch_size: int,
    ) -> list[PairScores]:
        """Score only the (query, document) pairs not in the LRU cache; repeated pairs cost nothing."""
        keys = [[(long_documents, text_digest(q), text_digest(d)) for d in docs] for q, docs in zip(queries, documents)]
        found: dict[tuple[str, bytes, bytes], tuple[float, bool, int]] = {}
        missing: dict[tuple[str, bytes, bytes], tuple[int, int]] = {}
        for r, row in enumerate(keys):
            for j, key in enumerate(row):
                if key in found or key in missing:
                    continue
                value = self._cache.get(key)
                if value is None:
                    missing[key] = (r, j)
                else:
                    found[key] = value
        if missing:
            by_request: dict[int, list[tuple[int, tuple]]] = {}
            for key, (r, j) in missing.items():
                by_request.setdefault(r, []).append((j, key))
            pending = list(by_request.items())
            scored = score_pairs(
                model,
                forward,
                [queries[r] for r, _ in pending],
                [[documents[r][j] for j, _ in items] for r, items in pending],
                long_documents,
                batch_size,
                self.window_overlap,
            )
            for (_, items), result in zip(pending, scored):
                for (_, key), raw, truncated, window in zip(items, result.raw, result.truncated, result.window):
                    found[key] = (float(raw), bool(truncated), int(window))
                    self._cache.put(key, found[key])
        return [
            PairScores(
                np.array([found[k][0] for k in row], dtype=np.float32),
                np.array([found[k][1] for k in row], dtype=bool),
                np.array([found[k][2] for k in row], dtype=np.int64),
            )
            for row in keys
        ]
