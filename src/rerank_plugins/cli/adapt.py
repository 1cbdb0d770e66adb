"""``rerank-plugins adapt``: fit both models to a corpus without labels, from pseudo-queries (offline or an LLM's)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rerank_plugins.cli._common import add_first_stage
from rerank_plugins.data import load_dataset
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE
from rerank_plugins.training.pseudo_queries import OFFLINE_STRATEGIES

NAME = "adapt"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        NAME, help="fit both models to a corpus without labels (pseudo-queries), keeping only what helps"
    )
    parser.add_argument(
        "--corpus", required=True, help="BEIR folder, corpus .jsonl (id, text[, title]), SQuAD .json or .txt"
    )
    parser.add_argument("--output", required=True, help="DIR for bi-encoder/, cross-encoder/ and report.{json,md,png}")
    add_first_stage(parser, "first stage that mines negatives and is evaluated")
    parser.set_defaults(first_stage="hybrid")
    parser.add_argument(
        "--llm",
        help="MODULE:NAME of a LangChain chat model / LLM or a LlamaIndex LLM (or a function returning one) that "
        "writes the queries (default: offline pseudo-queries, no LLM)",
    )
    parser.add_argument(
        "--strategy",
        default="sentence",
        choices=OFFLINE_STRATEGIES,
        help="offline pseudo-queries: a sentence of the passage, its title or its salient terms (default: %(default)s)",
    )
    parser.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help="bi-encoder to adapt (default: %(default)s)")
    parser.add_argument("--base-model", default=DEFAULT_BACKBONE, help="reranker backbone (default: %(default)s)")
    parser.add_argument("--queries-per-document", type=int, default=1, help="(default: %(default)s)")
    parser.add_argument("--max-documents", type=int, help="offline: make queries from a sample of this many documents")
    parser.add_argument("--prompt-file", help="LLM prompt template with {passage} (and {n}) in it")
    parser.add_argument("--concurrency", type=int, default=4, help="LLM calls at once (default: %(default)s)")
    parser.add_argument("--labelled", help="labelled queries to add (any --data format over the same corpus ids)")
    parser.add_argument("--labelled-split", default="train", help="qrels split of --labelled (default: %(default)s)")
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of training (default: %(default)s)")
    parser.add_argument("--held-out", type=float, default=0.1, help="fraction of queries for the guard")
    parser.add_argument("--cross-max-length", type=int, default=128, help="reranker tokens per pair")
    parser.add_argument("--yes", action="store_true", help="with --llm: start without asking after showing the cost")


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.data.corpus import load_corpus
    from rerank_plugins.training.adapt import AdaptConfig, adapt
    from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig
    from rerank_plugins.training.pseudo_queries import offline_pseudo_queries

    documents = load_corpus(args.corpus)
    if args.llm:
        generator = _llm_generator(args)
        cost = generator.estimate_cost(documents)
        print(
            f"{cost['calls']} LLM calls ({cost['cached']} of {cost['documents']} documents cached), about "
            f"{cost['prompt_tokens']:,} prompt and {cost['output_tokens']:,} output tokens"
        )
        if cost["calls"] and not args.yes and not _confirm():
            raise ValueError("stopped before calling the LLM (pass --yes to skip the question)")
        queries = generator.generate(documents)
    else:
        queries = offline_pseudo_queries(
            documents, args.strategy, queries_per_document=args.queries_per_document, max_documents=args.max_documents
        )
    print(f"Pseudo-queries: {json.dumps(queries.summary())}")
    config = AdaptConfig(
        first_stage=args.first_stage,
        analyzer=args.analyzer,
        base_bi_encoder=args.bi_encoder,
        base_cross_encoder=args.base_model,
        held_out=args.held_out,
        time_budget_s=args.time_budget,
        cross_encoder=CrossEncoderTrainingConfig(max_length=args.cross_max_length),
    )
    labelled = load_dataset(args.labelled, args.labelled_split) if args.labelled else None
    report = adapt(queries, args.output, config, labelled=labelled, say=print)
    print(f"Report: {args.output}/report.md; models: {args.output}/bi-encoder, {args.output}/cross-encoder")
    print(
        json.dumps({"bi_encoder_kept": report["bi_encoder"]["kept"], "reranker_kept": report["cross_encoder"]["kept"]})
    )


def _llm_generator(args: argparse.Namespace) -> Any:
    """Import MODULE:NAME, call it if it is a factory, and wrap the model for its framework."""
    import importlib

    module_name, _, attribute = args.llm.partition(":")
    if not attribute:
        raise ValueError(f"--llm must look like MODULE:NAME, got {args.llm!r}")
    llm = getattr(importlib.import_module(module_name), attribute)
    llm = llm() if callable(llm) and not hasattr(llm, "invoke") and not hasattr(llm, "complete") else llm
    options = {
        "queries_per_document": args.queries_per_document,
        "concurrency": args.concurrency,
        "cache_path": f"{args.output}/llm-queries.jsonl",
    }
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as handle:
            options["prompt"] = handle.read()
    framework = type(llm).__module__.split(".")[0]
    if framework.startswith("langchain"):
        from rerank_plugins.langchain import query_generator
    elif framework.startswith("llama_index"):
        from rerank_plugins.llamaindex import query_generator
    else:
        raise TypeError(f"--llm {args.llm} is a {type(llm).__name__}, neither a LangChain nor a LlamaIndex model")
    return query_generator(llm, **options)


def _confirm() -> bool:
    """Asks before paying for LLM calls; without a terminal to ask on, the answer is no."""
    if not sys.stdin.isatty():
        return False
    return input("Call the LLM? [y/N] ").strip().lower() in ("y", "yes")
