"""First-stage speed: lexical (bm25s) against dense (MiniLM + FAISS flat) at 5k and 100k documents, one run.

Documents are synthesised from SciFact: each is two sentences of its abstracts (a sentence and one from elsewhere in
the corpus), so the vocabulary and lengths are real. Dense indexing at 100k is not run in full on 2 cores (hours):
its time is extrapolated from the measured 5k embedding rate, and its search is measured on a real 100k FAISS flat
index built from the 5k embeddings repeated with small noise. Every such figure is labelled.

    python bench/first_stage_speed.py --data ../shared/data/scifact --out bench/results/first-stage-speed.md
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _machine import result_header

from rerank_plugins.data import load_dataset
from rerank_plugins.first_stage import FaissIndex
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import Document

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def synthesise(corpus: dict[str, str], n: int) -> list[Document]:
    sentences = [s for text in corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) > 3]
    return [
        Document(f"{sentences[i % len(sentences)]} {sentences[(i * 7919 + 13) % len(sentences)]}", f"s{i}")
        for i in range(n)
    ]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--sizes", default="5000,100000")
    parser.add_argument("--out", default="bench/results/first-stage-speed.md")
    args = parser.parse_args()
    data = load_dataset(args.data, "test")
    queries = list(data.queries.values())
    sizes = [int(s) for s in args.sizes.split(",")]
    embedder = BiEncoderBackend(MODEL, cache_size=0)  # no cache: every figure is model work
    rows = []
    dense_rate = None
    for n in sizes:
        documents = synthesise(data.corpus, n)
        lexical = LexicalIndex("english")
        _, build = timed(lexical.add_documents, documents)
        _, search = timed(lexical.search_batch, queries, 100)
        rows.append(
            ("lexical (bm25s, english)", n, f"{build:.1f}", f"{n / build:,.0f}", f"{len(queries) / search:,.0f}")
        )
        print(rows[-1], flush=True)
        if dense_rate is None:  # measured in full at the first (small) size
            dense = FaissIndex(embedder)
            _, build = timed(dense.add_documents, documents)
            dense_rate = n / build
            vectors = dense._faiss.reconstruct_n(0, dense._faiss.ntotal)
            _, search = timed(dense.search_batch, queries, 100)
            rows.append(
                ("dense (MiniLM, flat)", n, f"{build:.1f}", f"{dense_rate:,.0f}", f"{len(queries) / search:,.0f}")
            )
        else:
            repeats = -(-n // len(vectors))
            rng = np.random.default_rng(0)
            tiled = np.tile(vectors, (repeats, 1))[:n] + rng.normal(0, 0.01, (n, vectors.shape[1])).astype(np.float32)
            tiled /= np.linalg.norm(tiled, axis=1, keepdims=True)
            dense = FaissIndex(embedder)
            dense.add_vectors(documents, tiled)
            _, search = timed(dense.search_batch, queries, 100)
            rows.append(
                (
                    "dense (MiniLM, flat)",
                    n,
                    f"{n / dense_rate:.0f} (extrapolated from the rate above)",
                    f"{dense_rate:,.0f} (measured at {sizes[0]:,})",
                    f"{len(queries) / search:,.0f}",
                )
            )
        print(rows[-1], flush=True)
    lines = [
        result_header("First-stage speed: lexical vs dense") + "  ",
        f"Queries: the {len(queries)} SciFact test claims, top-100 each, one batch; dense query time includes "
        "embedding the queries (no cache).",
        "",
        "| first stage | documents | build s | documents/s | queries/s |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(str(c) for c in row)} |" for row in rows),
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
