"""``rerank-plugins evaluate``: metrics and latency before and after reranking, written as a report."""

from __future__ import annotations

import argparse
import json

from rerank_plugins.cli._common import (
    SPLIT_HELP,
    add_bi_encoder,
    add_data,
    add_first_stage,
    add_tuning,
    corpus_stage,
    fusion_weight_option,
    load_bi_encoder,
)
from rerank_plugins.data import load_dataset
from rerank_plugins.first_stage import load_first_stage
from rerank_plugins.fusion import auto_fusion_weight
from rerank_plugins.models.pair_scoring import LONG_DOCUMENT_POLICIES
from rerank_plugins.models.registry import get_cross_encoder

NAME = "evaluate"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(NAME, help="metrics before and after reranking, with latency")
    add_data(parser, "test")
    add_first_stage(parser)
    add_tuning(parser)
    add_bi_encoder(parser)
    parser.add_argument("--cross-encoder", help="reranker (omit to evaluate the first stage alone)")
    parser.add_argument("--index", help="a saved index (any kind, sharded too) instead of indexing --data's corpus")
    parser.add_argument(
        "--first-stage-k", type=int, default=30, help="candidates reranked per query (default: %(default)s)"
    )
    parser.add_argument(
        "--fusion-weight",
        default="auto",
        type=fusion_weight_option,
        help="also order by a*z(rerank)+(1-a)*z(first stage): a number in [0, 1]; 'auto' for the weight stored "
        "with a reranker trained by rerank-plugins (none stored: the reranker alone); 'none' for the reranker alone "
        "(default: %(default)s)",
    )
    parser.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    parser.add_argument(
        "--rerank-long-documents",
        default="auto",
        choices=LONG_DOCUMENT_POLICIES,
        help="reranker reads the beginning of a long document, scores overlapping windows and keeps the best, or "
        "reads the window sharing most words with the query; auto: what the reranker was trained for "
        "(default: %(default)s)",
    )
    parser.add_argument("--output", required=True, help="report .json (a .md and .png are written beside it)")


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.evaluation.evaluate import evaluate_two_stage
    from rerank_plugins.evaluation.report import markdown_table, write_report

    dataset = load_dataset(args.data, args.split)
    stage = load_first_stage(args.index, load_bi_encoder(args)) if args.index else corpus_stage(args, dataset)
    reranker = get_cross_encoder(args.cross_encoder) if args.cross_encoder else None
    weight = args.fusion_weight
    if weight == "auto":
        weight = auto_fusion_weight(reranker.path, stage.describe()) if reranker else None
    report = evaluate_two_stage(
        dataset,
        stage,
        reranker,
        first_stage_k=args.first_stage_k,
        fusion_weight=weight,
        long_documents=args.rerank_long_documents,
    )
    written = write_report(report, args.output)
    print(markdown_table(report))
    print("Report: " + json.dumps({k: str(v) for k, v in written.items()}))
