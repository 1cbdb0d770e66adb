"""Train a cross-encoder reranker from any backbone on (query, positive, hard negatives) groups.

``loss="listwise"`` (default): softmax cross-entropy over each query's group (1 positive + n negatives),
which teaches relative order directly. ``loss="binary"``: per-pair BCE, positives up-weighted by n.
The classification head is new, so it learns at ``head_lr_multiplier`` times the backbone's rate.
Mined pools may hold more negatives than a group uses: each epoch draws ``num_negatives`` of them afresh,
so a second epoch sees new negatives instead of repeating the first.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.models.pair_scoring import MIN_DOCUMENT_TOKENS, matched_windows
from rerank_plugins.models.resolve import resolve_model_path
from rerank_plugins.training._loop import TrainingLog, optimise, set_dropout
from rerank_plugins.training.heldout import pool_mrr
from rerank_plugins.training.model_card import write_model_card

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
TRAINABLE_LONG_DOCUMENTS = ("truncate", "matched_window")


@dataclass
class CrossEncoderTrainingConfig:
    loss: Literal["listwise", "binary"] = "listwise"
    epochs: int = 1
    queries_per_batch: int = 4
    num_negatives: int = 7
    learning_rate: float = 5e-5
    head_lr_multiplier: float = 20.0
    warmup_ratio: float = 0.1
    max_length: int = 256
    time_budget_s: float | None = None
    seed: int = 0
    layers: int | None = None
    """Keep only the backbone's first ``layers`` transformer layers: a shallower reranker, faster to train and run."""
    dropout: float | None = None
    """Dropout for the whole model during training; ``None`` keeps the backbone's own (BERT: 0.1). On a CPU, dropout
    is a large share of a step (MiniLM, 32 pairs x 128 tokens: 3.2 s with it, 2.1 s without)."""
    freeze_embeddings: bool = False
    """Leave the token embeddings as they are: a 250k-piece multilingual vocabulary is 96M of e5-small's 118M
    parameters, and updating them costs optimiser time for almost nothing a reranker needs."""
    long_documents: Literal["truncate", "matched_window"] = "truncate"
    """``"matched_window"``: every document longer than ``max_length`` (positive or negative) is trained on as its
    window sharing the most tokens with the query (:func:`~rerank_plugins.models.pair_scoring.matched_windows`)
    instead of its beginning, and the reranker is recorded to read long documents that way
    (``long_documents="auto"``: one pass per document, as cheap as truncating). Scoring every window and keeping
    the best (``"window"``) would meet windows the training never showed: the negatives' best-scoring ones."""

    def __post_init__(self) -> None:
        if self.loss not in ("listwise", "binary"):
            raise ValueError(f"loss must be 'listwise' or 'binary', got {self.loss!r}")
        for name in ("epochs", "queries_per_batch", "num_negatives", "max_length"):
            check_positive_int(getattr(self, name), name)
        if self.layers is not None:
            check_positive_int(self.layers, "layers")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.long_documents not in TRAINABLE_LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be one of {TRAINABLE_LONG_DOCUMENTS}, got {self.long_documents!r}")


def _groups(
    dataset: RetrievalDataset, negatives: dict[str, list[str]], n: int, seed: int
) -> list[tuple[str, str, list[str]]]:
    """(query, positive, ``n`` negatives drawn from its pool) per (query, positive) pair.

    A pool smaller than ``n`` (e.g. one given negative per query) is drawn from with replacement; queries with
    no negative at all are skipped. The set of groups is the same for every ``seed``, only the draws differ.
    """
    rng = random.Random(seed)
    groups = []
    for query_id in dataset.labelled_queries:
        pool = [d for d in negatives.get(query_id, []) if d not in dataset.qrels[query_id]]
        if not pool:
            continue
        for positive in dataset.positives(query_id):
            chosen = rng.sample(pool, n) if len(pool) >= n else rng.choices(pool, k=n)
            groups.append((dataset.queries[query_id], dataset.corpus[positive], [dataset.corpus[d] for d in chosen]))
    return groups


def queries_too_long(tokenizer: Any, queries: dict[str, str], max_length: int) -> list[str]:
    """Ids of queries that leave fewer than ``MIN_DOCUMENT_TOKENS`` tokens of ``max_length`` for a document."""
    if not queries:
        return []
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True) - MIN_DOCUMENT_TOKENS
    lengths = tokenizer(list(queries.values()), add_special_tokens=False, return_length=True)["length"]
    return [query_id for query_id, length in zip(queries, lengths) if length > budget]


def require_queries_fit(tokenizer: Any, dataset: RetrievalDataset, max_length: int) -> None:
    """Refuse, before any work, a data set with a query that leaves too little of ``max_length`` for a document."""
    too_long = queries_too_long(tokenizer, dataset.queries, max_length)
    if too_long:
        raise ValueError(
            f"{len(too_long)} queries leave fewer than {MIN_DOCUMENT_TOKENS} of max_length={max_length} tokens for "
            f"the document (queries are never truncated) in {dataset.name}, e.g. {too_long[:3]}: shorten or drop them"
        )


def without_queries_too_long(
    tokenizer: Any, dataset: RetrievalDataset, max_length: int
) -> tuple[RetrievalDataset, int]:
    """``dataset`` without the queries :func:`queries_too_long` finds, and how many left (logged, never silent):
    for machine-made queries, where a long sentence is no reason to stop."""
    too_long = set(queries_too_long(tokenizer, dataset.queries, max_length))
    if too_long:
        logger.warning(
            "%s: %d queries too long for %d tokens with a document: left out", dataset.name, len(too_long), max_length
        )
        dataset = dataset.subset([q for q in dataset.queries if q not in too_long])
    return dataset, len(too_long)


def keep_first_layers(model: Any, layers: int) -> None:
    """Cut a BERT-style model's encoder to its first ``layers`` layers (and say so in its config)."""
    encoder = getattr(model.base_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None:
        raise ValueError(f"layers= needs a BERT-style encoder (encoder.layer); {type(model).__name__} has none")
    if layers > len(stack):
        raise ValueError(f"layers={layers} but the backbone has only {len(stack)}")
    encoder.layer = stack[:layers]
    model.config.num_hidden_layers = layers


def train_cross_encoder(
    train: RetrievalDataset,
    negatives: dict[str, list[str]],
    output_dir: str | os.PathLike[str],
    *,
    base_model: str = DEFAULT_BACKBONE,
    config: CrossEncoderTrainingConfig | None = None,
    eval_data: RetrievalDataset | None = None,
    eval_negatives: dict[str, list[str]] | None = None,
    show_progress: bool = True,
) -> tuple[Path, TrainingLog]:
    """Train, keep the best epoch on the held-out pool (if given), save to ``output_dir`` with a model card."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = config or CrossEncoderTrainingConfig()
    torch.manual_seed(config.seed)
    base_path = resolve_model_path(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    require_queries_fit(tokenizer, train, config.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    logger.info("cross-encoder initialised from %s with a new scoring head", base_model)
    if config.layers is not None:
        keep_first_layers(model, config.layers)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    groups = _groups(train, negatives, config.num_negatives, config.seed)
    if not groups:
        raise ValueError(
            f"no query in {train.name} has a negative; mine some (negatives='hard') or add them to the data"
        )
    pool_sizes = [len(v) for q, v in negatives.items() if q in train.qrels]
    average_pool = sum(pool_sizes) / max(1, len(pool_sizes))

    def batches(epoch: int) -> list[list[tuple[str, str, list[str]]]]:
        order = _groups(train, negatives, config.num_negatives, config.seed + epoch)
        random.Random(config.seed + epoch).shuffle(order)
        size = config.queries_per_batch
        return [order[i : i + size] for i in range(0, len(order), size)]

    n_docs = 1 + config.num_negatives
    pos_weight = torch.tensor([float(config.num_negatives)])

    def read(queries: list[str], documents: list[str]) -> list[str]:
        """What the reranker is shown of each document (one batched tokenizer call for the matched windows)."""
        if config.long_documents == "truncate":
            return documents
        return [text for text, _ in matched_windows(tokenizer, queries, documents, config.max_length)]

    def step_loss(batch: list[tuple[str, str, list[str]]]) -> Any:
        queries = [q for q, _, _ in batch for _ in range(n_docs)]
        docs = read(queries, [d for _, positive, negs in batch for d in [positive, *negs]])
        features = tokenizer(
            queries, docs, truncation="only_second", max_length=config.max_length, padding=True, return_tensors="pt"
        )
        logits = model(**features).logits.view(len(batch), n_docs)
        if config.loss == "listwise":
            return torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def score(query: str, docs: list[str]) -> Any:
        with torch.inference_mode():
            features = tokenizer(
                [query] * len(docs),
                read([query] * len(docs), docs),
                truncation="only_second",
                max_length=config.max_length,
                padding=True,
                return_tensors="pt",
            )
            return model(**features).logits[:, 0].numpy()

    evaluate = None
    if eval_data is not None and eval_negatives:
        evaluate = lambda: pool_mrr(score, eval_data, eval_negatives)  # noqa: E731

    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "score"))]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    log = optimise(
        model,
        [
            {"params": body, "lr": config.learning_rate},
            {"params": head, "lr": config.learning_rate * config.head_lr_multiplier},
        ],
        batches,
        step_loss,
        epochs=config.epochs,
        warmup_ratio=config.warmup_ratio,
        time_budget_s=config.time_budget_s,
        evaluate=evaluate,
        description=f"Training cross-encoder ({config.loss})",
        show_progress=show_progress,
    )
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.model_max_length = config.max_length
    tokenizer.save_pretrained(output)
    scores = {"held_out_pool_mrr@10": log.evaluations[-1]["score"]} if log.evaluations else {}
    if log.best_epoch is not None:
        scores["best_epoch"] = log.best_epoch
    write_model_card(
        output,
        kind="cross-encoder",
        base_model=base_model,
        data=f"{train.name}: {len(groups)} (query, positive, "
        f"{config.num_negatives} negatives) groups; negatives drawn each epoch from pools of "
        f"{average_pool:.1f} mined per query on average",
        parameters=asdict(config),
        training=asdict(log),
        scores=scores,
    )
    return output, log
