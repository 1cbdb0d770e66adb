"""The ``rerank-plugins`` command: argument parsing only; the work is done by the library modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.data import load_dataset
from rerank_plugins.first_stage import FIRST_STAGES, load_first_stage
from rerank_plugins.fusion import auto_fusion_weight, stored_fusion_weight
from rerank_plugins.models import RUNTIMES, CrossEncoderBackend
from rerank_plugins.models.registry import get_bi_encoder, get_cross_encoder
from rerank_plugins.rerank import DEFAULT_TOP_N
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE
from rerank_plugins.training.pseudo_queries import OFFLINE_STRATEGIES
from rerank_plugins.training.recipes import NEGATIVE_KINDS

BI_HELP = "bi-encoder: hub id or directory (default: %(default)s, packaged offline)"
SPLIT_HELP = "embed every passage of documents longer than the bi-encoder's max length (default: their beginning)"
SCORE_LABELS = {"dense": "cosine", "lexical": "bm25", "hybrid": "hybrid"}
CACHE_HELP = "SQLite file keeping embeddings across runs (keyed by the model's content): unchanged texts are free"
ANALYZERS = ("auto", "english", "korean", "korean-bigram", "korean-morph", "generic")


def _add_data(parser: argparse.ArgumentParser, split_default: str) -> None:
    parser.add_argument(
        "--data", required=True, help="BEIR folder, SQuAD/KorQuAD .json, or (query, positive[, negative]) .jsonl/.csv"
    )
    parser.add_argument(
        "--split", default=split_default, help="qrels split (BEIR) or train/test (SQuAD) (default: %(default)s)"
    )


def _add_tuning(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tune-fusion",
        action="store_true",
        help="hybrid only: choose the dense weight on the --tune-split queries (nDCG@10) instead of the default",
    )
    parser.add_argument("--tune-split", default="train", help="queries to tune on (default: %(default)s)")


def _add_first_stage(
    parser: argparse.ArgumentParser, what: str = "first stage", default: str | None = "hybrid"
) -> None:
    parser.add_argument(
        "--first-stage",
        default=default,
        choices=FIRST_STAGES,
        help=f"{what}: dense (FAISS), lexical (BM25) or hybrid (both fused) (default: "
        + ("%(default)s)" if default else "hybrid; dense for a sharded build, the only kind that shards yet)"),
    )
    parser.add_argument(
        "--analyzer",
        default="auto",
        choices=ANALYZERS,
        help="lexical analyzer; auto picks from the corpus's scripts (default: %(default)s)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-plugins",
        description="Two-stage retrieval: a first stage's candidates, then a cross-encoder rerank.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quick = commands.add_parser(
        "quickstart", help="offline demo: train a reranker on bundled data, evaluate before/after, use it"
    )
    quick.add_argument("--output", default="runs/quickstart", help="models, index and report (default: %(default)s)")
    quick.add_argument(
        "--time-budget", type=float, help="seconds of training (default: the language's, en 350, ko 300)"
    )
    quick.add_argument(
        "--first-stage-k", type=int, help="candidates reranked (default: the language's measured setting)"
    )
    quick.add_argument(
        "--lang", default="en", choices=["en", "ko"], help="en: SciFact claims; ko: KorQuAD questions (default: en)"
    )
    quick.add_argument(
        "--first-stage",
        choices=FIRST_STAGES,
        help="first stage the reranker works on (default: the best measured for the language)",
    )
    quick.add_argument(
        "--train-bi-encoder", action="store_true", help="also fine-tune the bi-encoder (shares the time budget)"
    )

    index = commands.add_parser("index", help="index a data set's corpus into a first-stage directory")
    _add_data(index, "test")
    _add_first_stage(index, default=None)
    _add_tuning(index)
    index.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help=BI_HELP)
    index.add_argument("--embedding-cache", help=CACHE_HELP)
    index.add_argument(
        "--index-type", default="flat", choices=["flat", "hnsw", "ivf"], help="dense index: exact (flat) or approximate"
    )
    index.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    index.add_argument("--output", required=True, help="index directory to write")
    index.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: Ray Data embeds with --workers actors and the shards are written here "
        "(the ray extra) (default: %(default)s)",
    )
    index.add_argument("--shards", type=int, help="write a sharded dense index (ray default: one per 1M documents)")
    index.add_argument("--workers", type=int, default=1, help="ray: embedding actors, one model each (default: 1)")
    index.add_argument("--threads-per-worker", type=int, help="ray: threads per actor (default: CPUs / workers)")
    index.add_argument("--address", help="ray: cluster address (default: start Ray on this machine)")

    search = commands.add_parser("search", help="query a saved index, optionally reranking")
    search.add_argument("--index", required=True, help="index directory written by `index` (any first stage)")
    search.add_argument("--query", required=True, action="append", help="query text (repeat for several)")
    search.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help=BI_HELP)
    search.add_argument("--embedding-cache", help=CACHE_HELP)
    search.add_argument("--cross-encoder", help="reranker directory or hub id (omit for first stage only)")
    search.add_argument("--top-k", type=int, default=30, help="first-stage candidates (default: %(default)s)")
    search.add_argument("--top-n", type=int, default=DEFAULT_TOP_N, help="results shown (default: %(default)s)")

    train_bi = commands.add_parser("train-bi", help="fine-tune a bi-encoder (MultipleNegativesRankingLoss + negatives)")
    _add_data(train_bi, "train")
    _add_first_stage(train_bi, "first stage that mines hard negatives")
    _add_negatives(train_bi)
    train_bi.add_argument("--output", required=True, help="directory for the trained model")
    train_bi.add_argument("--base-model", default=DEFAULT_BACKBONE, help="model to start from (default: %(default)s)")
    train_bi.add_argument("--epochs", type=int, default=1)
    train_bi.add_argument(
        "--batch-size", type=int, default=32, help="pairs per step; more in-batch negatives (default: %(default)s)"
    )
    train_bi.add_argument(
        "--hard-negatives", type=int, default=1, help="negatives per query in each batch (default: %(default)s)"
    )
    train_bi.add_argument("--learning-rate", type=float, default=2e-5)
    train_bi.add_argument("--max-length", type=int, default=256)
    train_bi.add_argument("--held-out", type=float, default=0.1, help="fraction of queries held out for evaluation")
    train_bi.add_argument("--time-budget", type=float, help="stop training after this many seconds")

    train_cross = commands.add_parser("train-cross", help="train a cross-encoder reranker on positives + negatives")
    _add_data(train_cross, "train")
    _add_first_stage(train_cross, "first stage that mines hard negatives and tunes fusion")
    _add_negatives(train_cross)
    train_cross.add_argument("--output", required=True, help="directory for the trained model")
    train_cross.add_argument("--base-model", default=DEFAULT_BACKBONE, help="backbone (default: %(default)s)")
    train_cross.add_argument(
        "--bi-encoder",
        default=DEFAULT_BACKBONE,
        help="embedding model of a dense or hybrid miner (default: %(default)s)",
    )
    train_cross.add_argument(
        "--num-negatives",
        type=int,
        default=7,
        help="negatives per (query, positive) group, drawn afresh each epoch (default: %(default)s)",
    )
    train_cross.add_argument(
        "--mining-depth",
        type=int,
        default=30,
        help="hard negatives come from the first stage's top-k (default: %(default)s)",
    )
    train_cross.add_argument("--loss", default="listwise", choices=["listwise", "binary"])
    train_cross.add_argument("--epochs", type=int, default=1)
    train_cross.add_argument("--learning-rate", type=float, default=5e-5)
    train_cross.add_argument("--max-length", type=int, default=256, help="tokens per (query, document) pair")
    train_cross.add_argument("--held-out", type=float, default=0.1, help="fraction of queries held out for evaluation")
    train_cross.add_argument("--time-budget", type=float, help="stop training after this many seconds")

    adapt = commands.add_parser(
        "adapt", help="fit both models to a corpus without labels (pseudo-queries), keeping only what helps"
    )
    adapt.add_argument(
        "--corpus", required=True, help="BEIR folder, corpus .jsonl (id, text[, title]), SQuAD .json or .txt"
    )
    adapt.add_argument("--output", required=True, help="DIR for bi-encoder/, cross-encoder/ and report.{json,md,png}")
    _add_first_stage(adapt, "first stage that mines negatives and is evaluated")
    adapt.set_defaults(first_stage="hybrid")
    adapt.add_argument(
        "--llm",
        help="MODULE:NAME of a LangChain chat model / LLM or a LlamaIndex LLM (or a function returning one) that "
        "writes the queries (default: offline pseudo-queries, no LLM)",
    )
    adapt.add_argument(
        "--strategy",
        default="sentence",
        choices=OFFLINE_STRATEGIES,
        help="offline pseudo-queries: a sentence of the passage, its title or its salient terms (default: %(default)s)",
    )
    adapt.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help="bi-encoder to adapt (default: %(default)s)")
    adapt.add_argument("--base-model", default=DEFAULT_BACKBONE, help="reranker backbone (default: %(default)s)")
    adapt.add_argument("--queries-per-document", type=int, default=1, help="(default: %(default)s)")
    adapt.add_argument("--max-documents", type=int, help="offline: make queries from a sample of this many documents")
    adapt.add_argument("--prompt-file", help="LLM prompt template with {passage} (and {n}) in it")
    adapt.add_argument("--concurrency", type=int, default=4, help="LLM calls at once (default: %(default)s)")
    adapt.add_argument("--labelled", help="labelled queries to add (any --data format over the same corpus ids)")
    adapt.add_argument("--labelled-split", default="train", help="qrels split of --labelled (default: %(default)s)")
    adapt.add_argument("--time-budget", type=float, default=600.0, help="seconds of training (default: %(default)s)")
    adapt.add_argument("--held-out", type=float, default=0.1, help="fraction of queries for the guard")
    adapt.add_argument("--cross-max-length", type=int, default=128, help="reranker tokens per pair")
    adapt.add_argument("--yes", action="store_true", help="with --llm: start without asking after showing the cost")

    distill = commands.add_parser(
        "distill", help="distill a trained reranker into a smaller, faster one (the teacher labels the candidates)"
    )
    _add_data(distill, "train")
    _add_first_stage(distill, "first stage whose top-k the student learns to rerank, and fuses with")
    distill.add_argument("--teacher", required=True, help="trained cross-encoder to distill (directory or hub id)")
    distill.add_argument("--output", required=True, help="directory for the student")
    distill.add_argument(
        "--bi-encoder", default=DEFAULT_BACKBONE, help="embedding model of a dense or hybrid first stage"
    )
    distill.add_argument("--embedding-cache", help=CACHE_HELP)
    distill.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    distill.add_argument(
        "--layers",
        type=_layers,
        default=2,
        help="teacher layers the student keeps: a count (spread from first to last) or indices like 0,5 "
        "(default: %(default)s)",
    )
    distill.add_argument(
        "--first-stage-k", type=int, default=30, help="candidates per query the teacher scores (default: %(default)s)"
    )
    distill.add_argument("--epochs", type=int, default=2)
    distill.add_argument("--learning-rate", type=float, default=1e-4)
    distill.add_argument("--max-length", type=int, help="tokens per (query, document) pair (default: the teacher's)")
    distill.add_argument(
        "--held-out",
        type=float,
        default=0.1,
        help="fraction of queries held out: agreement with the teacher per epoch, and the fusion weight at which the "
        "student's fused ranking best matches the teacher's (default: %(default)s)",
    )
    distill.add_argument("--time-budget", type=float, help="stop training after this many seconds")
    distill.add_argument("--teacher-cache", help="SQLite file keeping the teacher's scores across runs")
    distill.add_argument(
        "--teacher-runtime",
        default="torch",
        choices=RUNTIMES,
        help="runtime scoring the teacher's targets ('fast': the fastest one its quality guard accepts)",
    )
    distill.add_argument(
        "--corpus-queries",
        nargs="+",
        choices=OFFLINE_STRATEGIES,
        help="also learn from offline pseudo-queries made from every document of the corpus (a sentence, the "
        "title or salient terms; one or more): a small student needs many more queries than a data set's labelled "
        "ones",
    )
    distill.add_argument(
        "--bf16",
        action="store_true",
        help="train in bfloat16 autocast: up to ~2x faster on CPUs with native bf16 (not all: time "
        "bench/bf16_training_step.py), ~20x slower on others",
    )
    distill.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="also learn the labelled positives (qrels; a pseudo-query's own passage) with this weight beside the "
        "teacher's scores (default: %(default)s, the teacher alone)",
    )

    evaluate = commands.add_parser("evaluate", help="metrics before and after reranking, with latency")
    _add_data(evaluate, "test")
    _add_first_stage(evaluate)
    _add_tuning(evaluate)
    evaluate.add_argument("--bi-encoder", default=DEFAULT_BACKBONE, help=BI_HELP)
    evaluate.add_argument("--embedding-cache", help=CACHE_HELP)
    evaluate.add_argument("--cross-encoder", help="reranker (omit to evaluate the first stage alone)")
    evaluate.add_argument("--index", help="a saved index (any kind, sharded too) instead of indexing --data's corpus")
    evaluate.add_argument(
        "--first-stage-k", type=int, default=30, help="candidates reranked per query (default: %(default)s)"
    )
    evaluate.add_argument(
        "--fusion-weight",
        default="auto",
        help="also order by a*z(rerank)+(1-a)*z(first stage): a number in [0, 1]; 'auto' for the weight stored "
        "with a reranker trained by rerank-plugins (none stored: the reranker alone); 'none' for the reranker alone "
        "(default: %(default)s)",
    )
    evaluate.add_argument("--split-long-documents", action="store_true", help=SPLIT_HELP)
    evaluate.add_argument(
        "--rerank-long-documents",
        default="truncate",
        choices=["truncate", "window"],
        help="reranker reads the beginning of a long document, or scores overlapping windows and "
        "keeps the best (default: %(default)s)",
    )
    evaluate.add_argument("--output", required=True, help="report .json (a .md and .png are written beside it)")
    return parser


def _layers(text: str) -> int | list[int]:
    """``--layers``: a count (``2``) or layer indices (``0,5``)."""
    try:
        return [int(i) for i in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of layers or indices like 0,5, got {text!r}") from None


def _add_negatives(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--negatives",
        choices=NEGATIVE_KINDS,
        help="given (the data's own), hard (mined), random, or given+hard "
        "(default: given+hard when the data has negatives, else hard)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # bm25s sets its own logger to DEBUG when imported
        handler.setLevel(level)
    if not args.verbose:  # transformers' load reports and per-file progress bars; ours stay
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        return _run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:
        print(f"rerank-plugins {args.command}: error: {error}", file=sys.stderr)
        return 2


def _bi_encoder(args: argparse.Namespace) -> Any:
    return get_bi_encoder(args.bi_encoder, disk_cache=args.embedding_cache)


def _corpus_stage(args: argparse.Namespace, dataset: Any) -> Any:
    from rerank_plugins.training.mining import corpus_first_stage

    embedder = None if args.first_stage == "lexical" else _bi_encoder(args)
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


def _sharded_index(args: argparse.Namespace) -> Any:
    """A sharded dense index of the corpus, built on Ray or in this process."""
    if args.first_stage != "dense" or args.split_long_documents or args.embedding_cache:
        raise ValueError(
            "sharded indexes are dense, embed documents' beginnings and use no embedding cache: "
            "drop --first-stage, --split-long-documents and --embedding-cache"
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
    from rerank_plugins.schema import Document

    corpus = load_dataset(args.data, args.split).corpus
    documents = [Document(text, doc_id) for doc_id, text in corpus.items()]
    return build_sharded_index(
        documents, _bi_encoder(args), args.output, shards=args.shards, index_type=args.index_type
    )


def _run(args: argparse.Namespace) -> int:
    if args.command == "quickstart":
        from rerank_plugins.quickstart import run_quickstart

        run_quickstart(
            args.output,
            lang=args.lang,
            time_budget_s=args.time_budget,
            first_stage_k=args.first_stage_k,
            first_stage=args.first_stage,
            train_bi_encoder=args.train_bi_encoder,
        )
    elif args.command == "index" and (args.engine == "ray" or args.shards):
        args.first_stage = args.first_stage or "dense"
        path = _sharded_index(args)
        print(f"Indexed {len(load_first_stage(path, _bi_encoder(args)))} documents (dense, sharded) -> {path}")
    elif args.command == "index":
        if args.address or args.workers != 1 or args.threads_per_worker:
            raise ValueError("--address, --workers and --threads-per-worker need --engine ray")
        args.first_stage = args.first_stage or "hybrid"
        dataset = load_dataset(args.data, args.split)
        path = _corpus_stage(args, dataset).save(args.output)
        print(f"Indexed {len(dataset.corpus)} documents ({args.first_stage}) -> {path}")
    elif args.command == "search":
        from rerank_plugins.pipeline import TwoStagePipeline
        from rerank_plugins.rerank import RerankOptions

        stage = load_first_stage(args.index, _bi_encoder(args))
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
    elif args.command == "train-bi":
        from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig
        from rerank_plugins.training.recipes import train_bi_encoder_on

        config = BiEncoderTrainingConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            hard_negatives_per_query=args.hard_negatives,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            time_budget_s=args.time_budget,
        )
        path, log = train_bi_encoder_on(
            load_dataset(args.data, args.split),
            args.output,
            base_model=args.base_model,
            first_stage=args.first_stage,
            analyzer=args.analyzer,
            negatives=args.negatives,
            held_out=args.held_out,
            config=config,
        )
        print(f"Bi-encoder saved to {path} ({log.steps} steps, {log.seconds:.0f} s, held-out: {log.evaluations})")
    elif args.command == "train-cross":
        from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig
        from rerank_plugins.training.recipes import train_cross_encoder_on

        config = CrossEncoderTrainingConfig(
            loss=args.loss,
            epochs=args.epochs,
            num_negatives=args.num_negatives,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            time_budget_s=args.time_budget,
        )
        path, log = train_cross_encoder_on(
            load_dataset(args.data, args.split),
            args.output,
            base_model=args.base_model,
            bi_encoder=args.bi_encoder,
            first_stage=args.first_stage,
            analyzer=args.analyzer,
            negatives=args.negatives,
            mining_depth=args.mining_depth,
            held_out=args.held_out,
            config=config,
        )
        print(f"Cross-encoder saved to {path} ({log.steps} steps, {log.seconds:.0f} s, held-out: {log.evaluations})")
        print(_stored_weight_line(path))
    elif args.command == "adapt":
        _adapt(args)
    elif args.command == "distill":
        from rerank_plugins.training.distill import DistillationConfig, distill_cross_encoder

        config = DistillationConfig(
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            max_length=args.max_length,
            time_budget_s=args.time_budget,
            bf16=args.bf16,
            label_weight=args.label_weight,
        )
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
            candidates=_corpus_stage(args, dataset),
            layers=args.layers,
            first_stage_k=args.first_stage_k,
            held_out=args.held_out,
            more_queries=more,
            config=config,
            teacher_cache=args.teacher_cache,
        )
        print(f"Student saved to {path} ({log.steps} steps, {log.seconds:.0f} s, held-out: {log.evaluations})")
        print(_stored_weight_line(path))
    elif args.command == "evaluate":
        from rerank_plugins.evaluation.evaluate import evaluate_two_stage
        from rerank_plugins.evaluation.report import markdown_table, write_report

        dataset = load_dataset(args.data, args.split)
        stage = load_first_stage(args.index, _bi_encoder(args)) if args.index else _corpus_stage(args, dataset)
        reranker = get_cross_encoder(args.cross_encoder) if args.cross_encoder else None
        weight = args.fusion_weight
        if weight == "auto":
            weight = auto_fusion_weight(reranker.path, stage.describe()) if reranker else None
        elif weight == "none":
            weight = None
        else:
            weight = float(weight)
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
    return 0


def _adapt(args: argparse.Namespace) -> None:
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


def _stored_weight_line(model_path: str | Path) -> str:
    weight = stored_fusion_weight(model_path)
    if weight is None:
        return f"No fusion weight stored (see {model_path}/README.md): --fusion-weight auto ranks by the reranker alone"
    return f"Fusion weight stored for --fusion-weight auto: {weight} (how it was chosen: {model_path}/README.md)"


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
    if not sys.stdin.isatty():
        return False
    return input("Call the LLM? [y/N] ").strip().lower() in ("y", "yes")


if __name__ == "__main__":
    raise SystemExit(main())
