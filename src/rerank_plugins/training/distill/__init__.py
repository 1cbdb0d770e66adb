"""Distil a trained cross-encoder into a smaller, faster one that keeps a few of its transformer layers.

Why: on a CPU a reranker's time goes into its transformer layers, so a 2-layer student scores a query's candidates
about three times faster than a 6-layer teacher (FlashRank's default reranker is a 2-layer model for this reason).

The student starts as the teacher with only some of its layers (embeddings and scoring head kept, so it scores
sensibly from the first step) and learns to reproduce the teacher's scores on the candidates it will rerank at
inference: each query's top-``first_stage_k`` from a first stage. No labels are needed: the teacher labels the
pairs, so any queries over your corpus will do. Labels, where the data has them, can choose the teacher's fusion
weight and, with ``label_weight > 0``, add a hard-label term to the loss.

By concern: :mod:`.student` cuts the teacher down to the kept layers, :mod:`.teacher_scores` scores the candidates
with the teacher (the training targets, cached), :mod:`.losses` holds the listwise KL and the label term (and why
that loss), :mod:`.trainer` runs :func:`distill_cross_encoder`, and :mod:`.fusion_weight` stores the student's
fusion weight (and why it is matched to the teacher's fused ranking rather than tuned on labels).
"""

from rerank_plugins.training.distill.fusion_weight import record_student_fusion_weight
from rerank_plugins.training.distill.student import kept_layers, truncated_student
from rerank_plugins.training.distill.teacher_scores import Group, teacher_groups
from rerank_plugins.training.distill.trainer import DistillationConfig, distill_cross_encoder

__all__ = [
    "DistillationConfig",
    "Group",
    "distill_cross_encoder",
    "kept_layers",
    "record_student_fusion_weight",
    "teacher_groups",
    "truncated_student",
]
