"""The main job, offline: baseline -> train a reranker under a time budget -> evaluate before/after -> use it.

Runs on data bundled with the package (English: a SciFact subset; Korean: KorQuAD 1.0 dev), from the packaged
all-MiniLM-L6-v2.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rerank_plugins.data import RetrievalDataset, demo_data_path, load_beir, load_squad
from rerank_plugins.evaluation.evaluate import evaluate_two_stage
from rerank_plugins.evaluation.report import markdown_table, write_report
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.models.registry import get_cross_encoder
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig
from rerank_plugins.training.cross_encoder import DEFAULT_BACKBONE, CrossEncoderTrainingConfig
from rerank_plugins.training.mining import corpus_first_stage
from rerank_plugins.training.recipes import train_bi_encoder_on, train_cross_encoder_on


def demo_reranker(
    candidates: tuple[str | Path, ...] = ("runs/quickstart/cross-encoder", "runs/demo-cross-encoder"),
    *,
    time_budget_s: float = 180.0,
    say=print,
) -> Path:
    """A reranker for the examples: one trained earlier (quickstart) if found, else trained now on the bundled data.

    No pretrained cross-encoder is available offline, so the examples use one trained by this library.
    """
    for candidate in map(Path, candidates):
        if (candidate / "config.json").is_file():
            return candidate
    target = Path(candidates[-1])
    say(f"No trained reranker found; training one for {time_budget_s:.0f} s on the bundled data -> {target}")
    path, _ = train_cross_encoder_on(
        load_beir(demo_data_path(), "train"),
        target,
        config=replace(DEMOS["en"].cross_encoder, time_budget_s=time_budget_s),
    )
    return path


@dataclass(frozen=True)
class Demo:
    """One language's demo: bundled data, how to split it, and the settings measured to work for it."""

    data: str
    first_stage: str
    cross_encoder: CrossEncoderTrainingConfig
    """The reranker's recipe (its time budget is the quickstart's); bench/results/quickstart-recipes/ compares
    the recipes tried on this machine class."""
    held_out: float
    """Share of training queries kept out to choose the fusion weight: under the time budget training sees each
    query about once, so a larger held-out set costs little learning and makes the choice far less noisy."""
    time_budget_s: float
    """Seconds of reranker training: what keeps the whole main job within 10 minutes on 2 idle cores."""
    first_stage_k: int = 20
    bi_encoder: str = DEFAULT_BACKBONE
    cross_encoder_backbone: str = DEFAULT_BACKBONE
    max_train_queries: int | None = None
    max_test_queries: int | None = None

    def load(self, split: str) -> RetrievalDataset:
        path = demo_data_path(self.data)
        return load_beir(path, split) if path.is_dir() else load_squad(path, split)


DEMOS = {
    # SciFact subset: hybrid (MiniLM + English BM25) is the best first stage measured on SciFact's train claims.
    # Without dropout a step takes 2/3 of the time and the loss leaves its plateau sooner; 1e-4 beat 5e-5 and 2e-4.
    "en": Demo(
        "scifact-mini",
        "hybrid",
        CrossEncoderTrainingConfig(max_length=128, epochs=2, learning_rate=1e-4, dropout=0.0),
        held_out=0.25,
        time_budget_s=350.0,
    ),
    # KorQuAD: BM25 over Korean morphemes and bigrams is the best first stage measured (hybrid with e5: +0.003 for
    # three minutes of embedding); the reranker starts from multilingual-e5-small (the English MiniLM spells Hangul
    # as jamo), cut to 6 of its 12 layers, reading 192 tokens at a learning rate of 3e-4. A third of the answers
    # start past a paragraph's first 192 tokens, so it trains on and reads each paragraph's window that shares most
    # words with the question: alone 0.81 -> 0.92 in the same 113 steps (bench/results/quickstart-recipes).
    # Reranking costs most of the budget here, so it reranks BM25's top 10 (hit@10 0.99).
    "ko": Demo(
        "korquad-1.0-dev",
        "lexical",
        CrossEncoderTrainingConfig(
            max_length=192,
            epochs=2,
            learning_rate=3e-4,
            dropout=0.0,
            layers=6,
            freeze_embeddings=True,
            long_documents="matched_window",
        ),
        held_out=0.25,
        time_budget_s=360.0,
        first_stage_k=10,
        bi_encoder="intfloat/multilingual-e5-small",
        cross_encoder_backbone="intfloat/multilingual-e5-small",
        max_train_queries=600,
        max_test_queries=200,
    ),
}


def run_quickstart(
    output_dir: str | Path = "runs/quickstart",
    *,
    lang: str = "en",
    time_budget_s: float | None = None,
    first_stage_k: int | None = None,
    first_stage: str | None = None,
    train_bi_encoder: bool = False,
    say=print,
) -> dict[str, Any]:
    """Train on the bundled training queries, evaluate on its test queries, then use the models in both frameworks.

    ``lang``: ``"en"`` (SciFact claims) or ``"ko"`` (KorQuAD questions). ``first_stage`` (dense, lexical or hybrid;
    default: the best measured for the language) mines the reranker's hard negatives, tunes its fusion weight and
    is the stage evaluated and reranked. ``time_budget_s`` (training seconds) and ``first_stage_k`` (candidates
    reranked) default to the language's measured settings.
    """
    if lang not in DEMOS:
        raise ValueError(f"lang must be one of {sorted(DEMOS)}, got {lang!r}")
    demo = DEMOS[lang]
    first_stage = first_stage or demo.first_stage
    time_budget_s = demo.time_budget_s if time_budget_s is None else time_budget_s
    first_stage_k = first_stage_k or demo.first_stage_k
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train = _sample(demo.load("train"), demo.max_train_queries)
    test = _sample(demo.load("test"), demo.max_test_queries)
    say(
        f"Data: {demo_data_path(demo.data)} ({len(test.corpus)} documents, {len(train.queries)} train / "
        f"{len(test.queries)} test queries)"
    )
    started = time.perf_counter()

    bi_encoder = demo.bi_encoder
    if train_bi_encoder:
        say("\n[1/4] Fine-tuning the bi-encoder (MultipleNegativesRankingLoss, mined hard negatives)")
        path, _ = train_bi_encoder_on(
            train,
            output / "bi-encoder",
            base_model=demo.bi_encoder,
            config=BiEncoderTrainingConfig(time_budget_s=time_budget_s / 3),
        )
        bi_encoder = str(path)
    say(
        f"\n[2/4] Training a cross-encoder from {demo.cross_encoder_backbone} on hard negatives from the "
        f"{first_stage} first stage"
    )
    budget = time_budget_s * (2 / 3 if train_bi_encoder else 1)
    # One index over the shared corpus mines the negatives, tunes the fusion weight and is evaluated.
    index = corpus_first_stage(train, bi_encoder, first_stage)
    cross_path, log = train_cross_encoder_on(
        train,
        output / "cross-encoder",
        base_model=demo.cross_encoder_backbone,
        first_stage=index,
        held_out=demo.held_out,
        fusion_depth=first_stage_k,
        config=replace(demo.cross_encoder, time_budget_s=budget),
    )
    weight = stored_fusion_weight(cross_path)
    say(f"      {log.steps}/{log.planned_steps} steps in {log.seconds:.0f} s -> {cross_path}")
    say(
        f"      fusion weight tuned on held-out training queries: a = {weight} "
        "(1 = reranker alone, 0 = first stage alone)"
    )

    say(
        f"\n[3/4] Evaluating on {len(test.queries)} test queries: first stage top-{first_stage_k}, the reranker "
        f"alone, and fused (a = {weight})"
    )
    if test.corpus != train.corpus:
        index = corpus_first_stage(test, bi_encoder, first_stage)
    report = evaluate_two_stage(
        test, index, get_cross_encoder(cross_path), first_stage_k=first_stage_k, fusion_weight=weight
    )
    report["training"] = {"cross_encoder_steps": log.steps, "cross_encoder_seconds": log.seconds}
    dense_side = getattr(index, "dense", None)
    if dense_side is not None:  # what the reranker alone should at least match: the hybrid's dense side alone
        dense_report = evaluate_two_stage(test, dense_side, first_stage_k=first_stage_k)
        report["metrics"]["dense_first_stage"] = dense_report["metrics"]["first_stage"]
    written = write_report(report, output / "report.json")
    say(markdown_table(report))
    if "dense_first_stage" in report["metrics"]:
        dense_ndcg = report["metrics"]["dense_first_stage"]["ndcg@10"]
        say(f"- dense first stage alone (the hybrid's dense side): nDCG@10 {dense_ndcg:.4f}")
    say("Report: " + ", ".join(str(p) for p in written.values()))
    index.save(output / "index")

    say("\n[4/4] The trained models in LangChain and LlamaIndex")
    query = next(iter(test.queries.values()))
    _langchain_demo(str(cross_path), index, query, first_stage_k, say)
    _llamaindex_demo(str(cross_path), index, query, first_stage_k, say)
    say(f"\nDone in {time.perf_counter() - started:.0f} s. Models and report in {output}/")
    return report


def _sample(dataset: RetrievalDataset, size: int | None, seed: int = 0) -> RetrievalDataset:
    """A seeded sample of ``size`` labelled queries (all of them when ``size`` is None); the corpus is kept whole."""
    if size is None or size >= len(dataset.labelled_queries):
        return dataset
    return dataset.subset(random.Random(seed).sample(dataset.labelled_queries, size), f"{dataset.name}[{size}]")


def _langchain_demo(cross_encoder: str, index, query: str, top_k: int, say) -> None:
    try:
        from rerank_plugins.langchain import CrossEncoderReranker, TwoStageRetriever
    except ImportError:
        say("  (LangChain not installed: pip install 'rerank-plugins[langchain]')")
        return
    reranker = CrossEncoderReranker(model=cross_encoder, top_n=3, fusion_weight="auto")
    retriever = TwoStageRetriever(index=index, reranker=reranker, top_k=top_k)
    say(f"  LangChain TwoStageRetriever.invoke({query!r}):")
    for doc in retriever.invoke(query):
        meta = doc.metadata
        say(
            f"    fused {meta.get('fused_score', float('nan')):+.2f}  rerank {meta['rerank_score']:+.3f}  "
            f"first stage {meta['retrieval_score']:.3f}  {doc.page_content[:60]}..."
        )


def _llamaindex_demo(cross_encoder: str, index, query: str, top_k: int, say) -> None:
    try:
        from rerank_plugins.llamaindex import CrossEncoderRerank, TwoStageRetriever
    except ImportError:
        say("  (LlamaIndex not installed: pip install 'rerank-plugins[llamaindex]')")
        return
    retriever = TwoStageRetriever(
        index, CrossEncoderRerank(model=cross_encoder, top_n=3, fusion_weight="auto"), top_k=top_k
    )
    say(f"  LlamaIndex TwoStageRetriever.retrieve({query!r}):")
    for hit in retriever.retrieve(query):
        meta = hit.node.metadata
        say(
            f"    score {hit.score:+.2f}  rerank {meta['rerank_score']:+.3f}  "
            f"first stage {meta['retrieval_score']:.3f}  {hit.node.get_content()[:60]}..."
        )
