"""Which reranker recipe learns most in the quickstart's minutes: one recipe per run, appended to a JSON-lines file.

Each run does what ``rerank-plugins quickstart`` does on the bundled data (same samples, same first stage, negatives
mined by it, fusion weight tuned on held-out training queries) with the training settings given here, then scores
the test queries: first stage, reranker alone, fused at the held-out weight, and (diagnostic only, never used to
choose) fused at every weight. Times are wall-clock on this machine; run one at a time on an idle machine.

    python bench/quickstart_recipes.py --lang en --name baseline --out bench/results/quickstart-recipes
    python bench/quickstart_recipes.py --lang en --name lr1e-4 --learning-rate 1e-4 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.evaluation.evaluate import FUSION_WEIGHTS, first_stage, fused_ndcg_per_query, rerank_scores
from rerank_plugins.evaluation.metrics import compute_metrics
from rerank_plugins.fusion import stored_fusion
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.quickstart import DEMOS, _sample
from rerank_plugins.training.mining import corpus_first_stage
from rerank_plugins.training.recipes import train_cross_encoder_on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="en", choices=sorted(DEMOS))
    parser.add_argument("--name", required=True, help="recipe name (row label)")
    parser.add_argument("--out", default="bench/results/quickstart-recipes")
    parser.add_argument("--work", default="runs/quickstart-recipes")
    parser.add_argument("--budget", type=float, default=420.0, help="training seconds")
    parser.add_argument("--backbone", help="cross-encoder backbone (default: the demo's)")
    parser.add_argument("--bi-encoder", help="dense model of the first stage (default: the demo's)")
    parser.add_argument("--first-stage", help="dense, lexical or hybrid (default: the demo's)")
    parser.add_argument("--first-stage-k", type=int, default=20)
    parser.add_argument("--held-out", type=float, help="share of training queries tuning fusion (default: the demo's)")
    parser.add_argument("--max-train-queries", type=int)
    parser.add_argument("--max-test-queries", type=int)
    for field, kind in (
        ("epochs", int),
        ("learning_rate", float),
        ("head_lr_multiplier", float),
        ("warmup_ratio", float),
        ("max_length", int),
        ("num_negatives", int),
        ("queries_per_batch", int),
    ):
        parser.add_argument("--" + field.replace("_", "-"), type=kind, help=f"CrossEncoderTrainingConfig.{field}")
    parser.add_argument("--layers", type=int, help="CrossEncoderTrainingConfig.layers")
    parser.add_argument("--dropout", type=float, help="CrossEncoderTrainingConfig.dropout")
    parser.add_argument("--freeze-embeddings", action="store_true", help="CrossEncoderTrainingConfig.freeze_embeddings")
    parser.add_argument(
        "--long-documents",
        choices=["truncate", "matched_window"],
        help="CrossEncoderTrainingConfig.long_documents",
    )
    args = parser.parse_args()

    demo = DEMOS[args.lang]
    train = _sample(demo.load("train"), args.max_train_queries or demo.max_train_queries)
    test = _sample(demo.load("test"), args.max_test_queries or demo.max_test_queries)
    kind = args.first_stage or demo.first_stage
    bi_encoder = args.bi_encoder or demo.bi_encoder
    backbone = args.backbone or demo.cross_encoder_backbone
    overrides = {
        f: getattr(args, f)
        for f in ("epochs", "learning_rate", "head_lr_multiplier", "warmup_ratio", "max_length", "num_negatives")
        + ("queries_per_batch",)
        if getattr(args, f) is not None
    }
    overrides.update(
        {
            k: v
            for k, v in (("layers", args.layers), ("dropout", args.dropout), ("long_documents", args.long_documents))
            if v is not None
        },
        **({"freeze_embeddings": True} if args.freeze_embeddings else {}),
    )
    config = replace(demo.cross_encoder, **overrides, time_budget_s=args.budget)
    held_out = demo.held_out if args.held_out is None else args.held_out
    work = Path(args.work) / f"{args.lang}-{args.name}"
    embedder = (
        get_bi_encoder(bi_encoder, disk_cache=Path(args.work) / "embeddings.sqlite") if kind != "lexical" else None
    )

    started = time.perf_counter()
    path, log = train_cross_encoder_on(
        train,
        work / "cross-encoder",
        base_model=backbone,
        bi_encoder=embedder,
        first_stage=kind,
        held_out=held_out,
        fusion_depth=args.first_stage_k,
        config=config,
    )
    training_seconds = time.perf_counter() - started
    fusion = stored_fusion(path) or {}
    stage = corpus_first_stage(test, embedder, kind)
    query_ids, hits, _ = first_stage(test, stage, args.first_stage_k)
    start = time.perf_counter()
    scores, _ = rerank_scores(test, query_ids, hits, CrossEncoderBackend(path), show_progress=False)
    test_rerank_seconds = time.perf_counter() - start
    per_weight = fused_ndcg_per_query(test, query_ids, hits, scores, FUSION_WEIGHTS)
    first = compute_metrics({q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}, test.qrels, (1, 10))
    weight = fusion.get("weight", 0.0)
    row = {
        "name": args.name,
        "lang": args.lang,
        "backbone": backbone,
        "first_stage": stage.describe(),
        "config": asdict(config),
        "held_out": held_out,
        "fusion_depth": args.first_stage_k,
        "train_queries": len(train.labelled_queries),
        "test_queries": len(query_ids),
        "steps": log.steps,
        "planned_steps": log.planned_steps,
        "train_loop_s": round(log.seconds, 1),
        "train_total_s": round(training_seconds, 1),
        "test_rerank_s": round(test_rerank_seconds, 1),
        "final_loss": log.final_loss,
        "held_out_fusion": fusion,
        "test": {
            "first_stage_ndcg@10": first["ndcg@10"],
            "reranker_alone_ndcg@10": float(per_weight[1.0].mean()),
            "fused_at_held_out_weight_ndcg@10": float(per_weight[weight].mean()),
            "fused_ndcg@10_by_weight (diagnostic)": {str(w): float(v.mean()) for w, v in per_weight.items()},
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{args.lang}.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"header": result_header(f"quickstart recipe {args.name}"), **row}) + "\n")
    t = row["test"]
    print(
        f"{args.name}: {log.steps}/{log.planned_steps} steps in {log.seconds:.0f} s; held-out weight {weight} "
        f"(gain {fusion.get('gain_over_first_stage', 0):+.4f} ± {fusion.get('standard_error', 0):.4f}); test "
        f"first {t['first_stage_ndcg@10']:.4f} alone {t['reranker_alone_ndcg@10']:.4f} "
        f"fused {t['fused_at_held_out_weight_ndcg@10']:.4f}"
    )


if __name__ == "__main__":
    main()
