"""``rerank-plugins serve``: an HTTP server that TEI, Cohere, Jina, infinity and OpenAI clients use unchanged."""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

from rerank_plugins.cli._common import fusion_weight_option
from rerank_plugins.models.pair_scoring import LONG_DOCUMENT_POLICIES
from rerank_plugins.rerank import DEFAULT_TOP_N

NAME = "serve"
API_KEY_VARIABLE = "RERANK_PLUGINS_API_KEY"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        NAME, help="serve a reranker, an embedding model and/or an index over HTTP (TEI, Cohere, Jina, OpenAI routes)"
    )
    parser.add_argument("--cross-encoder", help="reranker directory or hub id (the rerank routes)")
    parser.add_argument("--bi-encoder", help="embedding model (the embedding routes; the --index's model)")
    parser.add_argument("--index", help="a saved index (any kind): POST /search runs both stages over it")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="(default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE),
        help=f"require 'Authorization: Bearer KEY' on every route but /health (default: ${API_KEY_VARIABLE})",
    )
    parser.add_argument("--runtime", default="torch", help="inference runtime of both models (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=30, help="/search: first-stage candidates (default: %(default)s)")
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N, help="/search: results (default: %(default)s)")
    parser.add_argument(
        "--fusion-weight",
        default="auto",
        type=fusion_weight_option,
        help="/search: a in [0, 1], 'auto' (the reranker's stored weight) or 'none' (default: %(default)s)",
    )
    parser.add_argument(
        "--long-documents",
        default="auto",
        choices=LONG_DOCUMENT_POLICIES,
        help="documents longer than the reranker reads, unless a request asks to truncate (default: %(default)s: "
        "what the reranker was trained for)",
    )
    parser.add_argument("--max-in-flight", type=int, default=256, help="requests at once; more get 429")
    parser.add_argument("--max-documents", type=int, default=1000, help="documents or inputs per request (413)")
    parser.add_argument("--max-text-chars", type=int, default=100_000, help="characters per text (422)")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="request body size (413)")
    parser.add_argument(
        "--engine",
        default="uvicorn",
        choices=["uvicorn", "ray"],
        help="one process (uvicorn), or replicas on a Ray cluster (Ray Serve; RAY_ADDRESS names the cluster)",
    )
    parser.add_argument("--replicas", default="1", help="--engine ray: replicas, or 'auto' (default: %(default)s)")
    parser.add_argument("--min-replicas", type=int, help="--engine ray: autoscale between this and --max-replicas")
    parser.add_argument("--max-replicas", type=int, help="--engine ray: autoscaling's upper bound")
    parser.add_argument(
        "--cpus-per-replica", type=float, default=1.0, help="--engine ray: CPUs Ray reserves per replica"
    )


def run(args: argparse.Namespace) -> None:
    from rerank_plugins.serve import ServerSettings, serve

    if not (args.cross_encoder or args.bi_encoder or args.index):
        raise ValueError("give at least one of --cross-encoder, --bi-encoder, --index")
    settings = ServerSettings(
        api_key=args.api_key, max_in_flight=args.max_in_flight, max_body_bytes=args.max_body_bytes
    )
    print(f"Serving on http://{args.host}:{args.port} ({args.engine})")
    if args.engine == "uvicorn":
        serve(build_service(args), settings, host=args.host, port=args.port)
        return
    from rerank_plugins.distributed.serve import serve_on_ray

    autoscaling = None
    if args.min_replicas is not None or args.max_replicas is not None:
        autoscaling = {"min_replicas": args.min_replicas or 1, "max_replicas": args.max_replicas or 1}
    replicas = args.replicas if args.replicas == "auto" else int(args.replicas)
    serve_on_ray(
        functools.partial(build_service, args),
        settings,
        host=args.host,
        port=args.port,
        replicas=replicas,
        autoscaling=autoscaling,
        cpus_per_replica=args.cpus_per_replica,
    )


def build_service(args: argparse.Namespace) -> Any:
    """The models and index ``args`` name (called in the serving process: each Ray replica loads its own)."""
    from rerank_plugins.first_stage import load_first_stage
    from rerank_plugins.models.registry import get_bi_encoder, get_cross_encoder
    from rerank_plugins.rerank import RerankOptions
    from rerank_plugins.serve import Service, ServiceLimits

    reranker = get_cross_encoder(args.cross_encoder, runtime=args.runtime) if args.cross_encoder else None
    embedder = get_bi_encoder(args.bi_encoder, runtime=args.runtime) if args.bi_encoder else None
    stage = load_first_stage(args.index, embedder) if args.index else None
    options = RerankOptions(top_n=args.top_n, long_documents=args.long_documents, fusion_weight=args.fusion_weight)
    return Service(
        reranker,
        embedder,
        stage,
        options=options,
        top_k=args.top_k,
        limits=ServiceLimits(max_documents=args.max_documents, max_text_chars=args.max_text_chars),
    )
