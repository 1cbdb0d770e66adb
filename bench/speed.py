"""Speed benchmark: reranking against the fair peers, same model, same max length, same inputs, one run.

The fair peer is what a sentence-transformers user writes: ``CrossEncoder(path).predict(pairs)`` at the model's
own max length and the same batch size. Also timed: LangChain ``CrossEncoderReranker`` over
``HuggingFaceCrossEncoder``, LlamaIndex ``SentenceTransformerRerank`` at its default (max length forced to 512)
and with the model's own max length, sentence-transformers' ``backend="onnx"/"openvino"`` and FlashRank where
they load. Every contender is timed on every query in every round, interleaved query by query, so load from
other work hits them alike. Candidates are each query's BM25 top-k (realistic reranking work). Achieved
GFLOP/s are set against the best sgemm measured in the same run and the CPU's fp32 FMA peak.
Embedding throughput (ours against LangChain and LlamaIndex embedders) follows unless ``--embed-docs 0``.

    pip install -e ".[all,openvino,bench]"     # the peers are benchmark-only dependencies
    python bench/speed.py --data ../shared/data/scifact --cross-encoder runs/bench/<reranker> \
        [--extra-model runs/<small reranker>]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _machine import fp32_peak_facts, result_header

from rerank_plugins import BiEncoderBackend, CrossEncoderBackend, resolve_model_path
from rerank_plugins.data import demo_data_path, load_dataset
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.models.runtimes.guard import QuantizationQualityError
from rerank_plugins.quickstart import demo_reranker

BI = "sentence-transformers/all-MiniLM-L6-v2"
lines: list[str] = []
Ranker = Callable[[str, list[str]], list[int]]


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def top10_overlap(reference: list[list[int]], candidate: list[list[int]]) -> float:
    return float(np.mean([len(set(r[:10]) & set(c[:10])) / min(10, len(r)) for r, c in zip(reference, candidate)]))


def best_sgemm(repeats: int = 3) -> tuple[float, str]:
    """Best fp32 GFLOP/s of torch.mm (MKL) and numpy (OpenBLAS) over square and the model's own GEMM shapes."""
    import torch

    best, where = 0.0, ""
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (3840, 384, 1536), (3840, 1536, 384)):
        for library in ("torch.mm (MKL)", "numpy (OpenBLAS)"):
            a, b = np.random.rand(m, k).astype(np.float32), np.random.rand(k, n).astype(np.float32)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            use_torch = library.startswith("torch")
            torch.mm(ta, tb) if use_torch else a @ b
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(5):
                    torch.mm(ta, tb) if use_torch else a @ b
                rate = 2 * m * k * n * 5 / (time.perf_counter() - start) / 1e9
                if rate > best:
                    best, where = rate, f"{library}, {m}x{k} @ {k}x{n}"
    return best, where


def useful_flops(model_path: str, requests: list[tuple[str, list[str]]]) -> float:
    """FLOPs of scoring ``requests`` at the model's own max length, padding not counted.

    Linear layers 2·P·tokens + attention 4·L·H·tokens² (P: encoder weights without embeddings).
    """
    backend = CrossEncoderBackend(model_path)
    hf = backend.model.model
    config = hf.config
    params = sum(p.numel() for name, p in hf.named_parameters() if "embeddings" not in name)
    total = 0.0
    for query, docs in requests:
        lengths = backend.model.tokenizer(
            [query] * len(docs), docs, truncation="only_second", max_length=backend.max_length, return_length=True
        )["length"]
        total += sum(2 * params * t + 4 * config.num_hidden_layers * config.hidden_size * t * t for t in lengths)
    return total


def ours(path: str, runtime: str, batch_size: int) -> tuple[str, Ranker, Callable] | str:
    """("ours (runtime)", rank one query, rank many) or why it is unavailable."""
    backend = CrossEncoderBackend(path, runtime=runtime, cache_size=0)  # model work, not cache hits
    try:
        backend.score("warm", ["up"])  # exports and the quality guard happen here, not in the timings
    except (QuantizationQualityError, ImportError) as error:
        return f"ours ({runtime}): {error}"
    label = runtime if backend.effective_runtime == runtime else f"{runtime} = {backend.effective_runtime}"
    return (
        f"ours ({label})",
        lambda q, d: [r.index for r in backend.rank(q, d, batch_size=batch_size)],
        lambda requests: backend.rank_batch(requests, batch_size=batch_size),
    )


def sentence_transformers_peer(
    path: str, max_length: int, batch_size: int, backend: str = "torch"
) -> tuple[str, Ranker, Callable]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(path, max_length=max_length, backend=backend, local_files_only=True)

    def rank(query: str, docs: list[str]) -> list[int]:
        scores = model.predict([(query, d) for d in docs], batch_size=batch_size, show_progress_bar=False)
        return list(np.argsort(-scores, kind="stable"))

    def rank_many(requests: list[tuple[str, list[str]]]) -> object:
        return model.predict([(q, d) for q, docs in requests for d in docs], batch_size=batch_size)

    suffix = "" if backend == "torch" else f' backend="{backend}"'
    return f"sentence-transformers CrossEncoder.predict{suffix} (max length {max_length})", rank, rank_many


def contenders(path: str, extra: list[str], runtimes: list[str], batch_size: int) -> dict[str, tuple[Ranker, object]]:
    """Every reranker to time, each as (rank one query, rank many queries or None)."""
    own_length = CrossEncoderBackend(path).max_length
    out: dict[str, tuple[Ranker, object]] = {}
    for model_path, model_runtimes in [(path, runtimes)] + [(e, ["torch", "fast"]) for e in extra]:
        tag = "" if model_path == path else f" [{Path(model_path).name}]"
        for runtime in model_runtimes:
            made = ours(model_path, runtime, batch_size)
            if isinstance(made, str):
                say(f"- unavailable: {made}")
            else:
                out[made[0] + tag] = made[1:]
    for backend in ("torch", "onnx", "openvino"):
        try:
            name, rank, many = sentence_transformers_peer(path, own_length, batch_size, backend)
            rank("warm", ["up"])
            out[name] = (rank, many)
        except Exception as error:  # a backend whose extra does not install beside ours is reported, not fatal
            say(f"- unavailable: sentence-transformers backend={backend!r}: {type(error).__name__}: {error}"[:300])
    for e in extra:
        name, rank, many = sentence_transformers_peer(e, CrossEncoderBackend(e).max_length, batch_size)
        out[f"{name} [{Path(e).name}]"] = (rank, many)
    try:
        from langchain_classic.retrievers.document_compressors import CrossEncoderReranker as LCReranker
        from langchain_community.cross_encoders import HuggingFaceCrossEncoder
        from langchain_core.documents import Document

        lc_model = HuggingFaceCrossEncoder(model_name=path)
        lc_length = lc_model.client.max_length
        lc = LCReranker(model=lc_model, top_n=10)

        def langchain_rank(query: str, docs: list[str]) -> list[int]:
            kept = lc.compress_documents([Document(page_content=d, id=str(i)) for i, d in enumerate(docs)], query)
            return [int(d.id) for d in kept]

        out[f"LangChain CrossEncoderReranker (HuggingFaceCrossEncoder, max length {lc_length})"] = (
            langchain_rank,
            None,
        )
    except ImportError as error:
        say(f"- unavailable: LangChain CrossEncoderReranker (pip install -e '.[bench]'): {error}")
    try:
        from llama_index.core.postprocessor import SentenceTransformerRerank
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        for own in (False, True):
            li = SentenceTransformerRerank(model=path, top_n=10)
            if own:
                li._model.max_length = own_length  # no constructor option: the attribute a user would set
            length = li._model.max_length

            def llamaindex_rank(query: str, docs: list[str], li=li) -> list[int]:
                nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.0) for i, d in enumerate(docs)]
                return [int(n.node.node_id) for n in li.postprocess_nodes(nodes, QueryBundle(query))]

            label = "max length set to the model's" if own else "default: max length forced"
            out[f"LlamaIndex SentenceTransformerRerank ({label} {length})"] = (llamaindex_rank, None)
    except ImportError as error:
        say(f"- unavailable: LlamaIndex SentenceTransformerRerank: {error}")
    try:
        import flashrank  # noqa: F401

        say("- FlashRank: installed, but it loads only its own published ONNX models by name, not a local reranker")
    except ImportError:
        say("- unavailable: FlashRank (not installed; it loads only its own published ONNX models by name)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(demo_data_path()), help="BEIR folder (default: bundled SciFact subset)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cross-encoder", help="reranker directory (default: the quickstart's, or trained now)")
    parser.add_argument(
        "--extra-model", action="append", default=[], help="another reranker (e.g. a small distilled one); repeatable"
    )
    parser.add_argument("--runtimes", default="torch,onnx,onnx-int8,openvino,fast", help="our runtimes to time")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--depths", default="30,100")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all queries")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--embed-docs", type=int, default=400, help="0 skips the embedding section")
    parser.add_argument("--out", default="bench/results/speed.md")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    cross_path = str(args.cross_encoder or demo_reranker())

    import torch

    ghz, lanes = fp32_peak_facts()
    say(
        result_header(
            "Speed benchmark",
            f"{ghz:.2f} GHz nominal",
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
        )
        + "  "
    )
    say(f"load average at start: {uptime()}  ")
    say(f"cross-encoder: {cross_path}; data: {args.data} ({args.split}); {args.queries} queries per depth, ")
    say(f"BM25 candidates, batch size {args.batch_size}, {args.rounds} interleaved rounds\n")

    data = load_dataset(args.data, args.split)
    index = LexicalIndex.from_texts(list(data.corpus.values()))
    queries = list(data.queries.values())[: args.queries]
    hits = index.search_batch(queries, max(depths))
    everyone = contenders(cross_path, args.extra_model, args.runtimes.split(","), args.batch_size)
    fast = next((name for name in everyone if name.startswith("ours (fast")), "ours (torch)")
    peer = next(name for name in everyone if name.startswith("sentence-transformers CrossEncoder.predict ("))
    reference_name = "ours (torch)"

    rates: dict[str, float] = {}
    for depth in depths:
        requests = [(q, [h.document.text for h in row[:depth]]) for q, row in zip(queries, hits)]
        pairs = sum(len(d) for _, d in requests)
        flops = {path: useful_flops(path, requests) for path in [cross_path, *args.extra_model]}
        seconds: dict[str, list[float]] = {name: [] for name in everyone}
        rankings: dict[str, list[list[int]]] = {name: [] for name in everyone}
        batch_seconds: dict[str, list[float]] = {name: [] for name, (_, many) in everyone.items() if many}
        for rank, _ in everyone.values():
            rank(*requests[0])  # warm-up at this depth
        for round_ in range(args.rounds):
            for query, docs in requests:
                for name, (rank, _) in everyone.items():
                    start = time.perf_counter()
                    ranking = rank(query, docs)
                    seconds[name].append(time.perf_counter() - start)
                    if round_ == 0:
                        rankings[name].append(ranking)
            for name in batch_seconds:
                start = time.perf_counter()
                everyone[name][1](requests)
                batch_seconds[name].append(time.perf_counter() - start)
        say(f"\n## Reranking {depth} candidates per query ({pairs} pairs, {args.queries} queries)\n")
        say(
            f"| reranker | p50 ms | p95 ms | p50 of {peer.split(' (')[0]} / p50 | useful GFLOP/s at p50 | "
            f"top-10 agreement with {reference_name} |"
        )
        say("|---|---|---|---|---|---|")
        peer_p50 = statistics.median(seconds[peer])
        for name in everyone:
            p50, p95 = statistics.median(seconds[name]), float(np.percentile(seconds[name], 95))
            model_path = next((e for e in args.extra_model if f"[{Path(e).name}]" in name), cross_path)
            gflops = flops[model_path] / len(requests) / p50 / 1e9
            rates[f"{name} @ {depth}"] = gflops
            agreement = top10_overlap(rankings[reference_name], rankings[name]) if model_path == cross_path else None
            say(
                f"| {name} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | {peer_p50 / p50:.2f}x | {gflops:.0f} | "
                f"{'-' if agreement is None else f'{agreement:.3f}'} |"
            )
        say(f"\nThroughput, all {len(requests)} queries at once (ours: `rank_batch`; the peer: one `predict` call):\n")
        for name, times in batch_seconds.items():
            best = min(times)
            say(f"- {name}: {best * 1000:.0f} ms ({pairs / best:.1f} pairs/s)")
        say(
            f"\n**{fast} vs {peer}: {peer_p50 / statistics.median(seconds[fast]):.2f}x at p50** "
            f"(target >= 1.8x with top-10 agreement >= 0.99)"
        )

    peak_sgemm, where = best_sgemm()
    peak = (os.cpu_count() or 1) * 2 * lanes * 2 * ghz
    say("\n## Distance to the physical limit (fp32)\n")
    say(
        f"- CPU fp32 FMA peak at the nominal clock: {os.cpu_count()} cores x 2 FMA units x {lanes} lanes x 2 FLOP x "
        f"{ghz:.2f} GHz = {peak:.0f} GFLOP/s (higher under turbo)"
    )
    say(f"- best sgemm in this run: {peak_sgemm:.0f} GFLOP/s ({where})")
    for name, rate in rates.items():
        if name.startswith(("ours", "sentence-transformers CrossEncoder.predict (")):
            say(f"- {name}: {rate:.0f} GFLOP/s = {rate / peak_sgemm:.0%} of that sgemm, {rate / peak:.0%} of fp32 peak")
    say(f"\nload average at end of reranking: {uptime()}")

    if args.embed_docs:
        embedding_section(data, queries, args.embed_docs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")


def embedding_section(data, queries: list[str], embed_docs: int) -> None:
    """Embedding throughput: ours (each runtime) against LangChain and LlamaIndex embedders; warm-cache re-index."""
    say(f"\n## Embedding throughput ({embed_docs} documents, {len(queries) * 8} queries)\n")
    docs = list(data.corpus.values())[:embed_docs]
    embed_queries = (list(data.queries.values()) * 8)[: len(queries) * 8]
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
    # langchain-huggingface needs huggingface-hub<2, which sentence-transformers 6 outgrew: it is left out of the
    # bench extra, so LlamaIndex's embedder is the baseline unless LangChain's was installed in a separate venv.
    peers = [name for name in ("LangChain HuggingFaceEmbeddings", "LlamaIndex HuggingFaceEmbedding") if name in rows]
    reference = peers[0] if peers else "ours (torch)"
    baseline = rows[reference][0]
    say(f"| embedder | documents/s | queries/s | docs/s vs {reference} |")
    say("|---|---|---|---|")
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


if __name__ == "__main__":
    main()
