"""Tiny end-to-end runs: train both stages, evaluate before/after, load the results in every entry point."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rerank_plugins import CrossEncoderBackend, get_bi_encoder
from rerank_plugins.cli import main
from rerank_plugins.data import from_pairs, load_beir
from rerank_plugins.evaluation.evaluate import evaluate_two_stage
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig, distinct_passage_batches
from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig, _groups
from rerank_plugins.training.mining import corpus_first_stage, mine_hard_negatives
from rerank_plugins.training.recipes import train_bi_encoder_on, train_cross_encoder_on

WORDS = "cells protein gene cancer risk patients disease mice blood brain heart liver immune virus drug dose".split()


def _pairs(n: int = 48, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        topic = rng.sample(WORDS, 3)
        pairs.append((" ".join(topic), " ".join(topic + rng.sample(WORDS, 6))))
    return pairs


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    """A tiny BEIR-layout data set with train and test splits."""
    root = tmp_path_factory.mktemp("beir")
    pairs = _pairs(60)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": p}) + "\n" for i, (_, p) in enumerate(pairs))
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n" for i, (q, _) in enumerate(pairs))
    )
    (root / "qrels").mkdir()
    for split, ids in (("train", range(0, 44)), ("test", range(44, 60))):
        (root / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in ids)
        )
    return root


def test_hard_negatives_exclude_every_known_positive(tiny_bi_path):
    data = from_pairs(_pairs())
    index = corpus_first_stage(data, get_bi_encoder(tiny_bi_path))
    for strategy in ("hard", "random"):
        negatives = mine_hard_negatives(data, index, num_negatives=4, depth=10, strategy=strategy)
        for query_id, docs in negatives.items():
            assert len(docs) == 4 and not set(docs) & set(data.positives(query_id))


def test_each_epoch_draws_fresh_negatives_from_the_pool():
    data = from_pairs(_pairs(12))
    pools = {q: [d for d in data.corpus if d not in data.qrels[q]] for q in data.queries}  # 11 negatives each
    pools[data.labelled_queries[0]] = []  # no negative at all: skipped in every epoch
    small = data.labelled_queries[1]
    pools[small] = pools[small][:2]  # fewer than 3: drawn with replacement
    epochs = [_groups(data, pools, 3, seed) for seed in (0, 1)]
    assert len(epochs[0]) == len(epochs[1]) == 11
    assert [(q, p) for q, p, _ in epochs[0]] == [(q, p) for q, p, _ in epochs[1]]
    small_pool = {data.corpus[d] for d in pools[small]}
    for groups in epochs:
        for query, positive, negatives in groups:
            assert len(negatives) == 3 and positive not in negatives
            if query == data.queries[small]:
                assert set(negatives) <= small_pool
            else:
                assert len(set(negatives)) == 3
    assert [n for _, _, n in epochs[0]] != [n for _, _, n in epochs[1]]


def test_batches_never_repeat_a_passage():
    examples = [
        ("q1", "a", "shared", []),
        ("q2", "b", "shared", []),
        ("q3", "c", "other", ["shared"]),
        ("q4", "d", "x", []),
    ]
    batches = distinct_passage_batches(examples, batch_size=4, seed=0)
    assert sum(len(b) for b in batches) == 4
    for batch in batches:
        passages = [p for _, _, pos, negs in batch for p in [pos, *negs]]
        assert len(passages) == len(set(passages))


def test_train_both_stages_then_evaluate_and_load(tmp_path, beir_dir, tiny_bi_path):
    train, test = load_beir(beir_dir, "train"), load_beir(beir_dir, "test")
    bi_path, bi_log = train_bi_encoder_on(
        train,
        tmp_path / "bi",
        base_model=str(tiny_bi_path),
        config=BiEncoderTrainingConfig(epochs=2, batch_size=8, max_length=64),
    )
    cross_path, cross_log = train_cross_encoder_on(
        train,
        tmp_path / "cross",
        base_model=str(tiny_bi_path),
        bi_encoder=str(bi_path),
        config=CrossEncoderTrainingConfig(epochs=2, num_negatives=3, max_length=64),
    )
    assert bi_log.steps > 0 and cross_log.steps > 0 and len(cross_log.evaluations) == 2
    card = json.loads((cross_path / "rerank_plugins_training.json").read_text())
    assert card["base_model"] == str(tiny_bi_path) and card["parameters"]["num_negatives"] == 3
    assert "held_out_pool_mrr@10" in (cross_path / "README.md").read_text()

    report = evaluate_two_stage(
        test,
        corpus_first_stage(test, get_bi_encoder(bi_path)),
        CrossEncoderBackend(cross_path),
        first_stage_k=10,
        show_progress=False,
    )
    first, reranked = report["metrics"]["first_stage"], report["metrics"]["reranked"]
    assert first["recall@10"] == pytest.approx(reranked["recall@10"]), "a reranker only reorders its candidates"
    assert set(first) == set(reranked) >= {"hit@1", "hit@10", "mrr@10", "ndcg@10", "recall@10"}
    assert report["latency"]["rerank"]["pairs_per_s"] > 0

    from sentence_transformers import CrossEncoder, SentenceTransformer

    assert SentenceTransformer(str(bi_path)).encode(["cancer"]).shape[1] == get_bi_encoder(bi_path).dimension
    assert CrossEncoder(str(cross_path)).predict([("cancer", "cancer risk")]).shape == (1,)


def test_time_budget_stops_training(tmp_path, beir_dir, tiny_bi_path):
    train = load_beir(beir_dir, "train")
    _, log = train_cross_encoder_on(
        train,
        tmp_path / "cross",
        base_model=str(tiny_bi_path),
        bi_encoder=str(tiny_bi_path),
        config=CrossEncoderTrainingConfig(epochs=50, num_negatives=3, max_length=64, time_budget_s=0.0),
    )
    assert log.stopped_by_time_budget and log.steps == 1


def test_a_built_first_stage_mines_and_tunes_without_being_rebuilt(tmp_path, beir_dir, tiny_bi_path, monkeypatch):
    """The quickstart builds its index once: a first stage passed in is the one mined from and tuned with."""
    import rerank_plugins.training.recipes as recipes

    train = load_beir(beir_dir, "train")
    stage = corpus_first_stage(train, kind="lexical")
    monkeypatch.setattr(recipes, "corpus_first_stage", lambda *a, **k: pytest.fail("the given stage was rebuilt"))
    path, _ = train_cross_encoder_on(
        train,
        tmp_path / "cross",
        base_model=str(tiny_bi_path),
        first_stage=stage,
        held_out=0.25,
        config=CrossEncoderTrainingConfig(epochs=1, num_negatives=3, max_length=64),
    )
    card = json.loads((path / "rerank_plugins_training.json").read_text())
    assert card["negatives"]["first_stage"] == stage.describe()
    assert stored_fusion_weight(path) is not None


def test_cli_train_and_evaluate(tmp_path, beir_dir, tiny_bi_path, capsys):
    assert (
        main(
            [
                "train-cross",
                "--data",
                str(beir_dir),
                "--split",
                "train",
                "--output",
                str(tmp_path / "ce"),
                "--base-model",
                str(tiny_bi_path),
                "--bi-encoder",
                str(tiny_bi_path),
                "--num-negatives",
                "3",
                "--max-length",
                "64",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Cross-encoder saved to" in printed
    weight = stored_fusion_weight(tmp_path / "ce")  # tuned on the held-out queries: the user is told what "auto" uses
    assert weight is not None and f"Fusion weight stored for --fusion-weight auto: {weight}" in printed
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(beir_dir),
                "--split",
                "test",
                "--bi-encoder",
                str(tiny_bi_path),
                "--cross-encoder",
                str(tmp_path / "ce"),
                "--first-stage-k",
                "10",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    for stage in ("first_stage", "reranked"):
        assert {"hit@10", "mrr@10", "ndcg@10", "recall@10"} <= set(report["metrics"][stage])
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").stat().st_size > 1000
    stored = json.loads((tmp_path / "ce" / "rerank_plugins_training.json").read_text())["fusion"]
    assert 0 <= stored["weight"] <= 1 and len(stored["ndcg@10_by_weight"]) == 11
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(beir_dir),
                "--split",
                "test",
                "--bi-encoder",
                str(tiny_bi_path),
                "--cross-encoder",
                str(tmp_path / "ce"),
                "--fusion-weight",
                "auto",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    fused = json.loads(out.read_text())
    assert fused["fusion_weight"] == stored["weight"] and "reranker_only" in fused["metrics"]
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(beir_dir),
                "--split",
                "test",
                "--bi-encoder",
                str(tiny_bi_path),
                "--cross-encoder",
                str(tmp_path / "ce"),
                "--split-long-documents",
                "--rerank-long-documents",
                "window",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    # no document here is longer than the tiny model's limit, so splitting changes nothing in the first stage
    assert json.loads(out.read_text())["metrics"]["first_stage"] == fused["metrics"]["first_stage"]


def test_cli_index_and_search(tmp_path, beir_dir, tiny_bi_path, capsys):
    assert (
        main(["index", "--data", str(beir_dir), "--bi-encoder", str(tiny_bi_path), "--output", str(tmp_path / "idx")])
        == 0
    )
    assert (
        main(
            [
                "search",
                "--index",
                str(tmp_path / "idx"),
                "--bi-encoder",
                str(tiny_bi_path),
                "--query",
                "cancer risk",
                "--top-n",
                "2",
            ]
        )
        == 0
    )
    assert "hybrid" in capsys.readouterr().out  # the default first stage
    assert (
        main(
            [
                "index",
                "--data",
                str(beir_dir),
                "--bi-encoder",
                str(tiny_bi_path),
                "--first-stage",
                "dense",
                "--split-long-documents",
                "--output",
                str(tmp_path / "split"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "split" / "manifest.json").read_text())["long_documents"] == "split"


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["evaluate", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "r.json")]) == 2
    assert "error:" in capsys.readouterr().err


def test_schedule_is_replanned_to_fit_the_time_budget():
    import torch

    from rerank_plugins.training._loop import optimise

    weight = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Linear(1, 1)
    lrs = []

    def step(_):
        import time as _time

        _time.sleep(0.01)
        lrs.append(optimizer_lr[0]())
        return (weight - 1).pow(2).sum()

    groups = [{"params": [weight], "lr": 0.1}]
    optimizer_lr = [lambda: groups[0].get("lr")]
    log = optimise(
        model, groups, lambda epoch: list(range(1000)), step, epochs=1, time_budget_s=0.3, show_progress=False
    )
    assert log.stopped_by_time_budget and log.budgeted_steps is not None and log.budgeted_steps < 1000
    assert lrs[-1] < 0.5 * max(lrs), "the learning rate decays within the budget"


def test_schedule_follows_a_step_time_that_changes_during_training():
    """Steps that get 4x faster after a slow start: the plan grows, so no step runs at a learning rate of zero
    before the budget ends (a plan made once, from the first steps, wasted the rest of the run at rate 0)."""
    import time as _time

    import torch

    from rerank_plugins.training._loop import optimise

    weight = torch.nn.Parameter(torch.zeros(1))
    groups = [{"params": [weight], "lr": 0.1}]
    lrs = []

    def step(_):
        _time.sleep(0.02 if len(lrs) < 10 else 0.005)
        lrs.append(groups[0]["lr"])
        return (weight - 1).pow(2).sum()

    log = optimise(
        torch.nn.Linear(1, 1),
        groups,
        lambda epoch: list(range(1000)),
        step,
        epochs=1,
        time_budget_s=1.0,
        show_progress=False,
    )
    # 10 slow steps take 0.2 s; the fast ones fill the remaining 0.8 s (160 at most; a busy host runs fewer)
    assert log.stopped_by_time_budget and log.steps > 40
    zero_rate_steps = sum(1 for lr in lrs if lr == 0)
    assert zero_rate_steps <= 5, f"{zero_rate_steps} of {log.steps} steps ran at a learning rate of zero"
