"""Two-stage evaluation: the first stage alone and after reranking, at the same cut-offs, with latency.

The reranked list is the first stage's top-``first_stage_k`` reordered, so recall@first_stage_k is the same
for both: it is the ceiling no reranker can pass, and the report shows it next to the gains.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from rerank_plugins.evaluation.metrics import compute_metrics
from rerank_plugins.index.store import FaissIndex
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training.data import RetrievalDataset

QUERIES_PER_RERANK_CALL = 16


def evaluate_two_stage(
    dataset: RetrievalDataset,
    index: FaissIndex,
    reranker: CrossEncoderBackend | None = None,
    *,
    first_stage_k: int = 30,
    ks: Sequence[int] = (1, 3, 5, 10),
    batch_size: int = 32,
    long_documents: str = "truncate",
    show_progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``dataset``'s labelled queries; ``index`` must hold its corpus keyed by corpus id."""
    query_ids = dataset.labelled_queries
    if not query_ids:
        raise ValueError(f"{dataset.name} has no labelled queries to evaluate")
    texts = [dataset.queries[q] for q in query_ids]
    recall_ks = tuple(sorted({first_stage_k, *ks}))

    start = time.perf_counter()
    hits = index.search_batch(texts, first_stage_k)
    first_seconds = time.perf_counter() - start
    first = {q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "num_queries": len(query_ids),
        "corpus_size": len(index),
        "first_stage_k": first_stage_k,
        "models": {"bi_encoder": index.embedder.model_name, "cross_encoder": reranker.model_name if reranker else None},
        "metrics": {"first_stage": compute_metrics(first, dataset.qrels, ks, recall_ks)},
        "latency": {"first_stage": _latency(first_seconds, len(query_ids))},
    }
    if reranker is None:
        return report

    reranked: dict[str, list[str]] = {}
    pairs = sum(len(row) for row in hits)
    start = time.perf_counter()
    with tqdm(total=len(query_ids), desc="Reranking", unit="query", disable=not show_progress) as progress:
        for offset in range(0, len(query_ids), QUERIES_PER_RERANK_CALL):
            chunk = slice(offset, offset + QUERIES_PER_RERANK_CALL)
            requests = [(text, [h.document.text for h in row]) for text, row in zip(texts[chunk], hits[chunk])]
            ranked = reranker.rank_batch(requests, batch_size=batch_size, long_documents=long_documents)
            for query_id, row, items in zip(query_ids[chunk], hits[chunk], ranked):
                reranked[query_id] = [row[item.index].document.id for item in items]
            progress.update(len(requests))
    rerank_seconds = time.perf_counter() - start
    report["metrics"]["reranked"] = compute_metrics(reranked, dataset.qrels, ks, recall_ks)
    report["latency"]["rerank"] = {**_latency(rerank_seconds, len(query_ids)), "pairs_per_s": pairs / rerank_seconds}
    return report


def _latency(seconds: float, queries: int) -> dict[str, float]:
    return {"total_s": seconds, "ms_per_query": 1000 * seconds / queries, "queries_per_s": queries / seconds}
