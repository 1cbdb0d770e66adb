"""First-stage benchmark: dense, lexical (each analyzer) and hybrid (each fusion and weight) on one data set.

The hybrid's fusion (method and dense weight) is chosen on the *training* queries and reported on the test
queries, never chosen on test. With ``--all-split`` the chosen settings are also reported on every question.

    python bench/first_stage.py --data ../shared/data/scifact --out bench/results/first-stage-scifact
    python bench/first_stage.py --data ../shared/data/korquad-1.0-dev/KorQuAD_v1.0_dev.json \
        --analyzers korean-bigram,korean-morph,generic,auto --all-split all --out bench/results/first-stage-korquad
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.data import RetrievalDataset, load_dataset
from rerank_plugins.evaluation.metrics import compute_metrics
from rerank_plugins.first_stage import FaissIndex, FirstStage
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.schema import Document

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COLUMNS = ("ndcg@10", "mrr@10", "hit@1", "hit@10", "recall@30", "recall@100")


def evaluate(stage: FirstStage, data: RetrievalDataset, timed: bool = True) -> tuple[dict[str, float], float]:
    """Metrics at depth 100 and the seconds the queries took (with the embedding cache emptied first, so the
    time is model work, not cache hits)."""
    query_ids = data.labelled_queries
    if timed:
        for side in (stage, getattr(stage, "dense", None)):
            if isinstance(side, FaissIndex):
                side.embedder.clear_cache()
    start = time.perf_counter()
    hits = stage.search_batch([data.queries[q] for q in query_ids], 100)
    seconds = time.perf_counter() - start
    rankings = {q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}
    return compute_metrics(rankings, data.qrels, ks=(1, 10), recall_ks=(30, 100)), seconds


def row(name: str, metrics: dict[str, float], seconds: float | None = None, extra: str = "") -> str:
    cells = " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS)
    timing = "" if seconds is None else f"{seconds:.1f}"
    return f"| {name} | {cells} | {timing} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--all-split", help="also report the chosen settings on this split (SQuAD: 'all')")
    parser.add_argument("--analyzers", default="english,generic,auto")
    parser.add_argument("--bi-encoder", action="append", default=None, help="dense model(s) (default: packaged MiniLM)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    models = args.bi_encoder or ["sentence-transformers/all-MiniLM-L6-v2"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        result_header(f"First stages on {args.data}") + "  ",
        "Metrics over all labelled queries of each split; search depth 100; query time = all queries of the split "
        "(dense: embedding + search).",
        "",
    ]
    splits = {"train": args.train_split, "test": args.test_split}
    if args.all_split:
        splits["all"] = None if args.all_split == "all" else args.all_split
    data = {name: load_dataset(args.data, split) for name, split in splits.items()}
    corpus = data["test"].corpus
    documents = [Document(text, doc_id) for doc_id, text in corpus.items()]
    print(f"corpus {len(documents)} documents; queries: " + ", ".join(f"{n} {len(d.qrels)}" for n, d in data.items()))
    results: dict[str, dict] = {}

    def report(title: str, stages: dict[str, FirstStage], build_seconds: dict[str, float]) -> None:
        for split in data:
            lines.extend(
                [
                    f"## {title} — {split} split ({len(data[split].qrels)} queries)",
                    "",
                    "| first stage | " + " | ".join(COLUMNS) + " | query s | build s |",
                    "|---" * (len(COLUMNS) + 3) + "|",
                ]
            )
            for name, stage in stages.items():
                metrics, seconds = evaluate(stage, data[split])
                results.setdefault(split, {})[name] = metrics
                lines.append(row(name, metrics, seconds, f"{build_seconds.get(name, 0):.1f}"))
                print(lines[-1], flush=True)
            lines.append("")

    lexical: dict[str, LexicalIndex] = {}
    builds: dict[str, float] = {}
    for name in args.analyzers.split(","):
        start = time.perf_counter()
        lexical[name] = LexicalIndex(name)
        lexical[name].add_documents(documents)
        builds[f"lexical ({name} → {lexical[name].analyzer.name})"] = time.perf_counter() - start
    dense: dict[str, FaissIndex] = {}
    for model in models:
        start = time.perf_counter()
        dense[model] = FaissIndex(get_bi_encoder(model))
        dense[model].add_documents(documents)
        builds[f"dense ({Path(model).name})"] = time.perf_counter() - start
        print(f"dense {model}: {builds[f'dense ({Path(model).name})']:.0f} s", flush=True)
    singles: dict[str, FirstStage] = {f"dense ({Path(m).name})": s for m, s in dense.items()}
    lexical_keys = {n: f"lexical ({n} → {s.analyzer.name})" for n, s in lexical.items()}
    singles.update({lexical_keys[n]: s for n, s in lexical.items()})
    report("Single first stages", singles, builds)

    # Hybrid: every fusion and weight on the training queries; the best per (dense model, analyzer) on the others.
    best_lexical = max(lexical, key=lambda n: results["train"][lexical_keys[n]]["ndcg@10"])
    lines.extend(
        [
            f"## Hybrid fusion sweep on the train split (lexical side: {best_lexical})",
            "",
            "| dense model | fusion | " + " | ".join(f"w={w}" for w in WEIGHTS) + " |",
            "|---|---|" + "---|" * len(WEIGHTS),
        ]
    )
    chosen: dict[str, FirstStage] = {}
    for model, dense_stage in dense.items():
        scores: dict[tuple[str, float], float] = {}
        for fusion in ("weighted", "rrf"):
            for weight in WEIGHTS:
                hybrid = HybridIndex(dense_stage, lexical[best_lexical], fusion=fusion, dense_weight=weight)
                scores[(fusion, weight)] = evaluate(hybrid, data["train"], timed=False)[0]["ndcg@10"]
            lines.append(
                f"| {Path(model).name} | {fusion} | " + " | ".join(f"{scores[(fusion, w)]:.4f}" for w in WEIGHTS) + " |"
            )
            print(lines[-1], flush=True)
        fusion, weight = max(scores, key=scores.get)
        chosen[f"hybrid ({Path(model).name} + {best_lexical}, {fusion} w={weight}, chosen on train)"] = HybridIndex(
            dense_stage, lexical[best_lexical], fusion=fusion, dense_weight=weight
        )
        for default in (("weighted", 0.5), ("rrf", 0.5)):
            chosen[f"hybrid ({Path(model).name} + {best_lexical}, {default[0]} w={default[1]})"] = HybridIndex(
                dense_stage, lexical[best_lexical], fusion=default[0], dense_weight=default[1]
            )
        results.setdefault("sweeps", {})[model] = {f"{f} {w}": v for (f, w), v in scores.items()}
    lines.append("")
    report("Hybrid first stages", chosen, {})
    (out / "first_stage.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "first_stage.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wrote {out / 'first_stage.md'}")


if __name__ == "__main__":
    main()
