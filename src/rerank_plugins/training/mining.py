"""Negatives for training: hard ones from the bi-encoder's top-k, or random ones (the weak baseline)."""

from __future__ import annotations

import random
from typing import Literal

from rerank_plugins.index.store import FaissIndex
from rerank_plugins.training.data import RetrievalDataset


def mine_hard_negatives(
    dataset: RetrievalDataset,
    index: FaissIndex,
    *,
    num_negatives: int = 7,
    depth: int = 30,
    strategy: Literal["hard", "random"] = "hard",
    seed: int = 0,
) -> dict[str, list[str]]:
    """Per labelled query, ``num_negatives`` document ids that are not among its known positives.

    ``hard``: sampled from the index's top-``depth`` for the query (the documents the first stage confuses
    with the answer). ``random``: sampled from the whole corpus. ``index`` must hold ``dataset.corpus``
    with the corpus ids as document ids.
    """
    if strategy not in ("hard", "random"):
        raise ValueError(f"strategy must be 'hard' or 'random', got {strategy!r}")
    rng = random.Random(seed)
    query_ids = dataset.labelled_queries
    negatives: dict[str, list[str]] = {}
    if strategy == "random":
        doc_ids = list(dataset.corpus)
        for query_id in query_ids:
            known = set(dataset.positives(query_id))
            pool = [d for d in rng.sample(doc_ids, min(len(doc_ids), num_negatives + len(known))) if d not in known]
            negatives[query_id] = pool[:num_negatives]
        return negatives
    hits = index.search_batch([dataset.queries[q] for q in query_ids], depth)
    for query_id, query_hits in zip(query_ids, hits):
        known = set(dataset.positives(query_id))
        pool = [h.document.id for h in query_hits if h.document.id not in known]
        negatives[query_id] = rng.sample(pool, min(num_negatives, len(pool)))
    return negatives


def corpus_index(dataset: RetrievalDataset, embedder, **options) -> FaissIndex:
    """A flat FAISS index over ``dataset.corpus`` keyed by corpus id."""
    ids = list(dataset.corpus)
    return FaissIndex.from_texts([dataset.corpus[d] for d in ids], embedder, ids=ids, **options)
