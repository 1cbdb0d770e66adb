"""Scoring (query, document) pairs with a cross-encoder: tokenization, length-sorted batches, long-document windows.

Our own loop over the Hugging Face model rather than ``CrossEncoder.predict``, so that we control what matters
for reranking: only the document is ever truncated (never the query), truncation is detected and reported,
long documents can be scored in overlapping windows (max over windows), many queries share one length-sorted
pass, and any runtime (torch, ONNX) plugs in as a ``forward`` function over numpy features.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rerank_plugins._validation import check_positive_int, select_top
from rerank_plugins.schema import RankedItem, ScoreScale

logger = logging.getLogger(__name__)

LongDocuments = Literal["auto", "truncate", "window", "matched_window"]
LONG_DOCUMENT_POLICIES: tuple[str, ...] = ("auto", "truncate", "window", "matched_window")
"""``auto``: what the reranker was trained on (its training record; ``truncate`` for a model without one)."""
MIN_DOCUMENT_TOKENS = 16
"""A query must leave at least this many tokens of the max length for the document."""
WINDOW_OVERLAP = 64
"""Tokens shared by consecutive windows of a long document (at most half the room left for the document)."""
PROGRESS_BAR_MIN_PAIRS = 2048

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]
"""A runtime's forward pass: tokenizer features (numpy) -> logits (numpy, one row per pair)."""


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


def score_pairs(
    model: Any,
    forward: Forward,
    queries: list[str],
    documents: list[list[str]],
    long_documents: str,
    batch_size: int,
    window_overlap: int = WINDOW_OVERLAP,
) -> list[PairScores]:
    """Raw scores of each query's documents with ``model``'s tokenizer and ``forward`` (the caller holds the lock).

    Tokenizes once, sorts all chunks by length (longest first) and pads each batch only to its own longest;
    with ``long_documents="window"`` every window of a long document is scored and the best one kept.
    """
    tokenizer = model.tokenizer
    max_length = max_length_of(model)
    longest_query = _check_query_lengths(tokenizer, queries, max_length)

    flat_queries = [q for q, docs in zip(queries, documents) for _ in docs]
    flat_docs = [d for docs in documents for d in docs]
    matched = None
    if long_documents == "matched_window":
        matched = matched_windows(tokenizer, flat_queries, flat_docs, max_length, window_overlap)
        flat_docs = [text for text, _ in matched]
    windowed = long_documents == "window"
    encoded = tokenizer(
        flat_queries,
        flat_docs,
        truncation="only_second",
        max_length=max_length,
        stride=_stride(tokenizer, window_overlap, max_length, longest_query) if windowed else 0,
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

    raw, window = _aggregate(chunk_scores, chunk_owner, chunk_ids, len(flat_docs), windowed)
    if matched is not None:
        window = np.fromiter((index for _, index in matched), dtype=np.int64, count=len(matched))
        truncated = truncated | (window >= 0)
    if np.isnan(raw).any():
        logger.warning("%d scores were NaN and are ranked last (-inf)", int(np.isnan(raw).sum()))
        raw = np.where(np.isnan(raw), -np.inf, raw).astype(np.float32)
    if truncated.any() and not windowed:
        logger.debug(
            "%d of %d documents truncated to fit max_length=%d", int(truncated.sum()), len(flat_docs), max_length
        )

    out, start = [], 0
    for docs in documents:
        end = start + len(docs)
        out.append(PairScores(raw[start:end], truncated[start:end], window[start:end]))
        start = end
    return out


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


def max_length_of(model: Any) -> int:
    """Longest (query, document) pair in tokens the loaded CrossEncoder accepts, special tokens included."""
    length = model.max_seq_length or model.tokenizer.model_max_length
    config_limit = getattr(model.model.config, "max_position_embeddings", None) or length
    return int(min(length, config_limit))


def torch_forward(hf_model: Any):
    """A forward function over numpy features returning the model's first output as numpy fp32 (inference mode):
    a classifier's logits, an encoder's hidden states."""

    def forward(features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(hf_model.device) for k, v in features.items()}
            return hf_model(**tensors)[0].float().cpu().numpy()

    return forward


def fit_query(tokenizer: Any, query: str, budget: int) -> str:
    """``query`` cut word by word to at most ``budget`` tokens (check sets only; user queries are never cut)."""
    words = query.split()
    while len(words) > 1 and len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]) > budget:
        words.pop()
    return " ".join(words)


def matched_windows(
    tokenizer: Any, queries: list[str], documents: list[str], max_length: int, overlap: int = WINDOW_OVERLAP
) -> list[tuple[str, int]]:
    """Per (query, document) pair: the window of the document (as ``long_documents="window"`` cuts them) sharing the
    most distinct tokens with the query, and its index (-1: the whole document fits). Ties go to the earlier window,
    so a document with no query token reads as truncated. Training on it teaches the window that holds the evidence,
    not the first one (on KorQuAD at 192 tokens, 30% of answers start beyond the first window)."""
    query_ids = tokenizer(queries, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(documents, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    special = tokenizer.num_special_tokens_to_add(pair=True)
    out = []
    for wanted_ids, document, ids, offsets in zip(
        query_ids, documents, encoded["input_ids"], encoded["offset_mapping"]
    ):
        room = max_length - len(wanted_ids) - special
        if len(ids) <= room or room <= 0:
            out.append((document, -1))
            continue
        step = room - max(0, min(overlap, room // 2))
        wanted = set(wanted_ids)
        starts = range(0, max(1, len(ids) - room + step), step)
        best = max(range(len(starts)), key=lambda w: (len(wanted.intersection(ids[starts[w] : starts[w] + room])), -w))
        start = starts[best]
        out.append((document[offsets[start][0] : offsets[min(start + room, len(ids)) - 1][1]], best))
    return out


def _stride(tokenizer: Any, overlap: int, max_length: int, longest_query: int) -> int:
    """Window overlap in tokens: ``overlap``, but at most half of the room left for the document."""
    room = max_length - longest_query - tokenizer.num_special_tokens_to_add(pair=True)
    return max(0, min(overlap, room // 2))


def query_room(tokenizer: Any, max_length: int) -> int:
    """Most query tokens that still leave ``MIN_DOCUMENT_TOKENS`` for the document in a pair of ``max_length``."""
    return max_length - tokenizer.num_special_tokens_to_add(pair=True) - MIN_DOCUMENT_TOKENS


def _check_query_lengths(tokenizer: Any, queries: list[str], max_length: int) -> int:
    """Raise if a query leaves no room for documents; return the longest query's length in tokens."""
    unique = list(dict.fromkeys(queries))
    lengths = tokenizer(unique, add_special_tokens=False, return_length=True)["length"]
    budget = query_room(tokenizer, max_length)
    for query, length in zip(unique, lengths):
        if length > budget:
            raise ValueError(
                f"query {query[:40]!r}... is {length} tokens long; with max_length={max_length} it leaves fewer than "
                f"{MIN_DOCUMENT_TOKENS} tokens for the document. Shorten the query (queries are never truncated)."
            )
    return int(max(lengths))
