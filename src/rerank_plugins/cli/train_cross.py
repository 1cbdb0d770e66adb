"""``rerank-plugins train-cross``: train a cross-encoder reranker on positives and (mined) negatives."""

from __future__ import annotations

import argparse

from rerank_plugins.cli._common import (
    add_recipe,
    add_training,
    loop_options,
    recipe_options,
    saved_line,
    stored_weight_line,
)
from rerank_plugins.data import load_dataset
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE

NAME = "train-cross"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(NAME, help="train a cross-encoder reranker on positives + negatives")
    add_recipe(parser, "first stage that mines hard negatives and tunes fusion", "backbone (default: %(default)s)")
    parser.add_argument(
        "--bi-encoder",
        default=DEFAULT_BACKBONE,
        help="embedding model of a dense or hybrid miner (default: %(default)s)",
    )
    parser.add_argument(
        "--num-negatives",
        type=int,
        default=7,
        help="negatives per (query, positive) group, drawn afresh each epoch (default: %(default)s)",
    )
    parser.add_argument(
        "--mining-depth",
        type=int,
        default=30,
        help="hard negatives come from the first stage's top-k (default: %(default)s)",
    )
    parser.add_argument("--loss", default="listwise", choices=["listwise", "binary"])
    parser.add_argument(
        "--long-documents",
        default="truncate",
        choices=["truncate", "matched_window"],
        help="documents longer than --max-length: train on (and later read) their beginning, or the window sharing "
        "most words with the query (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, default=1)
    add_training(parser, learning_rate=5e-5, max_length_help="tokens per (query, document) pair")


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig
    from rerank_plugins.training.recipes import train_cross_encoder_on

    config = CrossEncoderTrainingConfig(
        loss=args.loss, num_negatives=args.num_negatives, long_documents=args.long_documents, **loop_options(args)
    )
    path, log = train_cross_encoder_on(
        load_dataset(args.data, args.split),
        args.output,
        bi_encoder=args.bi_encoder,
        mining_depth=args.mining_depth,
        config=config,
        **recipe_options(args),
    )
    print(saved_line("Cross-encoder", path, log))
    print(stored_weight_line(path))
