"""Cross-encoder backend: order, batching, ranking options, scales, long documents, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_plugins.models.cross_encoder import CrossEncoderBackend

DOCS = ["cancer gene risk", "heart blood dose", "brain immune virus", "seoul korea city", "the cells protein"]


@pytest.fixture()
def reranker(tiny_cross_path) -> CrossEncoderBackend:
    """Uncached, so tests comparing two paths (order, batching, rank vs score) compare computations, not cache hits."""
    return CrossEncoderBackend(tiny_cross_path, cache_size=0)


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


def _count_tokens_head(monkeypatch, backend: CrossEncoderBackend, words: list[str]) -> None:
    """Replace the scoring head with a known one: a pair's logit is how often ``words`` occur in its tokens."""
    import torch

    model = backend.model.model
    original = model.forward
    ids = torch.tensor(backend.model.tokenizer.convert_tokens_to_ids(words))

    def counting(*args, input_ids=None, attention_mask=None, **kwargs):
        output = original(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        hits = torch.isin(input_ids, ids) & attention_mask.bool()
        output.logits = hits.sum(dim=1, keepdim=True).to(output.logits.dtype)
        return output

    monkeypatch.setattr(model, "forward", counting)


def test_window_mode_scores_the_best_window(reranker, monkeypatch):
    # A known answer: the logit counts "korea"/"seoul" tokens, which appear once in the query and once at the very
    # end of a long document. Only the last window holds the document's pair: it scores 2 + 2 = 4, every other
    # window (and the truncated document) 2.
    _count_tokens_head(monkeypatch, reranker, ["korea", "seoul"])
    doc = "the " * 300 + "korea seoul city"  # 303 tokens
    room = reranker.max_length - 2 - 3  # [CLS] korea seoul [SEP] ... [SEP]
    step = room - min(reranker.window_overlap, room // 2)
    last_window = -(-(303 - room) // step)
    windowed = reranker.rank("korea seoul", ["seoul city", doc], long_documents="window")
    assert [(r.index, r.score, r.window) for r in windowed] == [(1, 4.0, last_window), (0, 3.0, None)]
    assert windowed[0].truncated and not windowed[1].truncated
    truncated = reranker.rank("korea seoul", ["seoul city", doc])
    assert [(r.index, r.score, r.window, r.truncated) for r in truncated] == [
        (0, 3.0, None, False),
        (1, 2.0, None, True),
    ]
    np.testing.assert_array_equal(reranker.score("korea seoul", [doc, doc[-40:]], long_documents="window"), [4.0, 4.0])


def test_query_longer_than_the_model_is_an_error_not_a_silent_cut(reranker):
    with pytest.raises(ValueError, match="query .* is .* tokens"):
        reranker.rank("cancer " * 60, DOCS)


def test_one_megabyte_document(reranker):
    ranked = reranker.rank("cancer", ["x" * 10, "cancer risk " * 90_000])
    assert {r.index: r.truncated for r in ranked} == {0: False, 1: True}


@pytest.mark.parametrize("batch_size", [1, 32])
def test_nan_scores_rank_last(reranker, monkeypatch, batch_size):
    import torch

    model = reranker.model.model
    original = model.forward
    virus = reranker.model.tokenizer.convert_tokens_to_ids("virus")

    def nan_for_virus(*args, input_ids=None, **kwargs):
        output = original(*args, input_ids=input_ids, **kwargs)
        output.logits[(input_ids == virus).any(dim=1)] = torch.nan
        return output

    monkeypatch.setattr(model, "forward", nan_for_virus)
    docs = ["virus a", "cancer gene", "heart blood dose", "virus b", "seoul"]
    finite = CrossEncoderBackend(reranker.model_name, cache_size=0).score("cancer", docs)  # the real scores
    ranked = reranker.rank("cancer", docs, batch_size=batch_size)
    expected_finite = [i for i in np.argsort(-finite, kind="stable") if i not in (0, 3)]
    assert [r.index for r in ranked[:3]] == expected_finite
    np.testing.assert_allclose([r.score for r in ranked[:3]], finite[expected_finite], atol=1e-5)
    assert sorted(r.index for r in ranked[3:]) == [0, 3] and all(r.score == -np.inf for r in ranked[3:])
    scores = reranker.score("cancer", docs, batch_size=batch_size)
    assert np.isneginf(scores[[0, 3]]).all() and np.isfinite(scores[[1, 2, 4]]).all()
    assert [r.index for r in reranker.rank("cancer", docs, top_n=2)] == expected_finite[:2]


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


def test_query_matched_window_is_the_window_sharing_most_with_the_query(reranker):
    from rerank_plugins.models.pair_scoring import matched_windows

    def query_matched_window(tokenizer, query, document, max_length):
        return matched_windows(tokenizer, [query], [document], max_length)[0][0]

    tokenizer = reranker.model.tokenizer
    room = 64 - 2 - 3  # [CLS] korea seoul [SEP] ... [SEP]
    doc = "the " * 100 + "korea seoul city " + "the " * 100
    window = query_matched_window(tokenizer, "korea seoul", doc, 64)
    assert "korea seoul city" in window and window in doc
    assert len(tokenizer(window, add_special_tokens=False)["input_ids"]) == room
    no_match = query_matched_window(tokenizer, "music", doc, 64)  # a one-token query leaves one token more
    assert no_match == " ".join(["the"] * (room + 1)), "no match: the first window"
    assert query_matched_window(tokenizer, "korea seoul", "seoul city", 64) == "seoul city", "a short one stays whole"
    tail = "the " * 100 + "korea seoul"
    assert query_matched_window(tokenizer, "korea seoul", tail, 64).endswith("korea seoul"), "the last window counts"


def test_auto_reads_long_documents_as_the_reranker_was_trained(tiny_cross_path, tmp_path):
    import json
    import shutil

    from rerank_plugins.fusion import TRAINING_INFO

    trained = tmp_path / "windowed"
    shutil.copytree(tiny_cross_path, trained)
    (trained / TRAINING_INFO).write_text(json.dumps({"parameters": {"long_documents": "window"}}))
    doc = "the " * 300 + "korea seoul"
    windowed = CrossEncoderBackend(trained, cache_size=0)
    assert windowed.trained_long_documents == "window"
    assert windowed.rank("korea seoul", [doc])[0].window is not None
    np.testing.assert_array_equal(
        windowed.score("korea seoul", [doc]), windowed.score("korea seoul", [doc], long_documents="window")
    )
    assert windowed.rank("korea seoul", [doc], long_documents="truncate")[0].window is None
    plain = CrossEncoderBackend(tiny_cross_path, cache_size=0)
    assert plain.trained_long_documents == "truncate" and plain.rank("korea seoul", [doc])[0].window is None
