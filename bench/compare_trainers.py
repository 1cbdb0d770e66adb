"""Our training loop and hard-negative mining against sentence-transformers' own, on one recipe (default: SciFact).

In one run, with the same data, backbone (packaged all-MiniLM-L6-v2), max length, negatives per query, batch
composition, learning rates (head multiplier included), epochs and seed:

1. hard negatives for the train split mined two ways: ours (``mine_hard_negatives`` over ``corpus_first_stage``,
   top-``--depth``) and ``sentence_transformers.util.mine_hard_negatives`` (``range_max=--depth``), timed, with
   the per-query overlap of the candidate pools and of the sampled negatives;
2. a cross-encoder trained from the backbone by our ``train_cross_encoder`` (listwise softmax CE, negatives redrawn
   each epoch) and by ``CrossEncoderTrainer`` on the same (query, positive, negatives) groups, with the losses of
   ``--st-losses`` (default ``listwise``: ``ListNetLoss`` with a one-hot target, mathematically our loss);
3. every reranker evaluated on the test split, reranking the packaged MiniLM's top-``--depth``: nDCG@10, MRR@10,
   hit@1 (the reranker alone, no fusion);
4. with ``--bi-encoder``: our ``train_bi_encoder`` against ``SentenceTransformerTrainer`` (both
   MultipleNegativesRankingLoss with one mined hard negative, no-duplicate batches), evaluated as first stages.

    python bench/compare_trainers.py --data ../shared/data/scifact --out bench/results/compare-trainers.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _machine import result_header
from transformers import TrainerCallback

from rerank_plugins.data import RetrievalDataset, load_dataset
from rerank_plugins.evaluation.evaluate import evaluate_two_stage
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.resolve import resolve_model_path
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig, _groups, train_cross_encoder
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives

BASE = "sentence-transformers/all-MiniLM-L6-v2"
ONE_HOT_LABEL = 100.0
"""ListNet's target is softmax(labels): [100, 0, ..., 0] makes it one-hot (to ~1e-43), i.e. plain softmax CE."""
ST_LOSSES = {
    "listwise": "ListNetLoss, labels [100, 0, ..., 0] (one-hot target): the same softmax CE as ours",
    "listwise-redrawn": "as listwise, on a data set holding one fresh draw of negatives per epoch (1 pass over it)",
    "listnet": "ListNetLoss, labels [1, 0, ..., 0] as mine_hard_negatives(output_format='labeled-list') gives them",
    "lambda": "LambdaLoss (NDCGLoss2++ weighting), labels [1, 0, ..., 0]",
    "mnrl": "MultipleNegativesRankingLoss defaults: the hard negatives + 4 in-batch ones, sigmoid, scale 10",
    "bce": "BinaryCrossEntropyLoss on (query, document, label) pairs, pos_weight = negatives (our loss='binary')",
}


def timed(label: str, timings: dict, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[label] = round(time.perf_counter() - start, 1)
    print(f"[{label}] {timings[label]} s", flush=True)
    return result


def ema(values: list[float]) -> float | None:
    """The running loss our loop reports (0.95 decay), so both trainers' final losses read alike."""
    running = None
    for value in values:
        running = value if running is None else 0.95 * running + 0.05 * value
    return running


def sample_queries(dataset: RetrievalDataset, limit: int | None, seed: int) -> RetrievalDataset:
    if not limit or limit >= len(dataset.queries):
        return dataset
    return dataset.subset(random.Random(seed).sample(sorted(dataset.queries), limit))


def shrink_corpus(
    train: RetrievalDataset, test: RetrievalDataset, limit: int | None, seed: int
) -> tuple[RetrievalDataset, RetrievalDataset]:
    """One corpus for both splits: every positive of their queries plus a seeded sample of the other documents."""
    corpus = train.corpus
    if limit and limit < len(corpus):
        needed = {d for data in (train, test) for q in data.labelled_queries for d in data.positives(q)}
        others = sorted(set(corpus) - needed)
        keep = needed | set(random.Random(seed).sample(others, max(0, min(limit - len(needed), len(others)))))
        corpus = {d: text for d, text in corpus.items() if d in keep}
    return tuple(
        RetrievalDataset(corpus, data.queries, data.qrels, data.negatives, name=data.name) for data in (train, test)
    )


# -- mining ------------------------------------------------------------------------------------------------------


def st_mine(
    train: RetrievalDataset, model: Any, *, depth: int, num_negatives: int, seed: int, cache: Path, timings: dict
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """sentence-transformers' miner: ``num_negatives`` sampled from the top ``depth`` non-positives (the recipe's
    call, timed from scratch), then the whole top-``depth`` pool (embeddings cached by the first call).

    Returns (sampled, pool): query id -> negative texts."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine_hard_negatives

    pairs = [(train.queries[q], train.corpus[d]) for q in train.labelled_queries for d in train.positives(q)]
    dataset = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    corpus = list(train.corpus.values())
    shutil.rmtree(cache, ignore_errors=True)
    common = {"corpus": corpus, "range_max": depth, "batch_size": 32, "cache_folder": str(cache)}
    random.seed(seed)  # its "random" sampling draws from the global random module
    sampled_rows = timed(
        "mine: sentence-transformers, sampled",
        timings,
        st_mine_hard_negatives,
        dataset,
        model,
        num_negatives=num_negatives,
        sampling_strategy="random",
        output_format="n-tuple",
        **common,
    )
    pool_rows = timed(
        "mine: sentence-transformers, top pool (embeddings cached)",
        timings,
        st_mine_hard_negatives,
        dataset,
        model,
        num_negatives=depth,
        sampling_strategy="top",
        output_format="labeled-list",
        verbose=False,
        **common,
    )
    query_ids: dict[str, list[str]] = {}
    for q in train.labelled_queries:
        query_ids.setdefault(train.queries[q], []).append(q)
    negative_columns = [c for c in sampled_rows.column_names if c.startswith("negative_")]
    sampled = {}
    for row in sampled_rows:
        for q in query_ids[row["query"]]:
            sampled[q] = [row[c] for c in negative_columns]
    pool = {}
    for row in pool_rows:
        for q in query_ids[row["query"]]:
            pool[q] = [doc for doc, label in zip(row["positive"], row["labels"]) if label == 0]
    return sampled, pool


def overlap(ours: dict[str, list[str]], theirs: dict[str, list[str]]) -> dict[str, float]:
    """Mean per-query overlap of two negative sets (texts), over the queries either side has."""
    queries = sorted(set(ours) | set(theirs))
    shared, jaccard, same = [], [], 0
    for q in queries:
        a, b = set(ours.get(q, [])), set(theirs.get(q, []))
        shared.append(len(a & b))
        jaccard.append(len(a & b) / len(a | b) if a | b else 1.0)
        same += a == b
    return {
        "queries": len(queries),
        "mean_ours": sum(len(ours.get(q, [])) for q in queries) / len(queries),
        "mean_theirs": sum(len(theirs.get(q, [])) for q in queries) / len(queries),
        "mean_shared": sum(shared) / len(queries),
        "mean_jaccard": sum(jaccard) / len(queries),
        "identical_fraction": same / len(queries),
    }


# -- sentence-transformers trainers ------------------------------------------------------------------------------


class TrainerProgress(TrainerCallback):
    """Collects each step's loss (``logging_steps=1``), prints progress, and stops at a time budget (no re-planning
    of the learning-rate schedule: the trainers have no such option)."""

    def __init__(self, label: str, time_budget_s: float | None) -> None:
        self.label, self.time_budget_s = label, time_budget_s
        self.losses: list[float] = []
        self.start = time.perf_counter()
        self.stopped_by_time_budget = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.time_budget_s is not None and time.perf_counter() - self.start > self.time_budget_s:
            control.should_training_stop = self.stopped_by_time_budget = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            every = max(1, state.max_steps // 10)
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                print(
                    f"  [{self.label}] step {state.global_step}/{state.max_steps}, loss (ema) {ema(self.losses):.4f}, "
                    f"{time.perf_counter() - self.start:.0f} s",
                    flush=True,
                )


def _trainer_arguments(cls: type, output_dir: Path, args: argparse.Namespace, **extra: Any) -> Any:
    """The settings our loop hard-codes, spelled out for transformers' Trainer; ``extra`` adds or overrides."""
    settings = {
        "output_dir": str(output_dir),
        "num_train_epochs": args.epochs,
        "weight_decay": 0.01,
        "warmup_steps": 0.1,  # a float below 1 is the warm-up ratio (transformers >= 5)
        "lr_scheduler_type": "linear",
        "max_grad_norm": 1.0,
        "seed": args.seed,
        "logging_strategy": "steps",
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,  # our loop trains on the CPU wherever it runs
        "dataloader_num_workers": 0,
    }
    return cls(**{**settings, **extra})


def _run_trainer(trainer: Any, label: str, time_budget_s: float | None) -> tuple[Any, TrainerProgress]:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    progress = TrainerProgress(label, time_budget_s)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(progress)
    return trainer.train(), progress


def st_cross_dataset(kind: str, groups_by_epoch: list[list[tuple[str, str, list[str]]]]) -> tuple[Any, int]:
    """(data set in the format ``kind``'s loss reads, rows per group); ``groups_by_epoch[0]`` is our epoch 0."""
    from datasets import Dataset

    groups = [g for epoch in groups_by_epoch for g in epoch] if kind == "listwise-redrawn" else groups_by_epoch[0]
    n = len(groups[0][2])
    columns: dict[str, list[Any]] = {"query": [q for q, _, _ in groups]}
    if kind == "mnrl":
        columns["positive"] = [p for _, p, _ in groups]
        columns.update({f"negative_{i + 1}": [negs[i] for _, _, negs in groups] for i in range(n)})
        return Dataset.from_dict(columns), 1
    if kind == "bce":
        rows = [(q, d, float(i == 0)) for q, p, negs in groups for i, d in enumerate([p, *negs])]
        columns = {"query": [r[0] for r in rows], "document": [r[1] for r in rows], "label": [r[2] for r in rows]}
        return Dataset.from_dict(columns), 1 + n
    top = ONE_HOT_LABEL if kind.startswith("listwise") else 1.0
    columns["docs"] = [[p, *negs] for _, p, negs in groups]
    columns["labels"] = [[top] + [0.0] * len(negs) for _, _, negs in groups]
    return Dataset.from_dict(columns), 1


def st_cross_loss(kind: str, model: Any, n: int) -> Any:
    import torch
    from sentence_transformers.cross_encoder import losses

    if kind in ("listwise", "listwise-redrawn", "listnet"):
        return losses.ListNetLoss(model, activation_fn=torch.nn.Identity(), mini_batch_size=-1)  # -1: one pass
    if kind == "lambda":
        return losses.LambdaLoss(model, mini_batch_size=-1)
    if kind == "mnrl":
        return losses.MultipleNegativesRankingLoss(model)
    return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(n)))


def train_st_cross_encoder(
    kind: str, groups_by_epoch: list[list[tuple[str, str, list[str]]]], output: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """``CrossEncoderTrainer`` from the backbone, its new head initialised exactly as ours (same seed)."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from transformers import AutoModelForSequenceClassification

    start = time.perf_counter()
    base_path = resolve_model_path(BASE)
    model = CrossEncoder(str(base_path), num_labels=1, max_length=args.max_length, device="cpu", local_files_only=True)
    torch.manual_seed(args.seed)  # what train_cross_encoder does before creating its model
    reference = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1).classifier.state_dict()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".classifier." in name:
                parameter.copy_(reference[name.rsplit(".", 1)[-1]])
    dataset, rows_per_group = st_cross_dataset(kind, groups_by_epoch)
    n = args.num_negatives
    lr = args.learning_rate
    training_args = _trainer_arguments(
        CrossEncoderTrainingArguments,
        output.parent / f"{output.name}-trainer",
        args,
        num_train_epochs=1 if kind == "listwise-redrawn" else args.epochs,
        per_device_train_batch_size=args.queries_per_batch * rows_per_group,
        learning_rate=lr,
        learning_rate_mapping={r"\.classifier\.": lr * args.head_lr_multiplier} if args.head_lr_multiplier != 1 else {},
    )
    trainer = CrossEncoderTrainer(
        model=model, args=training_args, train_dataset=dataset, loss=st_cross_loss(kind, model, n)
    )
    result, progress = _run_trainer(trainer, f"st {kind}", args.time_budget)
    model.save_pretrained(str(output))
    return {
        "trainer": f"CrossEncoderTrainer ({kind})",
        "loss": ST_LOSSES[kind],
        "path": str(output),
        "wall_s": time.perf_counter() - start,
        "loop_s": result.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "planned_steps": trainer.state.max_steps,
        "rows": len(dataset),
        "stopped_by_time_budget": progress.stopped_by_time_budget,
        "final_loss_ema": ema(progress.losses),
        "mean_loss": result.training_loss,
    }


def train_st_bi_encoder(
    train: RetrievalDataset, pools: dict[str, list[str]], output: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """``SentenceTransformerTrainer`` with the settings of our ``train_bi_encoder`` (MNRL, scale 20, one negative)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    config = BiEncoderTrainingConfig(epochs=args.epochs, seed=args.seed)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = SentenceTransformer(str(resolve_model_path(BASE)), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_length
    rows = []
    for q in train.labelled_queries:
        known = set(train.positives(q))
        negatives = [d for d in pools.get(q, []) if d not in known][: config.hard_negatives_per_query]
        if negatives:
            rows += [(train.queries[q], train.corpus[p], train.corpus[negatives[0]]) for p in train.positives(q)]
    dataset = Dataset.from_dict(
        {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows], "negative": [r[2] for r in rows]}
    )
    training_args = _trainer_arguments(
        SentenceTransformerTrainingArguments,
        output.parent / f"{output.name}-trainer",
        args,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        loss=MultipleNegativesRankingLoss(model, scale=config.scale),
    )
    result, progress = _run_trainer(trainer, "st bi-encoder", args.time_budget)
    model.save(str(output))
    return {
        "trainer": "SentenceTransformerTrainer (MultipleNegativesRankingLoss, no-duplicates batches)",
        "path": str(output),
        "wall_s": time.perf_counter() - start,
        "loop_s": result.metrics.get("train_runtime"),
        "steps": trainer.state.global_step,
        "planned_steps": trainer.state.max_steps,
        "rows": len(dataset),
        "stopped_by_time_budget": progress.stopped_by_time_budget,
        "final_loss_ema": ema(progress.losses),
        "mean_loss": result.training_loss,
    }


def our_log(name: str, path: Path, log: Any, wall_s: float, rows: int) -> dict[str, Any]:
    return {
        "trainer": name,
        "path": str(path),
        "wall_s": wall_s,
        "loop_s": log.seconds,
        "steps": log.steps,
        "planned_steps": log.planned_steps,
        "rows": rows,
        "stopped_by_time_budget": log.stopped_by_time_budget,
        "final_loss_ema": log.final_loss,
        "mean_loss": None,
    }


# -- report ------------------------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def training_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| trainer | steps (planned) | training rows | wall s | loop s | s/step | final loss (ema) | mean loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        per_step = r["loop_s"] / r["steps"] if r["loop_s"] and r["steps"] else None
        stop = ", time budget hit" if r["stopped_by_time_budget"] else ""
        lines.append(
            f"| {r['trainer']} | {r['steps']} ({r['planned_steps']}{stop}) | {r['rows']} | {r['wall_s']:.1f} | "
            f"{_num(r['loop_s'], 1)} | {_num(per_step, 2)} | {_num(r['final_loss_ema'])} | {_num(r['mean_loss'])} |"
        )
    return lines


def quality_table(rows: list[tuple[str, dict[str, float], float | None]], depth: int) -> list[str]:
    lines = [
        f"| model | nDCG@10 | MRR@10 | hit@1 | hit@10 | recall@{depth} | ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m, ms in rows:
        lines.append(
            f"| {label} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['hit@1']:.4f} | {m['hit@10']:.4f} | "
            f"{m[f'recall@{depth}']:.4f} | {_num(ms, 1)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--out", default="bench/results/compare-trainers.md", help="markdown report (and .json)")
    parser.add_argument("--work", default="runs/compare-trainers", help="where trained models go")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128, help="cross-encoder pair length, training and test")
    parser.add_argument("--num-negatives", type=int, default=7, help="negatives per (query, positive) group")
    parser.add_argument("--depth", type=int, default=30, help="mining depth and reranking depth")
    parser.add_argument("--queries-per-batch", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--head-lr-multiplier", type=float, default=20.0, help="the new head's rate, both trainers")
    parser.add_argument("--time-budget", type=float, help="seconds per training run (ours re-plans its schedule)")
    parser.add_argument(
        "--st-losses",
        default="listwise",
        help="comma-separated CrossEncoderTrainer losses: " + "; ".join(f"{k}: {v}" for k, v in ST_LOSSES.items()),
    )
    parser.add_argument("--st-first", action="store_true", help="train with sentence-transformers before ours")
    parser.add_argument("--bi-encoder", action="store_true", help="also compare the bi-encoder trainers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-queries", type=int, help="seeded sample of training queries (CPU budget)")
    parser.add_argument("--max-test-queries", type=int, help="seeded sample of test queries (CPU budget)")
    parser.add_argument("--max-corpus", type=int, help="keep the positives plus a seeded sample of other documents")
    args = parser.parse_args()
    st_losses = [k.strip() for k in args.st_losses.split(",") if k.strip()]
    unknown = [k for k in st_losses if k not in ST_LOSSES]
    if unknown:
        parser.error(f"unknown --st-losses {unknown}; choose from {sorted(ST_LOSSES)}")
    out, work = Path(args.out), Path(args.work)
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    import torch
    from sentence_transformers import SentenceTransformer

    train = sample_queries(load_dataset(args.data, args.train_split), args.max_train_queries, args.seed)
    test = sample_queries(load_dataset(args.data, args.test_split), args.max_test_queries, args.seed)
    train, test = shrink_corpus(train, test, args.max_corpus, args.seed)
    print(
        f"corpus {len(train.corpus)}, train queries {len(train.queries)} "
        f"({sum(len(train.positives(q)) for q in train.queries)} positives), test queries {len(test.queries)}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )

    # 1. Mining. Both models are loaded and warmed up before the clocks start.
    ours_embedder = BiEncoderBackend(BASE, cache_size=0)
    ours_embedder.encode_queries(["warm-up"])
    st_embedder = SentenceTransformer(str(resolve_model_path(BASE)), device="cpu", local_files_only=True)
    st_embedder.encode(["warm-up"])
    stage = timed("mine: ours, index the corpus", timings, corpus_first_stage, train, ours_embedder)
    # The recipe's pools (train_cross_encoder_on): the whole top-depth minus positives, drawn from every epoch.
    pools = timed(
        "mine: ours, top pool",
        timings,
        mine_hard_negatives,
        train,
        stage,
        num_negatives=args.depth,
        depth=args.depth,
        seed=args.seed,
    )
    ours_sampled = timed(
        "mine: ours, sampled",
        timings,
        mine_hard_negatives,
        train,
        stage,
        num_negatives=args.num_negatives,
        depth=args.depth,
        seed=args.seed,
    )
    st_sampled, st_pool = st_mine(
        train,
        st_embedder,
        depth=args.depth,
        num_negatives=args.num_negatives,
        seed=args.seed,
        cache=work / "st-mining-cache",
        timings=timings,
    )
    pool_texts = {q: [train.corpus[d] for d in ds] for q, ds in pools.items()}
    overlaps = {
        "pool": overlap(pool_texts, st_pool),
        "sampled": overlap({q: [train.corpus[d] for d in ds] for q, ds in ours_sampled.items()}, st_sampled),
        "st_sampled_in_our_pool": sum(
            len(set(st_sampled[q]) & set(pool_texts.get(q, []))) / max(1, len(st_sampled[q])) for q in st_sampled
        )
        / max(1, len(st_sampled)),
    }
    print(f"negative overlap: {json.dumps(overlaps)}", flush=True)

    # 2. Training on the same groups: ours draws epoch e's negatives with seed + e; epoch 0 is what the ST trainer gets.
    config = CrossEncoderTrainingConfig(
        loss="listwise",
        epochs=args.epochs,
        queries_per_batch=args.queries_per_batch,
        num_negatives=args.num_negatives,
        learning_rate=args.learning_rate,
        head_lr_multiplier=args.head_lr_multiplier,
        max_length=args.max_length,
        time_budget_s=args.time_budget,
        seed=args.seed,
    )
    groups = [_groups(train, pools, args.num_negatives, args.seed + e) for e in range(args.epochs)]

    def train_ours() -> dict[str, Any]:
        start = time.perf_counter()
        path, log = train_cross_encoder(
            train, pools, work / f"ours-cross-listwise-{args.epochs}ep", base_model=BASE, config=config
        )
        run = our_log("ours: train_cross_encoder (listwise)", path, log, time.perf_counter() - start, len(groups[0]))
        run["loss"] = "softmax CE over (positive, negatives), negatives redrawn each epoch"
        print(f"[train: ours] {run['wall_s']:.1f} s, {log.steps} steps", flush=True)
        return run

    runs = [] if args.st_first else [train_ours()]
    for kind in st_losses:
        runs.append(train_st_cross_encoder(kind, groups, work / f"st-cross-{kind}-{args.epochs}ep", args))
        print(f"[train: st {kind}] {runs[-1]['wall_s']:.1f} s, {runs[-1]['steps']} steps", flush=True)
    if args.st_first:
        runs.insert(0, train_ours())

    # 3. Test: each reranker reorders the packaged MiniLM's top-depth.
    reports, quality_rows = {}, []
    for run in runs:
        reranker = CrossEncoderBackend(run["path"], cache_size=0, max_length=args.max_length)
        report = timed(
            f"evaluate {run['trainer']}",
            timings,
            evaluate_two_stage,
            test,
            stage,
            reranker,
            first_stage_k=args.depth,
            show_progress=False,
        )
        reports[run["trainer"]] = report
        if not quality_rows:
            quality_rows.append(
                (
                    "packaged MiniLM alone (first stage)",
                    report["metrics"]["first_stage"],
                    report["latency"]["first_stage"]["ms_per_query"],
                )
            )
        quality_rows.append(
            (f"+ {run['trainer']}", report["metrics"]["reranked"], report["latency"]["rerank"]["ms_per_query"])
        )

    # 4. Bi-encoders (optional), each evaluated as a first stage over its own index of the corpus.
    bi_runs, bi_rows = [], []
    if args.bi_encoder:
        bi_config = BiEncoderTrainingConfig(epochs=args.epochs, time_budget_s=args.time_budget, seed=args.seed)
        start = time.perf_counter()
        bi_dir, bi_log = train_bi_encoder(
            train, work / f"ours-bi-{args.epochs}ep", base_model=BASE, config=bi_config, hard_negatives=pools
        )
        bi_runs.append(
            our_log(
                "ours: train_bi_encoder (MNRL)",
                bi_dir,
                bi_log,
                time.perf_counter() - start,
                sum(len(train.positives(q)) for q in train.queries),
            )
        )
        print(f"[train: ours bi-encoder] {bi_runs[-1]['wall_s']:.1f} s", flush=True)
        bi_runs.append(train_st_bi_encoder(train, pools, work / f"st-bi-{args.epochs}ep", args))
        print(f"[train: st bi-encoder] {bi_runs[-1]['wall_s']:.1f} s", flush=True)
        base_report = evaluate_two_stage(test, stage, None, first_stage_k=args.depth, show_progress=False)
        bi_rows.append(("packaged MiniLM", base_report["metrics"]["first_stage"], None))
        for run in bi_runs:
            index = timed(
                f"index the corpus with {run['trainer']}",
                timings,
                corpus_first_stage,
                test,
                BiEncoderBackend(run["path"], cache_size=0),
            )
            report = evaluate_two_stage(test, index, None, first_stage_k=args.depth, show_progress=False)
            reports[f"bi: {run['trainer']}"] = report
            bi_rows.append((run["trainer"], report["metrics"]["first_stage"], None))

    header = (
        result_header(
            f"Our trainers and miner against sentence-transformers' on {args.data}",
            f"torch threads {torch.get_num_threads()}",
        )
        + "  \n"
        f"versions: sentence-transformers {_version('sentence-transformers')}, transformers "
        f"{_version('transformers')}, torch {_version('torch')}, datasets {_version('datasets')}\n\n"
        f"Data: corpus {len(train.corpus)} documents; train {len(train.queries)} queries "
        f"({len(groups[0])} (query, positive) groups); test {len(test.queries)} queries. Backbone `{BASE}` "
        f"(packaged), max length {args.max_length}, {args.num_negatives} negatives per group from the "
        f"top-{args.depth}, "
        f"{args.queries_per_batch} groups per step, lr {args.learning_rate} (head x{args.head_lr_multiplier}), "
        f"{args.epochs} epoch(s), seed {args.seed}.\n\n"
    )
    ours_mine = timings["mine: ours, index the corpus"] + timings["mine: ours, top pool"]
    mining = [
        "## Hard-negative mining (train split)\n",
        "| miner | seconds | what |",
        "|---|---|---|",
        f"| ours: corpus_first_stage + mine_hard_negatives | {ours_mine:.1f} | index "
        f"{timings['mine: ours, index the corpus']} s + top-{args.depth} pools {timings['mine: ours, top pool']} s "
        f"(a sampled {args.num_negatives} with the index built: {timings['mine: ours, sampled']} s); the index is "
        "reused for the test first stage |",
        f"| sentence-transformers mine_hard_negatives | {timings['mine: sentence-transformers, sampled']:.1f} | "
        f"range_max={args.depth}, num_negatives={args.num_negatives}, random sampling, n-tuple output; encodes "
        f"corpus and queries itself (top-{args.depth} pool call with cached embeddings: "
        f"{timings['mine: sentence-transformers, top pool (embeddings cached)']} s) |",
        "",
        "| compared per query | queries | mean size ours | mean size ST | mean shared | mean Jaccard | identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("pool", f"top-{args.depth} candidate pools"), ("sampled", f"sampled {args.num_negatives}")):
        o = overlaps[name]
        mining.append(
            f"| {label} | {o['queries']} | {o['mean_ours']:.2f} | {o['mean_theirs']:.2f} | {o['mean_shared']:.2f} | "
            f"{o['mean_jaccard']:.3f} | {o['identical_fraction']:.3f} |"
        )
    chance = args.num_negatives**2 / max(1, overlaps["pool"]["mean_ours"])
    mining.append(
        f"\nTwo independent draws of {args.num_negatives} from the same pool share about {chance:.2f} on average; "
        f"fraction of ST's sampled negatives inside our pool: {overlaps['st_sampled_in_our_pool']:.3f}. Ours takes "
        f"ranks 1..{args.depth} and drops the positives found there; ST's range_max={args.depth} takes the "
        f"{args.depth} best non-positives (searches {args.depth} + positives deep).\n"
    )
    training = [
        "## Cross-encoder training (same groups: ST gets our epoch-0 draw)\n",
        *training_table(runs),
        "",
        "Losses: " + "; ".join(f"**{r['trainer']}**: {r['loss']}" for r in runs) + ".\n",
        f"## Test: rerank the packaged MiniLM's top-{args.depth} ({len(test.queries)} queries, reranker alone)\n",
        *quality_table(quality_rows, args.depth),
        "",
    ]
    if bi_runs:
        training += [
            "## Bi-encoder training (MNRL, scale 20, batch 32, lr 2e-5, one mined negative per query)\n",
            *training_table(bi_runs),
            "",
            f"First stage on the test split (own index of the corpus, top-{args.depth}):\n",
            *quality_table(bi_rows, args.depth),
            "",
        ]
    notes = [
        "## What is matched and what is not\n",
        "- Same groups: `CrossEncoderTrainer` trains on our first epoch's draw (`_groups(..., seed)`); ours draws "
        "fresh negatives from the pools every later epoch (`listwise-redrawn` gives the ST trainer one draw per "
        "epoch as one longer data set). With 1 epoch the two see identical data, in different orders.",
        "- Same start: the ST model's new head is copied from the one our trainer initialises with the same seed.",
        "- Same optimisation: AdamW, weight decay 0.01 (transformers exempts biases and LayerNorms, ours does not), "
        "linear warm-up over 10% of the steps (transformers: ceil and first step at lr 0; ours: floor, first step "
        "at lr/warm-up) then linear decay, gradient clipping at 1.0, head at lr x multiplier (ST: "
        "`learning_rate_mapping`), fp32 on the CPU (`use_cpu=True`), one forward pass per step (`mini_batch_size=-1`).",
        "- Not matched: batch order (seeded, different samplers), dropout draws, tokenizer truncation (ours "
        "`only_second`, ST `longest_first`: identical unless a query alone exceeds the budget), transformers' fused "
        "AdamW (its default) against torch's AdamW, logging every step on the ST side (needed for its loss curve).",
        "- Final loss: both columns are the 0.95-decay running mean of the step losses (our loop's number); the mean "
        "loss is transformers' average over all steps. Losses on other scales (lambda, mnrl, bce) do not compare.",
        "- Steps: `listwise-redrawn` packs all epochs into one pass, so it can take up to one step fewer per epoch "
        "(no partial last batch per epoch). `mnrl` scores 4 extra in-batch pairs per group, in one forward pass per "
        "column: slower steps by design. Bi-encoders: both samplers put rows whose texts repeat into later, smaller "
        "batches; transformers plans its schedule on ceil(rows / 32) per epoch, ours on the batches it built.",
        "- Time budget: ours stops and re-plans its schedule to end at the budget; ST here only stops (callback).",
        "- Order: ours trains first unless `--st-first`; on a busy machine compare s/step with care.\n",
    ]
    text = header + "\n".join(mining + training + notes) + "\nTimings (s): " + json.dumps(timings) + "\n"
    print(text, flush=True)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "argv": sys.argv,
                "timings": timings,
                "overlap": overlaps,
                "cross_encoder_runs": runs,
                "bi_encoder_runs": bi_runs,
                "reports": reports,
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
