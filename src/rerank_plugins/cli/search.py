"""``rerank-plugins search``: query a saved index, optionally reranking, and print the ranked results."""

from __future__ import annotations

import argparse

from rerank_plugins.cli._common import add_bi_encoder, load_bi_encoder
from rerank_plugins.first_stage import load_first_stage
from rerank_plugins.models.registry import get_cross_encoder
from rerank_plugins.rerank import DEFAULT_TOP_N

NAME = "search"
SCORE_LABELS = {"dense": "cosine", "lexical": "bm25", "hybrid": "hybrid"}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(NAME, help="query a saved index, optionally reranking")
    parser.add_argument("--index", required=True, help="index directory written by `index` (any first stage)")
    parser.add_argument("--query", required=True, action="append", help="query text (repeat for several)")
    add_bi_encoder(parser)
    parser.add_argument("--cross-encoder", help="reranker directory or hub id (omit for first stage only)")
    parser.add_argument("--top-k", type=int, default=30, help="first-stage candidates (default: %(default)s)")
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N, help="results shown (default: %(default)s)")


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.pipeline import TwoStagePipeline
    from rerank_plugins.rerank import RerankOptions

    stage = load_first_stage(args.index, load_bi_encoder(args))
    reranker = get_cross_encoder(args.cross_encoder) if args.cross_encoder else None
    pipeline = TwoStagePipeline(stage, reranker, top_k=args.top_k, options=RerankOptions(top_n=args.top_n))
    label = SCORE_LABELS.get(stage.describe()["kind"], "first stage")
    for query, results in zip(args.query, pipeline.retrieve_batch(args.query)):
        print(f"\n{query}")
        for rank, r in enumerate(results, 1):
            fused = "" if r.fused_score is None else f"fused {r.fused_score:+.2f}  "
            rerank = "" if r.rerank_score is None else f"rerank {r.rerank_score:+.3f}  "
            first = f"{label} {r.retrieval_score:.3f}"
            print(f"  {rank}. {fused}{rerank}{first}  [{r.document.id}] {r.document.text[:90]}")
