"""Shared backends under threads and under asyncio: same results as sequential, batching, a responsive loop."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rerank_plugins import get_bi_encoder, get_cross_encoder
from rerank_plugins.batching import MicroBatcher

WORDS = "cells protein gene cancer risk patients disease mice blood brain heart liver immune virus drug dose".split()


def _request(i: int) -> tuple[str, list[str]]:
    rng = np.random.default_rng(i)
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))) for _ in range(int(rng.integers(1, 12)))]
    return " ".join(rng.choice(WORDS, size=3)), docs


def test_eight_threads_fifty_calls_each_equal_sequential(tiny_bi_path, tiny_cross_path):
    reranker, embedder = get_cross_encoder(tiny_cross_path), get_bi_encoder(tiny_bi_path)
    reranker.cache_size = embedder.cache_size = 0  # make every call do model work
    requests = [_request(i) for i in range(400)]
    expected_scores = [reranker.score(q, docs) for q, docs in requests]
    expected_vectors = [embedder.encode_documents(docs) for _, docs in requests]

    def call(i: int):
        query, docs = requests[i]
        return i, reranker.score(query, docs), embedder.encode_documents(docs)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(400)))
    assert len(results) == 400
    for i, scores, vectors in results:
        np.testing.assert_allclose(scores, expected_scores[i], atol=1e-5)
        np.testing.assert_allclose(vectors, expected_vectors[i], atol=1e-5)


async def test_fifty_concurrent_reranks_batch_and_keep_the_loop_responsive(tiny_cross_path):
    reranker = get_cross_encoder(tiny_cross_path)
    reranker.cache_size = 0  # measure model work, not cache hits
    requests = [_request(i) for i in range(50)]
    expected = [reranker.rank(q, docs, top_n=5) for q, docs in requests]

    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker():
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - before - 0.005)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    results = await asyncio.gather(*(reranker.arank(q, docs, top_n=5) for q, docs in requests))
    concurrent_s = time.perf_counter() - start
    stop.set()
    await tick

    start = time.perf_counter()
    for q, docs in requests:
        await reranker.arank(q, docs, top_n=5)
    sequential_s = time.perf_counter() - start

    for got, want in zip(results, expected):
        assert [r.index for r in got] == [r.index for r in want]
        np.testing.assert_allclose([r.score for r in got], [r.score for r in want], atol=1e-5)
    sizes = reranker.batcher.batch_sizes
    assert max(sizes[:-50]) > 1, "concurrent requests should share forward passes"
    assert concurrent_s < sequential_s
    assert max(lags) < 0.1, f"event loop blocked for {max(lags) * 1000:.0f} ms"
    print(
        f"\n50 concurrent: {concurrent_s * 1000:.0f} ms, sequential: {sequential_s * 1000:.0f} ms, "
        f"max loop lag {max(lags) * 1000:.1f} ms, batches {sizes[:-50]}"
    )


async def test_concurrent_query_embeddings_are_batched_and_equal(tiny_bi_path):
    embedder = get_bi_encoder(tiny_bi_path)
    embedder.cache_size = 0
    texts = [" ".join(WORDS[i % 16 : i % 16 + 3]) + f" {i}" for i in range(40)]
    vectors = await asyncio.gather(*(embedder.aencode_queries([t]) for t in texts))
    np.testing.assert_allclose(np.vstack(vectors), embedder.encode_queries(texts), atol=1e-5)
    assert max(embedder._batcher.batch_sizes) > 1


async def test_errors_reach_only_their_batch_and_bad_input_fails_before_queueing(tiny_cross_path):
    def process(items):
        if "boom" in items:
            raise RuntimeError("model failed")
        return [item.upper() for item in items]

    batcher = MicroBatcher(process, max_wait_s=0.01)
    results = await asyncio.gather(batcher.submit("a"), batcher.submit("boom"), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await batcher.submit("c") == "C"
    with pytest.raises(ValueError, match="query"):
        await get_cross_encoder(tiny_cross_path).arank("", ["doc"])


async def test_cancelled_callers_do_not_break_the_batch():
    def process(items):
        time.sleep(0.05)
        return items

    batcher = MicroBatcher(process, max_wait_s=0.01)
    first = asyncio.ensure_future(batcher.submit(1))
    second = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 2
    assert await batcher.submit(3) == 3


async def test_batches_respect_max_weight():
    batcher = MicroBatcher(lambda items: items, weight=len, max_weight=10, max_wait_s=0.01)
    await asyncio.gather(*(batcher.submit("x" * 4) for _ in range(6)))
    assert max(batcher.batch_sizes) <= 3


def test_model_work_runs_on_one_dedicated_thread():
    """One thread for every batch (asyncio's default pool would spread model calls over many threads, each with its
    own idle-spinning OpenMP team: 13.7 ms more per request through the server, bench/results/serve-load.md)."""
    import threading

    from rerank_plugins.batching import MicroBatcher

    names: list[str] = []

    def process(items):
        names.append(threading.current_thread().name)
        return items

    batcher = MicroBatcher(process, max_weight=2)

    async def burst() -> list[int]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(6)))

    assert asyncio.run(burst()) == list(range(6)) and asyncio.run(burst()) == list(range(6))
    assert len(names) >= 6 and len(set(names)) == 1 and names[0].startswith("rerank-plugins-model")
