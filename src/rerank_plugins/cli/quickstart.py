"""``rerank-plugins quickstart``: the offline demo, end to end on bundled data."""

from __future__ import annotations

import argparse

from rerank_plugins.first_stage import FIRST_STAGES

NAME = "quickstart"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        NAME, help="offline demo: train a reranker on bundled data, evaluate before/after, use it"
    )
    parser.add_argument("--output", default="runs/quickstart", help="models, index and report (default: %(default)s)")
    parser.add_argument(
        "--time-budget", type=float, help="seconds of training (default: the language's, en 350, ko 300)"
    )
    parser.add_argument(
        "--first-stage-k", type=int, help="candidates reranked (default: the language's measured setting)"
    )
    parser.add_argument(
        "--lang", default="en", choices=["en", "ko"], help="en: SciFact claims; ko: KorQuAD questions (default: en)"
    )
    parser.add_argument(
        "--first-stage",
        choices=FIRST_STAGES,
        help="first stage the reranker works on (default: the best measured for the language)",
    )
    parser.add_argument(
        "--train-bi-encoder", action="store_true", help="also fine-tune the bi-encoder (shares the time budget)"
    )


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.quickstart import run_quickstart

    run_quickstart(
        args.output,
        lang=args.lang,
        time_budget_s=args.time_budget,
        first_stage_k=args.first_stage_k,
        first_stage=args.first_stage,
        train_bi_encoder=args.train_bi_encoder,
    )
