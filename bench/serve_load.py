"""Load on a rerank server over loopback: requests/s, p50, p99 and errors at several concurrencies.

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


def requests_from_scifact(count: int, documents: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    data = load_beir(demo_data_path(), "test")
    rng = random.Random(seed)
    texts = list(data.corpus.values())
    queries = list(data.queries.values())
    return [(rng.choice(queries), rng.sample(texts, documents)) for _ in range(count)]


def body(route: str, query: str, documents: list[str], model: str) -> dict:
    if route == "/rerank-tei":
        return {"query": query, "texts": documents}
    return {"model": model, "query": query, "documents": documents}


async def closed_loop(url: str, route: str, model: str, concurrency: int, seconds: float, pool) -> dict:
    path = "/rerank" if route == "/rerank-tei" else route
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                query, documents = pool[i % len(pool)]
                i += concurrency
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
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
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


def in_process(model: str, pool, repeats: int) -> dict:
    from rerank_plugins.models.cross_encoder import CrossEncoderBackend

    backend = CrossEncoderBackend(model, cache_size=0)
    backend.score(*pool[0])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        backend.score(*pool[i % len(pool)], scale="sigmoid")
        times.append(time.perf_counter() - start)
    return {"in_process_p50_ms": round(1000 * statistics.median(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--route", default="/v1/rerank", choices=["/v1/rerank", "/rerank", "/rerank-tei"])
    parser.add_argument("--name", required=True, help="row label (the server)")
    parser.add_argument("--model", default="rerank", help="model name sent in the body")
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--in-process", help="also time this reranker called directly (same documents)")
    parser.add_argument("--out", default="bench/results/serve-load.jsonl")
    args = parser.parse_args()

    pool = requests_from_scifact(200, args.documents)
    rows = []
    for concurrency in map(int, args.concurrency.split(",")):
        asyncio.run(closed_loop(args.url, args.route, args.model, concurrency, 3.0, pool))  # warm up
        row = asyncio.run(closed_loop(args.url, args.route, args.model, concurrency, args.seconds, pool))
        rows.append({"server": args.name, "route": args.route, "documents": args.documents, **row})
        print(json.dumps(rows[-1]))
    if args.in_process:
        rows.append({"server": args.name, **in_process(args.in_process, pool, 50)})
        print(json.dumps(rows[-1]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"header": result_header(f"serve load {args.name}"), **row}) + "\n")


if __name__ == "__main__":
    main()
