"""``rerank-plugins index``: a data set's corpus into a first-stage directory, in one piece or sharded."""

from __future__ import annotations

import argparse
from typing import Any

from rerank_plugins.cli._common import (
    SPLIT_HELP,
    add_bi_encoder,
    add_data,
    add_first_stage,
    add_tuning,
    corpus_stage,
    load_bi_encoder,
)
from rerank_plugins.data import load_dataset
from rerank_plugins.first_stage import load_first_stage
from rerank_plugins.schema import Document

NAME = "index"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(NAME, help="index a data set's corpus into a first-stage directory")
    add_data(parser, "test")
    add_first_stage(parser, default=None)
    add_tuning(parser)
    add_bi_encoder(parser)
    parser.add_argument(
        "--index-type", default="flat", choices=["flat", "hnsw", "ivf"], help="dense index: exact (flat) or approximate"
    )
    parser.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    parser.add_argument("--output", required=True, help="index directory to write")
    parser.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: Ray Data embeds with --workers actors and the shards are written here "
        "(the ray extra) (default: %(default)s)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        help="write a sharded index: dense (local or ray; ray default: one per 1M documents) or lexical (local)",
    )
    parser.add_argument("--workers", type=int, default=1, help="ray: embedding actors, one model each (default: 1)")
    parser.add_argument("--threads-per-worker", type=int, help="ray: threads per actor (default: CPUs / workers)")
    parser.add_argument("--address", help="ray: cluster address (default: start Ray on this machine)")


def run(args: argparse.Namespace) -> None:
    if args.shards and args.first_stage == "lexical" and args.engine == "local":
        path = _sharded_lexical_index(args)
        print(f"Indexed {len(load_first_stage(path))} documents (lexical, {args.shards} shards) -> {path}")
        return
    if args.engine == "ray" or args.shards:
        args.first_stage = args.first_stage or "dense"
        path = _sharded_index(args)
        print(f"Indexed {len(load_first_stage(path, load_bi_encoder(args)))} documents (dense, sharded) -> {path}")
        return
    if args.address or args.workers != 1 or args.threads_per_worker:
        raise ValueError("--address, --workers and --threads-per-worker need --engine ray")
    args.first_stage = args.first_stage or "hybrid"
    dataset = load_dataset(args.data, args.split)
    path = corpus_stage(args, dataset).save(args.output)
    print(f"Indexed {len(dataset.corpus)} documents ({args.first_stage}) -> {path}")


def _sharded_lexical_index(args: argparse.Namespace) -> Any:
    """A sharded BM25 index of the corpus, built in this process."""
    from rerank_plugins.first_stage.sharded_lexical import build_sharded_lexical_index

    if args.split_long_documents or args.embedding_cache or args.tune_fusion or args.index_type != "flat":
        raise ValueError(
            "a sharded lexical index embeds nothing: drop --split-long-documents, --embedding-cache, --tune-fusion "
            "and --index-type"
        )
    corpus = load_dataset(args.data, args.split).corpus
    documents = [Document(text, doc_id) for doc_id, text in corpus.items()]
    return build_sharded_lexical_index(documents, args.output, shards=args.shards, analyzer=args.analyzer)


def _sharded_index(args: argparse.Namespace) -> Any:
    """A sharded dense index of the corpus, built on Ray or in this process."""
    if args.first_stage != "dense" or args.split_long_documents or args.embedding_cache:
        raise ValueError(
            "sharded indexes on Ray are dense, and sharded dense indexes embed documents' beginnings and use no "
            "embedding cache: drop --first-stage (or use --first-stage lexical without --engine ray), "
            "--split-long-documents and --embedding-cache"
        )
    if args.engine == "ray":
        from rerank_plugins.distributed import build_index_ray

        return build_index_ray(
            args.data,
            args.output,
            args.bi_encoder,
            shards=args.shards,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            index_type=args.index_type,
            address=args.address,
        )
    from rerank_plugins.first_stage.sharded import build_sharded_index

    corpus = load_dataset(args.data, args.split).corpus
    documents = [Document(text, doc_id) for doc_id, text in corpus.items()]
    return build_sharded_index(
        documents, load_bi_encoder(args), args.output, shards=args.shards, index_type=args.index_type
    )
