"""Data loaders: BEIR, SQuAD-style, pair files, in-memory pairs; malformed input gives clear errors."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from rerank_plugins.data import DataError, RetrievalDataset, from_pairs, load_beir, load_dataset, load_pairs, load_squad


def _beir(root: Path, corpus, queries, qrels, gz=False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in corpus)
    if gz:
        with gzip.open(root / "corpus.jsonl.gz", "wt") as handle:
            handle.write(lines)
    else:
        (root / "corpus.jsonl").write_text(lines)
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return root


CORPUS = [{"_id": "d1", "title": "Title", "text": "body one"}, {"_id": "d2", "title": "", "text": "body two"}]
QUERIES = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}, {"_id": "q3", "text": "unlabelled"}]


@pytest.mark.parametrize("gz", [False, True])
def test_beir_layout(tmp_path, gz):
    data = load_beir(
        _beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1), ("q2", "d2", 2), ("q2", "d1", 0)], gz), "test"
    )
    assert data.corpus == {"d1": "Title body one", "d2": "body two"}
    assert set(data.queries) == {"q1", "q2"} and data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}


def test_beir_unknown_documents_are_counted_and_named(tmp_path):
    root = _beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1), ("q1", "x1", 1), ("q2", "x2", 1)])
    with pytest.raises(DataError, match=r"2 qrels pointing at unknown document ids: 'x1', 'x2'"):
        load_beir(root)


def test_beir_duplicate_and_missing_ids(tmp_path):
    with pytest.raises(DataError, match="1 duplicate ids"):
        load_beir(_beir(tmp_path / "a", CORPUS + [CORPUS[0]], QUERIES, [("q1", "d1", 1)]))
    with pytest.raises(DataError, match="without an _id"):
        load_beir(_beir(tmp_path / "b", CORPUS + [{"text": "no id"}], QUERIES, [("q1", "d1", 1)]))


def test_beir_empty_texts_and_bad_lines(tmp_path):
    with pytest.raises(DataError, match="1 documents with empty text"):
        load_beir(_beir(tmp_path / "a", CORPUS + [{"_id": "d3", "title": " ", "text": ""}], QUERIES, [("q1", "d1", 1)]))
    root = _beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1)])
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="not JSON objects"):
        load_beir(root)


def test_beir_missing_split_lists_available(tmp_path):
    root = _beir(tmp_path / "b", CORPUS, QUERIES, [("q1", "d1", 1)])
    with pytest.raises(DataError, match=r"splits available: \['test'\]"):
        load_beir(root, "train")


def test_beir_qrels_for_unknown_queries(tmp_path):
    with pytest.raises(DataError, match="query ids not in queries"):
        load_beir(_beir(tmp_path / "b", CORPUS, QUERIES, [("q9", "d1", 1)]))


def _squad(path: Path) -> Path:
    data = {
        "data": [
            {
                "title": f"a{a}",
                "paragraphs": [
                    {
                        "context": f"paragraph {a}-{p}",
                        "qas": [{"id": f"{a}-{p}-{q}", "question": f"question {a}-{p}-{q}"} for q in range(2)],
                    }
                    for p in range(2)
                ],
            }
            for a in range(10)
        ]
    }
    path.write_text(json.dumps(data))
    return path


def test_squad_split_by_article_never_shares_paragraphs(tmp_path):
    path = _squad(tmp_path / "squad.json")
    train, test = load_squad(path, "train"), load_squad(path, "test")
    train_docs = {d for rel in train.qrels.values() for d in rel}
    test_docs = {d for rel in test.qrels.values() for d in rel}
    assert train_docs and test_docs and not train_docs & test_docs
    assert len(train.queries) + len(test.queries) == 40 and len(test.queries) == 12
    assert load_dataset(path, "test").queries == test.queries


def test_squad_malformed(tmp_path):
    (tmp_path / "bad.json").write_text('{"no": "data"}')
    with pytest.raises(DataError, match="SQuAD-style"):
        load_squad(tmp_path / "bad.json")


def test_pairs_jsonl_and_csv(tmp_path):
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"query": "q one", "positive": "p one", "negative": "n one"})
        + "\n"
        + json.dumps({"query": "q two", "positive": "p two"})
        + "\n"
    )
    data = load_pairs(tmp_path / "p.jsonl")
    assert len(data.queries) == 2 and len(data.corpus) == 3 and sum(map(len, data.negatives.values())) == 1
    (tmp_path / "p.csv").write_text("query,positive\nq one,p one\n")
    assert len(load_dataset(tmp_path / "p.csv").queries) == 1


def test_pairs_bad_rows_and_columns(tmp_path):
    with pytest.raises(DataError, match=r"2 rows .* \(row numbers\): 2, 3"):
        from_pairs([("q", "p"), ("q2", ""), ("only one",)])
    (tmp_path / "p.csv").write_text("question,answer\nq,p\n")
    with pytest.raises(DataError, match="needs 'query' and 'positive'"):
        load_pairs(tmp_path / "p.csv")


def test_pairs_accept_langchain_documents_and_llamaindex_nodes():
    lc = pytest.importorskip("langchain_core.documents")
    li = pytest.importorskip("llama_index.core.schema")
    positive = lc.Document(page_content="aspirin lowers risk", metadata={"source": "x"})
    negative = li.TextNode(text="unrelated text", metadata={"source": "y"})
    data = from_pairs([("does aspirin help", positive, negative)], corpus=[li.TextNode(text="extra doc"), "plain text"])
    assert sorted(data.corpus.values()) == ["aspirin lowers risk", "extra doc", "plain text", "unrelated text"]
    query = next(iter(data.queries))
    assert [data.corpus[d] for d in data.positives(query)] == ["aspirin lowers risk"]
    assert [data.corpus[d] for d in data.negatives[query]] == ["unrelated text"]
    with pytest.raises(DataError, match=r"1 corpus entries .*: 2"):
        from_pairs([("q", "p")], corpus=["fine", lc.Document(page_content=" ")])


def test_dataset_split_is_disjoint_and_validates():
    data = from_pairs([(f"q{i}", f"p{i}") for i in range(20)])
    train, held = data.split(0.25)
    assert len(held.queries) == 5 and not set(train.queries) & set(held.queries)
    with pytest.raises(DataError, match="without any relevant document"):
        RetrievalDataset({"d": "text"}, {"q": "query"}, {"q": {"d": 0}})


def test_held_out_queries_share_no_relevant_document_with_training_queries():
    """Six questions per paragraph, as in KorQuAD; d0 and d1 are linked through q-link, so they go together."""
    corpus = {f"d{i}": f"paragraph {i}" for i in range(30)}
    queries = {f"q{d}-{j}": f"question {j} on {d}" for d in range(30) for j in range(6)}
    qrels = {q: {f"d{q[1:].split('-')[0]}": 1} for q in queries}
    queries["q-link"], qrels["q-link"] = "two paragraphs", {"d0": 1, "d1": 1}
    data = RetrievalDataset(corpus, queries, qrels)
    for seed in range(5):
        train, held = data.split(0.2, seed=seed)
        assert set(train.queries) | set(held.queries) == set(queries)
        assert 0.15 <= len(held.queries) / len(queries) <= 0.25
        documents = {
            side: {d for q in part.queries for d in part.positives(q)} for side, part in (("t", train), ("h", held))
        }
        assert not documents["t"] & documents["h"]
        assert {"q0-0", "q1-0", "q-link"} <= set(train.queries) or {"q0-0", "q1-0", "q-link"} <= set(held.queries)
    assert data.split(0.2, seed=3)[1].queries == data.split(0.2, seed=3)[1].queries  # seeded
    one_paragraph = RetrievalDataset(
        {"d": "text"}, {f"q{i}": "query" for i in range(5)}, {f"q{i}": {"d": 1} for i in range(5)}
    )
    with pytest.raises(ValueError, match="without sharing relevant documents"):
        one_paragraph.split(0.2)


def test_beir_sets_hold_out_queries_at_random_as_their_test_split_does():
    """SciFact's test claims share documents with training claims: its held-out queries may too (the old split)."""
    from rerank_plugins.data import demo_data_path

    data = load_beir(demo_data_path(), "train")
    assert data.held_out_by == "query"
    train, held = data.split(0.2, seed=0)
    ids = sorted(data.labelled_queries)
    random.Random(0).shuffle(ids)
    assert list(held.queries) == ids[:80] and list(train.queries) == ids[80:]
    trained_on = {d for q in train.queries for d in train.positives(q)}
    assert any(d in trained_on for q in held.queries for d in held.positives(q))
    assert data.subset(ids[:5]).held_out_by == "query"
    with pytest.raises(ValueError, match="held_out_by"):
        RetrievalDataset({"d": "text"}, {"q": "query"}, {"q": {"d": 1}}, held_out_by="article")
