"""``rerank-plugins train-bi``: fine-tune a bi-encoder on a labelled data set with mined negatives."""

from __future__ import annotations

import argparse

from rerank_plugins.cli._common import add_recipe, add_training, loop_options, recipe_options, saved_line
from rerank_plugins.data import load_dataset

NAME = "train-bi"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(NAME, help="fine-tune a bi-encoder (MultipleNegativesRankingLoss + negatives)")
    add_recipe(parser, "first stage that mines hard negatives", "model to start from (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="pairs per step; more in-batch negatives (default: %(default)s)"
    )
    parser.add_argument(
        "--hard-negatives", type=int, default=1, help="negatives per query in each batch (default: %(default)s)"
    )
    add_training(parser, learning_rate=2e-5)


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig
    from rerank_plugins.training.recipes import train_bi_encoder_on

    config = BiEncoderTrainingConfig(
        batch_size=args.batch_size, hard_negatives_per_query=args.hard_negatives, **loop_options(args)
    )
    dataset = load_dataset(args.data, args.split)
    path, log = train_bi_encoder_on(dataset, args.output, config=config, **recipe_options(args))
    print(saved_line("Bi-encoder", path, log))
