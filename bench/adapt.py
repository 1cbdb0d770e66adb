"""``adapt`` without labels, judged on real labelled test queries.

The corpus alone makes the pseudo-queries (the data set's training labels are not used); ``adapt`` fine-tunes
the bi-encoder and trains the reranker under its guard. Then, on the real test queries over the original corpus:
the packaged model's dense and configured first stages, the adapted ones, and the adapted reranker alone and
fused (with the weight ``adapt`` stored). Hybrid dense weights are the ones ``adapt`` tuned on pseudo-queries.

    python bench/adapt.py --data ../shared/data/scifact --out bench/results/adapt-scifact --max-documents 2500 \
        --cross-budget 600
    python bench/adapt.py --data ../shared/data/korquad-1.0-dev/KorQuAD_v1.0_dev.json \
        --out bench/results/adapt-korquad --max-documents 500 --cross-budget 400 --cross-max-length 256 \
        --max-test-queries 300 --bi-batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.data import load_dataset
from rerank_plugins.data.corpus import load_corpus
from rerank_plugins.evaluation.evaluate import evaluate_two_stage
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training.adapt import AdaptConfig, adapt
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE, CrossEncoderTrainingConfig
from rerank_plugins.training.mining import corpus_first_stage
from rerank_plugins.training.pseudo_queries import offline_pseudo_queries

COLUMNS = ("ndcg@10", "mrr@10", "hit@1", "hit@10", "recall@30")


def row(name: str, metrics: dict[str, float]) -> str:
    return f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " |"


def stage_like(test, model: str, described: dict, analyzer: str):
    """The first stage ``described`` (dense, lexical or hybrid with its dense weight) over the test corpus."""
    kind = described["kind"]
    stage = corpus_first_stage(test, model, kind, analyzer=analyzer)
    if isinstance(stage, HybridIndex):
        stage.dense_weight = described["dense_weight"]
    return stage


def reused_report(dataset, work: Path, config: AdaptConfig) -> dict:
    """What adapt reports, rebuilt from the models it left in ``work`` (same split, same tuning, same guard)."""
    from rerank_plugins.fusion import TRAINING_INFO
    from rerank_plugins.training.adapt import _fit_reranker, _guard, _ranking, _split, _stage

    train, held_out = _split(_fit_reranker(dataset, config)[0], config.held_out)
    base = _stage(dataset, config.base_bi_encoder, train, config)
    adapted = _stage(dataset, str(work / "bi-encoder"), train, config)
    k = config.first_stage_k
    guard = _guard(held_out, _ranking(held_out, base, k), _ranking(held_out, adapted, k))
    fusion = json.loads((work / "cross-encoder" / TRAINING_INFO).read_text(encoding="utf-8"))["fusion"]
    return {
        "reused": str(work),
        "queries": {"train": len(train.queries), "held_out": len(held_out.queries)},
        "bi_encoder": {**guard, "base_first_stage": base.describe(), "first_stage": adapted.describe()},
        "cross_encoder": {"kept": bool(fusion["weight"] > 0), "fusion": fusion},
        "first_stage": adapted.describe(),
        "timings_s": {},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--strategy", default="sentence")
    parser.add_argument("--queries-per-document", type=int, default=1)
    parser.add_argument("--first-stage", default="hybrid")
    parser.add_argument("--analyzer", default="auto")
    parser.add_argument("--time-budget", type=float, default=1500.0)
    parser.add_argument("--bi-share", type=float, default=0.5)
    parser.add_argument("--max-documents", type=int, help="make pseudo-queries from a sample of this many documents")
    parser.add_argument("--max-test-queries", type=int, help="evaluate on a seeded sample of the test queries")
    parser.add_argument(
        "--bi-batch-size", type=int, default=32, help="pairs per bi-encoder step (memory grows with it)"
    )
    parser.add_argument(
        "--cross-budget",
        type=float,
        help="instead of --time-budget: the bi-encoder trains one full epoch, the reranker for this many seconds "
        "(a wall-clock budget on a shared machine buys fewer steps)",
    )
    parser.add_argument("--cross-max-length", type=int, default=128)
    parser.add_argument("--first-stage-k", type=int, default=30)
    parser.add_argument("--work", default=None, help="adapt's output DIR (default: runs/adapt-<data name>)")
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="models already in --work from an adapt run: rebuild its first stages and guard, then evaluate",
    )
    args = parser.parse_args()
    work = Path(args.work or f"runs/adapt-{Path(args.data).name.split('.')[0]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    documents = load_corpus(args.data)
    pseudo = offline_pseudo_queries(
        documents, args.strategy, queries_per_document=args.queries_per_document, max_documents=args.max_documents
    )
    generation_s = time.perf_counter() - started
    config = AdaptConfig(
        first_stage=args.first_stage,
        analyzer=args.analyzer,
        time_budget_s=None if args.cross_budget else args.time_budget,
        bi_encoder_share=args.bi_share,
        first_stage_k=args.first_stage_k,
        bi_encoder=BiEncoderTrainingConfig(batch_size=args.bi_batch_size),
        cross_encoder=CrossEncoderTrainingConfig(max_length=args.cross_max_length, time_budget_s=args.cross_budget),
    )
    if args.reuse:
        report = reused_report(pseudo.dataset, work, config)
    else:
        report = adapt(pseudo, work, config, say=lambda text: print(text, flush=True))
    adapt_s = time.perf_counter() - started - generation_s

    test = load_dataset(args.data, args.split)
    if args.max_test_queries and args.max_test_queries < len(test.queries):
        sample = random.Random(0).sample(test.labelled_queries, args.max_test_queries)
        test = test.subset(sample, f"{test.name}[{args.max_test_queries} sampled]")
    bi = report["bi_encoder"]
    lines = [
        result_header(
            f"adapt without labels on {test.name}: real test queries, original corpus",
            f"load average at start {os.getloadavg()[0]:.2f}",
        ),
        "",
        f"Pseudo-queries ({args.strategy}): {json.dumps(pseudo.summary())}; generated in {generation_s:.1f} s.",
        f"adapt: {report['queries']['train']} training / {report['queries']['held_out']} held-out pseudo-queries, "
        f"{adapt_s:.0f} s in all; steps and seconds: {json.dumps(report['timings_s'])}",
        f"Guard: bi-encoder kept = {bi['kept']} ({json.dumps({k: v for k, v in bi.items() if isinstance(v, float)})}); "
        f"reranker kept = {report['cross_encoder']['kept']} "
        f"(fusion weight {report['cross_encoder']['fusion']['weight']}).",
        "",
        f"{len(test.queries)} test queries, first stage top-{args.first_stage_k}:",
        "",
        "| pipeline | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    adapted_bi = str(work / "bi-encoder")
    stages = []
    if args.first_stage != "lexical":
        stages.append(("packaged MiniLM, dense", DEFAULT_BACKBONE, {"kind": "dense"}))
        stages.append(("adapted bi-encoder, dense", adapted_bi, {"kind": "dense"}))
    base_described = bi.get("base_first_stage", report["first_stage"])
    stages.append((f"packaged, {args.first_stage}", DEFAULT_BACKBONE, base_described))
    if args.first_stage != "lexical":
        stages.append((f"adapted, {args.first_stage}", adapted_bi, bi["first_stage"]))
    final = None
    for name, model, described in stages:
        stage = stage_like(test, model, described, args.analyzer)
        evaluation = evaluate_two_stage(test, stage, first_stage_k=args.first_stage_k, show_progress=False)
        lines.append(row(name, evaluation["metrics"]["first_stage"]))
        print(lines[-1], flush=True)
        final = stage
    reranker = CrossEncoderBackend(work / "cross-encoder")
    weight = stored_fusion_weight(work / "cross-encoder")
    evaluation = evaluate_two_stage(test, final, reranker, first_stage_k=args.first_stage_k, fusion_weight=weight)
    lines.append(row("+ adapted reranker alone", evaluation["metrics"]["reranker_only"]))
    lines.append(row(f"+ adapted reranker fused (a = {weight}, from adapt)", evaluation["metrics"]["reranked"]))
    print("\n".join(lines[-2:]), flush=True)
    if weight == 0:
        lines.append("(the guard refused the reranker: weight 0 keeps the first stage's order)")
    lines += ["", f"Total wall time {time.perf_counter() - started:.0f} s."]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "adapt-report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
