"""Fine-tune a sentence-transformers bi-encoder contrastively (MultipleNegativesRankingLoss).

Each batch holds distinct passages; every other passage in the batch is a negative for a query (in-batch
negatives), plus optional hard negatives mined with the current model. The model's own query/document
prompts are applied, as at inference.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.models.resolve import resolve_model_path
from rerank_plugins.training._loop import TrainingLog, optimise, set_dropout
from rerank_plugins.training.heldout import pool_mrr
from rerank_plugins.training.model_card import write_model_card


@dataclass
class BiEncoderTrainingConfig:
    epochs: int = 1
    batch_size: int = 32
    hard_negatives_per_query: int = 1
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    scale: float = 20.0
    max_length: int = 256
    time_budget_s: float | None = None
    seed: int = 0
    freeze_embeddings: bool = False
    """Leave the token embeddings as they are (see ``CrossEncoderTrainingConfig.freeze_embeddings``)."""
    dropout: float | None = None
    """Dropout for the whole model during training; ``None`` keeps the model's own (see
    ``CrossEncoderTrainingConfig.dropout``)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length"):
            check_positive_int(getattr(self, name), name)
        if self.hard_negatives_per_query < 0:
            raise ValueError("hard_negatives_per_query must be >= 0")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def distinct_passage_batches(
    examples: list[tuple[str, str, str, list[str]]], batch_size: int, seed: int
) -> list[list[tuple[str, str, str, list[str]]]]:
    """Shuffle (query_id, query, positive, negatives) examples into batches where no passage repeats.

    A repeated passage would be both the positive and an in-batch "negative" of the same query.
    """
    pending = examples[:]
    random.Random(seed).shuffle(pending)
    batches = []
    while pending:
        batch, passages, deferred = [], set(), []
        for example in pending:
            texts = {example[2], *example[3]}
            if len(batch) < batch_size and not texts & passages:
                batch.append(example)
                passages |= texts
            else:
                deferred.append(example)
        batches.append(batch)
        pending = deferred
    return batches


def train_bi_encoder(
    train: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2",
    config: BiEncoderTrainingConfig | None = None,
    hard_negatives: dict[str, list[str]] | None = None,
    eval_data: RetrievalDataset | None = None,
    eval_negatives: dict[str, list[str]] | None = None,
    show_progress: bool = True,
) -> tuple[Path, TrainingLog]:
    """Fine-tune ``base_model`` on ``train``'s (query, positive) pairs; save to ``output_dir`` with a model card."""
    import torch
    from sentence_transformers import SentenceTransformer

    config = config or BiEncoderTrainingConfig()
    torch.manual_seed(config.seed)
    model = SentenceTransformer(str(resolve_model_path(base_model)), device="cpu", local_files_only=True)
    model.max_seq_length = config.max_length
    if config.freeze_embeddings:
        model[0].auto_model.get_input_embeddings().weight.requires_grad_(False)
    if config.dropout is not None:
        set_dropout(model[0].auto_model, config.dropout)
    query_prompt = model.prompts.get("query", "")
    document_prompt = model.prompts.get("document", "")
    examples = []
    for query_id in train.labelled_queries:
        known = set(train.positives(query_id))
        negs = [d for d in (hard_negatives or {}).get(query_id, []) if d not in known][
            : config.hard_negatives_per_query
        ]
        for positive in train.positives(query_id):
            examples.append(
                (query_id, train.queries[query_id], train.corpus[positive], [train.corpus[d] for d in negs])
            )

    def embed(texts: list[str], prompt: str) -> Any:
        features = model.preprocess([prompt + t for t in texts])
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    def step_loss(batch: list[tuple[str, str, str, list[str]]]) -> Any:
        queries = embed([q for _, q, _, _ in batch], query_prompt)
        passages = [p for _, _, p, _ in batch] + [n for *_, negs in batch for n in negs]
        scores = queries @ embed(passages, document_prompt).T * config.scale
        return torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))

    def score(query: str, docs: list[str]) -> Any:
        with torch.inference_mode():
            return (embed(docs, document_prompt) @ embed([query], query_prompt).T)[:, 0].numpy()

    evaluate = None
    if eval_data is not None and eval_negatives:
        evaluate = lambda: pool_mrr(score, eval_data, eval_negatives)  # noqa: E731
    log = optimise(
        model,
        [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.learning_rate}],
        lambda epoch: distinct_passage_batches(examples, config.batch_size, config.seed + epoch),
        step_loss,
        epochs=config.epochs,
        warmup_ratio=config.warmup_ratio,
        time_budget_s=config.time_budget_s,
        evaluate=evaluate,
        description="Training bi-encoder (MNRL)",
        show_progress=show_progress,
    )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    scores = {"held_out_pool_mrr@10": log.evaluations[-1]["score"]} if log.evaluations else {}
    write_model_card(
        output,
        kind="bi-encoder",
        base_model=base_model,
        data=f"{train.name}: {len(examples)} (query, positive) pairs, "
        f"{config.hard_negatives_per_query} hard negatives each where mined",
        parameters=asdict(config),
        training=asdict(log),
        scores=scores,
    )
    return output, log
