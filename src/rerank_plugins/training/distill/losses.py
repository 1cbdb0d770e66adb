"""The distillation loss: listwise KL divergence to the teacher per query, plus an optional hard-label term.

Listwise KL: ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``. A reranker only has to order one query's
candidates, and the library's teachers are trained listwise (softmax over a query's group), so their scores are the
logits of exactly this distribution; KL also weights the top of the list, where nDCG@10 is decided, most. MarginMSE
would spend as much effort on the order of two irrelevant candidates at the bottom. With ``label_weight`` w, a query
whose candidates include a labelled positive adds w times the listwise cross-entropy of those positives (``-log`` of
the student's softmax mass on them): a student that only imitates the teacher cannot do better than it, and a teacher
can be weaker alone than the first stage it reranks.
"""

from __future__ import annotations

from typing import Any


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
