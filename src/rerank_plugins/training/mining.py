"""Negatives for training: hard ones from the bi-encoder's top-k, or random ones (the weak baseline)."""

from __future__ import annotations

import random
from typing import Any, Literal

from rerank_plugins.data import RetrievalDataset
from rerank_plugins.first_stage import DocumentStore, FirstStage, build_first_stage
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.schema import Document


def mine_hard_negatives(
    dataset: RetrievalDataset,
    stage: FirstStage,
    *,
    num_negatives: int = 7,
    depth: int = 30,
    strategy: Literal["hard", "random"] = "hard",
    seed: int = 0,
) -> dict[str, list[str]]:
    """Per labelled query, ``num_negatives`` document ids that are not among its known positives.

    ``hard``: sampled from the first stage's top-``depth`` for the query (the documents it confuses with the
    answer). ``random``: sampled from the whole corpus. ``stage`` must hold ``dataset.corpus`` with the corpus
    ids as document ids.
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
    hits = stage.search_batch([dataset.queries[q] for q in query_ids], depth)
    for query_id, query_hits in zip(query_ids, hits):
        known = set(dataset.positives(query_id))
        pool = [h.document.id for h in query_hits if h.document.id not in known]
        negatives[query_id] = rng.sample(pool, min(num_negatives, len(pool)))
    return negatives


def corpus_first_stage(
    dataset: RetrievalDataset,
    embedder: BiEncoderBackend | str | None = None,
    kind: str = "dense",
    *,
    analyzer: Any = "auto",
    **dense_options: Any,
) -> DocumentStore:
    """A first stage of ``kind`` (dense, lexical or hybrid) over ``dataset.corpus`` keyed by corpus id.

    ``embedder`` may be a model id or directory; it is loaded only when ``kind`` needs one (not for lexical).
    """
    if kind == "lexical":
        embedder = None
    elif isinstance(embedder, str):
        embedder = get_bi_encoder(embedder)
    documents = [Document(text, doc_id) for doc_id, text in dataset.corpus.items()]
    return build_first_stage(kind, documents, embedder, analyzer=analyzer, dense_options=dense_options)
