"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import pytest

from rerank_plugins.evaluation.metrics import compute_metrics, hit_at_k, mrr_at_k, ndcg_at_k, recall_at_k

RANKED = ["d1", "d2", "d3", "d4", "d5"]
RELEVANT = {"d2": 1, "d5": 1, "d9": 1}  # d9 never retrieved


def test_hit():
    assert hit_at_k(RANKED, RELEVANT, 1) == 0.0
    assert hit_at_k(RANKED, RELEVANT, 2) == 1.0


def test_recall_counts_every_relevant_document():
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)


def test_mrr_uses_first_relevant_rank_within_k():
    assert mrr_at_k(RANKED, RELEVANT, 10) == pytest.approx(0.5)
    assert mrr_at_k(RANKED, RELEVANT, 1) == 0.0


def test_ndcg_by_hand():
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(dcg / idcg)


def test_ndcg_graded_relevance_and_perfect_ranking():
    assert ndcg_at_k(["a", "b"], {"a": 2, "b": 1}, 10) == pytest.approx(1.0)
    swapped = (1 / 1 + 2 / math.log2(3)) / (2 / 1 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(swapped)


def test_compute_metrics_averages_and_counts_missing_queries_as_zero():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    metrics = compute_metrics({"q1": ["d1", "d2"]}, qrels, ks=(1,), recall_ks=(2,))
    assert metrics["hit@1"] == 0.5 and metrics["recall@2"] == 0.5 and metrics["mrr@10"] == 0.5


def test_self_hits_are_ignored_like_beir():
    qrels = {"q1": {"d7": 1}}
    metrics = compute_metrics({"q1": ["q1", "d7"]}, qrels, ks=(1,))
    assert metrics["hit@1"] == 1.0 and metrics["mrr@10"] == 1.0
