"""Cross-encoder backend: order, batching, ranking options, scales, long documents, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_plugins import get_cross_encoder
from rerank_plugins.models.cross_encoder import CrossEncoderBackend

DOCS = ["cancer gene risk", "heart blood dose", "brain immune virus", "seoul korea city", "the cells protein"]


@pytest.fixture()
def reranker(tiny_cross_path) -> CrossEncoderBackend:
    return get_cross_encoder(tiny_cross_path)


def test_scores_follow_input_order(reranker):
    scores = reranker.score("cancer risk", DOCS)
    reversed_scores = reranker.score("cancer risk", DOCS[::-1])
    np.testing.assert_allclose(scores, reversed_scores[::-1], atol=1e-5)
    assert len(set(np.round(scores, 4))) > 1, "fixture should give distinct scores"


def test_batched_equals_unbatched_and_keeps_query_order(reranker):
    requests = [("cancer risk", DOCS), ("korea", DOCS[:2]), ("heart", []), ("virus", DOCS[3:])]
    together = reranker.score_batch(requests, batch_size=3)
    for (query, docs), scores in zip(requests, together):
        np.testing.assert_allclose(scores, reranker.score(query, docs, batch_size=1), atol=1e-5)


def test_rank_is_sorted_subset_with_top_n(reranker):
    ranked = reranker.rank("cancer risk", DOCS, top_n=3)
    scores = reranker.score("cancer risk", DOCS)
    assert [r.index for r in ranked] == list(np.argsort(-scores, kind="stable")[:3])
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert len(reranker.rank("cancer risk", DOCS, top_n=100)) == len(DOCS)


def test_sigmoid_scale_is_sigmoid_of_raw(reranker):
    raw = reranker.score("cancer risk", DOCS)
    prob = reranker.score("cancer risk", DOCS, scale="sigmoid")
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-raw)), rtol=1e-5)
    assert ((prob >= 0) & (prob <= 1)).all()


def test_threshold_and_min_keep(reranker):
    scores = reranker.score("cancer risk", DOCS)
    middle = float(np.median(scores))
    kept = reranker.rank("cancer risk", DOCS, score_threshold=middle)
    assert kept and all(r.score >= middle for r in kept)
    everything_removed = reranker.rank("cancer risk", DOCS, score_threshold=1e9)
    assert everything_removed == []
    kept_anyway = reranker.rank("cancer risk", DOCS, score_threshold=1e9, min_keep=2)
    assert [r.index for r in kept_anyway] == list(np.argsort(-scores, kind="stable")[:2])


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"top_n": 0}, ValueError, "top_n"),
        ({"top_n": -1}, ValueError, "top_n"),
        ({"top_n": 2.5}, TypeError, "top_n"),
        ({"top_n": True}, TypeError, "top_n"),
        ({"score_threshold": "high"}, TypeError, "score_threshold"),
        ({"score_threshold": float("nan")}, ValueError, "score_threshold"),
        ({"min_keep": -1}, ValueError, "min_keep"),
        ({"scale": "softmax"}, ValueError, "scale"),
        ({"long_documents": "drop"}, ValueError, "long_documents"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_options_name_the_argument(reranker, kwargs, error, name):
    with pytest.raises(error, match=name):
        reranker.rank("query", DOCS, **kwargs)


@pytest.mark.parametrize(("query", "error"), [("", ValueError), ("   ", ValueError), (None, TypeError), (3, TypeError)])
def test_bad_query(reranker, query, error):
    with pytest.raises(error, match="query"):
        reranker.rank(query, DOCS)


def test_bad_documents(reranker):
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.rank("query", ["fine", None])
    with pytest.raises(TypeError, match="documents"):
        reranker.rank("query", "not a list")


def test_empty_candidates_give_empty_result(reranker):
    assert reranker.rank("query", []) == []
    assert reranker.score("query", []).shape == (0,)


def test_empty_whitespace_and_duplicate_documents_are_scored(reranker):
    docs = ["", "   ", "cancer", "cancer", "bad \ud800 surrogate \x00"]
    ranked = reranker.rank("cancer", docs)
    assert sorted(r.index for r in ranked) == list(range(len(docs)))
    by_index = {r.index: r.score for r in ranked}
    assert by_index[2] == pytest.approx(by_index[3], abs=1e-5)


def test_long_document_truncation_is_flagged_and_only_the_document_is_cut(reranker):
    long_doc = "cancer " * 500
    ranked = reranker.rank("heart risk", ["short doc", long_doc])
    flags = {r.index: r.truncated for r in ranked}
    assert flags == {0: False, 1: True}
    assert all(r.window is None for r in ranked)


def test_window_mode_scores_the_best_window(reranker):
    # the relevant words only appear at the end of a long document
    filler = "the " * 300
    doc = filler + "korea seoul city"
    windowed = reranker.rank("korea seoul", [doc], long_documents="window")[0]
    truncated = reranker.rank("korea seoul", [doc], long_documents="truncate")[0]
    assert windowed.truncated and windowed.window is not None and windowed.window > 0
    assert windowed.score >= truncated.score
    windows_scores = reranker.score("korea seoul", [doc], long_documents="window")
    assert windows_scores[0] == pytest.approx(windowed.score)


def test_query_longer_than_the_model_is_an_error_not_a_silent_cut(reranker):
    with pytest.raises(ValueError, match="query .* is .* tokens"):
        reranker.rank("cancer " * 60, DOCS)


def test_one_megabyte_document(reranker):
    ranked = reranker.rank("cancer", ["x" * 10, "cancer risk " * 90_000])
    assert {r.index: r.truncated for r in ranked} == {0: False, 1: True}


def test_nan_scores_rank_last(reranker, monkeypatch):
    import torch

    model = reranker.model.model
    original = model.forward

    def nan_for_first(*args, **kwargs):
        output = original(*args, **kwargs)
        output.logits[0, 0] = torch.nan
        return output

    monkeypatch.setattr(model, "forward", nan_for_first)
    ranked = reranker.rank("cancer", ["a b", "cancer"], batch_size=1)
    assert ranked[-1].score == -np.inf
    assert len(ranked) == 2


def test_two_label_model_scores_positive_minus_negative(tmp_path, tiny_cross_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_cross_path, num_labels=2, ignore_mismatched_sizes=True
    )
    model.save_pretrained(tmp_path / "two")
    AutoTokenizer.from_pretrained(tiny_cross_path).save_pretrained(tmp_path / "two")
    backend = CrossEncoderBackend(tmp_path / "two")
    import torch

    features = backend.model.tokenizer(["cancer"], ["cancer gene"], return_tensors="pt")
    with torch.inference_mode():
        logits = backend.model.model(**features).logits[0]
    assert backend.score("cancer", ["cancer gene"])[0] == pytest.approx(float(logits[1] - logits[0]), abs=1e-5)


def test_score_cache_hits_repeated_pairs_and_stays_bounded(tiny_cross_path):
    backend = CrossEncoderBackend(tiny_cross_path, cache_size=6)
    first = backend.score("cancer risk", DOCS)
    assert backend.cache_misses == len(DOCS) and backend.cache_hits == 0
    again = backend.score("cancer risk", DOCS[::-1])
    np.testing.assert_array_equal(first, again[::-1])
    assert backend.cache_hits == len(DOCS)
    backend.score("another query", DOCS)
    assert len(backend._cache) == 6
    uncached = CrossEncoderBackend(tiny_cross_path, cache_size=0)
    np.testing.assert_allclose(uncached.score("cancer risk", DOCS), first, atol=1e-5)
    assert len(uncached._cache) == 0
    with pytest.raises(ValueError, match="cache_size"):
        CrossEncoderBackend(tiny_cross_path, cache_size=-1)


def test_cache_distinguishes_long_document_policies(tiny_cross_path):
    backend = CrossEncoderBackend(tiny_cross_path)
    doc = "the " * 300 + "korea seoul city"
    truncated = backend.rank("korea seoul", [doc])[0]
    windowed = backend.rank("korea seoul", [doc], long_documents="window")[0]
    assert truncated.window is None and windowed.window is not None
