"""One call from a data set to a trained model: hold out queries, mine negatives, train, save.

The CLI and the quickstart use these; call them directly for the same behaviour from Python.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.training._loop import TrainingLog
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE, CrossEncoderTrainingConfig, train_cross_encoder
from rerank_plugins.training.data import RetrievalDataset
from rerank_plugins.training.mining import corpus_index, mine_hard_negatives

logger = logging.getLogger(__name__)


def _negatives(dataset: RetrievalDataset, miner: BiEncoderBackend, count: int, strategy: str, depth: int) -> dict[str, list[str]]:
    index = corpus_index(dataset, miner) if strategy == "hard" else None
    return mine_hard_negatives(dataset, index, num_negatives=count, depth=depth, strategy=strategy)  # type: ignore[arg-type]


def train_cross_encoder_on(
    dataset: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = DEFAULT_BACKBONE,
    bi_encoder: str = DEFAULT_BACKBONE,
    negatives: str = "hard",
    mining_depth: int = 30,
    held_out: float = 0.1,
    config: CrossEncoderTrainingConfig | None = None,
) -> tuple[Path, TrainingLog]:
    """Train a reranker on ``dataset``: negatives mined from ``bi_encoder``'s top-``mining_depth`` (or random)."""
    config = config or CrossEncoderTrainingConfig()
    train, check = dataset.split(held_out) if held_out else (dataset, None)
    mined = _negatives(dataset, get_bi_encoder(bi_encoder), config.num_negatives, negatives, mining_depth)
    return train_cross_encoder(
        train, mined, output_dir, base_model=base_model, config=config,
        eval_data=check, eval_negatives={q: mined[q] for q in check.queries} if check else None,
    )


def train_bi_encoder_on(
    dataset: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = DEFAULT_BACKBONE,
    held_out: float = 0.1,
    mining_depth: int = 30,
    config: BiEncoderTrainingConfig | None = None,
) -> tuple[Path, TrainingLog]:
    """Fine-tune a bi-encoder on ``dataset``, with hard negatives mined by the base model itself."""
    config = config or BiEncoderTrainingConfig()
    train, check = dataset.split(held_out) if held_out else (dataset, None)
    count = max(config.hard_negatives_per_query, 3)
    mined = _negatives(dataset, get_bi_encoder(base_model), count, "hard", mining_depth)
    return train_bi_encoder(
        train, output_dir, base_model=base_model, config=config, hard_negatives=mined,
        eval_data=check, eval_negatives={q: mined[q] for q in check.queries} if check else None,
    )
