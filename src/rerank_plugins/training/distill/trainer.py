"""The distillation run: :func:`distill_cross_encoder` wires student, teacher scores, loss and fusion weight together.

Kept apart from the pieces it wires because this is the one place with the run's choices (configuration, held-out
split, batching, autocast, when to evaluate) and its outputs (the saved student, its model card and training record);
the pieces stay usable and testable without a training loop around them.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training._loop import TrainingLog, optimise
from rerank_plugins.training.cross_encoder import require_queries_fit, without_queries_too_long
from rerank_plugins.training.distill.fusion_weight import record_student_fusion_weight
from rerank_plugins.training.distill.losses import label_cross_entropy, listwise_kl
from rerank_plugins.training.distill.student import truncated_student
from rerank_plugins.training.distill.teacher_scores import Group, teacher_groups
from rerank_plugins.training.model_card import write_model_card
from rerank_plugins.training.recipes import record_training_info

logger = logging.getLogger(__name__)


@dataclass
class DistillationConfig:
    epochs: int = 2
    queries_per_batch: int = 2
    learning_rate: float = 1e-4
    temperature: float = 1.0
    warmup_ratio: float = 0.1
    max_length: int | None = None
    """Tokens per pair for teacher and student; ``None``: the teacher's own max length."""
    time_budget_s: float | None = None
    bf16: bool = False
    """Run the student's forward pass in bfloat16 autocast (weights and optimiser stay fp32). Measure first
    (bench/bf16_training_step.py): 2.2x faster on an AMD EPYC with AVX-512 BF16, 0.88x on an Emerald Rapids guest
    with AVX-512 BF16 but AMX hidden, about 20x *slower* where bf16 is emulated (a warning says so)."""
    label_weight: float = 0.0
    """Weight of the hard-label term beside the KL to the teacher, on queries with a labelled positive among their
    candidates (a data set's qrels; a pseudo-query's own passage); 0: pure distillation."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "queries_per_batch"):
            check_positive_int(getattr(self, name), name)
        if not self.label_weight >= 0:
            raise ValueError(f"label_weight must be >= 0, got {self.label_weight}")
        if self.max_length is not None:
            check_positive_int(self.max_length, "max_length")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def cpu_computes_bf16() -> bool | None:
    """Whether torch's CPU kernels run bf16 in hardware (AVX-512 BF16 or AMX); ``None`` where torch cannot tell.

    Without it bf16 autocast is emulated: a training step took 20x as long as in fp32 on an AVX2-only EPYC
    (bench/results/bf16-training-step-avx2.md), where it took half as long on one with AVX-512 BF16.
    """
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return None if None in probes else any(probe() for probe in probes)


def _candidates(
    dataset: RetrievalDataset, candidates: FirstStage | Mapping[str, Sequence[str]], k: int
) -> dict[str, list[str]]:
    """Candidate document ids per query: the first stage's top-``k``, or the mapping given (checked)."""
    if isinstance(candidates, FirstStage):
        query_ids = list(dataset.queries)
        hits = candidates.search_batch([dataset.queries[q] for q in query_ids], k)
        return {q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}
    if not isinstance(candidates, Mapping):
        raise TypeError(
            f"candidates must be a FirstStage or a mapping of query id -> document ids, got {type(candidates).__name__}"
        )
    unknown_queries = [q for q in candidates if q not in dataset.queries]
    unknown_docs = sorted({d for docs in candidates.values() for d in docs if d not in dataset.corpus})
    if unknown_queries or unknown_docs:
        raise ValueError(
            f"candidates name unknown query ids {unknown_queries[:5]} / document ids {unknown_docs[:5]} "
            f"(not in {dataset.name})"
        )
    return {q: list(docs) for q, docs in candidates.items()}


def _held_out_ids(dataset: RetrievalDataset, held_out: float, seed: int) -> set[str]:
    """Held-out queries: the same split as the other trainers' (labelled queries) so a teacher trained by
    rerank-plugins never saw them; a data set without labels holds out a random fraction of its queries."""
    if not held_out:
        return set()
    if dataset.labelled_queries:
        return set(dataset.split(held_out, seed)[1].queries)
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be between 0 and 1, got {held_out}")
    ids = sorted(dataset.queries)
    random.Random(seed).shuffle(ids)
    return set(ids[: max(1, round(len(ids) * held_out))])


def distill_cross_encoder(
    teacher: str | os.PathLike[str] | CrossEncoderBackend,
    dataset: RetrievalDataset,
    output_dir: str | os.PathLike[str],
    *,
    candidates: FirstStage | Mapping[str, Sequence[str]],
    layers: int | Sequence[int] = 2,
    first_stage_k: int = 30,
    held_out: float = 0.1,
    more_queries: RetrievalDataset | Sequence[RetrievalDataset] = (),
    config: DistillationConfig | None = None,
    teacher_cache: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> tuple[Path, TrainingLog]:
    """Train a ``layers``-layer student of ``teacher`` on ``dataset``'s queries; save it to ``output_dir``.

    ``candidates``: a first stage (its top-``first_stage_k`` per query: the lists the student will rerank) or a
    mapping of query id to document ids. Training uses queries and corpus, and labels only with ``config.label_weight
    > 0`` (never the held-out queries'). A ``held_out`` fraction of the queries measures agreement with the teacher
    after each epoch (the best epoch is kept) and, when ``candidates`` is a first stage, chooses the stored fusion
    weight (:func:`record_student_fusion_weight`).
    ``more_queries``: data sets of more queries to learn from, with their own view of the corpus, never held out:
    :func:`~rerank_plugins.training.pseudo_queries.offline_pseudo_queries` over the same documents, since a small
    student needs many more queries than a data set's labelled ones (labels as for ``dataset``). Their candidates
    come from ``candidates``, which must then be a first stage.
    The result is a normal cross-encoder directory (our backends, the CLI, sentence-transformers ``CrossEncoder``).
    """
    import torch
    from transformers import AutoTokenizer

    config = config or DistillationConfig()
    if config.bf16 and cpu_computes_bf16() is False:
        logger.warning(
            "bf16=True on a CPU without native bf16 (AVX-512 BF16 / AMX): autocast is emulated here and trains about "
            "20x slower than fp32; drop bf16 (--bf16) on this machine"
        )
    check_positive_int(first_stage_k, "first_stage_k")
    if not dataset.queries:
        raise ValueError(f"{dataset.name} has no queries to distill on")
    more_queries = [more_queries] if isinstance(more_queries, RetrievalDataset) else list(more_queries)
    if more_queries and not isinstance(candidates, FirstStage):
        raise TypeError("more_queries needs candidates to be a FirstStage: it finds their candidates")
    if not isinstance(teacher, CrossEncoderBackend):
        teacher = CrossEncoderBackend(teacher, cache_size=0, max_length=config.max_length)
    student, keep = truncated_student(teacher.path, layers)  # checks ``layers`` before any scoring
    max_length = config.max_length or teacher.max_length
    tokenizer = AutoTokenizer.from_pretrained(teacher.path)
    torch.manual_seed(config.seed)
    require_queries_fit(tokenizer, dataset, max_length)  # before any scoring: the teacher would stop on the first
    # Pseudo-queries can be long sentences: those are left out and counted in the model card.
    fitted = [without_queries_too_long(tokenizer, more, max_length) for more in more_queries]
    more_queries = [more for more, _ in fitted if more.queries]
    left_out = {more.name: count for more, count in fitted if count}

    pools = _candidates(dataset, candidates, first_stage_k)
    groups = teacher_groups(teacher, dataset, pools, cache=teacher_cache, show_progress=show_progress)
    held = _held_out_ids(dataset, held_out, config.seed)
    train = [g for g in groups if g.query_id not in held]
    check = [g for g in groups if g.query_id in held]
    for more in more_queries:
        pool = _candidates(more, candidates, first_stage_k)
        train += teacher_groups(teacher, more, pool, cache=teacher_cache, show_progress=show_progress)
    if not train:
        raise ValueError(f"no query of {dataset.name} has 2 or more candidates to learn an order from")

    def student_scores(batch: Sequence[Group]) -> Any:
        features = tokenizer(
            [g.query for g in batch for _ in g.documents],
            [d for g in batch for d in g.documents],
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16 and student.training):
            logits = student(**features).logits.float()
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]

    def group_losses(batch: Sequence[Group], scores: Any, label_weight: float) -> Any:
        losses, start = [], 0
        for group in batch:
            end = start + len(group.documents)
            loss = listwise_kl(scores[start:end], torch.from_numpy(group.teacher), config.temperature)
            if label_weight and group.relevant.any():
                loss = loss + label_weight * label_cross_entropy(scores[start:end], torch.from_numpy(group.relevant))
            losses.append(loss)
            start = end
        return torch.stack(losses)

    def held_out_kl() -> float:
        with torch.inference_mode():
            batches = (check[i : i + 4] for i in range(0, len(check), 4))
            return float(torch.cat([group_losses(b, student_scores(b), 0.0) for b in batches]).mean())

    def batches(epoch: int) -> list[list[Group]]:
        order = list(train)
        random.Random(config.seed + epoch).shuffle(order)
        size = config.queries_per_batch
        return [order[i : i + size] for i in range(0, len(order), size)]

    scores: dict[str, Any] = {}
    if check:
        student.eval()
        scores["held_out_kl_to_teacher_before"] = held_out_kl()
    log = optimise(
        student,
        [{"params": list(student.parameters()), "lr": config.learning_rate}],
        batches,
        lambda batch: group_losses(batch, student_scores(batch), config.label_weight).mean(),
        epochs=config.epochs,
        warmup_ratio=config.warmup_ratio,
        time_budget_s=config.time_budget_s,
        evaluate=(lambda: -held_out_kl()) if check else None,
        description=f"Distilling {len(keep)}-layer student",
        show_progress=show_progress,
    )
    if left_out:
        scores["more_queries_left_out_too_long"] = left_out
    if check:
        scores["held_out_kl_to_teacher_after"] = -max(e["score"] for e in log.evaluations)
        scores["held_out_queries"] = len(check)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(output)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(output)
    source = candidates.describe() if isinstance(candidates, FirstStage) else "given candidate lists"
    write_model_card(
        output,
        kind="cross-encoder",
        base_model=teacher.model_name,
        data=f"{' + '.join(d.name for d in [dataset, *more_queries])}: {len(train)} queries "
        f"x up to {first_stage_k} candidates ({source}), scored by the teacher "
        f"({f'labels weighted {config.label_weight:g}' if config.label_weight else 'labels unused'}); "
        f"{len(check)} held out",
        parameters={
            **asdict(config),
            "max_length": max_length,
            "layers_kept": keep,
            "teacher": teacher.model_name,
            "teacher_runtime": teacher.effective_runtime,
        },
        training=asdict(log),
        scores=scores,
    )
    loss = "listwise KL" + (f" + {config.label_weight:g} x label cross-entropy" if config.label_weight else "")
    record_training_info(output, "distillation", {"teacher": teacher.model_name, "layers_kept": keep, "loss": loss})
    if isinstance(candidates, FirstStage) and held:
        record_student_fusion_weight(
            output, teacher, dataset.subset(sorted(held)), candidates, depth=first_stage_k, cache=teacher_cache
        )
    return output, log
