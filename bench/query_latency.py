"""Single-query embedding latency on an idle machine: ours vs sentence-transformers vs LangChain, interleaved.

`speed.md` once showed our torch path embedding single queries at a third of LangChain's rate while other runs
shared the CPU; this measures the three side by side, in rounds, so that noise hits all of them alike.

    python bench/query_latency.py --out bench/results/query_latency.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header

from rerank_plugins.data import demo_data_path, load_beir
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.resolve import resolve_model_path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/query_latency.md")
    args = parser.parse_args()
    # Benchmark-only peer, not in the bench extra (it pins huggingface-hub<2): use a throwaway virtualenv.
    from langchain_huggingface import HuggingFaceEmbeddings
    from sentence_transformers import SentenceTransformer

    queries = list(load_beir(demo_data_path(), "test").queries.values())[: args.queries]
    path = str(resolve_model_path(MODEL))
    ours = BiEncoderBackend(MODEL, cache_size=0)  # no cache: every call is model work
    model = SentenceTransformer(path)
    langchain = HuggingFaceEmbeddings(model_name=path)
    embedders = {
        "ours (torch) encode_queries([q])": lambda q: ours.encode_queries([q]),
        "sentence-transformers encode_query([q])": lambda q: model.encode_query([q]),
        "LangChain HuggingFaceEmbeddings.embed_query(q)": langchain.embed_query,
    }
    for embed in embedders.values():
        embed("warm up")
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(args.rounds):
        for name, embed in embedders.items():
            for query in queries:
                start = time.perf_counter()
                embed(query)
                seconds[name].append(time.perf_counter() - start)
    lines = [
        result_header("Single-query embedding latency"),
        "",
        f"{len(queries)} SciFact claims x {args.rounds} rounds, embedders interleaved by round.",
        "",
        "| embedder | p50 ms | p95 ms | queries/s |",
        "|---|---|---|---|",
    ]
    for name, values in seconds.items():
        ordered = sorted(values)
        lines.append(
            f"| {name} | {1000 * statistics.median(values):.1f} | {1000 * ordered[int(0.95 * len(ordered))]:.1f} "
            f"| {len(values) / sum(values):.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
