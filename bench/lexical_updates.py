"""What an add or a delete costs the lexical (BM25) index on a large corpus, now and with the rebuild it replaced.

Until this change every add or delete rebuilt bm25s's score matrix from all stored tokens; now postings are updated
in proportion to the change and scored at query time (``rerank_plugins.first_stage.bm25``). This builds an index of
``--documents`` passages (each three random sentences of SciFact abstracts, seeded: real English term statistics),
then times ``--updates`` single-document adds and as many single-document deletes through ``LexicalIndex``, the
rebuild they used to cost (bm25s over the same tokens, timed ``--rebuilds`` times), and query latency on the SciFact
test claims, ours against bm25s's precomputed scores. It checks that the updated index ranks exactly as one built at
once over the final documents.

    python bench/lexical_updates.py --documents 100000 --updates 1000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import bm25s
import numpy as np
from _machine import result_header
from _timing import percentiles

from rerank_plugins.data import load_beir
from rerank_plugins.first_stage import LexicalIndex
from rerank_plugins.first_stage.bm25 import Postings
from rerank_plugins.schema import Document


def corpus(data_dir: str, count: int, seed: int) -> tuple[list[Document], list[str]]:
    """``count`` passages of three random SciFact sentences, and the test claims as queries."""
    data = load_beir(data_dir, "test")
    sentences = [s for text in data.corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if len(s) > 20]
    rng = random.Random(seed)
    documents = [Document(" ".join(rng.sample(sentences, 3)), f"p{i}") for i in range(count)]
    return documents, list(data.queries.values())


def bm25s_index(token_lists: list[list[str]]) -> tuple[bm25s.BM25, float]:
    """The index every update rebuilt before this change (the removed ``LexicalIndex._build_bm25``), and its time."""
    start = time.perf_counter()
    vocab: dict[str, int] = {}
    token_ids = [[vocab.setdefault(t, len(vocab)) for t in doc] for doc in token_lists]
    bm25 = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    bm25.index((token_ids, vocab), create_empty_token=False, show_progress=False)
    return bm25, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=1000, help="single-document adds, then as many deletes")
    parser.add_argument("--rebuilds", type=int, default=3, help="times the old full rebuild is timed")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--out", default="bench/results/lexical-updates.md")
    args = parser.parse_args()

    documents, queries = corpus(args.data, args.documents + args.updates, seed=0)
    base, extra = documents[: args.documents], documents[args.documents :]
    lines = [result_header("Lexical index updates: postings updated in place vs the full rebuild they replaced")]
    say = lines.append

    index = LexicalIndex("english")
    start = time.perf_counter()
    index.add_documents(base)
    build_s = time.perf_counter() - start
    token_lists = index._state.tokens
    start = time.perf_counter()
    Postings().add(token_lists)
    postings_s = time.perf_counter() - start
    reference, rebuild_s = bm25s_index(token_lists)
    tokens = sum(len(t) for t in token_lists)
    say(
        f"\n{len(base)} passages, {tokens} tokens after the `english` analyzer, "
        f"{len(index._state.postings.vocabulary)} terms"
    )
    say(
        f"\nBuild: LexicalIndex.add_documents {build_s:.1f} s in all, analysis included; from the same tokens, "
        f"our postings {postings_s:.1f} s, bm25s's score matrix {rebuild_s:.1f} s."
    )

    # query latency, ours against bm25s's precomputed scores, same top-k rule
    analysed = index.analyzer.analyze(queries)
    postings = index._state.postings
    ours, theirs, hits = [], [], []
    for tokens_ in analysed:
        start = time.perf_counter()
        scores = postings.scores(tokens_, index.k1, index.b, index.method)
        np.argpartition(-scores, args.k)[: args.k]
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        scores = reference.get_scores_from_ids(reference.get_tokens_ids(tokens_))
        np.argpartition(-scores, args.k)[: args.k]
        theirs.append(time.perf_counter() - start)
        start = time.perf_counter()
        index.search_tokens([tokens_], args.k)
        hits.append(time.perf_counter() - start)
    say(f"\nQuery scoring, {len(queries)} analysed SciFact claims, scores of every document then the top-{args.k}:\n")
    say("| scorer | p50 ms | p99 ms |\n|---|---|---|")
    for name, times in (
        ("ours: postings, statistics applied per query", ours),
        ("bm25s: precomputed score matrix", theirs),
        (f"ours, whole `search_tokens` (top-{args.k} hits, ties by position)", hits),
    ):
        figures = percentiles(times, digits=3)
        say(f"| {name} | {figures['p50_ms']} | {figures['p99_ms']} |")

    adds = []
    for document in extra:
        start = time.perf_counter()
        index.add_documents([document])
        adds.append(time.perf_counter() - start)
    segments_after_adds = len(index._state.postings.segments)
    rng = random.Random(1)
    victims = rng.sample([d.id for d in index.documents], args.updates)
    deletes = []
    for doc_id in victims:
        start = time.perf_counter()
        index.delete([doc_id])
        deletes.append(time.perf_counter() - start)
    rebuilds = [bm25s_index(index._state.tokens)[1] for _ in range(args.rebuilds)]
    rebuild = statistics.median(rebuilds)
    say(f"\n{args.updates} single-document adds, then {args.updates} single-document deletes:\n")
    say(
        "| operation | p50 ms | p99 ms | total s | before: full rebuild each (median of "
        f"{args.rebuilds}) | before, total (estimated) |\n|---|---|---|---|---|---|"
    )
    for name, times in (("add one document", adds), ("delete one document", deletes)):
        figures = percentiles(times, digits=3)
        say(
            f"| {name} | {figures['p50_ms']} | {figures['p99_ms']} | {figures['total_s']} | {1000 * rebuild:.0f} ms | "
            f"{rebuild * len(times):.0f} s |"
        )
    say(f"\nSegments after the adds: {segments_after_adds}.")

    rebuilt = LexicalIndex.from_texts(
        [d.text for d in index.documents], ids=[d.id for d in index.documents], analyzer="english"
    )
    same = sum(
        [(h.document.id, h.score) for h in a] == [(h.document.id, h.score) for h in b]
        for a, b in zip(index.search_tokens(analysed, 10), rebuilt.search_tokens(analysed, 10))
    )
    say(f"Updated index against one built at once over the final documents: {same}/{len(queries)} top-10s identical.")
    assert same == len(queries), "the updated index must rank exactly as a rebuilt one"

    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
