"""Which offline pseudo-queries teach a bi-encoder about a corpus? Train on each, evaluate on real labelled queries.

For each strategy: pseudo-queries from the corpus alone (the labels unused), a sample of ``--max-queries`` of
them, one BM25-mined hard negative each, MultipleNegativesRankingLoss from the packaged MiniLM, then dense
nDCG@10 on the data set's real test queries over the original corpus (the packaged model in the same run).

    python bench/pseudo_query_strategies.py --data ../shared/data/scifact --strategies sentence,title,terms \
        --out bench/results/pseudo-query-strategies-scifact.md
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.data import load_dataset
from rerank_plugins.data.corpus import load_corpus
from rerank_plugins.evaluation.metrics import compute_metrics
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives
from rerank_plugins.training.pseudo_queries import offline_pseudo_queries


def dense_ndcg(model: str, test) -> dict[str, float]:
    stage = corpus_first_stage(test, get_bi_encoder(model), "dense")
    hits = stage.search_batch([test.queries[q] for q in test.labelled_queries], 100)
    rankings = {q: [h.document.id for h in row] for q, row in zip(test.labelled_queries, hits)}
    return compute_metrics(rankings, test.qrels, ks=(1, 10), recall_ks=(100,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--strategies", default="sentence,title,terms")
    parser.add_argument("--max-queries", type=int, default=2000)
    parser.add_argument("--queries-per-document", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--work", default="runs/pseudo-query-strategies")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    lines = [
        result_header(
            "Offline pseudo-query strategies: bi-encoder trained on each, dense first stage on real test queries",
            f"load average at start {os.getloadavg()[0]:.2f}",
        ),
        "",
        "| model | pseudo-queries used | rejected | train s | nDCG@10 | hit@1 | hit@10 | recall@100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    test = load_dataset(args.data, args.split)
    documents = load_corpus(args.data)
    base = dense_ndcg(DEFAULT_BACKBONE, test)
    lines.append(
        f"| packaged MiniLM | — | — | — | {base['ndcg@10']:.4f} | {base['hit@1']:.4f} | {base['hit@10']:.4f} | "
        f"{base['recall@100']:.4f} |"
    )
    print(lines[-1], flush=True)
    for strategy in args.strategies.split(","):
        pseudo = offline_pseudo_queries(documents, strategy, queries_per_document=args.queries_per_document)
        data = pseudo.dataset
        sample = random.Random(0).sample(data.labelled_queries, min(args.max_queries, len(data.queries)))
        train = data.subset(sample, f"{strategy}[{len(sample)}]")
        negatives = mine_hard_negatives(train, corpus_first_stage(train, None, "lexical"), num_negatives=1)
        started = time.perf_counter()
        path, log = train_bi_encoder(
            train,
            Path(args.work) / strategy,
            config=BiEncoderTrainingConfig(epochs=args.epochs),
            hard_negatives=negatives,
        )
        seconds = time.perf_counter() - started
        metrics = dense_ndcg(str(path), test)
        lines.append(
            f"| fine-tuned on `{strategy}` | {len(sample)} of {len(data.queries)} | {sum(pseudo.rejected.values())} | "
            f"{seconds:.0f} | {metrics['ndcg@10']:.4f} | {metrics['hit@1']:.4f} | {metrics['hit@10']:.4f} | "
            f"{metrics['recall@100']:.4f} |"
        )
        print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
