"""Training must learn: both trainers beat the untrained model on held-out queries, and given negatives are used.

The plumbing tests in test_training.py pass even when an optimizer step changes nothing; these do not. The task has
a clear, query-dependent signal (a query's words and its positive come from one topic, its negatives from others),
so a working trainer reaches a near-perfect held-out MRR within seconds, while a no-op optimizer, a flipped label
or a loss that ignores its target leaves the model at (or below) its untrained score.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rerank_plugins.data import RetrievalDataset, from_pairs
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, train_bi_encoder
from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig, train_cross_encoder
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives
from rerank_plugins.training.recipes import gather_negatives, train_cross_encoder_on

TOPICS = [  # words of the tiny models' vocabulary (conftest.WORDS), grouped by subject
    "cells protein gene cancer patients disease mice blood liver immune virus drug dose".split(),
    "seoul korea capital city river mountain".split(),
    "history king war music film".split(),
    "data model search rank query document retrieval dense sparse vector index".split(),
]
NEGATIVES_PER_QUERY = 7
TINY_CROSS_RECIPE = {
    "epochs": 1,
    "queries_per_batch": 8,
    "num_negatives": 3,
    "learning_rate": 2e-3,
    "head_lr_multiplier": 1.0,
    "max_length": 64,
}
"""What the tiny cross-encoder learns the topic task with in one epoch (250 steps on 2,000 queries)."""
STOPWORDS = "the a of and to in is for on with that by as are this from be at or it an".split()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these tiny models train ~20x faster than with threads fighting a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def topic_data(n_queries: int, seed: int) -> tuple[RetrievalDataset, dict[str, list[str]]]:
    """Queries of two words from one topic; the positive has four words of that topic, negatives of another."""
    rng = random.Random(seed)
    corpus, queries, qrels, negatives = {}, {}, {}, {}
    for i in range(n_queries):
        topic = rng.randrange(len(TOPICS))
        query_id = f"s{seed}q{i}"
        queries[query_id] = " ".join(rng.sample(TOPICS[topic], 2))
        corpus[f"{query_id}-pos"] = " ".join(rng.choices(TOPICS[topic], k=4))
        qrels[query_id] = {f"{query_id}-pos": 1}
        negatives[query_id] = []
        for j in range(NEGATIVES_PER_QUERY):
            other = rng.choice([t for t in range(len(TOPICS)) if t != topic])
            corpus[f"{query_id}-neg{j}"] = " ".join(rng.choices(TOPICS[other], k=4))
            negatives[query_id].append(f"{query_id}-neg{j}")
    return RetrievalDataset(corpus, queries, qrels, name=f"topics-{seed}"), negatives


@pytest.fixture(scope="module")
def train_set() -> tuple[RetrievalDataset, dict[str, list[str]]]:
    return topic_data(2000, seed=1)


@pytest.fixture(scope="module")
def held_out() -> tuple[RetrievalDataset, dict[str, list[str]]]:
    """Queries and documents never seen in training (another seed), 1 positive among 7 negatives each."""
    data, negatives = topic_data(60, seed=2)
    return data, negatives


def _reciprocal_rank(scores: np.ndarray) -> float:
    """1 / rank of the positive (position 0); ties count against it, so a constant scorer gets 1/8."""
    return 1.0 / (1 + int((scores[1:] >= scores[0]).sum()))


def cross_encoder_mrr(path: Path, data: RetrievalDataset, negatives: dict[str, list[str]]) -> float:
    backend = CrossEncoderBackend(path, cache_size=0)
    requests = [(data.queries[q], [data.corpus[d] for d in data.positives(q) + negatives[q]]) for q in data.queries]
    return float(np.mean([_reciprocal_rank(s) for s in backend.score_batch(requests)]))


def bi_encoder_mrr(path: Path, data: RetrievalDataset, negatives: dict[str, list[str]]) -> float:
    backend = BiEncoderBackend(path, cache_size=0)
    values = []
    for query_id, query in data.queries.items():
        docs = backend.encode_documents([data.corpus[d] for d in data.positives(query_id) + negatives[query_id]])
        values.append(_reciprocal_rank(docs @ backend.encode_queries([query])[0]))
    return float(np.mean(values))


@pytest.mark.parametrize("loss", ["listwise", "binary"])
def test_cross_encoder_learns_the_task(tiny_cross_path, tmp_path, train_set, held_out, loss):
    before = cross_encoder_mrr(tiny_cross_path, *held_out)
    assert before < 0.6, f"the untrained model already solves the task (MRR {before:.3f}): the test would prove nothing"
    path, log = train_cross_encoder(
        train_set[0],
        train_set[1],
        tmp_path / "ce",
        base_model=str(tiny_cross_path),
        config=CrossEncoderTrainingConfig(loss=loss, **TINY_CROSS_RECIPE),
        show_progress=False,
    )
    after = cross_encoder_mrr(path, *held_out)
    assert log.steps == 250
    assert after >= 0.9 and after - before >= 0.3, f"held-out MRR {before:.3f} -> {after:.3f} ({loss})"


def test_bi_encoder_learns_the_task(tiny_bi_path, tmp_path, train_set, held_out):
    before = bi_encoder_mrr(tiny_bi_path, *held_out)
    assert before < 0.75, (
        f"the untrained model already solves the task (MRR {before:.3f}): the test would prove nothing"
    )
    data, negatives = train_set
    small = data.subset(list(data.queries)[:400])
    path, log = train_bi_encoder(
        small,
        tmp_path / "bi",
        base_model=str(tiny_bi_path),
        config=BiEncoderTrainingConfig(
            epochs=2, batch_size=16, learning_rate=2e-3, max_length=64, hard_negatives_per_query=1
        ),
        hard_negatives=negatives,
        show_progress=False,
    )
    after = bi_encoder_mrr(path, *held_out)
    assert log.steps > 0
    assert after >= 0.95 and after - before >= 0.25, f"held-out MRR {before:.3f} -> {after:.3f}"


# -- negatives given with the data reach the loss -----------------------------------------------------------


@pytest.fixture(scope="module")
def pair_data() -> RetrievalDataset:
    """(query, positive, given negative) rows plus extra documents to mine from; given negatives share no word
    with their query (another topic), so lexical mining does not find them by itself."""
    rng = random.Random(3)
    rows, extra, queries = [], [], set()
    while len(rows) < 24:
        topic = len(rows) % len(TOPICS)
        query = " ".join(rng.sample(TOPICS[topic], 2))
        if query in queries:
            continue
        queries.add(query)
        given = f"given {len(rows)} " + " ".join(rng.sample(STOPWORDS, 4))
        rows.append((query, " ".join(rng.choices(TOPICS[topic], k=4)), given))
        extra.append(" ".join(rng.choices(TOPICS[topic], k=5)))
    return from_pairs(rows, corpus=extra, name="given-pairs")


@pytest.fixture()
def pairs_seen(monkeypatch) -> list[str]:
    """Every document that reaches a tokenizer as the second text of a (query, document) pair."""
    from transformers import PreTrainedTokenizerBase

    seen: list[str] = []
    original = PreTrainedTokenizerBase.__call__

    def spy(self, text=None, text_pair=None, *args, **kwargs):
        if isinstance(text_pair, list):
            seen.extend(text_pair)
        return original(self, text, text_pair, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    return seen


def _given_texts(data: RetrievalDataset) -> set[str]:
    return {data.corpus[d] for ids in data.negatives.values() for d in ids}


def _recorded_kind(path: Path) -> str:
    return json.loads((path / "rerank_plugins_training.json").read_text(encoding="utf-8"))["negatives"]["kind"]


def test_gather_negatives_keeps_given_ones(pair_data):
    stage = corpus_first_stage(pair_data, None, "lexical")
    given = gather_negatives(pair_data, stage, "given", pool_size=3, depth=5)
    assert given == {q: pair_data.negatives[q] for q in pair_data.labelled_queries}
    both = gather_negatives(pair_data, stage, "given+hard", pool_size=3, depth=5)
    mined = mine_hard_negatives(pair_data, stage, num_negatives=3, depth=5)
    for query_id in pair_data.labelled_queries:
        assert both[query_id][: len(pair_data.negatives[query_id])] == pair_data.negatives[query_id]
        assert set(both[query_id]) == set(pair_data.negatives[query_id]) | set(mined[query_id])
    hard = gather_negatives(pair_data, stage, "hard", pool_size=3, depth=5)
    assert hard == mined


def _train(pair_data, tiny_cross_path, tmp_path, negatives):
    return train_cross_encoder_on(
        pair_data,
        tmp_path / negatives,
        base_model=str(tiny_cross_path),
        first_stage="lexical",
        negatives=negatives,
        mining_depth=2,
        held_out=0,
        config=CrossEncoderTrainingConfig(epochs=1, queries_per_batch=4, num_negatives=3, max_length=64),
    )[0]


def test_given_negatives_reach_the_loss(pair_data, tiny_cross_path, tmp_path, pairs_seen):
    path = _train(pair_data, tiny_cross_path, tmp_path, "given")
    given = _given_texts(pair_data)
    assert given <= set(pairs_seen), f"given negatives never reached the model: {sorted(given - set(pairs_seen))[:3]}"
    assert set(pairs_seen) <= given | {pair_data.corpus[d] for q in pair_data.qrels for d in pair_data.positives(q)}
    assert _recorded_kind(path) == "given"


def test_given_plus_hard_uses_both(pair_data, tiny_cross_path, tmp_path, pairs_seen):
    path = _train(pair_data, tiny_cross_path, tmp_path, "given+hard")
    given = _given_texts(pair_data)
    reached = given & set(pairs_seen)
    assert len(reached) >= 0.8 * len(given), f"only {len(reached)} of {len(given)} given negatives reached the model"
    assert set(pairs_seen) - given - {pair_data.corpus[d] for q in pair_data.qrels for d in pair_data.positives(q)}
    assert _recorded_kind(path) == "given+hard"


def test_hard_negatives_do_not_use_given_ones_unless_mined(pair_data, tiny_cross_path, tmp_path, pairs_seen):
    path = _train(pair_data, tiny_cross_path, tmp_path, "hard")
    mined = mine_hard_negatives(pair_data, corpus_first_stage(pair_data, None, "lexical"), num_negatives=3, depth=2)
    mined_texts = {pair_data.corpus[d] for ids in mined.values() for d in ids}
    given = _given_texts(pair_data)
    assert given & set(pairs_seen) <= mined_texts
    assert given - mined_texts, "every given negative was mined anyway: this data cannot tell the kinds apart"
    assert given - set(pairs_seen)
    assert _recorded_kind(path) == "hard"


def with_preamble(data: RetrievalDataset, words: int, seed: int) -> RetrievalDataset:
    """``data`` with ``words`` stopwords before every document: the topic words lie beyond a 64-token pair."""
    rng = random.Random(seed)
    corpus = {d: " ".join(rng.choices(STOPWORDS, k=words)) + " " + text for d, text in data.corpus.items()}
    return RetrievalDataset(corpus, data.queries, data.qrels, name=f"{data.name}-long")


@pytest.mark.parametrize("long_documents", ["matched_window", "truncate"])
def test_window_training_learns_what_lies_beyond_the_first_window(
    tiny_cross_path, tmp_path, train_set, held_out, long_documents
):
    (train, train_negatives), (test, test_negatives) = train_set, held_out
    train, test = with_preamble(train, 80, seed=3), with_preamble(test, 80, seed=4)
    path, _ = train_cross_encoder(
        train,
        train_negatives,
        tmp_path / "ce",
        base_model=str(tiny_cross_path),
        config=CrossEncoderTrainingConfig(long_documents=long_documents, **TINY_CROSS_RECIPE),
        show_progress=False,
    )
    assert CrossEncoderBackend(path).trained_long_documents == long_documents
    mrr = cross_encoder_mrr(path, test, test_negatives)  # long_documents="auto": as trained
    if long_documents == "matched_window":
        assert mrr >= 0.75, f"held-out MRR {mrr:.3f}: the windows holding the topic words were not learned"
    else:  # every first window is stopwords only: nothing to learn, the score of a constant ranker (ties last)
        assert mrr < 0.5, (
            f"held-out MRR {mrr:.3f} without windows: the task does not need them, the test proves nothing"
        )
