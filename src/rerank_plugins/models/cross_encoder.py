"""Cross-encoder backend: one relevance score per (query, document) pair.

Scoring is our own loop over the Hugging Face model rather than ``CrossEncoder.predict`` so that we
control what matters for reranking: only the document is ever truncated (never the query), truncation
is detected and reported, long documents can be scored in overlapping windows, many queries share one
length-sorted batched pass, and the score scale is explicit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rerank_plugins._validation import (
    check_non_negative_int,
    check_positive_int,
    check_query,
    check_rank_options,
    check_scale,
    check_texts,
    select_top,
)
from rerank_plugins.batching import MicroBatcher, run_grouped
from rerank_plugins.models._base import LazyModelBackend
from rerank_plugins.schema import RankedItem, ScoreScale

logger = logging.getLogger(__name__)

LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENT_POLICIES: tuple[str, ...] = ("truncate", "window")
MIN_DOCUMENT_TOKENS = 16
"""A query must leave at least this many tokens of ``max_length`` for the document."""
PROGRESS_BAR_MIN_PAIRS = 2048
DEFAULT_SCORE_CACHE_SIZE = 20_000
"""(query, document) scores remembered per backend (a few MB); 0 turns the cache off."""


@dataclass(frozen=True)
class PairScores:
    """Raw scores for one query's documents, in input order, with truncation and window details."""

    raw: np.ndarray
    truncated: np.ndarray
    window: np.ndarray  # best window per document; -1 when the document was scored whole


def apply_scale(raw: np.ndarray, scale: ScoreScale) -> np.ndarray:
    """Convert raw logits to the requested scale (see :data:`rerank_plugins.schema.ScoreScale`)."""
    if scale == "raw":
        return raw.astype(np.float32, copy=True)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-raw.astype(np.float64)))).astype(np.float32)


def check_scoring_options(long_documents: str, batch_size: int) -> None:
    if long_documents not in LONG_DOCUMENT_POLICIES:
        raise ValueError(f"long_documents must be one of {LONG_DOCUMENT_POLICIES}, got {long_documents!r}")
    check_positive_int(batch_size, "batch_size")


def select(
    details: PairScores, top_n: int | None, score_threshold: float | None, min_keep: int, scale: ScoreScale
) -> list[RankedItem]:
    """Turn one request's raw scores into its ranked result (see :meth:`CrossEncoderBackend.rank_batch`)."""
    scores = apply_scale(details.raw, scale)
    keep = select_top(scores.tolist(), top_n, score_threshold, min_keep)
    if score_threshold is not None and len(scores) and not keep:
        logger.info("score_threshold=%s removed all %d candidates", score_threshold, len(scores))
    return [
        RankedItem(
            index=i,
            score=float(scores[i]),
            truncated=bool(details.truncated[i]),
            window=None if details.window[i] < 0 else int(details.window[i]),
        )
        for i in keep
    ]


class CrossEncoderBackend(LazyModelBackend):
    """A sequence-classification cross-encoder (one logit, or two classes) behind a small API.

    Scores are raw logits unless ``scale="sigmoid"`` is asked for. Pairs longer than the model's max
    length are handled by ``long_documents``: ``"truncate"`` cuts the document only and flags it,
    ``"window"`` scores overlapping windows of ``window_overlap`` tokens and keeps the best (max).
    """

    window_overlap: int = 64
    max_pairs_per_batch: int = 512
    """Upper bound on (query, document) pairs that concurrent async requests share in one pass."""
    _batcher: MicroBatcher | None = None
    _onnx: Any = None

    def __init__(self, model: str | os.PathLike[str], *, cache_size: int = DEFAULT_SCORE_CACHE_SIZE, **options: Any) -> None:
        super().__init__(model, **options)
        self.cache_size = check_non_negative_int(cache_size, "cache_size")
        self._cache: OrderedDict[tuple[str, bytes, bytes], tuple[float, bool, int]] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    def clear_cache(self) -> None:
        with self.lock:
            self._cache.clear()

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
            from rerank_plugins.models.onnx import load_onnx

            self._onnx = load_onnx(
                path, model.model, model.tokenizer, self.runtime, check=lambda run: self._int8_agreement(model, run)
            )
        return model

    def _int8_agreement(self, model: Any, candidate: Any) -> dict[str, float]:
        """Rankings of the int8 candidate against this model in fp32 torch, on the check set."""
        from rerank_plugins.models.onnx import check_set, ranking_agreement

        requests = check_set()
        budget = _max_length(model) - model.tokenizer.num_special_tokens_to_add(pair=True) - MIN_DOCUMENT_TOKENS
        queries, documents = [_fit_query(model.tokenizer, q, budget) for q, _ in requests], [d for _, d in requests]
        reference = self._score_locked(queries, documents, "truncate", 32, _torch_forward(model.model), model)
        quantized = self._score_locked(queries, documents, "truncate", 32, candidate, model)
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
        return _max_length(self.model)

    # -- public API ------------------------------------------------------------------------------------

    def score(
        self,
        query: str,
        documents: Sequence[str],
        *,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "truncate",
        batch_size: int = 32,
    ) -> np.ndarray:
        """Scores of ``documents`` for ``query`` in input order (float32, in ``scale``)."""
        return self.score_batch([(query, documents)], scale=scale, long_documents=long_documents, batch_size=batch_size)[0]

    def score_batch(
        self,
        requests: Sequence[tuple[str, Sequence[str]]],
        *,
        scale: ScoreScale = "raw",
        long_documents: LongDocuments = "truncate",
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
        long_documents: LongDocuments = "truncate",
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
        long_documents: LongDocuments = "truncate",
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
        long_documents: LongDocuments = "truncate",
        batch_size: int = 32,
    ) -> list[RankedItem]:
        """:meth:`rank` for async callers: concurrent calls are micro-batched into shared forward passes
        run in a worker thread, so the event loop is never blocked by model work."""
        check_rank_options(top_n, score_threshold, min_keep)
        check_scale(scale)
        check_scoring_options(long_documents, batch_size)
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
        long_documents: LongDocuments = "truncate",
        batch_size: int = 32,
    ) -> list[PairScores]:
        """Raw scores with truncation/window details for every request, in one pass."""
        check_scoring_options(long_documents, batch_size)
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
            if not self.cache_size:
                return self._score_locked(queries, documents, long_documents, batch_size)
            return self._score_cached(queries, documents, long_documents, batch_size)

    def _score_cached(
        self, queries: list[str], documents: list[list[str]], long_documents: str, batch_size: int
    ) -> list[PairScores]:
        """Score only the (query, document) pairs not in the LRU cache; repeated pairs cost nothing."""
        digest = lambda text: hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()  # noqa: E731
        keys = [[(long_documents, digest(q), digest(d)) for d in docs] for q, docs in zip(queries, documents)]
        missing: dict[tuple[str, bytes, bytes], tuple[int, int]] = {}
        for r, row in enumerate(keys):
            for j, key in enumerate(row):
                if key in self._cache:
                    self._cache.move_to_end(key)
                elif key not in missing:
                    missing[key] = (r, j)
        self.cache_misses += len(missing)
        self.cache_hits += sum(map(len, keys)) - len(missing)
        if missing:
            by_request: dict[int, list[tuple[int, tuple]]] = {}
            for key, (r, j) in missing.items():
                by_request.setdefault(r, []).append((j, key))
            requests = list(by_request.items())
            scored = self._score_locked(
                [queries[r] for r, _ in requests],
                [[documents[r][j] for j, _ in items] for r, items in requests],
                long_documents,
                batch_size,
            )
            for (_, items), result in zip(requests, scored):
                for (_, key), raw, truncated, window in zip(items, result.raw, result.truncated, result.window):
                    self._cache[key] = (float(raw), bool(truncated), int(window))
        out = [
            PairScores(
                np.array([self._cache[k][0] for k in row], dtype=np.float32),
                np.array([self._cache[k][1] for k in row], dtype=bool),
                np.array([self._cache[k][2] for k in row], dtype=np.int64),
            )
            for row in keys
        ]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _score_locked(
        self,
        queries: list[str],
        documents: list[list[str]],
        long_documents: str,
        batch_size: int,
        forward: Any = None,
        model: Any = None,
    ) -> list[PairScores]:
        model = model or self.model
        forward = forward or self._onnx or _torch_forward(model.model)
        tokenizer = model.tokenizer
        max_length = _max_length(model)
        longest_query = _check_query_lengths(tokenizer, queries, max_length)

        flat_queries = [q for q, docs in zip(queries, documents) for _ in docs]
        flat_docs = [d for docs in documents for d in docs]
        windowed = long_documents == "window"
        encoded = tokenizer(
            flat_queries,
            flat_docs,
            truncation="only_second",
            max_length=max_length,
            stride=_stride(tokenizer, self.window_overlap, max_length, longest_query) if windowed else 0,
            return_overflowing_tokens=True,
            padding=False,
        )
        chunk_owner = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
        chunks_per_pair = np.bincount(chunk_owner, minlength=len(flat_docs))
        truncated = chunks_per_pair > 1
        if windowed:
            chunk_ids = np.arange(len(chunk_owner))
        else:  # keep only each pair's first chunk
            chunk_ids = np.flatnonzero(np.r_[True, chunk_owner[1:] != chunk_owner[:-1]])
        names = [n for n in tokenizer.model_input_names if n in encoded]
        lengths = np.fromiter((len(encoded["input_ids"][i]) for i in chunk_ids), dtype=np.int64, count=len(chunk_ids))
        order = chunk_ids[np.argsort(-lengths, kind="stable")]  # longest first, each batch padded to its own max

        chunk_scores = np.empty(len(chunk_owner), dtype=np.float32)
        progress = None
        if len(order) >= PROGRESS_BAR_MIN_PAIRS:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(order), desc="Reranking", unit="pair")
        for start in range(0, len(order), batch_size):
            batch_ids = order[start : start + batch_size]
            features = tokenizer.pad({n: [encoded[n][i] for i in batch_ids] for n in names}, return_tensors="np")
            logits = np.asarray(forward(dict(features)), dtype=np.float32)
            chunk_scores[batch_ids] = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
            if progress is not None:
                progress.update(len(batch_ids))
        if progress is not None:
            progress.close()

        raw, window = self._aggregate(chunk_scores, chunk_owner, chunk_ids, len(flat_docs), windowed)
        if np.isnan(raw).any():
            logger.warning("%d scores were NaN and are ranked last (-inf)", int(np.isnan(raw).sum()))
            raw = np.where(np.isnan(raw), -np.inf, raw).astype(np.float32)
        if truncated.any() and not windowed:
            logger.debug("%d of %d documents truncated to fit max_length=%d", int(truncated.sum()), len(flat_docs), max_length)

        out, start = [], 0
        for docs in documents:
            end = start + len(docs)
            out.append(PairScores(raw[start:end], truncated[start:end], window[start:end]))
            start = end
        return out

    @staticmethod
    def _aggregate(
        chunk_scores: np.ndarray, chunk_owner: np.ndarray, chunk_ids: np.ndarray, n_pairs: int, windowed: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the max over its scored chunks, and which window gave it (-1 if only one chunk)."""
        raw = np.full(n_pairs, -np.inf, dtype=np.float32)
        best = np.full(n_pairs, -1, dtype=np.int64)
        first_chunk = np.full(n_pairs, -1, dtype=np.int64)
        for chunk in chunk_ids:
            pair = chunk_owner[chunk]
            if first_chunk[pair] < 0:
                first_chunk[pair] = chunk
            score = chunk_scores[chunk]
            if best[pair] < 0 or score > raw[pair] or (math.isnan(raw[pair]) and not math.isnan(score)):
                raw[pair] = score
                best[pair] = chunk
        window = best - first_chunk
        if windowed:
            counts = np.bincount(chunk_owner, minlength=n_pairs)
            window[counts <= 1] = -1
        else:
            window[:] = -1
        return raw, window


def _max_length(model: Any) -> int:
    length = model.max_seq_length or model.tokenizer.model_max_length
    config_limit = getattr(model.model.config, "max_position_embeddings", None) or length
    return int(min(length, config_limit))


def _torch_forward(hf_model: Any):
    """A forward function over numpy features returning numpy logits (fp32, inference mode)."""

    def forward(features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(hf_model.device) for k, v in features.items()}
            return hf_model(**tensors).logits.float().cpu().numpy()

    return forward


def _fit_query(tokenizer: Any, query: str, budget: int) -> str:
    """``query`` cut word by word until it is at most ``budget`` tokens (check sets only; user queries are never cut)."""
    words = query.split()
    while len(words) > 1 and len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) > budget:
        words.pop()
    return " ".join(words)


def _stride(tokenizer: Any, overlap: int, max_length: int, longest_query: int) -> int:
    """Window overlap in tokens: ``overlap``, but at most half of the room left for the document."""
    room = max_length - longest_query - tokenizer.num_special_tokens_to_add(pair=True)
    return max(0, min(overlap, room // 2))


def _check_query_lengths(tokenizer: Any, queries: list[str], max_length: int) -> int:
    """Raise if a query leaves no room for documents; return the longest query's length in tokens."""
    unique = list(dict.fromkeys(queries))
    lengths = tokenizer(unique, add_special_tokens=False, return_length=True)["length"]
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True) - MIN_DOCUMENT_TOKENS
    for query, length in zip(unique, lengths):
        if length > budget:
            raise ValueError(
                f"query {query[:40]!r}... is {length} tokens long; with max_length={max_length} it leaves fewer than "
                f"{MIN_DOCUMENT_TOKENS} tokens for the document. Shorten the query (queries are never truncated)."
            )
    return int(max(lengths))
