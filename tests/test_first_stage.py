"""One first-stage interface: delete/update in the dense index, building and loading any kind by name, the CLI."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest

from rerank_plugins import get_bi_encoder
from rerank_plugins.data import demo_data_path, load_dataset
from rerank_plugins.first_stage import FaissIndex, FirstStage, IndexLoadError, build_first_stage, load_first_stage
from rerank_plugins.pipeline import TwoStagePipeline
from rerank_plugins.schema import Document

pytest.importorskip("bm25s")

TEXTS = [
    "cancer gene risk",
    "heart blood dose",
    "brain immune virus",
    "seoul korea city",
    "the cells protein",
    "mice liver drug",
    "dense vector index",
    "rerank cross encoder",
]
DOCS = [Document(text, f"d{i}", {"n": i}) for i, text in enumerate(TEXTS)]


def _brute_force(index: FaissIndex, query: str) -> list[str]:
    """Independent reference: cosine of the query with every stored document, recomputed from scratch."""
    embedder = index.embedder
    vectors = embedder.encode_documents([d.text for d in index.documents])
    scores = vectors @ embedder.encode_queries([query])[0]
    return [index.documents[i].id for i in np.argsort(-scores, kind="stable")]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_dense_delete_and_upsert_match_a_rebuilt_index(tiny_bi_path, tmp_path, index_type):
    embedder = get_bi_encoder(tiny_bi_path)
    index = FaissIndex(embedder, index_type=index_type, ivf_nlist=1)
    index.add_documents(DOCS)
    assert index.delete(["d1", "d5", "missing"]) == 2
    index.upsert_documents([Document("seoul korea river", "d3"), Document("heart blood dose", "d9")])
    expected = [d.id for d in index.documents]
    assert "d1" not in expected and "d5" not in expected and expected[-2:] == ["d3", "d9"]
    assert index.get_by_ids(["d3"])[0].text == "seoul korea river"
    for query in ("seoul korea", "heart dose", "cells protein"):
        found = [h.document.id for h in index.search(query, k=len(index))]
        assert found == _brute_force(index, query)
    loaded = FaissIndex.load(index.save(tmp_path / "idx"), embedder)
    assert [h.document.id for h in loaded.search("heart dose", k=3)] == [
        h.document.id for h in index.search("heart dose", k=3)
    ]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_dense_deletes_one_at_a_time_rebuild_only_when_dead_vectors_outnumber_live_ones(
    tiny_bi_path, index_type, monkeypatch
):
    embedder = get_bi_encoder(tiny_bi_path)
    words = " ".join(TEXTS).split()
    documents = [Document(" ".join(words[i % len(words) :][:3] + words[: i % 5]), f"d{i}", {"n": i}) for i in range(40)]
    index = FaissIndex(embedder, index_type=index_type, ivf_nlist=1)
    index.add_documents(documents)
    rebuilds = []
    rebuild = index._rebuild
    monkeypatch.setattr(index, "_rebuild", lambda: (rebuilds.append(len(index)), rebuild()))
    for i in range(30):
        index.delete([f"d{i}"])
        found = [h.document.id for h in index.search("heart blood city", k=len(index))]
        assert found == _brute_force(index, "heart blood city")
        even = index.search_vectors(embedder.encode_queries(["cells protein"]), 5, where=lambda d: d.metadata["n"] % 2)
        assert [h.document.id for h in even[0]] == [i for i in _brute_force(index, "cells protein") if int(i[1:]) % 2][
            :5
        ]
    # flat removes vectors in place; HNSW and IVF mark them and rebuild once deleted ones outnumber live ones (at 21)
    assert rebuilds == ([] if index_type == "flat" else [19])
    assert index._faiss.ntotal == (10 if index_type == "flat" else 19)


def test_dense_delete_in_split_mode_equals_an_index_built_without_those_documents(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    long = [Document(" ".join(f"gene{i}" for i in range(40)) + f" seoul korea {w}", f"long{w}") for w in TEXTS[:3]]
    index = FaissIndex(embedder, long_documents="split")
    index.add_documents([*long, *DOCS])
    index.delete(["d3", "long" + TEXTS[1]])
    rebuilt = FaissIndex(embedder, long_documents="split")
    rebuilt.add_documents([d for d in [*long, *DOCS] if d.id not in ("d3", "long" + TEXTS[1])])
    loaded = FaissIndex.load(index.save(tmp_path / "idx"), embedder)
    for query in ("seoul korea city", "heart blood", "gene3 gene4"):
        expected = [(h.document.id, round(h.score, 5)) for h in rebuilt.search(query, k=len(rebuilt))]
        for stage in (index, loaded):
            assert [(h.document.id, round(h.score, 5)) for h in stage.search(query, k=len(stage))] == expected


def test_a_failed_upsert_deletes_nothing(tiny_bi_path):
    index = FaissIndex.from_texts(TEXTS, get_bi_encoder(tiny_bi_path), ids=[d.id for d in DOCS])
    with pytest.raises(ValueError, match="duplicate"):
        index.upsert_documents([Document("x", "d0"), Document("y", "d0")])
    assert len(index) == len(TEXTS)


@pytest.mark.parametrize("kind", ["dense", "lexical", "hybrid"])
def test_every_kind_builds_saves_loads_and_serves_the_pipeline(tiny_bi_path, tmp_path, kind):
    embedder = get_bi_encoder(tiny_bi_path)
    stage = build_first_stage(kind, DOCS, embedder, analyzer="english")
    assert isinstance(stage, FirstStage) and stage.describe()["kind"] == kind
    before = [h.document.id for h in stage.search("cancer risk gene", k=4)]
    assert before[0] == "d0"
    loaded = load_first_stage(stage.save(tmp_path / kind), embedder)
    assert type(loaded) is type(stage)
    assert [h.document.id for h in loaded.search("cancer risk gene", k=4)] == before
    results = TwoStagePipeline(loaded, top_k=4).retrieve("cancer risk gene")
    assert results[0].document.id == "d0" and results[0].retrieval_score is not None


def test_loading_needs_the_embedding_model_for_dense_and_hybrid(tiny_bi_path, tmp_path):
    stage = build_first_stage("hybrid", DOCS, get_bi_encoder(tiny_bi_path), analyzer="english")
    path = stage.save(tmp_path / "h")
    with pytest.raises(IndexLoadError, match="embedding model"):
        load_first_stage(path)
    with pytest.raises(ValueError, match="first_stage must be one of"):
        build_first_stage("sparse", DOCS)
    with pytest.raises(ValueError, match="needs an embedding model"):
        build_first_stage("dense", DOCS)


def test_hybrid_keeps_each_sides_score_on_the_results(tiny_bi_path):
    stage = build_first_stage("hybrid", DOCS, get_bi_encoder(tiny_bi_path), analyzer="english")
    result = TwoStagePipeline(stage, top_k=4).retrieve("cancer risk gene")[0]
    metadata = result.score_metadata()
    assert set(metadata) >= {"retrieval_score", "dense_score", "lexical_score"}
    assert metadata["lexical_score"] > 0


def test_cli_index_search_and_evaluate_with_each_first_stage(tiny_bi_path, tmp_path, capsys):
    from rerank_plugins.cli import main

    data = tmp_path / "pairs.jsonl"
    rows = [{"query": f"{w} risk", "positive": f"{w} risk protein gene"} for w in ("cancer", "heart", "brain", "liver")]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for kind in ("lexical", "hybrid"):
        out = tmp_path / f"idx-{kind}"
        common = ["--data", str(data), "--first-stage", kind, "--bi-encoder", str(tiny_bi_path)]
        assert main(["index", *common, "--output", str(out)]) == 0
        assert json.loads((out / "manifest.json").read_text())["format"].endswith(("bm25", "hybrid"))
        assert main(["search", "--index", str(out), "--bi-encoder", str(tiny_bi_path), "--query", "heart risk"]) == 0
        first_result = capsys.readouterr().out.split("heart risk\n")[-1].splitlines()[0]
        assert "heart risk protein gene" in first_result
        report = tmp_path / f"report-{kind}.json"
        assert main(["evaluate", *common, "--split", "test", "--output", str(report)]) == 0
        evaluated = json.loads(report.read_text())
        assert evaluated["first_stage"]["kind"] == kind
        assert evaluated["metrics"]["first_stage"]["hit@1"] == 1.0


def test_korean_demo_data_is_the_unchanged_korquad_file():
    """The licence (CC BY-ND) allows only the unchanged file: its content hash must be the source's."""
    path = demo_data_path("korquad-1.0-dev")
    with gzip.open(path, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    assert digest == "25ffeb51e6c51ec02c071b60a10188e10005c144110f0d876b26079d80a35bdf"
    test = load_dataset(path, "test")
    assert len(test.corpus) == 961 and len(test.queries) == 2212
    with pytest.raises(ValueError, match="no bundled data set"):
        demo_data_path("klue")


def test_hybrid_weight_is_tuned_on_the_queries_given(tiny_bi_path):
    """With a random dense model, the lexical side is the informative one: tuning must move the weight to it."""
    from rerank_plugins.data import from_pairs
    from rerank_plugins.evaluation.evaluate import first_stage, tune_hybrid_weight

    words = "cancer heart brain seoul cells mice dense rerank liver virus".split()
    pairs = [(f"{w} risk", f"{w} protein gene {i}") for i, w in enumerate(words)]
    data = from_pairs(pairs)
    stage = build_first_stage(
        "hybrid", [Document(t, i) for i, t in data.corpus.items()], get_bi_encoder(tiny_bi_path), analyzer="english"
    )
    stage.dense_weight = 1.0
    tuned = tune_hybrid_weight(stage, data)
    sweep = tuned["ndcg@10_by_weight"]
    assert stage.dense_weight == tuned["dense_weight"] < 1.0
    assert sweep[str(tuned["dense_weight"])] == max(sweep.values()) > sweep["1.0"]
    _, hits, _ = first_stage(data, stage, 1)
    assert all(row[0].document.id in data.qrels[q] for q, row in zip(data.labelled_queries, hits))
    with pytest.raises(TypeError, match="hybrid"):
        tune_hybrid_weight(build_first_stage("lexical", DOCS, analyzer="english"), data)
