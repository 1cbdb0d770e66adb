"""Indexing throughput, one process against Ray with 1 and 2 workers, and the sharded index's identity check.

Usage:
    python bench/ray_index.py --data ../shared/data/scifact --docs 1000 --rounds 2 --out bench/results/ray-index.md

Each round builds the same corpus (the first ``--docs`` SciFact documents, title + text, written to one JSONL
file) three ways, in turn: ``FaissIndex.add_documents`` in this process (torch's threads = the CPU count), and
``build_index_ray`` with 1 and 2 embedding actors (threads per actor = CPUs / workers; 2 shards). Ray's times
include its per-build costs (a count pass, starting the actors and loading a model in each) but not
``ray.init``, which is timed once. Printed, not asserted.

Identity: every SciFact test query's top-10 from the Ray-built sharded index (flat shards) against (a) one flat
index holding the same vectors (must be identical: ids, positions, scores) and (b) the index embedded in one
process (the same model on differently composed batches: ids and score differences are reported).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import describe_machine

from rerank_plugins import get_bi_encoder  # noqa: E402
from rerank_plugins.data import beir_document_text, load_beir  # noqa: E402
from rerank_plugins.first_stage import FaissIndex  # noqa: E402
from rerank_plugins.first_stage.dense import VectorIndex  # noqa: E402
from rerank_plugins.first_stage.sharded import ShardedIndex  # noqa: E402
from rerank_plugins.schema import Document  # noqa: E402

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def _subset(data: Path, docs: int, folder: Path) -> tuple[Path, list[Document]]:
    corpus = folder / "corpus.jsonl"
    rows = []
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == docs:
                break
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return corpus, [Document(beir_document_text(row), str(row["_id"])) for row in rows]


def _single(documents: list[Document]) -> tuple[float, FaissIndex]:
    embedder = get_bi_encoder(MODEL)
    embedder.clear_cache()  # every round embeds from scratch
    start = time.perf_counter()
    index = FaissIndex(embedder)
    index.add_documents(documents)
    return time.perf_counter() - start, index


def _ray(corpus: Path, output: Path, workers: int) -> float:
    from rerank_plugins.distributed import build_index_ray

    start = time.perf_counter()
    build_index_ray(corpus, output, MODEL, shards=2, workers=workers, index_type="flat")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="SciFact BEIR folder")
    parser.add_argument("--docs", type=int, default=1000, help="first N corpus documents (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="results .md")
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    lines = [
        "# Indexing on Ray: throughput against one process, and the sharded identity check",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        f"Date: {subprocess.run(['date', '-u'], capture_output=True, text=True).stdout.strip()}",
        f"Machine: {describe_machine()} ({cpus} CPUs given to Ray); "
        f"ray {ray.__version__}, model {MODEL} (packaged), max length 256, batch 32",
        f"Load average before: {os.getloadavg()}",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        corpus, documents = _subset(args.data, args.docs, Path(tmp))
        get_bi_encoder(MODEL).encode_queries(["warm-up"])  # load the driver's model outside the timings
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        times: dict[str, list[float]] = {"single process": [], "ray, 1 worker": [], "ray, 2 workers": []}
        single = None
        for round_number in range(args.rounds):
            seconds, single = _single(documents)
            times["single process"].append(seconds)
            for workers in (1, 2):
                output = Path(tmp) / f"ray-{workers}-{round_number}"
                times[f"ray, {workers} worker" + ("s" if workers > 1 else "")].append(_ray(corpus, output, workers))
            print({name: [round(t, 1) for t in values] for name, values in times.items()}, flush=True)

        sharded = ShardedIndex.load(Path(tmp) / f"ray-2-{args.rounds - 1}", get_bi_encoder(MODEL))
        same_vectors = VectorIndex(sharded.embedder.dimension)
        for shard in sharded.shards:
            same_vectors.add_vectors(shard.documents, shard._vectors())
        queries = list(load_beir(args.data, "test").queries.values())
        query_vectors = sharded.embedder.encode_queries(queries)
        merged = [[(h.document.id, h.position, h.score) for h in q] for q in sharded.search_vectors(query_vectors, 10)]
        flat = [
            [(h.document.id, h.position, h.score) for h in q] for q in same_vectors.search_vectors(query_vectors, 10)
        ]
        reference = [
            [(h.document.id, h.position, h.score) for h in q] for q in single.search_vectors(query_vectors, 10)
        ]
        identical = sum(a == b for a, b in zip(merged, flat))
        same_ids = sum([x[0] for x in a] == [x[0] for x in b] for a, b in zip(merged, reference))
        score_gap = max(abs(x[2] - y[2]) for a, b in zip(merged, reference) for x, y in zip(a, b))
        vector_gap = float(np.abs(same_vectors._vectors() - single._vectors()).max())
        ray.shutdown()

    base = np.median(times["single process"])
    lines += [
        f"Corpus: the first {args.docs} of SciFact's 5,183 documents (a subset: the machine is shared and a full "
        "run takes several times longer); `ray.init` took {:.1f} s, once.".format(ray_start),
        "",
        "| engine | threads per worker | seconds per round | median | docs/s | vs one process |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in times.items():
        workers = 1 if "1 worker" in name or name == "single process" else 2
        threads = cpus if name == "single process" else max(1, cpus // workers)
        median = float(np.median(values))
        lines.append(
            f"| {name} | {threads} | {', '.join(f'{v:.1f}' for v in values)} | {median:.1f} | "
            f"{args.docs / median:.1f} | {base / median:.2f}x |"
        )
    lines += [
        "",
        f"Identity, all {len(queries)} SciFact test queries, top-10, Ray-built sharded index (2 flat shards):",
        f"- against one flat index holding the same vectors: {identical}/{len(queries)} identical "
        "(ids, global positions and scores compared exactly)",
        f"- against the index embedded in one process: same top-10 ids for {same_ids}/{len(queries)} queries; "
        f"largest score difference {score_gap:.2e}; largest vector difference {vector_gap:.2e} (the same model on "
        "differently composed batches: padding changes float rounding)",
        "",
        f"Load average after: {os.getloadavg()}",
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
