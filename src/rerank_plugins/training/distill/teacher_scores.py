"""The training targets: the teacher's raw scores for each query's candidates, cached on disk across runs.

Kept apart from training because scoring with the teacher is the slow, reusable part of distillation (a rerun, a
second student or deeper candidate lists score only the pairs not seen yet), and because matching the student's
fusion weight needs the same scores for the held-out queries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rerank_plugins.data import RetrievalDataset
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.disk_cache import DiskEmbeddingCache
from rerank_plugins.models.lru import text_digest
from rerank_plugins.models.resolve import model_fingerprint

QUERIES_PER_TEACHER_CALL = 16


@dataclass(frozen=True)
class Group:
    """One query's candidates with the teacher's raw scores (the training target) and which are labelled relevant."""

    query_id: str
    query: str
    documents: list[str]
    teacher: np.ndarray
    relevant: np.ndarray


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
