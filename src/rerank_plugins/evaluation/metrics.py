"""Ranking metrics as pure functions of a ranked id list and the relevant ids.

Binary relevance for hit/recall/MRR; graded relevance (the qrels value) for nDCG, as BEIR computes it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def hit_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return float(any(doc in relevant for doc in ranked[:k]))


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for doc in ranked[:k] if doc in relevant) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranked[:k], 1):
        if doc in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], 1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def drop_self_hits(ranked: Sequence[str], query_id: str) -> list[str]:
    """BEIR's rule: a retrieved document whose id equals the query id is not counted (ArguAna-style sets)."""
    return [doc for doc in ranked if doc != query_id]


def judged(ranked: Sequence[str], relevant: Mapping[str, int], query_id: str) -> tuple[list[str], dict[str, int]]:
    """What every metric here is computed on: the ranking without self-hits, and the positively judged documents."""
    return drop_self_hits(ranked, query_id), {d: r for d, r in relevant.items() if r > 0}


def ndcg_at_10_per_query(
    rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str]
) -> list[float]:
    """nDCG@10 of each query, judged as :func:`compute_metrics` judges it (for paired comparisons)."""
    return [ndcg_at_k(*judged(rankings.get(q, []), qrels[q], q), 10) for q in query_ids]


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean of paired per-query gains; infinite below two values (nothing to judge by)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf


def compute_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = (1, 3, 5, 10),
    recall_ks: Sequence[int] = (),
) -> dict[str, float]:
    """Mean metrics over the queries in ``qrels``: ``hit@k``, ``recall@k``, ``mrr@10``, ``ndcg@10``.

    A query missing from ``rankings`` counts as retrieving nothing.
    """
    names: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        names.setdefault(name, []).append(value)

    for query_id, relevant in qrels.items():
        ranked, relevant = judged(rankings.get(query_id, []), relevant, query_id)
        for k in ks:
            add(f"hit@{k}", hit_at_k(ranked, relevant, k))
        for k in sorted({*ks, *recall_ks}):
            add(f"recall@{k}", recall_at_k(ranked, relevant, k))
        add("mrr@10", mrr_at_k(ranked, relevant, 10))
        add("ndcg@10", ndcg_at_k(ranked, relevant, 10))
    return {name: sum(values) / len(values) for name, values in names.items()} if names else {}
