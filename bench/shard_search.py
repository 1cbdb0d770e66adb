"""What one shard costs on this machine, for sizing large indexes (docs/scaling.md): search and build rates.

Usage:
    python bench/shard_search.py --vectors 200000 --out bench/results/shard-search.md

Random unit vectors of 384 dimensions (MiniLM's) stand in for embeddings (search cost depends on sizes, not on
values; HNSW's recall does depend on them, so no recall is reported). One FAISS thread throughout, so the
rates are per core. Also the fan-out's own cost: one query over 4 small flat shards searched by threads
(:class:`ShardedIndex`) and by 2 Ray actors (:class:`RayShardedIndex`), against one index. Printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402
from _machine import describe_machine

from rerank_plugins import get_bi_encoder  # noqa: E402
from rerank_plugins.first_stage import FaissIndex  # noqa: E402
from rerank_plugins.first_stage.sharded import ShardedIndex, build_sharded_index  # noqa: E402
from rerank_plugins.schema import Document  # noqa: E402

DIMENSION = 384


def _unit(rows: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _ms_per_query(index, queries: np.ndarray, batch: int, k: int = 10) -> float:
    start = time.perf_counter()
    for first in range(0, len(queries), batch):
        index.search(queries[first : first + batch], k)
    return 1000 * (time.perf_counter() - start) / len(queries)


def _median_ms(search, repeats: int = 30) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search()
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    n = args.vectors
    data, queries = _unit(n, 0), _unit(64, 1)
    lines = [
        "# One shard's costs on this machine (per core), and the fan-out's own cost",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Date: {subprocess.run(['date', '-u'], capture_output=True, text=True).stdout.strip()}",
        f"Machine: {describe_machine()}; "
        f"faiss {faiss.__version__}, 1 FAISS thread; load average before: {os.getloadavg()}",
        "",
        f"{n:,} random unit vectors, {DIMENSION} dimensions, k = 10.",
        "",
        "| index | build | bytes per vector | ms per query, one at a time | ms per query, batches of 64 |",
        "|---|---|---|---|---|",
    ]
    flat = faiss.IndexFlatIP(DIMENSION)
    start = time.perf_counter()
    flat.add(data)
    build = time.perf_counter() - start
    lines.append(
        f"| flat | {n / build:,.0f} vectors/s | {DIMENSION * 4} | {_ms_per_query(flat, queries, 1):.2f} | "
        f"{_ms_per_query(flat, queries, 64):.2f} |"
    )
    hnsw = faiss.IndexHNSWFlat(DIMENSION, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 128
    sample = min(n, 50_000)
    start = time.perf_counter()
    hnsw.add(data[:sample])
    build = time.perf_counter() - start
    per_vector = (faiss.serialize_index(hnsw).nbytes) / sample
    lines.append(
        f"| HNSW (M 32, efSearch 128; built on the first {sample:,}) | {sample / build:,.0f} vectors/s | "
        f"{per_vector:,.0f} | {_ms_per_query(hnsw, queries, 1):.2f} | {_ms_per_query(hnsw, queries, 64):.2f} |"
    )
    print("\n".join(lines), flush=True)

    import ray

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import WORDS, build_tiny_models
    from rerank_plugins.distributed import RayShardedIndex

    with tempfile.TemporaryDirectory() as tmp:
        embedder = get_bi_encoder(build_tiny_models(Path(tmp) / "models")[0])
        rng = np.random.default_rng(2)
        documents = [Document(" ".join(rng.choice(WORDS, 12)), f"d{i}") for i in range(4000)]
        single = FaissIndex(embedder)
        single.add_documents(documents)
        path = build_sharded_index(documents, embedder, Path(tmp) / "idx", shards=4)
        threaded = ShardedIndex.load(path, embedder)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
        remote = RayShardedIndex(path, embedder, actors=2)
        vector = embedder.encode_queries(["cancer risk of the gene"])
        timings = {
            "one index": _median_ms(lambda: single.search_vectors(vector, 10)),
            "4 shards, threads (ShardedIndex)": _median_ms(lambda: threaded.search_vectors(vector, 10)),
            "4 shards on 2 Ray actors (RayShardedIndex)": _median_ms(lambda: remote.search_vectors(vector, 10)),
        }
        remote.close()
        ray.shutdown()
    lines += [
        "",
        "Fan-out cost: one query vector, top-10, 4,000 documents (search itself is negligible at this size), "
        "median of 30:",
        "",
        "| searched by | ms |",
        "|---|---|",
        *[f"| {name} | {ms:.2f} |" for name, ms in timings.items()],
        "",
        f"Load average after: {os.getloadavg()}",
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[-8:]))


if __name__ == "__main__":
    main()
