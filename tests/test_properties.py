"""Property-based checks of the reranker's invariants over random inputs (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rerank_plugins import get_cross_encoder
from rerank_plugins._validation import select_top

texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from(["\ud800", "\x00"]), max_size=60
)
documents = st.lists(texts, max_size=12)
queries = st.text(min_size=1, max_size=40).filter(lambda q: q.strip())
top_ns = st.none() | st.integers(min_value=1, max_value=20)
thresholds = st.none() | st.floats(min_value=-20, max_value=20, allow_nan=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    query=queries,
    docs=documents,
    top_n=top_ns,
    threshold=thresholds,
    min_keep=st.integers(0, 5),
    scale=st.sampled_from(["raw", "sigmoid"]),
)
def test_rank_returns_a_sorted_subset_each_at_most_once(
    tiny_cross_path, query, docs, top_n, threshold, min_keep, scale
):
    reranker = get_cross_encoder(tiny_cross_path)
    ranked = reranker.rank(query, docs, top_n=top_n, score_threshold=threshold, min_keep=min_keep, scale=scale)
    indices = [r.index for r in ranked]
    assert len(indices) == len(set(indices)) and all(0 <= i < len(docs) for i in indices)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(not math.isnan(s) for s in scores)
    if top_n is not None:
        assert len(ranked) <= top_n
    if threshold is None:
        assert len(ranked) == min(len(docs), top_n or len(docs))
    else:
        passing = sum(s >= threshold for s in reranker.score(query, docs, scale=scale))
        assert len(ranked) == min(max(passing, min(min_keep, len(docs))), top_n or len(docs))


@given(
    scores=st.lists(st.floats(allow_nan=False), max_size=30),
    top_n=top_ns,
    threshold=thresholds,
    min_keep=st.integers(0, 40),
)
def test_select_top_invariants(scores, top_n, threshold, min_keep):
    keep = select_top(scores, top_n, threshold, min_keep)
    assert len(keep) == len(set(keep))
    assert [scores[i] for i in keep] == sorted((scores[i] for i in keep), reverse=True)
    if threshold is not None and len(keep) > min(min_keep, len(scores)):
        assert all(scores[i] >= threshold for i in keep)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "3", True])
def test_bad_top_n_always_rejected(tiny_cross_path, bad):
    with pytest.raises((TypeError, ValueError), match="top_n"):
        get_cross_encoder(tiny_cross_path).rank("query", ["doc"], top_n=bad)
