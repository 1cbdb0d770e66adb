"""The fusion weight stored with a student: the one at which its fused ranking best reproduces the teacher's.

Why (``fusion_weight="auto"``): the student stands in for the teacher's fused pipeline, so it stores the weight at
which its fused ranking best reproduces the teacher's on the held-out queries (top-10 overlap, every candidate of every
held-out query, labelled or not). The teacher's weight is the one stored with it, else tuned on the held-out labels
with the library's one-standard-error rule. Tuning the student's weight on those few labels alone could not tell
weights apart (SciFact: 81 claims, paired differences within one standard error).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from rerank_plugins.training.distill.teacher_scores import teacher_groups
from rerank_plugins.training.recipes import record_training_info

logger = logging.getLogger(__name__)


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
