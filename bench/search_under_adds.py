"""Search latency while documents are being added, against the same searches on an idle index.

A first stage over ~10k SciFact passages (each abstract split in two) answers ``--searches`` single queries on one
thread, first idle, then while another thread adds held-out passages in small batches without pause. Embedding an
add happens outside the index lock, so a search waits for CPU (two cores shared with the adder), never for an
add's embedding; the ratio p99(adding) / p99(idle) is the figure (issue 31's target: within 2x).

    python bench/search_under_adds.py --kind dense --out bench/results/search-under-adds.md
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header
from _timing import percentiles

from rerank_plugins.data import load_beir
from rerank_plugins.first_stage import build_first_stage
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.schema import Document

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def passages(data_dir: str) -> tuple[list[Document], list[str]]:
    """Every SciFact abstract as two passages (its halves by words), and the test claims as queries."""
    data = load_beir(data_dir, "test")
    documents = []
    for doc_id, text in data.corpus.items():
        words = text.split()
        half = max(1, len(words) // 2)
        documents.append(Document(id=f"{doc_id}-a", text=" ".join(words[:half])))
        documents.append(Document(id=f"{doc_id}-b", text=" ".join(words[half:]) or text))
    return documents, list(data.queries.values())


def timed_searches(stage, queries: list[str], count: int, k: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        stage.search(queries[i % len(queries)], k)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--kind", default="dense", choices=["dense", "lexical", "hybrid"])
    parser.add_argument("--held-back", type=int, default=1000, help="passages kept out of the build, added later")
    parser.add_argument("--batch", type=int, default=4, help="passages per add call")
    parser.add_argument("--searches", type=int, default=600)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--embedding-cache", default="runs/bench-search-under-adds/embeddings.sqlite")
    parser.add_argument("--out", default="bench/results/search-under-adds.md")
    args = parser.parse_args()

    documents, queries = passages(args.data)
    base, extra = documents[: -args.held_back], documents[-args.held_back :]
    Path(args.embedding_cache).parent.mkdir(parents=True, exist_ok=True)
    # The cache makes reruns' builds quick; the passages added under load carry a new suffix, so they are embedded.
    embedder = get_bi_encoder(MODEL, disk_cache=args.embedding_cache)
    started = time.perf_counter()
    stage = build_first_stage(args.kind, base, embedder if args.kind != "lexical" else None, analyzer="english")
    build_s = time.perf_counter() - started
    embedder.encode_queries(queries)  # query vectors are cached in memory alike for both phases
    timed_searches(stage, queries, 50, args.k)  # warm-up

    idle = timed_searches(stage, queries, args.searches, args.k)
    nonce = f" [{time.time_ns()}]"  # texts never embedded before: the disk cache cannot answer the adds

    def while_running(work) -> tuple[list[float], dict[str, float]]:
        done = {"documents": 0, "calls": 0, "seconds": 0.0}
        stop = threading.Event()

        def loop() -> None:
            start = time.perf_counter()
            for offset in range(0, len(extra), args.batch):
                if stop.is_set():
                    break
                batch = [Document(id=d.id + nonce, text=d.text + nonce) for d in extra[offset : offset + args.batch]]
                work(batch)
                done["documents"] += len(batch)
                done["calls"] += 1
            done["seconds"] = time.perf_counter() - start

        thread = threading.Thread(target=loop)
        thread.start()
        times = timed_searches(stage, queries, args.searches, args.k)
        stop.set()
        thread.join()
        return times, done

    # Control: the same embedding work on another thread, nothing added: what CPU and GIL sharing alone cost.
    embedding_only, _ = while_running(lambda batch: embedder.encode_documents([d.text + " " for d in batch]))
    busy, added = while_running(stage.add_documents)

    rows = {
        "idle": percentiles(idle),
        "while embedding only": percentiles(embedding_only),
        "while adding": percentiles(busy),
    }
    ratio = rows["while adding"]["p99_ms"] / rows["idle"]["p99_ms"]
    control = rows["while adding"]["p99_ms"] / rows["while embedding only"]["p99_ms"]
    lines = [
        result_header(f"Search latency while adding ({args.kind})"),
        "",
        f"{len(base)} passages indexed ({build_s:.0f} s), {args.searches} single-query searches (top-{args.k}) on one "
        f"thread; meanwhile another thread added {added['documents']} passages in {added['calls']} calls of "
        f"{args.batch} ({added['seconds']:.1f} s). Query vectors were cached before both phases, so the figures "
        "are the index's search and any wait for the adder.",
        "",
        "| phase | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
        *(f"| {name} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |" for name, r in rows.items()),
        "",
        f"p99 while adding / p99 idle: **{ratio:.2f}x** (target: within 2x); / p99 while the same texts are only "
        f"embedded on another thread: **{control:.2f}x** (what the index itself adds)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
