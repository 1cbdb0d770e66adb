"""Adapt both stages to a corpus without labels, and keep only what measurably helps.

Pseudo-queries (offline or from an LLM), optionally mixed with labelled queries, are split into training and
held-out queries. The bi-encoder is fine-tuned and the reranker trained on hard negatives from the first stage;
then a guard compares each adapted model with its starting point on the held-out queries. An adapted
bi-encoder is kept only if the first stage built on it beats the base one by more than one standard error of the
per-query gains; the reranker is kept only if fusing it with the first stage does (the fusion weight is tuned
under the same rule). What is refused is replaced by the base configuration, so adapting can never leave a user
worse off than not adapting, on their own held-out data.

Output (a contract): ``DIR/bi-encoder/`` and ``DIR/cross-encoder/`` (each loads in the adapters, the CLI and
sentence-transformers) and ``DIR/report.{json,md,png}``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins.data import RetrievalDataset
from rerank_plugins.evaluation.evaluate import evaluate_two_stage, first_stage, tune_hybrid_weight
from rerank_plugins.evaluation.metrics import ndcg_at_10_per_query, standard_error
from rerank_plugins.evaluation.report import write_report
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.registry import forget
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import (
    DEFAULT_BACKBONE,
    CrossEncoderTrainingConfig,
    train_cross_encoder,
    without_queries_too_long,
)
from rerank_plugins.training.mining import corpus_first_stage
from rerank_plugins.training.pseudo_queries import PseudoQueries
from rerank_plugins.training.recipes import gather_negatives, record_fusion_weight, record_training_info

logger = logging.getLogger(__name__)

MAX_HELD_OUT_QUERIES = 500
HYBRID_TUNING_QUERIES = 300


@dataclass
class AdaptConfig:
    """``time_budget_s`` covers training only (``bi_encoder_share`` of it for the bi-encoder); building and
    evaluating first stages come on top. ``held_out``: the fraction of queries kept for the guard (at most
    :data:`MAX_HELD_OUT_QUERIES`)."""

    first_stage: str = "hybrid"
    analyzer: Any = "auto"
    base_bi_encoder: str = DEFAULT_BACKBONE
    base_cross_encoder: str = DEFAULT_BACKBONE
    held_out: float = 0.1
    time_budget_s: float | None = 600.0
    bi_encoder_share: float = 0.4
    mining_depth: int = 30
    first_stage_k: int = 30
    bi_encoder: BiEncoderTrainingConfig = field(default_factory=BiEncoderTrainingConfig)
    cross_encoder: CrossEncoderTrainingConfig = field(
        default_factory=lambda: CrossEncoderTrainingConfig(max_length=128)
    )

    def __post_init__(self) -> None:
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out must be between 0 and 1, got {self.held_out}")
        if not 0 <= self.bi_encoder_share < 1:
            raise ValueError(f"bi_encoder_share must be in [0, 1), got {self.bi_encoder_share}")


def combine(pseudo: RetrievalDataset, labelled: RetrievalDataset | None) -> RetrievalDataset:
    """Pseudo-queries and labelled queries in one data set (labelled ones win an id clash; same corpus ids)."""
    if labelled is None:
        return pseudo
    unknown = sorted({d for rel in labelled.qrels.values() for d in rel if d not in pseudo.corpus})
    if unknown:
        raise ValueError(f"{len(unknown)} labelled positives are not in the corpus: {unknown[:5]}")
    queries = {**pseudo.queries, **{f"labelled:{q}": t for q, t in labelled.queries.items()}}
    qrels = {**pseudo.qrels, **{f"labelled:{q}": rel for q, rel in labelled.qrels.items()}}
    negatives = {f"labelled:{q}": negs for q, negs in labelled.negatives.items()}
    return RetrievalDataset(pseudo.corpus, queries, qrels, negatives, name=f"{pseudo.name} + {labelled.name}")


def _split(dataset: RetrievalDataset, fraction: float, seed: int = 0) -> tuple[RetrievalDataset, RetrievalDataset]:
    ids = sorted(dataset.labelled_queries)
    if len(ids) < 2:
        raise ValueError(f"{dataset.name}: {len(ids)} queries; adapting needs at least 2 (some are held out)")
    random.Random(seed).shuffle(ids)
    cut = min(max(1, round(len(ids) * fraction)), MAX_HELD_OUT_QUERIES, len(ids) - 1)
    return dataset.subset(ids[cut:], f"{dataset.name}[train]"), dataset.subset(ids[:cut], f"{dataset.name}[held-out]")


def _fit_reranker(dataset: RetrievalDataset, config: AdaptConfig) -> tuple[RetrievalDataset, int]:
    """Drop queries too long for the reranker's max length (a long Korean sentence can be hundreds of tokens);
    returns the data set and how many were dropped (reported, never silent)."""
    from transformers import AutoTokenizer

    from rerank_plugins.models.resolve import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.base_cross_encoder))
    return without_queries_too_long(tokenizer, dataset, config.cross_encoder.max_length)


def _guard(held_out: RetrievalDataset, base: dict[str, list[str]], adapted: dict[str, list[str]]) -> dict[str, Any]:
    """Keep the adapted side only if its mean per-query nDCG@10 gain exceeds one standard error."""
    query_ids = held_out.labelled_queries
    before = np.array(ndcg_at_10_per_query(base, held_out.qrels, query_ids))
    after = np.array(ndcg_at_10_per_query(adapted, held_out.qrels, query_ids))
    gains = after - before
    error = standard_error(gains)
    return {
        "base_ndcg@10": float(before.mean()),
        "adapted_ndcg@10": float(after.mean()),
        "gain": float(gains.mean()),
        "standard_error": error,
        "kept": bool(gains.mean() > error),
        "queries": len(query_ids),
    }


def _ranking(held_out: RetrievalDataset, stage: FirstStage, k: int) -> dict[str, list[str]]:
    query_ids, hits, _ = first_stage(held_out, stage, k)
    return {q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}


def _stage(dataset: RetrievalDataset, model: str, train: RetrievalDataset, config: AdaptConfig) -> FirstStage:
    """The configured first stage over the corpus; a hybrid gets its dense weight tuned on training queries."""
    stage = corpus_first_stage(dataset, model, config.first_stage, analyzer=config.analyzer)
    if isinstance(stage, HybridIndex):
        sample = random.Random(0).sample(train.labelled_queries, min(HYBRID_TUNING_QUERIES, len(train.queries)))
        tune_hybrid_weight(stage, train.subset(sample), k=config.first_stage_k)
    return stage


def adapt(
    queries: PseudoQueries | RetrievalDataset,
    output_dir: str | os.PathLike[str],
    config: AdaptConfig | None = None,
    *,
    labelled: RetrievalDataset | None = None,
    say: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Fine-tune the bi-encoder, train the reranker, guard both on held-out queries; returns the report."""
    config = config or AdaptConfig()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    pseudo = queries.dataset if isinstance(queries, PseudoQueries) else queries
    dataset, too_long = _fit_reranker(combine(pseudo, labelled), config)
    train, held_out = _split(dataset, config.held_out)
    timings: dict[str, float] = {}
    report: dict[str, Any] = {
        "queries": {"train": len(train.queries), "held_out": len(held_out.queries), "too_long_for_reranker": too_long}
    }
    if isinstance(queries, PseudoQueries):
        report["pseudo_queries"] = queries.summary()
    say(
        f"{len(train.queries)} training / {len(held_out.queries)} held-out queries over {len(dataset.corpus)} documents"
    )
    uses_dense = config.first_stage != "lexical"
    budget = config.time_budget_s

    started = time.perf_counter()
    base_stage = _stage(dataset, config.base_bi_encoder, train, config)
    timings["base_first_stage_s"] = time.perf_counter() - started
    stage, bi_path = base_stage, output / "bi-encoder"
    if uses_dense:
        say(f"[1/3] Fine-tuning the bi-encoder on hard negatives from the {config.first_stage} first stage")
        started = time.perf_counter()
        bi_config = config.bi_encoder
        if budget is not None:
            bi_config = BiEncoderTrainingConfig(
                **{**asdict(bi_config), "time_budget_s": budget * config.bi_encoder_share}
            )
        pools = gather_negatives(
            dataset, base_stage, "hard", pool_size=max(bi_config.hard_negatives_per_query, 3), depth=config.mining_depth
        )
        trained, log = train_bi_encoder(
            train,
            bi_path,
            base_model=config.base_bi_encoder,
            config=bi_config,
            hard_negatives=pools,
        )
        timings["bi_encoder_training_s"] = log.seconds
        adapted_stage = _stage(dataset, str(trained), train, config)
        guard = _guard(
            held_out,
            _ranking(held_out, base_stage, config.first_stage_k),
            _ranking(held_out, adapted_stage, config.first_stage_k),
        )
        timings["bi_encoder_total_s"] = time.perf_counter() - started
        report["bi_encoder"] = {
            **guard,
            "steps": log.steps,
            "base_first_stage": base_stage.describe(),
            "first_stage": adapted_stage.describe(),
        }
        if guard["kept"]:
            stage = adapted_stage
            say(f"      kept: held-out nDCG@10 {guard['base_ndcg@10']:.4f} -> {guard['adapted_ndcg@10']:.4f}")
        else:
            _write_base_bi_encoder(config.base_bi_encoder, bi_path, guard)
            say(
                f"      refused (gain {guard['gain']:+.4f} <= one standard error {guard['standard_error']:.4f}): "
                f"{bi_path} holds the base model {config.base_bi_encoder}"
            )
    else:
        _write_base_bi_encoder(config.base_bi_encoder, bi_path, {"kept": False, "reason": "lexical first stage"})
        report["bi_encoder"] = {"kept": False, "reason": "a lexical first stage uses no bi-encoder"}

    say(f"[2/3] Training the reranker on hard negatives from the {config.first_stage} first stage")
    started = time.perf_counter()
    cross_config = config.cross_encoder
    if budget is not None:
        share = 1 - config.bi_encoder_share if uses_dense else 1
        cross_config = CrossEncoderTrainingConfig(**{**asdict(cross_config), "time_budget_s": budget * share})
    pool_size = max(config.mining_depth, cross_config.num_negatives)
    pools = gather_negatives(dataset, stage, "hard", pool_size=pool_size, depth=config.mining_depth)
    cross_path, log = train_cross_encoder(
        train,
        pools,
        output / "cross-encoder",
        base_model=config.base_cross_encoder,
        config=cross_config,
        eval_data=held_out,
        eval_negatives={q: pools[q][: cross_config.num_negatives] for q in held_out.queries},
    )
    record_training_info(
        cross_path, "negatives", {"kind": "hard", "first_stage": stage.describe(), "depth": config.mining_depth}
    )
    fusion = record_fusion_weight(cross_path, held_out, stage, depth=config.first_stage_k)
    timings["cross_encoder_training_s"] = log.seconds
    timings["cross_encoder_total_s"] = time.perf_counter() - started
    kept = bool(fusion["weight"] > 0)
    report["cross_encoder"] = {"kept": kept, "steps": log.steps, "fusion": fusion}
    if kept:
        say(f"      kept: fusion weight {fusion['weight']} tuned on held-out queries")
    else:
        say(
            "      refused: fusing it does not beat the first stage by more than one standard error on held-out "
            "queries; its fusion weight is 0, so fusion_weight='auto' keeps the first stage's order"
        )
        _note(cross_path, "The guard refused this reranker: its stored fusion weight is 0 (first stage order).")

    say("[3/3] Held-out evaluation of the result")
    evaluation = evaluate_two_stage(
        held_out,
        stage,
        CrossEncoderBackend(cross_path),
        first_stage_k=config.first_stage_k,
        fusion_weight=fusion["weight"],
        show_progress=False,
    )
    report = {**evaluation, **report, "timings_s": timings, "config": _config_record(config)}
    if uses_dense:
        report["metrics"]["base_first_stage"] = {"ndcg@10": report["bi_encoder"]["base_ndcg@10"]}
    written = write_report(report, output / "report.json")
    _append_guard_markdown(written["markdown"], report)
    return report


def _write_base_bi_encoder(base_model: str, target: Path, guard: dict[str, Any]) -> None:
    """Save the unchanged base model where the adapted one would go, with a card saying why."""
    from sentence_transformers import SentenceTransformer

    from rerank_plugins.models.resolve import resolve_model_path

    if target.exists():
        shutil.rmtree(target)
    SentenceTransformer(str(resolve_model_path(base_model)), device="cpu", local_files_only=True).save(str(target))
    forget(target)  # the refused model was loaded from this path: nobody in this process may get it again
    _note(target, f"Not adapted: this is the base model `{base_model}` ({json.dumps(guard)}).")


def _note(model_dir: Path, text: str) -> None:
    with (model_dir / "README.md").open("a", encoding="utf-8") as card:
        card.write(f"\n## rerank-plugins adapt\n{text}\n")


def _config_record(config: AdaptConfig) -> dict[str, Any]:
    record = asdict(config)
    record["analyzer"] = config.analyzer if isinstance(config.analyzer, str) else repr(config.analyzer)
    return record


def _append_guard_markdown(path: Path, report: dict[str, Any]) -> None:
    bi, cross = report["bi_encoder"], report["cross_encoder"]
    lines = [
        "",
        "## Guard (held-out queries)",
        "| model | base nDCG@10 | adapted nDCG@10 | gain | 1 SE | kept |",
        "|---|---|---|---|---|---|",
    ]
    if "gain" in bi:
        lines.append(
            f"| bi-encoder | {bi['base_ndcg@10']:.4f} | {bi['adapted_ndcg@10']:.4f} | {bi['gain']:+.4f} | "
            f"{bi['standard_error']:.4f} | {'yes' if bi['kept'] else 'no'} |"
        )
    fusion = cross["fusion"]
    sweep = fusion["ndcg@10_by_weight"]
    best = max(sweep, key=lambda w: sweep[w])
    lines.append(
        f"| reranker (fused, a={best}) | {sweep['0.0']:.4f} | {sweep[best]:.4f} | "
        f"{sweep[best] - sweep['0.0']:+.4f} | {fusion.get('standard_error', 0.0):.4f} | "
        f"{'yes' if cross['kept'] else 'no'} |"
    )
    lines.append("")
    lines.append("Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
