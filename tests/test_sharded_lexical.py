"""Sharded BM25: exactly one index's ids, order and scores (ties included) for any number of shards; persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("Stemmer")

from rerank_plugins.first_stage import LexicalIndex, ShardedLexicalIndex, load_first_stage
from rerank_plugins.first_stage.persistence import IndexLoadError
from rerank_plugins.first_stage.sharded_lexical import build_sharded_lexical_index
from rerank_plugins.schema import Document


def corpus(n: int = 140, seed: int = 0) -> list[Document]:
    """Texts over a small vocabulary, a third of them repeated verbatim further on: ties across shard cuts."""
    rng = np.random.default_rng(seed)
    words = ["cat", "dog", "garden", "market", "rate", "sun", "park", "rose", "bank", "shoe", "book", "river"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(n)]
    texts += texts[: n // 3]
    return [Document(text, f"d{i}") for i, text in enumerate(texts)]


QUERIES = ["cat garden", "market market rate", "river", "sun park rose bank", "unicorn", "dog"]


def ranked(stage, k: int) -> list[list[tuple[str, int, float]]]:
    return [[(h.document.id, h.position, h.score) for h in hits] for hits in stage.search_batch(QUERIES, k)]


def split(documents: list[Document], shards: int) -> list[LexicalIndex]:
    bounds = [len(documents) * i // shards for i in range(shards + 1)]
    parts = []
    for start, end in zip(bounds, bounds[1:]):
        part = LexicalIndex("english")
        part.add_documents(documents[start:end])
        parts.append(part)
    return parts


@pytest.mark.parametrize("shards", [1, 3, 7])
@pytest.mark.parametrize("k", [5, 1000])
def test_equals_one_index_ids_order_and_scores(shards, k):
    documents = corpus()
    whole = LexicalIndex("english")
    whole.add_documents(documents)
    with ShardedLexicalIndex(split(documents, shards)) as sharded:
        assert len(sharded) == len(whole) and sharded.documents == whole.documents
        assert ranked(sharded, k) == ranked(whole, k)  # exact: same floats, ties by global position
    assert any(len({h[2] for h in row}) < len(row) for row in ranked(whole, k))  # the corpus does have ties


def test_scores_stay_exact_after_a_shard_changes():
    documents = corpus()
    parts = split(documents, 3)
    sharded = ShardedLexicalIndex(parts)
    extra = [Document("river river bank", "new1"), Document("cat", "new2")]
    parts[1].add_documents(extra)
    parts[2].delete(["d130", "d131"])
    order = [*parts[0].documents, *parts[1].documents, *parts[2].documents]
    whole = LexicalIndex("english")
    whole.add_documents(order)
    assert ranked(sharded, 20) == ranked(whole, 20)


def test_save_load_and_load_first_stage(tmp_path):
    documents = corpus()
    path = build_sharded_lexical_index(documents, tmp_path / "idx", shards=4, analyzer="english")
    loaded = load_first_stage(path)
    assert isinstance(loaded, ShardedLexicalIndex) and len(loaded.shards) == 4
    whole = LexicalIndex("english")
    whole.add_documents(documents)
    assert ranked(loaded, 10) == ranked(whole, 10)
    assert loaded.get_by_ids(["d3", "nope", "d150"]) == [documents[3], documents[150]]


def test_a_corrupt_or_missing_shard_is_named(tmp_path):
    path = build_sharded_lexical_index(corpus(), tmp_path / "idx", shards=3, analyzer="english")
    tokens = path / "shard-00001" / "tokens.jsonl"
    tokens.write_text(tokens.read_text(encoding="utf-8").replace("cat", "dog", 1), encoding="utf-8")
    with pytest.raises(IndexLoadError, match=r"shard-00001/tokens.jsonl does not match its checksum"):
        ShardedLexicalIndex.load(path)
    (path / "shard-00001" / "tokens.jsonl").unlink()
    (path / "shard-00001" / "documents.jsonl").unlink()
    (path / "shard-00001" / "manifest.json").unlink()
    (path / "shard-00001").rmdir()
    with pytest.raises(IndexLoadError, match="shard shard-00001 is missing"):
        ShardedLexicalIndex.load(path)


def test_a_shard_name_that_leaves_the_directory_is_refused(tmp_path):
    path = build_sharded_lexical_index(corpus(), tmp_path / "idx", shards=2, analyzer="english")
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    manifest["shards"][1]["name"] = "../elsewhere"
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexLoadError, match="not a shard directory"):
        ShardedLexicalIndex.load(path)


def test_shards_must_agree_and_not_repeat_ids():
    documents = corpus(30)
    english, bigram = LexicalIndex("english"), LexicalIndex("korean-bigram")
    english.add_documents(documents[:10])
    bigram.add_documents(documents[10:20])
    with pytest.raises(ValueError, match="one analyzer and BM25 setting"):
        ShardedLexicalIndex([english, bigram])
    again = LexicalIndex("english")
    again.add_documents(documents[5:12])
    with pytest.raises(ValueError, match="repeats document ids"):
        ShardedLexicalIndex([english, again])
    with pytest.raises(ValueError, match="at least one shard"):
        ShardedLexicalIndex([])


def test_cli_writes_searches_and_evaluates_a_sharded_lexical_index(tmp_path, capsys):
    from rerank_plugins.cli import main
    from rerank_plugins.data import demo_data_path, load_dataset

    data, output = str(demo_data_path()), str(tmp_path / "idx")
    args = ["index", "--first-stage", "lexical", "--analyzer", "english", "--shards", "3", "--data", data]
    assert main([*args, "--output", output]) == 0
    corpus = load_dataset(data, "test").corpus
    assert f"Indexed {len(corpus)} documents (lexical, 3 shards)" in capsys.readouterr().out
    one = str(tmp_path / "one")
    assert main(["index", "--first-stage", "lexical", "--analyzer", "english", "--data", data, "--output", one]) == 0
    sharded, whole = load_first_stage(output), load_first_stage(one)
    queries = ["cancer risk", "vitamin D deficiency", "protein folding in cells"]
    assert [[(h.document.id, h.score) for h in r] for r in sharded.search_batch(queries, 10)] == [
        [(h.document.id, h.score) for h in r] for r in whole.search_batch(queries, 10)
    ]
    reports = []
    for index in (output, one):
        report = tmp_path / "report.json"
        assert main(["evaluate", "--index", index, "--data", data, "--output", str(report)]) == 0
        reports.append(json.loads(report.read_text())["metrics"]["first_stage"])
    assert reports[0] == reports[1]
    assert main([*args, "--index-type", "hnsw", "--output", str(tmp_path / "x")]) == 2  # meaningless for BM25: refused
