"""Train both stages on your own data: hard-negative mining, bi-encoder and cross-encoder training, recipes.

The data loaders live in :mod:`rerank_plugins.data`; they are re-exported here because training starts from them.
"""

from rerank_plugins.data import DataError, RetrievalDataset, from_pairs, load_beir, load_dataset, load_pairs, load_squad
from rerank_plugins.training.adapt import AdaptConfig, adapt
from rerank_plugins.training.distill import DistillationConfig, distill_cross_encoder
from rerank_plugins.training.mining import mine_hard_negatives
from rerank_plugins.training.pseudo_queries import LLMQueryGenerator, PseudoQueries, offline_pseudo_queries
from rerank_plugins.training.recipes import train_bi_encoder_on, train_cross_encoder_on

__all__ = [
    "AdaptConfig",
    "LLMQueryGenerator",
    "PseudoQueries",
    "adapt",
    "offline_pseudo_queries",
    "DataError",
    "DistillationConfig",
    "RetrievalDataset",
    "distill_cross_encoder",
    "from_pairs",
    "load_beir",
    "load_dataset",
    "load_pairs",
    "load_squad",
    "mine_hard_negatives",
    "train_bi_encoder_on",
    "train_cross_encoder_on",
]
