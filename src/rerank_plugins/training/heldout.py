"""A cheap held-out check during training: rank each query's positives among its mined negatives."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rerank_plugins.data import RetrievalDataset
from rerank_plugins.evaluation.metrics import mrr_at_k


def pool_mrr(
    score: Callable[[str, Sequence[str]], np.ndarray],
    dataset: RetrievalDataset,
    negatives: dict[str, list[str]],
    max_queries: int = 64,
) -> float:
    """Mean MRR@10 of the positives when each query's pool (positives + negatives) is ordered by ``score``."""
    values = []
    for query_id in [q for q in dataset.labelled_queries if negatives.get(q)][:max_queries]:
        pool = list(dict.fromkeys(dataset.positives(query_id) + negatives[query_id]))
        scores = score(dataset.queries[query_id], [dataset.corpus[d] for d in pool])
        ranked = [pool[i] for i in np.argsort(-np.asarray(scores), kind="stable")]
        values.append(mrr_at_k(ranked, dict.fromkeys(dataset.positives(query_id), 1), 10))
    return float(np.mean(values)) if values else 0.0
