"""Load on a rerank or embedding server over loopback: requests/s, p50, p99 and errors at several concurrencies.

Runs against any server speaking the Cohere-style ``POST /rerank`` or ``/v1/rerank`` (ours, infinity-emb) or TEI's
``POST /rerank``; the server is started separately (same CPU, one at a time). Each request reranks ``--documents``
SciFact abstracts for a SciFact claim; a closed loop of ``concurrency`` async clients runs for ``--seconds``.
``--in-process`` also times the backend called directly, for the server's overhead per request.

    rerank-plugins serve --cross-encoder runs/quickstart/cross-encoder --port 8080 &
    python bench/serve_load.py --url http://127.0.0.1:8080 --route /v1/rerank --name ours
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from _machine import result_header

from rerank_plugins.data import demo_data_path, load_beir

EMBEDDING_ROUTES = ("/embeddings", "/v1/embeddings")
NEXT_REQUEST = itertools.count()
"""Every request of the run (warm-ups included) is a different pool entry, so no server cache can answer one."""


def requests_from_scifact(count: int, documents: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    data = load_beir(demo_data_path(), "test")
    rng = random.Random(seed)
    texts = list(data.corpus.values())
    queries = list(data.queries.values())
    return [(rng.choice(queries), rng.sample(texts, documents)) for _ in range(count)]


def body(route: str, query: str, documents: list[str], model: str) -> dict:
    if route == "/rerank-tei":
        return {"query": query, "texts": documents}
    if route in EMBEDDING_ROUTES:  # OpenAI-style: embed the request's documents
        return {"model": model, "input": documents}
    return {"model": model, "query": query, "documents": documents}


async def closed_loop(url: str, route: str, model: str, concurrency: int, seconds: float, pool) -> dict:
    path = "/rerank" if route == "/rerank-tei" else route
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                number = next(NEXT_REQUEST)
                query, documents = pool[number % len(pool)]
                if route in EMBEDDING_ROUTES:  # abstracts recur across requests: make each text new to any cache
                    documents = [f"{text} ({number})" for text in documents]
                start = time.perf_counter()
                try:
                    response = await client.post(path, json=body(route, query, documents, model))
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        if latencies
        else None,
    }


def overhead(url: str, route: str, model: str, reranker: str, repeats: int = 200) -> dict:
    """p50 of one short (query, document) request through the server and called in-process, and the difference:
    what the HTTP layer adds to a request (sequential, so no batching on either side)."""
    from rerank_plugins.models.cross_encoder import CrossEncoderBackend

    backend = CrossEncoderBackend(reranker, cache_size=0)
    pairs = [
        (f"claim number {i} about cancer risk", [f"abstract {i}: patients with increased risk"]) for i in range(repeats)
    ]
    path = "/rerank" if route == "/rerank-tei" else route
    local, remote = [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for query, documents in pairs:  # interleaved, so noise hits both alike
            start = time.perf_counter()
            backend.score(query, documents, scale="sigmoid")
            local.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.post(path, json=body(route, query + " ", documents, model)).raise_for_status()
            remote.append(time.perf_counter() - start)
    local_ms, remote_ms = 1000 * statistics.median(local), 1000 * statistics.median(remote)
    return {
        "one_pair_in_process_p50_ms": round(local_ms, 2),
        "one_pair_server_p50_ms": round(remote_ms, 2),
        "server_overhead_p50_ms": round(remote_ms - local_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument(
        "--route",
        default="/v1/rerank",
        choices=["/v1/rerank", "/rerank", "/rerank-tei", "/embeddings", "/v1/embeddings"],
        help="a rerank route, or an OpenAI-style embedding route (each request embeds its --documents texts)",
    )
    parser.add_argument("--name", required=True, help="row label (the server)")
    parser.add_argument("--model", default="rerank", help="model name sent in the body")
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--in-process", help="the served reranker: also measure the server's overhead per request")
    parser.add_argument("--out", default="bench/results/serve-load.jsonl")
    args = parser.parse_args()

    pool = requests_from_scifact(5000, args.documents)  # no (query, document) pair repeats: no cache hits
    rows = []
    for concurrency in map(int, args.concurrency.split(",")):
        asyncio.run(closed_loop(args.url, args.route, args.model, concurrency, 3.0, pool))  # warm up
        row = asyncio.run(closed_loop(args.url, args.route, args.model, concurrency, args.seconds, pool))
        rows.append({"server": args.name, "route": args.route, "documents": args.documents, **row})
        print(json.dumps(rows[-1]))
    if args.in_process:
        rows.append({"server": args.name, **overhead(args.url, args.route, args.model, args.in_process)})
        print(json.dumps(rows[-1]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"header": result_header(f"serve load {args.name}"), **row}) + "\n")


if __name__ == "__main__":
    main()
