"""One call from a data set to a trained model: hold out queries, mine negatives, train, save.

The CLI and the quickstart use these; call them directly for the same behaviour from Python.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from rerank_plugins.fusion import TRAINING_INFO
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.training._loop import TrainingLog
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE, CrossEncoderTrainingConfig, train_cross_encoder
from rerank_plugins.training.data import RetrievalDataset
from rerank_plugins.training.mining import corpus_index, mine_hard_negatives

logger = logging.getLogger(__name__)


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
    miner = get_bi_encoder(bi_encoder)
    index = corpus_index(dataset, miner)
    # A pool as deep as the mining depth, so each epoch draws different negatives; the held-out check keeps
    # num_negatives per query (its pools are fixed, so epochs compare like with like).
    pool_size = max(mining_depth, config.num_negatives)
    mined = mine_hard_negatives(dataset, index, num_negatives=pool_size, depth=mining_depth, strategy=negatives)
    path, log = train_cross_encoder(
        train, mined, output_dir, base_model=base_model, config=config,
        eval_data=check,
        eval_negatives={q: mined[q][: config.num_negatives] for q in check.queries} if check else None,
    )
    if check is not None:
        record_fusion_weight(path, check, index, depth=mining_depth)
    return path, log


def record_fusion_weight(model_path: Path, held_out: RetrievalDataset, index, *, depth: int = 30) -> dict:
    """Tune the reranker/first-stage fusion weight on ``held_out`` and store it with the model (``fusion_weight="auto"``)."""
    from rerank_plugins.evaluation.evaluate import first_stage, rerank_scores, tune_fusion_weight
    from rerank_plugins.models.cross_encoder import CrossEncoderBackend

    query_ids, hits, _ = first_stage(held_out, index, depth)
    scores, _ = rerank_scores(held_out, query_ids, hits, CrossEncoderBackend(model_path), show_progress=False)
    fusion = {**tune_fusion_weight(held_out, query_ids, hits, scores), "first_stage": index.embedder.model_name,
              "depth": depth}
    info_path = Path(model_path) / TRAINING_INFO
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info["fusion"] = fusion
    info_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    with (Path(model_path) / "README.md").open("a", encoding="utf-8") as card:
        card.write(
            f"\n## Fusion with the first stage\nOn {fusion['queries']} held-out queries (first stage `{fusion['first_stage']}`, "
            f"top-{depth}), nDCG@10 by weight a in a*z(rerank)+(1-a)*z(first stage): "
            + ", ".join(f"{w}: {v:.4f}" for w, v in fusion["ndcg@10_by_weight"].items())
            + f". Best: a = {fusion['weight']} (used by `fusion_weight=\"auto\"`).\n"
        )
    logger.info("fusion weight %.2f on held-out queries", fusion["weight"])
    return fusion


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
    mined = mine_hard_negatives(dataset, corpus_index(dataset, get_bi_encoder(base_model)), num_negatives=count,
                                depth=mining_depth)
    return train_bi_encoder(
        train, output_dir, base_model=base_model, config=config, hard_negatives=mined,
        eval_data=check, eval_negatives={q: mined[q] for q in check.queries} if check else None,
    )
