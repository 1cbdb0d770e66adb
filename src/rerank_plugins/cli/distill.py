"""``rerank-plugins distill``: a trained reranker into a smaller, faster student that learns its teacher's scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from rerank_plugins.cli._common import (
    SPLIT_HELP,
    add_bi_encoder,
    add_data,
    add_first_stage,
    add_training,
    corpus_stage,
    loop_options,
    saved_line,
    stored_weight_line,
)
from rerank_plugins.data import load_dataset
from rerank_plugins.models import RUNTIMES, CrossEncoderBackend
from rerank_plugins.training.pseudo_queries import OFFLINE_STRATEGIES

NAME = "distill"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        NAME, help="distill a trained reranker into a smaller, faster one (the teacher labels the candidates)"
    )
    add_data(parser, "train")
    add_first_stage(parser, "first stage whose top-k the student learns to rerank, and fuses with")
    parser.add_argument("--teacher", required=True, help="trained cross-encoder to distill (directory or hub id)")
    parser.add_argument("--output", required=True, help="directory for the student")
    add_bi_encoder(parser, "embedding model of a dense or hybrid first stage")
    parser.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    parser.add_argument(
        "--layers",
        type=_layers,
        default=2,
        help="teacher layers the student keeps: a count (spread from first to last) or indices like 0,5 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--first-stage-k", type=int, default=30, help="candidates per query the teacher scores (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    add_training(
        parser,
        learning_rate=1e-4,
        max_length=None,
        max_length_help="tokens per (query, document) pair (default: the teacher's)",
        held_out_help="fraction of queries held out: agreement with the teacher per epoch, and the fusion weight at "
        "which the student's fused ranking best matches the teacher's (default: %(default)s)",
    )
    parser.add_argument("--teacher-cache", help="SQLite file keeping the teacher's scores across runs")
    parser.add_argument(
        "--teacher-runtime",
        default="torch",
        choices=RUNTIMES,
        help="runtime scoring the teacher's targets ('fast': the fastest one its quality guard accepts)",
    )
    parser.add_argument(
        "--corpus-queries",
        nargs="+",
        choices=OFFLINE_STRATEGIES,
        help="also learn from offline pseudo-queries made from every document of the corpus (a sentence, the "
        "title or salient terms; one or more): a small student needs many more queries than a data set's labelled "
        "ones",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train in bfloat16 autocast: up to ~2x faster on CPUs with native bf16 (not all: time "
        "bench/bf16_training_step.py), ~20x slower on others",
    )
    parser.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="also learn the labelled positives (qrels; a pseudo-query's own passage) with this weight beside the "
        "teacher's scores (default: %(default)s, the teacher alone)",
    )


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.training.distill import DistillationConfig, distill_cross_encoder

    config = DistillationConfig(bf16=args.bf16, label_weight=args.label_weight, **loop_options(args))
    dataset = load_dataset(args.data, args.split)
    more = []
    if args.corpus_queries:
        from rerank_plugins.data.corpus import load_corpus
        from rerank_plugins.training.pseudo_queries import offline_pseudo_queries

        # A BEIR folder keeps titles apart from the text (the title strategy needs them).
        documents = load_corpus(args.data if Path(args.data).is_dir() else dataset.corpus)
        more = [offline_pseudo_queries(documents, s).dataset for s in dict.fromkeys(args.corpus_queries)]
    path, log = distill_cross_encoder(
        CrossEncoderBackend(args.teacher, cache_size=0, max_length=args.max_length, runtime=args.teacher_runtime),
        dataset,
        args.output,
        candidates=corpus_stage(args, dataset),
        layers=args.layers,
        first_stage_k=args.first_stage_k,
        held_out=args.held_out,
        more_queries=more,
        config=config,
        teacher_cache=args.teacher_cache,
    )
    print(saved_line("Student", path, log))
    print(stored_weight_line(path))


def _layers(text: str) -> int | list[int]:
    """``--layers``: a count (``2``) or layer indices (``0,5``)."""
    try:
        return [int(i) for i in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of layers or indices like 0,5, got {text!r}") from None
