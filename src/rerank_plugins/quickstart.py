"""The main job, offline: baseline -> train a reranker under a time budget -> evaluate before/after -> use it.

Runs on data bundled with the package (English: a SciFact subset; Korean: KorQuAD 1.0 dev), from the packaged
all-MiniLM-L6-v2.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
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
        config=CrossEncoderTrainingConfig(max_length=128, time_budget_s=time_budget_s),
    )
    return path


@dataclass(frozen=True)
class Demo:
    """One language's demo: bundled data, how to split it, and the settings measured to work for it."""

    data: str
    first_stage: str
    cross_max_length: int
    cross_epochs: int
    max_train_queries: int | None = None
    max_test_queries: int | None = None

    def load(self, split: str) -> RetrievalDataset:
        path = demo_data_path(self.data)
        return load_beir(path, split) if path.is_dir() else load_squad(path, split)


DEMOS = {
    # SciFact subset: hybrid (MiniLM + English BM25) is the best first stage measured on SciFact's train claims.
    "en": Demo("scifact-mini", "hybrid", cross_max_length=128, cross_epochs=2),
    # KorQuAD: BM25 over Korean character bigrams is the best first stage measured (the packaged embedding model is
    # English-only); Korean paragraphs are long, so the reranker reads 256 tokens. Samples keep it within minutes.
    "ko": Demo(
        "korquad-1.0-dev", "lexical", cross_max_length=256, cross_epochs=1, max_train_queries=600, max_test_queries=200
    ),
}


def run_quickstart(
    output_dir: str | Path = "runs/quickstart",
    *,
    lang: str = "en",
    time_budget_s: float = 420.0,
    first_stage_k: int = 20,
    first_stage: str | None = None,
    train_bi_encoder: bool = False,
    say=print,
) -> dict[str, Any]:
    """Train on the bundled training queries, evaluate on its test queries, then use the models in both frameworks.

    ``lang``: ``"en"`` (SciFact claims) or ``"ko"`` (KorQuAD questions). ``first_stage`` (dense, lexical or hybrid;
    default: the best measured for the language) mines the reranker's hard negatives, tunes its fusion weight and
    is the stage evaluated and reranked.
    """
    if lang not in DEMOS:
        raise ValueError(f"lang must be one of {sorted(DEMOS)}, got {lang!r}")
    demo = DEMOS[lang]
    first_stage = first_stage or demo.first_stage
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train = _sample(demo.load("train"), demo.max_train_queries)
    test = _sample(demo.load("test"), demo.max_test_queries)
    say(
        f"Data: {demo_data_path(demo.data)} ({len(test.corpus)} documents, {len(train.queries)} train / "
        f"{len(test.queries)} test queries)"
    )
    started = time.perf_counter()

    bi_encoder = DEFAULT_BACKBONE
    if train_bi_encoder:
        say("\n[1/4] Fine-tuning the bi-encoder (MultipleNegativesRankingLoss, mined hard negatives)")
        path, _ = train_bi_encoder_on(
            train, output / "bi-encoder", config=BiEncoderTrainingConfig(time_budget_s=time_budget_s / 3)
        )
        bi_encoder = str(path)
    say(
        f"\n[2/4] Training a cross-encoder from the MiniLM backbone on hard negatives from the {first_stage} "
        "first stage"
    )
    budget = time_budget_s * (2 / 3 if train_bi_encoder else 1)
    cross_path, log = train_cross_encoder_on(
        train,
        output / "cross-encoder",
        bi_encoder=bi_encoder,
        first_stage=first_stage,
        config=CrossEncoderTrainingConfig(
            max_length=demo.cross_max_length, epochs=demo.cross_epochs, time_budget_s=budget
        ),
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
    index = corpus_first_stage(test, bi_encoder, first_stage)
    report = evaluate_two_stage(
        test, index, get_cross_encoder(cross_path), first_stage_k=first_stage_k, fusion_weight=weight
    )
    report["training"] = {"cross_encoder_steps": log.steps, "cross_encoder_seconds": log.seconds}
    written = write_report(report, output / "report.json")
    say(markdown_table(report))
    say("Report: " + ", ".join(str(p) for p in written.values()))
    index.save(output / "index")

    say("\n[4/4] The trained models in LangChain and LlamaIndex")
    query = next(iter(test.queries.values()))
    _langchain_demo(str(cross_path), index, query, say)
    _llamaindex_demo(str(cross_path), index, query, say)
    say(f"\nDone in {time.perf_counter() - started:.0f} s. Models and report in {output}/")
    return report


def _sample(dataset: RetrievalDataset, size: int | None, seed: int = 0) -> RetrievalDataset:
    """A seeded sample of ``size`` labelled queries (all of them when ``size`` is None); the corpus is kept whole."""
    if size is None or size >= len(dataset.labelled_queries):
        return dataset
    return dataset.subset(random.Random(seed).sample(dataset.labelled_queries, size), f"{dataset.name}[{size}]")


def _langchain_demo(cross_encoder: str, index, query: str, say) -> None:
    try:
        from rerank_plugins.langchain import CrossEncoderReranker, TwoStageRetriever
    except ImportError:
        say("  (LangChain not installed: pip install 'rerank-plugins[langchain]')")
        return
    reranker = CrossEncoderReranker(model=cross_encoder, top_n=3, fusion_weight="auto")
    retriever = TwoStageRetriever(index=index, reranker=reranker, top_k=20)
    say(f"  LangChain TwoStageRetriever.invoke({query!r}):")
    for doc in retriever.invoke(query):
        meta = doc.metadata
        say(
            f"    fused {meta.get('fused_score', float('nan')):+.2f}  rerank {meta['rerank_score']:+.3f}  "
            f"first stage {meta['retrieval_score']:.3f}  {doc.page_content[:60]}..."
        )


def _llamaindex_demo(cross_encoder: str, index, query: str, say) -> None:
    try:
        from rerank_plugins.llamaindex import CrossEncoderRerank, TwoStageRetriever
    except ImportError:
        say("  (LlamaIndex not installed: pip install 'rerank-plugins[llamaindex]')")
        return
    retriever = TwoStageRetriever(
        index, CrossEncoderRerank(model=cross_encoder, top_n=3, fusion_weight="auto"), top_k=20
    )
    say(f"  LlamaIndex TwoStageRetriever.retrieve({query!r}):")
    for hit in retriever.retrieve(query):
        meta = hit.node.metadata
        say(
            f"    score {hit.score:+.2f}  rerank {meta['rerank_score']:+.3f}  "
            f"first stage {meta['retrieval_score']:.3f}  {hit.node.get_content()[:60]}..."
        )
