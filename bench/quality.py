"""Quality benchmark: what training each stage buys, on a BEIR-layout set (default: SciFact).

First stages: (a) the packaged model, (b) fine-tuned bi-encoder, (l) BM25, (h) hybrid of a + BM25, (hb) hybrid of
b + BM25; each followed by the trained cross-encoder at the given depths, alone and fused with the first stage
(weight tuned on held-out *training* queries, never on test); with training and evaluation times.
Everything is trained here from one pretrained model (``--base``: the packaged all-MiniLM-L6-v2, or
intfloat/multilingual-e5-small for Korean) on the train split only.

    python bench/quality.py --data ../shared/data/scifact --out bench/results/scifact
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.data import load_dataset
from rerank_plugins.evaluation.evaluate import (
    evaluate_two_stage,
    first_stage,
    rerank_scores,
    tune_fusion_weight,
    tune_hybrid_weight,
)
from rerank_plugins.evaluation.report import markdown_table
from rerank_plugins.first_stage import FaissIndex
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.pair_scoring import LONG_DOCUMENT_POLICIES
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import (
    TRAINABLE_LONG_DOCUMENTS,
    CrossEncoderTrainingConfig,
    train_cross_encoder,
)
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def timed(label: str, timings: dict, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[label] = round(time.perf_counter() - start, 1)
    print(f"[{label}] {timings[label]} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--out", default="bench/results/scifact")
    parser.add_argument("--work", default="runs/bench", help="where trained models go")
    parser.add_argument("--base", default=BASE, help="pretrained model every neural stage starts from")
    parser.add_argument("--bi-epochs", type=int, default=1)
    parser.add_argument("--bi-batch-size", type=int, default=32)
    parser.add_argument("--bi-max-length", type=int, default=256)
    parser.add_argument("--bi-learning-rate", type=float, default=2e-5)
    parser.add_argument("--bi-hard-negatives", type=int, default=1, help="mined hard negatives per query in a batch")
    parser.add_argument(
        "--bi-scale", type=float, default=20.0, help="MultipleNegativesRankingLoss scale (1/temperature)"
    )
    parser.add_argument(
        "--bi-max-train-queries", type=int, help="fine-tune the bi-encoder on this seeded part of the training queries"
    )
    parser.add_argument("--index-max-length", type=int, help="tokens the dense first stages embed (default: model's)")
    parser.add_argument("--cross-epochs", type=int, default=1)
    parser.add_argument("--cross-max-length", type=int, default=128)
    parser.add_argument("--cross-negatives", type=int, default=7)
    parser.add_argument("--cross-loss", default="listwise", choices=["listwise", "binary"])
    parser.add_argument("--cross-learning-rate", type=float, default=5e-5)
    parser.add_argument("--cross-queries-per-batch", type=int, default=4)
    parser.add_argument("--cross-layers", type=int, help="keep the backbone's first N layers")
    parser.add_argument("--cross-budget", type=float, help="seconds of reranker training (default: all epochs)")
    parser.add_argument(
        "--cross-long-documents",
        default="truncate",
        choices=TRAINABLE_LONG_DOCUMENTS,
        help="which part of a long document the reranker trains on",
    )
    parser.add_argument("--freeze-embeddings", action="store_true", help="train neither model's token embeddings")
    parser.add_argument("--dropout", type=float, help="dropout of both models while training (default: the model's)")
    parser.add_argument(
        "--tune-hybrid-weight",
        type=int,
        metavar="N",
        help="choose each hybrid's dense weight on N seeded training queries (instead of --hybrid-weight)",
    )
    parser.add_argument(
        "--cross-backbone",
        default="fine-tuned",
        choices=["fine-tuned", "packaged"],
        help="start the reranker from the fine-tuned bi-encoder's weights or the packaged --base model",
    )
    parser.add_argument("--negatives", default="hard", choices=["hard", "random"])
    parser.add_argument(
        "--mine-with",
        default="packaged",
        choices=["packaged", "fine-tuned", "lexical", "hybrid", "hybrid-fine-tuned"],
        help="first stage whose top-30 gives the reranker's hard negatives (hybrid: that dense model + BM25)",
    )
    parser.add_argument("--analyzer", default="auto", help="lexical analyzer of the lexical and hybrid first stages")
    parser.add_argument("--hybrid-fusion", default="weighted", choices=["weighted", "rrf"])
    parser.add_argument(
        "--hybrid-weight", type=float, default=0.3, help="dense weight of the hybrid (choose it on train queries)"
    )
    parser.add_argument("--depths", default="30,100")
    parser.add_argument(
        "--pipelines",
        default="a,b",
        help="first stages to evaluate: a (packaged), b (fine-tuned), l (lexical BM25), "
        "h (hybrid: packaged + BM25), hb (hybrid: fine-tuned + BM25)",
    )
    parser.add_argument(
        "--rerank-pipelines",
        help="rerank only these of --pipelines (default: all); the others are reported as first stages alone",
    )
    parser.add_argument(
        "--runtime",
        default="torch",
        choices=["torch", "onnx"],
        help="inference runtime for the reranker during evaluation (training is always torch)",
    )
    parser.add_argument(
        "--long-documents",
        default="auto",
        choices=LONG_DOCUMENT_POLICIES,
        help="how the reranker reads documents longer than its max length (auto: as it was trained)",
    )
    parser.add_argument(
        "--index-long-documents",
        default="truncate",
        choices=["truncate", "split"],
        help="how the first stage embeds documents longer than the bi-encoder's max length",
    )
    parser.add_argument("--cross-encoder", help="evaluate this trained reranker directory instead of training one")
    parser.add_argument("--reuse", action="store_true", help="reuse trained models and indexes already in --work")
    parser.add_argument("--max-train-queries", type=int, help="seeded sample of training queries (CPU budget)")
    parser.add_argument("--max-test-queries", type=int, help="seeded sample of test queries (CPU budget)")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    train_all = load_dataset(args.data, args.train_split)
    test = load_dataset(args.data, args.test_split)
    if args.max_train_queries:
        train_all = train_all.subset(
            random.Random(0).sample(sorted(train_all.queries), min(args.max_train_queries, len(train_all.queries)))
        )
    if args.max_test_queries:
        test = test.subset(random.Random(0).sample(sorted(test.queries), min(args.max_test_queries, len(test.queries))))
    train, held_out = train_all.split(0.1, seed=0)
    print(
        f"corpus {len(test.corpus)}, train queries {len(train.queries)}, held-out {len(held_out.queries)}, "
        f"test queries {len(test.queries)}",
        flush=True,
    )

    def cached_index(name: str, backend: BiEncoderBackend) -> FaissIndex:
        split = args.index_long_documents == "split"
        path = work / f"index-{name}{'-split' if split else ''}"
        if args.reuse and (path / "manifest.json").exists():
            return FaissIndex.load(path, backend)
        index = timed(
            f"encode corpus ({name})",
            timings,
            corpus_first_stage,
            test,
            backend,
            long_documents=args.index_long_documents,
        )
        index.save(path)
        return index

    # no cache: first-stage latencies are model work
    base = BiEncoderBackend(args.base, cache_size=0, max_length=args.index_max_length)
    base_index = cached_index("base", base)
    # Pools of up to 30 per query: the reranker draws --cross-negatives of them afresh each epoch; the held-out
    # checks use a fixed --cross-negatives per query so that epochs compare like with like.
    negatives = mine_hard_negatives(train_all, base_index, num_negatives=30, depth=30, strategy=args.negatives)
    held_negatives = {q: negatives[q][: args.cross_negatives] for q in held_out.queries}

    bi_train = train
    if args.bi_max_train_queries:
        bi_train = train.subset(
            random.Random(0).sample(sorted(train.queries), min(args.bi_max_train_queries, len(train.queries)))
        )
    bi_dir = work / "bi-encoder"
    if not (args.reuse and (bi_dir / "modules.json").exists()):
        timed(
            "train bi-encoder",
            timings,
            train_bi_encoder,
            bi_train,
            bi_dir,
            base_model=args.base,
            config=BiEncoderTrainingConfig(
                epochs=args.bi_epochs,
                batch_size=args.bi_batch_size,
                max_length=args.bi_max_length,
                learning_rate=args.bi_learning_rate,
                hard_negatives_per_query=args.bi_hard_negatives,
                scale=args.bi_scale,
                freeze_embeddings=args.freeze_embeddings,
                dropout=args.dropout,
            ),
            hard_negatives=negatives,
            eval_data=held_out,
            eval_negatives=held_negatives,
        )
    tuned = BiEncoderBackend(str(bi_dir), cache_size=0, max_length=args.index_max_length)
    tuned_index = cached_index("fine-tuned", tuned)
    lexical = timed(
        "index corpus (lexical)", timings, corpus_first_stage, test, None, "lexical", analyzer=args.analyzer
    )
    stages = {
        "a": (f"a: packaged {Path(args.base).name}", base_index),
        "b": ("b: fine-tuned bi-encoder", tuned_index),
        "l": (f"l: BM25 ({lexical.analyzer.name})", lexical),
    }
    tuning = None
    if args.tune_hybrid_weight:
        sample = random.Random(0).sample(train_all.labelled_queries, min(args.tune_hybrid_weight, len(train_all.qrels)))
        tuning = train_all.subset(sample)
    hybrid_tuning = {}
    for name, dense, label in (("h", base_index, "packaged"), ("hb", tuned_index, "fine-tuned")):
        hybrid = HybridIndex(dense, lexical, fusion=args.hybrid_fusion, dense_weight=args.hybrid_weight)
        if tuning is not None:
            hybrid_tuning[name] = timed(f"tune hybrid {name}", timings, tune_hybrid_weight, hybrid, tuning)
        stages[name] = (f"{name}: hybrid ({label} + BM25, {args.hybrid_fusion} w={hybrid.dense_weight})", hybrid)
    miners = {"packaged": "a", "fine-tuned": "b", "lexical": "l", "hybrid": "h", "hybrid-fine-tuned": "hb"}

    cross_negatives, cross_held_negatives = negatives, held_negatives
    if args.mine_with != "packaged" and args.negatives == "hard":
        miner = stages[miners[args.mine_with]][1]
        cross_negatives = mine_hard_negatives(train_all, miner, num_negatives=30, depth=30)
        cross_held_negatives = {q: cross_negatives[q][: args.cross_negatives] for q in held_out.queries}
    mined = "" if args.mine_with == "packaged" else f"-mined-{args.mine_with}"
    cross_dir = (
        work / f"cross-encoder-{args.negatives}-{args.cross_loss}-{args.cross_backbone}-{args.cross_epochs}ep"
        f"-{args.cross_max_length}-{args.cross_long_documents}-resampled{mined}"
    )
    backbone = str(bi_dir) if args.cross_backbone == "fine-tuned" else args.base
    if args.cross_encoder:
        cross_dir = Path(args.cross_encoder)
    elif not (args.reuse and (cross_dir / "config.json").exists()):
        timed(
            "train cross-encoder",
            timings,
            train_cross_encoder,
            train,
            cross_negatives,
            cross_dir,
            base_model=backbone,
            config=CrossEncoderTrainingConfig(
                loss=args.cross_loss,
                epochs=args.cross_epochs,
                num_negatives=args.cross_negatives,
                max_length=args.cross_max_length,
                learning_rate=args.cross_learning_rate,
                queries_per_batch=args.cross_queries_per_batch,
                layers=args.cross_layers,
                freeze_embeddings=args.freeze_embeddings,
                dropout=args.dropout,
                time_budget_s=args.cross_budget,
                long_documents=args.cross_long_documents,
            ),
            eval_data=held_out,
            eval_negatives=cross_held_negatives,
        )
    # cache_size=0: timings measure model work, not cache hits
    reranker = CrossEncoderBackend(str(cross_dir), cache_size=0, runtime=args.runtime)

    rows = []
    reports = {}
    fusion = {}
    reranked = set((args.rerank_pipelines or args.pipelines).split(","))
    for name in args.pipelines.split(","):
        label, index = stages[name]
        if name not in reranked:
            for depth in depths:
                report = timed(
                    f"evaluate {name} top-{depth}", timings, evaluate_two_stage, test, index, None, first_stage_k=depth
                )
                reports[f"{name}@{depth}"] = report
                rows.append((label, depth, report["metrics"]["first_stage"], report["latency"]["first_stage"]))
            continue
        query_ids, hits, _ = first_stage(held_out, index, depths[0])  # fusion tuned at the first depth listed
        scores, _ = rerank_scores(
            held_out, query_ids, hits, reranker, long_documents=args.long_documents, show_progress=False
        )
        fusion[name] = tune_fusion_weight(held_out, query_ids, hits, scores)
        weight = fusion[name]["weight"]
        print(
            f"fusion weight for {name} (tuned on {len(query_ids)} held-out train queries): {weight} "
            f"{fusion[name]['ndcg@10_by_weight']}",
            flush=True,
        )
        for depth in depths:
            report = timed(
                f"evaluate {name} top-{depth}",
                timings,
                evaluate_two_stage,
                test,
                index,
                reranker,
                first_stage_k=depth,
                fusion_weight=weight,
                long_documents=args.long_documents,
            )
            reports[f"{name}@{depth}"] = report
            metrics = report["metrics"]
            rows.append((label, depth, metrics["first_stage"], report["latency"]["first_stage"]))
            rows.append(
                (
                    f"{name} + trained cross-encoder alone",
                    depth,
                    metrics["reranker_only"],
                    report["latency"]["rerank"],
                )
            )
            rows.append(
                (
                    f"{name} + cross-encoder fused (a={weight})",
                    depth,
                    metrics["reranked"],
                    report["latency"]["rerank"],
                )
            )
            print(markdown_table(report), flush=True)

    table = [
        "| pipeline | depth | nDCG@10 | MRR@10 | hit@1 | hit@3 | hit@5 | hit@10 | recall@depth | ms/query |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, depth, m, latency in rows:
        table.append(
            f"| {label} | {depth} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['hit@1']:.4f} | {m['hit@3']:.4f} | "
            f"{m['hit@5']:.4f} | {m['hit@10']:.4f} | {m[f'recall@{depth}']:.4f} | {latency['ms_per_query']:.1f} |"
        )
    header = result_header(f"{args.data} quality benchmark") + "\n\n"
    text = (
        header
        + "\n".join(table)
        + "\n\nFusion weights (tuned on held-out train queries): "
        + json.dumps({k: v["weight"] for k, v in fusion.items()})
        + ("\n\nHybrid weights chosen on training queries: " + json.dumps(hybrid_tuning) if hybrid_tuning else "")
        + "\n\nTimings (s): "
        + json.dumps(timings)
        + "\n"
    )
    print(text)
    (out / "quality.md").write_text(text, encoding="utf-8")
    (out / "quality.json").write_text(
        json.dumps({"timings": timings, "reports": reports, "fusion": fusion, "argv": sys.argv}, indent=2)
    )


if __name__ == "__main__":
    main()
