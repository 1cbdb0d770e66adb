"""Speed benchmark: reranking latency and embedding throughput, ours against the peers, same inputs, same run.

Prints one report (and writes it under bench/results/): rerank p50/p95 per query and pairs/s for our
backends and for sentence-transformers `CrossEncoder.predict`, LlamaIndex `SentenceTransformerRerank` and
LangChain `CrossEncoderReranker` over `HuggingFaceCrossEncoder`, with ratios and top-10 agreement; embedding
throughput against LangChain `HuggingFaceEmbeddings` and LlamaIndex `HuggingFaceEmbedding`, with a
warm-cache re-index; achieved GFLOP/s of our fp32 paths against a plain matmul measured in the same run.

    pip install -e ".[all,bench]"     # the peers are benchmark-only dependencies
    python bench/speed.py --data ../shared/data/scifact --cross-encoder runs/bench/cross-encoder-hard-listwise
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from rerank_plugins import BiEncoderBackend, CrossEncoderBackend, resolve_model_path
from rerank_plugins.data import demo_data_path, load_dataset
from rerank_plugins.quickstart import demo_reranker
from rerank_plugins.training.mining import corpus_first_stage

BI = "sentence-transformers/all-MiniLM-L6-v2"
lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def timed_calls(
    fn: Callable[[str, list[str]], list[int]], requests: list[tuple[str, list[str]]]
) -> tuple[list[float], list[list[int]]]:
    fn(*requests[0])  # warm-up (lazy loads, first-call allocations)
    seconds, rankings = [], []
    for query, docs in requests:
        start = time.perf_counter()
        rankings.append(fn(query, docs))
        seconds.append(time.perf_counter() - start)
    return seconds, rankings


def top10_overlap(reference: list[list[int]], candidate: list[list[int]]) -> float:
    return float(np.mean([len(set(r[:10]) & set(c[:10])) / min(10, len(r)) for r, c in zip(reference, candidate)]))


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def rerank_flops(backend: CrossEncoderBackend, requests: list[tuple[str, list[str]]]) -> float:
    """Useful FLOPs of scoring ``requests`` (padding not counted).

    Linear layers 2·P·tokens + attention 4·L·H·tokens².
    """
    hf = backend.model.model
    config = hf.config
    params = sum(p.numel() for name, p in hf.named_parameters() if "embeddings" not in name)
    tokenizer = backend.model.tokenizer
    total = 0.0
    for query, docs in requests:
        lengths = tokenizer(
            [query] * len(docs), docs, truncation="only_second", max_length=backend.max_length, return_length=True
        )["length"]
        for t in lengths:
            total += 2 * params * t + 4 * config.num_hidden_layers * config.hidden_size * t * t
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(demo_data_path()), help="BEIR folder (default: bundled SciFact subset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cross-encoder", help="reranker directory (default: the quickstart's, or trained now)")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depths", default="30,100")
    parser.add_argument("--embed-docs", type=int, default=400)
    parser.add_argument("--out", default="bench/results/speed.md")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    cross_path = str(args.cross_encoder or demo_reranker())

    import torch

    say(f"# Speed benchmark\n\ncommand: `python {' '.join(sys.argv)}`  ")
    say(f"date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  ")
    say(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)  "
    )
    say(f"cross-encoder: {cross_path}; data: {args.data} ({args.split}); {args.queries} queries per depth\n")

    data = load_dataset(args.data, args.split)
    bi = BiEncoderBackend(BI)
    index = corpus_first_stage(data, bi)
    queries = list(data.queries.values())[: args.queries]
    hits = index.search_batch(queries, max(depths))

    from rerank_plugins.models.runtimes.guard import QuantizationQualityError

    ours = {}
    for name in ("torch", "onnx", "onnx-int8"):
        backend = CrossEncoderBackend(cross_path, runtime=name, cache_size=0)  # measure model work, not cache hits
        try:
            backend.score("warm", ["up"])  # exports and the int8 quality guard happen here, not in the timings
        except QuantizationQualityError as error:
            say(f"int8 export refused by the quality guard: {error}")
            continue
        ours[name] = backend
    fast = "onnx-int8" if "onnx-int8" in ours else "onnx"
    say(f"fast path compared against: ours ({fast})\n")

    from sentence_transformers import CrossEncoder

    st_model = CrossEncoder(cross_path)

    def st_predict(query: str, docs: list[str]) -> list[int]:
        return list(np.argsort(-st_model.predict([(query, d) for d in docs], show_progress_bar=False), kind="stable"))

    contenders: dict[str, Callable[[str, list[str]], list[int]]] = {
        f"ours ({name})": (lambda b: lambda q, d: [r.index for r in b.rank(q, d)])(backend)
        for name, backend in ours.items()
    }
    contenders["sentence-transformers CrossEncoder.predict"] = st_predict
    try:
        from llama_index.core.postprocessor import SentenceTransformerRerank
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        def llamaindex_rerank(query: str, docs: list[str]) -> list[int]:
            nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
            out = li_rerank.postprocess_nodes(nodes, QueryBundle(query))
            return [int(n.node.node_id) for n in out]

        li_rerank = SentenceTransformerRerank(model=cross_path, top_n=10)
        contenders["LlamaIndex SentenceTransformerRerank"] = llamaindex_rerank
    except ImportError as error:
        say(f"(LlamaIndex SentenceTransformerRerank unavailable: {error})")
    try:
        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker as LCReranker
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder
        from langchain_core.documents import Document

        lc_rerank = LCReranker(model=HuggingFaceCrossEncoder(model_name=cross_path), top_n=10)

        def langchain_rerank(query: str, docs: list[str]) -> list[int]:
            out = lc_rerank.compress_documents([Document(page_content=d, id=str(i)) for i, d in enumerate(docs)], query)
            return [int(d.id) for d in out]

        contenders["LangChain CrossEncoderReranker (HuggingFaceCrossEncoder)"] = langchain_rerank
    except ImportError as error:
        say(f"(LangChain CrossEncoderReranker unavailable: pip install -e '.[bench]': {error})")

    for depth in depths:
        requests = [(q, [h.document.text for h in row[:depth]]) for q, row in zip(queries, hits)]
        pairs = sum(len(d) for _, d in requests)
        say(f"\n## Reranking {depth} candidates per query ({pairs} pairs)\n")
        say(f"| reranker | p50 ms | p95 ms | pairs/s | p50 / ours ({fast}) p50 | top-10 agreement with ours fp32 |")
        say("|---|---|---|---|---|---|")
        results = {name: timed_calls(fn, requests) for name, fn in contenders.items()}
        reference = results["ours (torch)"][1]
        fast_p50 = statistics.median(results[f"ours ({fast})"][0])
        for name, (seconds, rankings) in results.items():
            p50, p95 = statistics.median(seconds), float(np.percentile(seconds, 95))
            say(
                f"| {name} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {pairs / sum(seconds):.1f} | "
                f"{p50 / fast_p50:.2f}x | {top10_overlap(reference, rankings):.3f} |"
            )
        start = time.perf_counter()
        ours[fast].rank_batch(requests, top_n=10)
        batch_seconds = time.perf_counter() - start
        say(
            f"\nours ({fast}), all {len(requests)} queries in one `rank_batch` pass: {batch_seconds * 1000:.0f} ms "
            f"({pairs / batch_seconds:.1f} pairs/s)"
        )

    say("\n## Achieved GFLOP/s (useful FLOPs, padding not counted)\n")
    requests = [(q, [h.document.text for h in row[: depths[0]]]) for q, row in zip(queries, hits)]
    flops = rerank_flops(ours["torch"], requests)
    peak = matmul_gflops()
    for name in ("torch", "onnx"):
        start = time.perf_counter()
        ours[name].rank_batch(requests)
        gflops = flops / (time.perf_counter() - start) / 1e9
        say(
            f"- ours fp32 ({name}): {gflops:.1f} GFLOP/s = {gflops / peak:.0%} of a plain 1024x1024 fp32 matmul "
            f"({peak:.1f} GFLOP/s)"
        )

    say(f"\n## Embedding throughput ({args.embed_docs} documents, {len(queries) * 8} queries)\n")
    docs = list(data.corpus.values())[: args.embed_docs]
    embed_queries = (list(data.queries.values()) * 8)[: len(queries) * 8]
    say("| embedder | documents/s | queries/s | docs/s vs LangChain HuggingFaceEmbeddings |")
    say("|---|---|---|---|")
    rows: dict[str, tuple[float, float]] = {}

    def measure(name: str, embed_docs: Callable[[list[str]], object], embed_query: Callable[[str], object]) -> None:
        embed_docs(docs[:8])
        start = time.perf_counter()
        embed_docs(docs)
        doc_rate = len(docs) / (time.perf_counter() - start)
        start = time.perf_counter()
        for q in embed_queries:
            embed_query(q)
        rows[name] = (doc_rate, len(embed_queries) / (time.perf_counter() - start))

    for runtime in ("torch", "onnx", "onnx-int8"):
        backend = BiEncoderBackend(BI, runtime=runtime, cache_size=0)
        try:
            backend.encode_queries(["warm up"])
        except QuantizationQualityError as error:
            say(f"(bi-encoder int8 export refused by the quality guard: {error})")
            continue
        measure(f"ours ({runtime})", backend.encode_documents, lambda q, b=backend: b.encode_queries([q]))
    minilm = str(resolve_model_path(BI))
    try:
        from langchain_huggingface import HuggingFaceEmbeddings

        lc_embed = HuggingFaceEmbeddings(model_name=minilm)
        measure("LangChain HuggingFaceEmbeddings", lc_embed.embed_documents, lc_embed.embed_query)
    except ImportError as error:
        say(f"(LangChain HuggingFaceEmbeddings unavailable: {error})")
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        li_embed = HuggingFaceEmbedding(model_name=minilm)
        measure("LlamaIndex HuggingFaceEmbedding", li_embed.get_text_embedding_batch, li_embed.get_query_embedding)
    except ImportError as error:
        say(f"(LlamaIndex HuggingFaceEmbedding unavailable: {error})")
    baseline = rows.get("LangChain HuggingFaceEmbeddings", (float("nan"), 0))[0]
    for name, (doc_rate, query_rate) in rows.items():
        say(f"| {name} | {doc_rate:.1f} | {query_rate:.1f} | {doc_rate / baseline:.2f}x |")

    cached = BiEncoderBackend(BI)
    start = time.perf_counter()
    cached.encode_documents(docs)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    cached.encode_documents(docs)
    warm = time.perf_counter() - start
    say(
        f"\nRe-indexing {len(docs)} unchanged documents with the embedding cache: cold {cold * 1000:.0f} ms, "
        f"warm {warm * 1000:.1f} ms ({cold / warm:.0f}x faster)"
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
