"""What a single-document delete costs a 100k-vector dense index, now and with the rebuild it replaced.

Until this change every delete rebuilt the FAISS structure from all remaining vectors; now a flat index removes the
vectors in place (``remove_ids``) and HNSW / IVF mark them and rebuild once deleted vectors outnumber live ones. This
fills a ``VectorIndex`` of each type with ``--documents`` random unit vectors (no model: deletes never embed), then
times ``--deletes`` single-document deletes (and, to compare, ``--rebuilds`` full rebuilds as the old delete did),
and checks that searches after the deletes equal an index built from the remaining vectors alone.

    python bench/dense_deletes.py --documents 100000 --deletes 1000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
from _machine import result_header
from _timing import percentiles

from rerank_plugins.first_stage.dense import VectorIndex
from rerank_plugins.schema import Document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--deletes", type=int, default=1000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--rebuilds", type=int, default=3, help="times the old delete (a full rebuild) is timed")
    parser.add_argument("--types", default="flat,hnsw,ivf")
    parser.add_argument("--out", default="bench/results/dense-deletes.md")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.documents, args.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    documents = [Document(f"passage {i}", f"p{i}") for i in range(args.documents)]
    victims = random.Random(1).sample([d.id for d in documents], args.deletes)
    queries = rng.standard_normal((50, args.dimension)).astype(np.float32)
    lines = [result_header("Dense deletes: in place / marked vs the full rebuild they replaced")]
    lines.append(
        f"\n{args.documents} random unit vectors of {args.dimension} dimensions; {args.deletes} single-document "
        "deletes in random order.\n\n| index | delete p50 ms | p99 ms | total s | rebuilds during the deletes | "
        f"before: full rebuild each (median of {args.rebuilds}) | before, total (estimated) | deleted documents "
        "returned | top-10 equal to exact search over the live vectors |\n|---|---|---|---|---|---|---|---|---|"
    )
    for index_type in args.types.split(","):
        index = VectorIndex(args.dimension, index_type=index_type)
        index.add_vectors(documents, vectors)
        rebuilds = []
        for _ in range(args.rebuilds):
            start = time.perf_counter()
            index._rebuild()  # what every delete did before: the structure again from the stored vectors
            rebuilds.append(time.perf_counter() - start)
        rebuild = statistics.median(rebuilds)
        rebuilt_during, original = [], index._rebuild
        index._rebuild = lambda during=rebuilt_during, again=original: (during.append(1), again())  # type: ignore[method-assign]
        times = []
        for doc_id in victims:
            start = time.perf_counter()
            index.delete([doc_id])
            times.append(time.perf_counter() - start)
        gone = set(victims)
        keep = [i for i, d in enumerate(documents) if d.id not in gone]
        fresh = VectorIndex(args.dimension, index_type="flat")
        fresh.add_vectors([documents[i] for i in keep], vectors[keep])
        found = [[h.document.id for h in hits] for hits in index.search_vectors(queries, 10)]
        expected = [[h.document.id for h in hits] for hits in fresh.search_vectors(queries, 10)]
        same = sum(a == b for a, b in zip(found, expected))
        returned_deleted = sum(doc_id in gone for hits in found for doc_id in hits)
        figures = percentiles(times)
        lines.append(
            f"| {index_type} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['total_s']:.2f} | "
            f"{len(rebuilt_during)} | "
            f"{1000 * rebuild:.0f} ms | {rebuild * len(times):.0f} s | {returned_deleted} | {same}/{len(queries)} |"
        )
    lines.append(
        "\nExact search is a flat index over the remaining vectors: flat must match every query; HNSW and IVF are "
        "approximate, and on random (structureless) vectors their top-10 rarely equals the exact one, deletes or not."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
