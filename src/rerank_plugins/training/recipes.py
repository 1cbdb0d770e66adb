"""One call from a data set to a trained model: hold out queries, gather negatives, train, save.

The CLI and the quickstart use these; call them directly for the same behaviour from Python.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from rerank_plugins._files import write_json
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.evaluation.evaluate import first_stage, rerank_scores, tune_fusion_weight
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.fusion import TRAINING_INFO
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training._loop import TrainingLog
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE, CrossEncoderTrainingConfig, train_cross_encoder
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives

logger = logging.getLogger(__name__)

NEGATIVE_KINDS: tuple[str, ...] = ("given", "hard", "random", "given+hard")
"""``given``: the data's own negatives (pair files' ``negative`` column); ``hard``: mined from the first stage's
top-k; ``random``: random documents (the weak baseline); ``given+hard``: the given ones first, then mined."""


def default_negatives(dataset: RetrievalDataset) -> str:
    """``given+hard`` when the data brings negatives of its own, else ``hard``."""
    return "given+hard" if dataset.negatives else "hard"


def gather_negatives(
    dataset: RetrievalDataset, stage: FirstStage | None, kind: str, *, pool_size: int, depth: int
) -> dict[str, list[str]]:
    """Per labelled query, up to ``pool_size`` negative document ids of ``kind`` (see :data:`NEGATIVE_KINDS`)."""
    if kind not in NEGATIVE_KINDS:
        raise ValueError(f"negatives must be one of {NEGATIVE_KINDS}, got {kind!r}")
    if kind == "given":
        if not dataset.negatives:
            raise ValueError(f"negatives='given' but {dataset.name} has no negatives of its own")
        return {q: list(dataset.negatives.get(q, [])) for q in dataset.labelled_queries}
    mined = mine_hard_negatives(
        dataset, stage, num_negatives=pool_size, depth=depth, strategy="random" if kind == "random" else "hard"
    )
    if kind != "given+hard":
        return mined
    return {
        q: list(dict.fromkeys([*dataset.negatives.get(q, []), *mined.get(q, [])])) for q in dataset.labelled_queries
    }


def train_cross_encoder_on(
    dataset: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = DEFAULT_BACKBONE,
    bi_encoder: str = DEFAULT_BACKBONE,
    first_stage: str | FirstStage = "dense",
    analyzer: Any = "auto",
    negatives: str | None = None,
    mining_depth: int = 30,
    held_out: float = 0.1,
    fusion_depth: int | None = None,
    config: CrossEncoderTrainingConfig | None = None,
) -> tuple[Path, TrainingLog]:
    """Train a reranker on ``dataset`` with negatives of kind ``negatives`` (default: :func:`default_negatives`).

    Hard negatives come from the top-``mining_depth`` of a ``first_stage`` (dense over ``bi_encoder``, lexical,
    or hybrid over the corpus; or one already built over it, keyed by corpus id); the same first stage then tunes
    the fusion weight on the held-out queries, over its top-``fusion_depth`` (default: ``mining_depth``; use the
    depth the reranker will rerank).
    """
    config = config or CrossEncoderTrainingConfig()
    kind = negatives or default_negatives(dataset)
    train, check = dataset.split(held_out) if held_out else (dataset, None)
    stage = (
        first_stage
        if isinstance(first_stage, FirstStage)
        else corpus_first_stage(dataset, bi_encoder, first_stage, analyzer=analyzer)
    )
    # A pool as deep as the mining depth, so each epoch draws different negatives; the held-out check keeps
    # num_negatives per query (its pools are fixed, so epochs compare like with like).
    pool_size = max(mining_depth, config.num_negatives)
    pools = gather_negatives(dataset, stage, kind, pool_size=pool_size, depth=mining_depth)
    path, log = train_cross_encoder(
        train,
        pools,
        output_dir,
        base_model=base_model,
        config=config,
        eval_data=check,
        eval_negatives={q: pools[q][: config.num_negatives] for q in check.queries} if check else None,
    )
    record_training_info(path, "negatives", {"kind": kind, "first_stage": stage.describe(), "depth": mining_depth})
    if check is not None:
        record_fusion_weight(path, check, stage, depth=fusion_depth or mining_depth)
    return path, log


def record_fusion_weight(
    model_path: Path, held_out: RetrievalDataset, stage: FirstStage, *, depth: int = 30
) -> dict[str, Any]:
    """Tune the reranker/first-stage fusion weight on ``held_out``; store it with the model (``"auto"`` reads it)."""

    query_ids, hits, _ = first_stage(held_out, stage, depth)
    scores, _ = rerank_scores(held_out, query_ids, hits, CrossEncoderBackend(model_path), show_progress=False)
    fusion = {**tune_fusion_weight(held_out, query_ids, hits, scores), "first_stage": stage.describe(), "depth": depth}
    record_training_info(model_path, "fusion", fusion)
    with (Path(model_path) / "README.md").open("a", encoding="utf-8") as card:
        card.write(
            f"\n## Fusion with the first stage\nOn {fusion['queries']} held-out queries (first stage "
            f"`{json.dumps(fusion['first_stage'])}`, top-{depth}), nDCG@10 by weight a in "
            "a*z(rerank)+(1-a)*z(first stage): "
            + ", ".join(f"{w}: {v:.4f}" for w, v in fusion["ndcg@10_by_weight"].items())
            + f'. Best: a = {fusion["weight"]} (used by `fusion_weight="auto"`).\n'
        )
    logger.info("fusion weight %.2f on held-out queries", fusion["weight"])
    return fusion


def train_bi_encoder_on(
    dataset: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = DEFAULT_BACKBONE,
    first_stage: str = "dense",
    analyzer: Any = "auto",
    negatives: str | None = None,
    held_out: float = 0.1,
    mining_depth: int = 30,
    config: BiEncoderTrainingConfig | None = None,
) -> tuple[Path, TrainingLog]:
    """Fine-tune a bi-encoder on ``dataset``; hard negatives are mined by ``first_stage`` (dense: the base model)."""
    config = config or BiEncoderTrainingConfig()
    kind = negatives or default_negatives(dataset)
    train, check = dataset.split(held_out) if held_out else (dataset, None)
    stage = corpus_first_stage(dataset, base_model, first_stage, analyzer=analyzer)
    pools = gather_negatives(
        dataset, stage, kind, pool_size=max(config.hard_negatives_per_query, 3), depth=mining_depth
    )
    path, log = train_bi_encoder(
        train,
        output_dir,
        base_model=base_model,
        config=config,
        hard_negatives=pools,
        eval_data=check,
        eval_negatives={q: pools[q] for q in check.queries} if check else None,
    )
    record_training_info(path, "negatives", {"kind": kind, "first_stage": stage.describe(), "depth": mining_depth})
    return path, log


def record_training_info(model_path: str | os.PathLike[str], key: str, value: Any) -> None:
    """Add ``key`` to the training record saved with the model."""
    info_path = Path(model_path) / TRAINING_INFO
    info = json.loads(info_path.read_text(encoding="utf-8"))
    info[key] = value
    write_json(info_path, info, indent=2)
