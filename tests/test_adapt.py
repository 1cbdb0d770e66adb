"""``adapt``: pseudo-queries -> both models trained -> the guard keeps only what beats the base on held-out queries."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from rerank_plugins.cli import main
from rerank_plugins.data import RetrievalDataset
from rerank_plugins.data.corpus import CorpusDocument
from rerank_plugins.fusion import stored_fusion_weight
from rerank_plugins.training.adapt import AdaptConfig, _guard, adapt, combine
from rerank_plugins.training.bi_encoder import BiEncoderTrainingConfig
from rerank_plugins.training.cross_encoder import CrossEncoderTrainingConfig
from rerank_plugins.training.pseudo_queries import offline_pseudo_queries

TOPICS = "cells protein gene cancer risk patients disease mice blood brain heart liver immune virus drug dose".split()


def _corpus(n: int = 40, seed: int = 0) -> list[CorpusDocument]:
    """Documents of three sentences drawn from one topic's words each, so a sentence points to the rest."""
    rng = random.Random(seed)
    documents = []
    for i in range(n):
        topic = rng.sample(TOPICS, 4)
        sentences = [" ".join(rng.sample(topic, 3) + rng.sample(TOPICS, 1)) + "." for _ in range(3)]
        documents.append(CorpusDocument(f"d{i}", " ".join(sentences)))
    return documents


def _held_out(n: int = 30) -> RetrievalDataset:
    return RetrievalDataset(
        {f"d{i}": "x" for i in range(n)}, {f"q{i}": "x" for i in range(n)}, {f"q{i}": {f"d{i}": 1} for i in range(n)}
    )


def test_guard_keeps_a_clear_gain_and_refuses_ties_and_noise():
    data = _held_out()
    base = {f"q{i}": [f"d{(i + 1) % 30}", f"d{i}"] for i in range(30)}  # the answer second everywhere
    better = {f"q{i}": [f"d{i}"] for i in range(30)}
    assert _guard(data, base, better)["kept"] and not _guard(data, base, base)["kept"]
    first, second = (lambda i: [f"d{i}"]), (lambda i: [f"d{(i + 1) % 30}", f"d{i}"])
    mixed = {f"q{i}": (first if i % 2 else second)(i) for i in range(30)}
    swapped = {f"q{i}": (second if i % 2 else first)(i) for i in range(30)}  # half better, half worse: no gain
    verdict = _guard(data, mixed, swapped)
    assert verdict["gain"] == pytest.approx(0) and verdict["standard_error"] > 0.05 and not verdict["kept"]
    assert not _guard(data, better, base)["kept"], "worse is refused"


def test_combine_adds_labelled_queries_and_refuses_unknown_documents():
    pseudo = offline_pseudo_queries(_corpus(6), "sentence").dataset
    labelled = RetrievalDataset(pseudo.corpus, {"1": "cancer risk"}, {"1": {"d0": 1}}, {"1": ["d1"]}, name="gold")
    both = combine(pseudo, labelled)
    assert both.qrels["labelled:1"] == {"d0": 1} and both.negatives == {"labelled:1": ["d1"]}
    assert len(both.queries) == len(pseudo.queries) + 1
    stranger = RetrievalDataset({"zz": "text"}, {"1": "q"}, {"1": {"zz": 1}})
    with pytest.raises(ValueError, match="not in the corpus"):
        combine(pseudo, stranger)


def _config(tiny_bi_path, tiny_cross_path, learning_rate: float, **overrides) -> AdaptConfig:
    return AdaptConfig(
        base_bi_encoder=str(tiny_bi_path),
        base_cross_encoder=str(tiny_cross_path),
        held_out=0.3,
        time_budget_s=None,
        mining_depth=10,
        first_stage_k=10,
        bi_encoder=BiEncoderTrainingConfig(epochs=3, batch_size=8, learning_rate=learning_rate, max_length=64),
        cross_encoder=CrossEncoderTrainingConfig(epochs=2, num_negatives=3, max_length=64, learning_rate=learning_rate),
        **overrides,
    )


def test_adapt_writes_the_contracted_layout_and_reports_the_guard(tmp_path, tiny_bi_path, tiny_cross_path):
    pseudo = offline_pseudo_queries(_corpus(), "sentence")
    report = adapt(pseudo, tmp_path / "out", _config(tiny_bi_path, tiny_cross_path, 2e-3), say=lambda _: None)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"bi-encoder", "cross-encoder", "report.json", "report.md", "report.png"}
    from sentence_transformers import CrossEncoder, SentenceTransformer

    assert SentenceTransformer(str(out / "bi-encoder")).encode(["cancer"]).shape == (1, 32)
    assert CrossEncoder(str(out / "cross-encoder")).predict([("cancer", "cancer risk")]).shape == (1,)
    saved = json.loads((out / "report.json").read_text())
    assert (
        saved["queries"] == {"train": 28, "held_out": 12, "too_long_for_reranker": 0}
        and saved["pseudo_queries"]["queries"] == 40
    )
    bi = saved["bi_encoder"]
    assert bi["kept"] == (bi["gain"] > bi["standard_error"]) and bi["queries"] == 12
    if bi["kept"]:  # the recorded first stage names the directory the model is in
        assert bi["first_stage"]["dense"]["embedding_model"] == str(out / "bi-encoder")
    assert saved["cross_encoder"]["kept"] == (stored_fusion_weight(out / "cross-encoder") > 0)
    assert "## Guard" in (out / "report.md").read_text()
    assert report["first_stage"]["kind"] == "hybrid"


def test_adapt_refuses_models_that_learned_nothing(tmp_path, tiny_bi_path, tiny_cross_path):
    """With a zero learning rate the adapted bi-encoder equals the base: the guard writes the base model back."""
    pseudo = offline_pseudo_queries(_corpus(), "sentence")
    report = adapt(
        pseudo, tmp_path / "out", _config(tiny_bi_path, tiny_cross_path, 0.0, first_stage="dense"), say=lambda _: None
    )
    assert report["bi_encoder"]["gain"] == 0 and not report["bi_encoder"]["kept"]
    assert "Not adapted: this is the base model" in (tmp_path / "out" / "bi-encoder" / "README.md").read_text()
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(tiny_bi_path)).encode(["cancer risk"])
    written = SentenceTransformer(str(tmp_path / "out" / "bi-encoder")).encode(["cancer risk"])
    np.testing.assert_allclose(written, base, rtol=1e-5)


def test_a_refused_bi_encoder_is_not_served_from_memory_afterwards(tmp_path, tiny_bi_path, tiny_cross_path):
    """The refused model was loaded from DIR/bi-encoder before the base replaced it there: the shared registry
    must not hand the refused one out for that path (a benchmark evaluated the refused model that way)."""
    from rerank_plugins.models.registry import get_bi_encoder

    config = _config(tiny_bi_path, tiny_cross_path, 0.5, first_stage="dense")  # a rate that wrecks the model
    report = adapt(offline_pseudo_queries(_corpus(), "sentence"), tmp_path / "out", config, say=lambda _: None)
    assert not report["bi_encoder"]["kept"]
    served = get_bi_encoder(tmp_path / "out" / "bi-encoder").encode_documents(["cancer risk"])
    np.testing.assert_allclose(
        served, get_bi_encoder(tiny_bi_path).encode_documents(["cancer risk"]), rtol=1e-5, atol=1e-6
    )


def _translated_corpus(n: int = 50, seed: int = 0) -> list[CorpusDocument]:
    """Two sentences per document saying the same in two vocabularies (cells<->protein, gene<->cancer, ...):
    a sentence shares no word with the rest of its passage, so only a model that learns the pairs can match them."""
    rng = random.Random(seed)
    pairs = list(zip(TOPICS[::2], TOPICS[1::2]))
    documents, seen = [], set()
    while len(documents) < n:
        chosen = tuple(sorted(rng.sample(range(len(pairs)), 4)))
        if chosen in seen:
            continue
        seen.add(chosen)
        left = " ".join(rng.sample([pairs[i][0] for i in chosen], 4))
        right = " ".join(rng.sample([pairs[i][1] for i in chosen], 4))
        documents.append(CorpusDocument(f"d{len(documents)}", f"{left}. {right}."))
    return documents


def test_adapt_keeps_a_bi_encoder_that_learned_what_the_base_cannot(tmp_path, tiny_bi_path, tiny_cross_path):
    pseudo = offline_pseudo_queries(_translated_corpus(), "sentence")
    config = _config(tiny_bi_path, tiny_cross_path, 2e-3, first_stage="dense")
    config.bi_encoder.epochs = 6
    report = adapt(pseudo, tmp_path / "out", config, say=lambda _: None)
    bi = report["bi_encoder"]
    assert bi["adapted_ndcg@10"] > bi["base_ndcg@10"] + 0.1 and bi["kept"], bi


def test_cli_adapt_offline_and_bad_input(tmp_path, tiny_bi_path, tiny_cross_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in _corpus(20)))
    code = main(
        [
            "adapt",
            "--corpus",
            str(corpus),
            "--output",
            str(tmp_path / "out"),
            "--first-stage",
            "lexical",
            "--time-budget",
            "5",
            "--cross-max-length",
            "64",
            "--bi-encoder",
            str(tiny_bi_path),
            "--base-model",
            str(tiny_cross_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Pseudo-queries" in printed and (tmp_path / "out" / "report.json").is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["bi_encoder"]["kept"] is False
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["adapt", "--corpus", str(empty), "--output", str(tmp_path / "x")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["adapt", "--corpus", str(corpus), "--output", str(tmp_path / "x"), "--llm", "nocolon"]) == 2
    assert "MODULE:NAME" in capsys.readouterr().err


def fake_chat_model():
    """Imported by `--llm test_adapt:fake_chat_model` below: a LangChain chat model answering without a network."""
    from langchain_core.language_models import FakeListChatModel

    rng = random.Random(1)
    return FakeListChatModel(responses=[" ".join(rng.sample(TOPICS, 4)) + f" {i}" for i in range(100)])


def test_cli_adapt_with_an_llm_shows_the_cost_and_asks_first(tmp_path, tiny_bi_path, tiny_cross_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in _corpus(20)))
    common = [
        "adapt",
        "--corpus",
        str(corpus),
        "--llm",
        "test_adapt:fake_chat_model",
        "--first-stage",
        "lexical",
        "--time-budget",
        "5",
        "--cross-max-length",
        "64",
        "--base-model",
        str(tiny_cross_path),
    ]
    assert main([*common, "--output", str(tmp_path / "asked")]) == 2  # no terminal to answer: nothing is called
    captured = capsys.readouterr()
    assert "20 LLM calls (0 of 20 documents cached)" in captured.out and "--yes" in captured.err
    assert not (tmp_path / "asked" / "llm-queries.jsonl").exists()
    assert main([*common, "--output", str(tmp_path / "out"), "--yes", "--queries-per-document", "1"]) == 0
    assert len((tmp_path / "out" / "llm-queries.jsonl").read_text().splitlines()) == 20
    summary = json.loads((tmp_path / "out" / "report.json").read_text())["pseudo_queries"]
    assert summary["source"] == "llm:langchain:fake-list-chat-model" and summary["queries"] == 20


def test_queries_too_long_for_the_reranker_are_left_out_and_counted(tiny_bi_path, tiny_cross_path, tmp_path):
    """A long Korean sentence is hundreds of tokens: it cannot train a 256-token reranker (the tokenizer raised a
    cryptic truncation error mid-training); adapt leaves such queries out and says how many."""
    from rerank_plugins.training.adapt import _fit_reranker
    from rerank_plugins.training.cross_encoder import train_cross_encoder

    documents = [*_corpus(10), CorpusDocument("long", "gene " * 49 + "gene. " + "cells " * 49 + "cells.")]
    pseudo = offline_pseudo_queries(documents, "sentence").dataset
    config = _config(tiny_bi_path, tiny_cross_path, 1e-3)
    fitted, dropped = _fit_reranker(pseudo, config)
    assert dropped == 1 and "long#sentence0" not in fitted.queries and len(fitted.queries) == 10
    with pytest.raises(ValueError, match="1 queries leave fewer than 16 of max_length=64"):
        train_cross_encoder(
            pseudo,
            {q: ["d0"] for q in pseudo.queries},
            tmp_path / "x",
            base_model=str(tiny_cross_path),
            config=config.cross_encoder,
        )
