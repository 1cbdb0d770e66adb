"""Train both stages on your own data: loaders, hard-negative mining, bi-encoder and cross-encoder training."""

from rerank_plugins.training.data import (
    DataError,
    RetrievalDataset,
    load_beir,
    load_dataset,
    load_pairs,
    load_squad,
)
from rerank_plugins.training.mining import mine_hard_negatives

__all__ = [
    "DataError",
    "RetrievalDataset",
    "load_beir",
    "load_dataset",
    "load_pairs",
    "load_squad",
    "mine_hard_negatives",
]
