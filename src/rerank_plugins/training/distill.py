"""Distil a trained cross-encoder into a smaller, faster one that keeps a few of its transformer layers.

Why: on a CPU a reranker's time goes into its transformer layers, so a 2-layer student scores a query's candidates
about three times faster than a 6-layer teacher (FlashRank's default reranker is a 2-layer model for this reason).

The student starts as the teacher with only some of its layers (embeddings and scoring head kept, so it scores
sensibly from the first step) and learns to reproduce the teacher's scores on the candidates it will rerank at
inference: each query's top-``first_stage_k`` from a first stage. No labels are needed: the teacher labels the
pairs, so any queries over your corpus will do. Labels, where the data has them, can choose the teacher's fusion
weight (below) and, with ``label_weight > 0``, add a hard-label term to the loss.

Fusion weight (``fusion_weight="auto"``): the student stands in for the teacher's fused pipeline, so it stores the
weight at which its fused ranking best reproduces the teacher's on the held-out queries (top-10 overlap, every
candidate of every held-out query, labelled or not). The teacher's weight is the one stored with it, else tuned on
the held-out labels with the library's one-standard-error rule. Tuning the student's weight on those few labels
alone could not tell weights apart (SciFact: 81 claims, paired differences within one standard error).

Loss: listwise KL divergence per query, ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``. A reranker only
has to order one query's candidates, and the library's teachers are trained listwise (softmax over a query's group),
so their scores are the logits of exactly this distribution; KL also weights the top of the list, where nDCG@10 is
decided, most. MarginMSE would spend as much effort on the order of two irrelevant candidates at the bottom.
With ``label_weight`` w, a query whose candidates include a labelled positive adds w times the listwise
cross-entropy of those positives (``-log`` of the student's softmax mass on them): a student that only imitates the
teacher cannot do better than it, and a teacher can be weaker alone than the first stage it reranks.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.evaluation.evaluate import (
    FUSION_WEIGHTS,
    fused_ndcg_per_query,
    match_fusion_weight,
    rerank_scores,
    tune_fusion_weight,
)
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.fusion import stored_fusion, stored_fusion_weight
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.disk_cache import DiskEmbeddingCache
from rerank_plugins.models.lru import text_digest
from rerank_plugins.models.resolve import model_fingerprint
from rerank_plugins.training._loop import TrainingLog, optimise
from rerank_plugins.training.cross_encoder import require_queries_fit, without_queries_too_long
from rerank_plugins.training.model_card import write_model_card
from rerank_plugins.training.recipes import record_training_info

logger = logging.getLogger(__name__)

LAYER_KEY = re.compile(r"^(.*\blayer\.)(\d+)(\..+)$")
"""A parameter of one transformer layer: ``bert.encoder.layer.3.attention...`` (BERT, RoBERTa, ELECTRA, ...)."""
QUERIES_PER_TEACHER_CALL = 16


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


@dataclass(frozen=True)
class Group:
    """One query's candidates with the teacher's raw scores (the training target) and which are labelled relevant."""

    query_id: str
    query: str
    documents: list[str]
    teacher: np.ndarray
    relevant: np.ndarray


def cpu_computes_bf16() -> bool | None:
    """Whether torch's CPU kernels run bf16 in hardware (AVX-512 BF16 or AMX); ``None`` where torch cannot tell.

    Without it bf16 autocast is emulated: a training step took 20x as long as in fp32 on an AVX2-only EPYC
    (bench/results/bf16-training-step-avx2.md), where it took half as long on one with AVX-512 BF16.
    """
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return None if None in probes else any(probe() for probe in probes)


def kept_layers(teacher_layers: int, layers: int | Sequence[int]) -> list[int]:
    """Indices of the teacher's layers the student keeps.

    An int ``k`` keeps ``k`` layers spread evenly from the first to the last (6 layers, k=2: [0, 5]; k=3:
    [0, 2, 5]): the last layer is the one the scoring head was trained on, the first reads the embeddings.
    ``k=1`` keeps the last. A sequence names the layers itself, in increasing order.
    """
    if isinstance(layers, bool):
        raise TypeError(f"layers must be an int or a sequence of layer indices, got {layers!r}")
    if isinstance(layers, int):
        if not 1 <= layers < teacher_layers:
            raise ValueError(
                f"layers must be between 1 and {teacher_layers - 1} (the teacher has {teacher_layers} layers; "
                f"a student needs fewer), got {layers}"
            )
        if layers == 1:
            return [teacher_layers - 1]
        return sorted({round(i * (teacher_layers - 1) / (layers - 1)) for i in range(layers)})
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers must be an int or a sequence of layer indices, got {type(layers).__name__}")
    keep = list(layers)
    bad = [i for i in keep if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < teacher_layers]
    if bad:
        raise ValueError(f"layer indices must be ints in [0, {teacher_layers - 1}]; bad: {bad}")
    if not keep or len(keep) >= teacher_layers:
        raise ValueError(
            f"keep between 1 and {teacher_layers - 1} of the teacher's {teacher_layers} layers, got {len(keep)}"
        )
    if keep != sorted(set(keep)):
        raise ValueError(f"layer indices must be distinct and increasing, got {keep}")
    return keep


def truncated_student(teacher_path: str | os.PathLike[str], layers: int | Sequence[int]) -> tuple[Any, list[int]]:
    """The teacher (a Hugging Face sequence classifier) with only the layers :func:`kept_layers` picks."""
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
    total = getattr(teacher.config, "num_hidden_layers", None)
    if not isinstance(total, int):
        raise ValueError(f"{teacher_path}: its config has no num_hidden_layers; cannot choose layers to keep")
    keep = kept_layers(total, layers)
    state = {}
    for name, tensor in teacher.state_dict().items():
        match = LAYER_KEY.match(name)
        if match is None:
            state[name] = tensor
        elif int(match[2]) in keep:
            state[f"{match[1]}{keep.index(int(match[2]))}{match[3]}"] = tensor
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    student = AutoModelForSequenceClassification.from_config(config)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:  # an architecture whose layers are not named "...layer.N..."
        raise ValueError(
            f"cannot map {teacher_path}'s layers onto a smaller model (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]}); distillation supports encoders with '...layer.N...' parameters"
        )
    return student, keep


def teacher_groups(
    teacher: CrossEncoderBackend,
    dataset: RetrievalDataset,
    candidates: Mapping[str, Sequence[str]],
    *,
    cache: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> list[Group]:
    """The teacher's raw scores for every query's candidates (queries with fewer than 2 candidates are skipped).

    ``cache``: an SQLite file keeping the scores across runs, keyed by the teacher's content, its max length and
    both texts, so a rerun (or a second student, or deeper candidate lists) does not score the same pairs again.
    """
    from tqdm.auto import tqdm

    requests = [
        (q, dataset.queries[q], [dataset.corpus[d] for d in docs]) for q, docs in candidates.items() if len(docs) >= 2
    ]
    relevant = {q: np.isin(docs, dataset.positives(q)) for q, docs in candidates.items() if len(docs) >= 2}
    store = None
    if cache is not None:
        namespace = f"teacher-scores:{model_fingerprint(teacher.path)}:{teacher.max_length}"
        if teacher.effective_runtime != "torch":  # reduced precision scores differ a little: kept apart
            namespace += f":{teacher.effective_runtime}"
        store = DiskEmbeddingCache(cache, namespace, dimension=1, max_entries=10_000_000)
    groups = []
    with tqdm(total=len(requests), desc="Teacher scores", unit="query", disable=not show_progress) as progress:
        for start in range(0, len(requests), QUERIES_PER_TEACHER_CALL):
            chunk = requests[start : start + QUERIES_PER_TEACHER_CALL]
            keys = [[text_digest(query) + text_digest(d) for d in docs] for _, query, docs in chunk]
            found = store.get_many([k for row in keys for k in row]) if store is not None else {}
            # Only the pairs not cached yet: deepening the candidate lists scores just the new ones.
            todo = [
                (query, [(k, d) for k, d in zip(row, docs) if k not in found])
                for (_, query, docs), row in zip(chunk, keys)
            ]
            todo = [(query, missing) for query, missing in todo if missing]
            if todo:
                scored = teacher.score_batch([(query, [d for _, d in missing]) for query, missing in todo])
                fresh = [
                    (k, np.array([s])) for (_, missing), row in zip(todo, scored) for (k, _), s in zip(missing, row)
                ]
                found.update(fresh)
                if store is not None:
                    store.put_many(fresh)
            for (query_id, query, docs), row in zip(chunk, keys):
                scores = np.array([found[k][0] for k in row], dtype=np.float32)
                groups.append(Group(query_id, query, docs, scores, relevant[query_id]))
            progress.update(len(chunk))
    return groups


def listwise_kl(student: Any, teacher: Any, temperature: float) -> Any:
    """``KL(softmax(teacher/T) || softmax(student/T)) * T^2`` for one query's candidates (torch tensors)."""
    import torch

    target = torch.log_softmax(teacher / temperature, dim=-1)
    log_student = torch.log_softmax(student / temperature, dim=-1)
    return torch.sum(target.exp() * (target - log_student)) * temperature**2


def label_cross_entropy(student: Any, relevant: Any) -> Any:
    """``-log`` of the student's softmax mass on one query's relevant candidates (a boolean mask, one or more)."""
    import torch

    log_student = torch.log_softmax(student, dim=-1)
    return -torch.logsumexp(log_student[relevant], dim=-1)


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


def record_student_fusion_weight(
    student_path: str | os.PathLike[str],
    teacher: CrossEncoderBackend,
    held_out: RetrievalDataset,
    stage: FirstStage,
    *,
    depth: int = 30,
    cache: str | os.PathLike[str] | None = None,
) -> dict[str, Any] | None:
    """Store the fusion weight at which the student's fused top-10 best matches the teacher's fused top-10 on
    ``held_out``'s queries (``fusion_weight="auto"`` reads it); see the module docstring for why.

    The teacher's weight: the one stored with it (rerank-plugins tuned it on held-out labels; it belongs to the first
    stage it was tuned with), else :func:`tune_fusion_weight` on ``held_out``'s labelled queries. With neither,
    nothing is stored and ``None`` is returned. Labelled queries' nDCG@10 by weight is recorded beside, not used.
    """
    searched = stage.search_batch([held_out.queries[q] for q in held_out.queries], depth)
    kept = [(q, row) for q, row in zip(held_out.queries, searched) if len(row) >= 2]  # one candidate: nothing to order
    query_ids, hits = [q for q, _ in kept], [row for _, row in kept]
    pools = {q: [h.document.id for h in row] for q, row in kept}
    teacher_scores = [g.teacher for g in teacher_groups(teacher, held_out, pools, cache=cache, show_progress=False)]
    labelled = [i for i, q in enumerate(query_ids) if q in held_out.qrels]

    def labelled_only(values: Sequence[Any]) -> list[Any]:
        return [values[i] for i in labelled]

    described = json.loads(json.dumps(stage.describe()))  # as a training record stores it
    teacher_weight, source = stored_fusion_weight(teacher.path), "stored with the teacher"
    tuned_with = stored_fusion(teacher.path).get("first_stage")
    if teacher_weight is not None and tuned_with not in (None, described):
        logger.warning(
            "the teacher's fusion weight %s was tuned with another first stage (%s; here %s): the student matches "
            "the teacher's ranking at that weight anyway; distill over the teacher's first stage for a weight that "
            "fits",
            teacher_weight,
            json.dumps(tuned_with),
            json.dumps(described),
        )
    if teacher_weight is None and labelled:
        tuned = tune_fusion_weight(
            held_out, labelled_only(query_ids), labelled_only(hits), labelled_only(teacher_scores)
        )
        teacher_weight, source = tuned["weight"], f"tuned on {len(labelled)} held-out labelled queries"
    if teacher_weight is None or not query_ids:
        logger.info("no fusion weight stored: the teacher has none and the held-out queries have no labels")
        return None
    student = CrossEncoderBackend(student_path, cache_size=0)
    student_scores, _ = rerank_scores(held_out, query_ids, hits, student, show_progress=False)
    fusion = {
        **match_fusion_weight(hits, student_scores, teacher_scores, teacher_weight),
        "teacher_weight_from": source,
        "first_stage": described,
        "depth": depth,
    }
    text = (
        f"\n## Fusion with the first stage\nThe teacher's fused ranking (a = {teacher_weight}, {source}) reproduced "
        f"on {fusion['queries']} held-out queries (first stage `{json.dumps(fusion['first_stage'])}`, top-{depth}): "
        "mean top-10 overlap by weight a in a*z(rerank)+(1-a)*z(first stage): "
        + ", ".join(f"{w}: {v:.3f}" for w, v in fusion["top10_overlap_by_weight"].items())
        + f'. Best: a = {fusion["weight"]} (used by `fusion_weight="auto"`).'
    )
    if labelled:
        per_query = fused_ndcg_per_query(
            held_out, labelled_only(query_ids), labelled_only(hits), labelled_only(student_scores), FUSION_WEIGHTS
        )
        fusion["ndcg@10_by_weight"] = {str(w): float(v.mean()) for w, v in per_query.items()}
        text += " Labelled held-out nDCG@10 by weight (not used to choose): " + ", ".join(
            f"{w}: {v:.4f}" for w, v in fusion["ndcg@10_by_weight"].items()
        )
    record_training_info(student_path, "fusion", fusion)
    with (Path(student_path) / "README.md").open("a", encoding="utf-8") as card:
        card.write(text + "\n")
    logger.info("fusion weight %.2f: the student's fused ranking closest to the teacher's", fusion["weight"])
    return fusion
