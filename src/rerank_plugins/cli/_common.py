"""Arguments and steps several subcommands share, so that each reads and behaves the same wherever it appears."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rerank_plugins.data import load_dataset
from rerank_plugins.first_stage import FIRST_STAGES
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE
from rerank_plugins.training.recipes import NEGATIVE_KINDS

BI_HELP = "bi-encoder: hub id or directory (default: %(default)s, packaged offline)"
SPLIT_HELP = "embed every passage of documents longer than the bi-encoder's max length (default: their beginning)"
CACHE_HELP = "SQLite file keeping embeddings across runs (keyed by the model's content): unchanged texts are free"
ANALYZERS = ("auto", "english", "korean", "korean-bigram", "korean-morph", "generic")


def add_data(parser: argparse.ArgumentParser, split_default: str) -> None:
    """``--data`` and ``--split``, read by ``load_dataset``; commands differ only in the split they default to."""
    parser.add_argument(
        "--data", required=True, help="BEIR folder, SQuAD/KorQuAD .json, or (query, positive[, negative]) .jsonl/.csv"
    )
    parser.add_argument(
        "--split", default=split_default, help="qrels split (BEIR) or train/test (SQuAD) (default: %(default)s)"
    )


def add_tuning(parser: argparse.ArgumentParser) -> None:
    """The hybrid weight tuning that :func:`corpus_stage` does when asked."""
    parser.add_argument(
        "--tune-fusion",
        action="store_true",
        help="hybrid only: choose the dense weight on the --tune-split queries (nDCG@10) instead of the default",
    )
    parser.add_argument("--tune-split", default="train", help="queries to tune on (default: %(default)s)")


def add_first_stage(parser: argparse.ArgumentParser, what: str = "first stage", default: str | None = "hybrid") -> None:
    """``--first-stage`` and its ``--analyzer``; ``what`` says what the first stage is for in this command."""
    parser.add_argument(
        "--first-stage",
        default=default,
        choices=FIRST_STAGES,
        help=f"{what}: dense (FAISS), lexical (BM25) or hybrid (both fused) (default: "
        + ("%(default)s)" if default else "hybrid; dense for a sharded build)"),
    )
    parser.add_argument(
        "--analyzer",
        default="auto",
        choices=ANALYZERS,
        help="lexical analyzer; auto picks from the corpus's scripts (default: %(default)s)",
    )


def add_bi_encoder(parser: argparse.ArgumentParser, help_text: str = BI_HELP) -> None:
    """``--bi-encoder`` and its ``--embedding-cache``: the pair :func:`load_bi_encoder` reads."""
    parser.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help=help_text)
    parser.add_argument("--embedding-cache", help=CACHE_HELP)


def add_recipe(parser: argparse.ArgumentParser, miner_help: str, base_model_help: str) -> None:
    """The arguments train-bi and train-cross share up front; :func:`recipe_options` passes them on."""
    add_data(parser, "train")
    add_first_stage(parser, miner_help)
    parser.add_argument(
        "--negatives",
        choices=NEGATIVE_KINDS,
        help="given (the data's own), hard (mined), random, or given+hard "
        "(default: given+hard when the data has negatives, else hard)",
    )
    parser.add_argument("--output", required=True, help="directory for the trained model")
    parser.add_argument("--base-model", default=DEFAULT_BACKBONE, help=base_model_help)


def recipe_options(args: argparse.Namespace) -> dict[str, Any]:
    """What train-bi and train-cross pass alike to their recipe: start model, miner, negatives, held-out share."""
    return {
        "base_model": args.base_model,
        "first_stage": args.first_stage,
        "analyzer": args.analyzer,
        "negatives": args.negatives,
        "held_out": args.held_out,
    }


def add_training(
    parser: argparse.ArgumentParser,
    *,
    learning_rate: float,
    max_length: int | None = 256,
    max_length_help: str | None = None,
    held_out_help: str = "fraction of queries held out for evaluation",
) -> None:
    """The loop options after ``--epochs`` that every training command has; :func:`loop_options` reads them back."""
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--max-length", type=int, default=max_length, help=max_length_help)
    parser.add_argument("--held-out", type=float, default=0.1, help=held_out_help)
    parser.add_argument("--time-budget", type=float, help="stop training after this many seconds")


def loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the bi-encoder, cross-encoder and distillation configs all take, by the same names."""
    return {
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "time_budget_s": args.time_budget,
    }


def saved_line(what: str, path: str | Path, log: Any) -> str:
    """One line per trained model: where it went and what its training log says."""
    return f"{what} saved to {path} ({log.steps} steps, {log.seconds:.0f} s, held-out: {log.evaluations})"


def fusion_weight_option(value: str) -> float | str | None:
    """``--fusion-weight`` as argparse reads it: ``"auto"``, ``None`` for ``"none"``, else a number."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number in [0, 1], 'auto' or 'none', not {value!r}") from None


def stored_weight_line(model_path: str | Path) -> str:
    """Says what ``--fusion-weight auto`` will do with this model, so nobody has to open its README to find out."""
    weight = stored_fusion_weight(model_path)
    if weight is None:
        return f"No fusion weight stored (see {model_path}/README.md): --fusion-weight auto ranks by the reranker alone"
    return f"Fusion weight stored for --fusion-weight auto: {weight} (how it was chosen: {model_path}/README.md)"


def load_bi_encoder(args: argparse.Namespace) -> Any:
    """The bi-encoder :func:`add_bi_encoder`'s arguments name, shared through the registry (one instance a model)."""
    return get_bi_encoder(args.bi_encoder, disk_cache=args.embedding_cache)


def corpus_stage(args: argparse.Namespace, dataset: Any) -> Any:
    """The first stage over ``dataset``'s corpus that ``args`` describe, its hybrid weight tuned if asked."""
    from rerank_plugins.training.mining import corpus_first_stage

    embedder = None if args.first_stage == "lexical" else load_bi_encoder(args)
    options = {"long_documents": "split" if args.split_long_documents else "truncate"}
    if getattr(args, "index_type", None):
        options["index_type"] = args.index_type
    stage = corpus_first_stage(dataset, embedder, args.first_stage, analyzer=args.analyzer, **options)
    if getattr(args, "tune_fusion", False):
        from rerank_plugins.evaluation.evaluate import tune_hybrid_weight

        if args.first_stage != "hybrid":
            raise ValueError("--tune-fusion needs --first-stage hybrid")
        tuned = tune_hybrid_weight(stage, load_dataset(args.data, args.tune_split))
        print(
            f"Hybrid dense weight tuned on {tuned['queries']} {args.tune_split} queries: {tuned['dense_weight']} "
            f"(nDCG@10 by weight: {json.dumps(tuned['ndcg@10_by_weight'])})"
        )
    return stage
