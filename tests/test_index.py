"""FAISS store: build, search, add, approximate types, and persistence that refuses anything suspicious."""

from __future__ import annotations

import json
import os

import pytest

from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage import FaissIndex, IndexLoadError

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


@pytest.fixture()
def index(tiny_bi_path) -> FaissIndex:
    return FaissIndex.from_texts(TEXTS, get_bi_encoder(tiny_bi_path), metadatas=[{"n": i} for i in range(len(TEXTS))])


def test_search_returns_cosine_best_first(index):
    hits = index.search(TEXTS[3], k=3)
    assert hits[0].document.text == TEXTS[3] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].document.metadata == {"n": 3} and hits[0].document.id == "3"


def test_k_larger_than_index_and_empty_index(index, tiny_bi_path):
    assert len(index.search("cancer", k=100)) == len(TEXTS)
    assert FaissIndex(get_bi_encoder(tiny_bi_path)).search("cancer", k=5) == []
    with pytest.raises(ValueError, match="k"):
        index.search("cancer", k=0)


def test_add_later_and_ids(index):
    new_ids = index.add_texts(["korea river mountain"], ids=["river"])
    assert new_ids == ["river"] and len(index) == len(TEXTS) + 1
    assert index.search("korea river mountain", k=1)[0].document.id == "river"
    with pytest.raises(ValueError, match="duplicate"):
        index.add_texts(["again"], ids=["river"])
    with pytest.raises(ValueError, match="duplicate"):
        index.add_texts(["x", "y"], ids=["same", "same"])


def test_metadata_must_be_json(index):
    with pytest.raises(TypeError, match=r"metadatas\[0\]"):
        index.add_texts(["x"], metadatas=[{"when": object()}])
    with pytest.raises(ValueError, match="metadatas has"):
        index.add_texts(["x", "y"], metadatas=[{}])


def test_truncated_documents_are_counted(index, caplog):
    index.add_texts(["cancer " * 300])
    assert index.last_add_truncated == 1
    assert "longer than the embedding model" in caplog.text


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_find_exact_matches(tiny_bi_path, index_type):
    texts = [f"{a} {b} {c}" for a in TEXTS[:4] for b in TEXTS[4:] for c in ("one", "two", "three")]
    approx = FaissIndex.from_texts(texts, get_bi_encoder(tiny_bi_path), index_type=index_type)
    assert approx.search(texts[5], k=1)[0].document.text == texts[5]


def test_an_ivf_nlist_lowered_for_a_small_corpus_is_said(tiny_bi_path, caplog):
    texts = [f"{a} {b} {n}" for a in TEXTS for b in TEXTS for n in range(3)]  # fewer than 39 vectors per list asked
    index = FaissIndex.from_texts(texts, get_bi_encoder(tiny_bi_path), index_type="ivf", ivf_nlist=64)
    lists = len(texts) // 39
    assert index.search(texts[7], k=1)[0].document.text == texts[7]
    assert f"ivf_nlist=64 lowered to {lists}" in caplog.text
    caplog.clear()
    FaissIndex.from_texts(texts, get_bi_encoder(tiny_bi_path), index_type="ivf", ivf_nlist=lists)
    assert "lowered" not in caplog.text


def test_save_load_round_trip(index, tmp_path, tiny_bi_path):
    path = index.save(tmp_path / "idx")
    loaded = FaissIndex.load(path, get_bi_encoder(tiny_bi_path))
    assert [d.text for d in loaded.documents] == TEXTS
    assert [h.document.id for h in loaded.search("cancer risk", 4)] == [
        h.document.id for h in index.search("cancer risk", 4)
    ]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == len(TEXTS) and manifest["embedding_dimension"] == get_bi_encoder(tiny_bi_path).dimension
    assert not list(tmp_path.glob(".idx.*")), "no staging directories left behind"


def test_saving_over_an_index_replaces_it(index, tmp_path, tiny_bi_path):
    index.save(tmp_path / "idx")
    index.add_texts(["one more"])
    index.save(tmp_path / "idx")
    assert len(FaissIndex.load(tmp_path / "idx", get_bi_encoder(tiny_bi_path))) == len(TEXTS) + 1


def test_refuses_to_overwrite_a_directory_that_is_not_an_index(index, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("do not delete")
    with pytest.raises(FileExistsError):
        index.save(tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "do not delete"


@pytest.mark.parametrize("manifest", ['{"name": "my-web-app", "version": "1.0"}', "not json", '{"format": "faiss"}'])
def test_refuses_to_overwrite_a_directory_whose_manifest_is_not_ours(index, tmp_path, manifest):
    """A web app, a browser extension or a training run can have a manifest.json: only ours may be replaced."""
    app = tmp_path / "my-app"
    app.mkdir()
    (app / "manifest.json").write_text(manifest)
    (app / "index.html").write_text("<html></html>")
    with pytest.raises(FileExistsError, match="not a rerank-plugins index"):
        index.save(app)
    assert (app / "index.html").read_text() == "<html></html>" and (app / "manifest.json").read_text() == manifest


def test_default_ids_never_collide_after_a_delete(index):
    index.delete([index.documents[0].id])
    new = index.add_texts(["seoul river", "busan harbour"])
    assert len(set(new)) == 2 and not set(new) & {d.id for d in index.documents[:-2]}
    assert len(index) == len(TEXTS) + 1


def test_failed_save_leaves_the_old_index(index, tmp_path, tiny_bi_path, monkeypatch):
    index.save(tmp_path / "idx")
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}
    index.add_texts(["one more"])
    monkeypatch.setattr(index, "_probe_vector", lambda: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):
        index.save(tmp_path / "idx")
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def _snapshot(path):
    return {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in path.iterdir()}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "index.faiss").write_bytes((p / "index.faiss").read_bytes()[:100]), "checksum"),
        (lambda p: (p / "documents.jsonl").unlink(), "missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "manifest.json").unlink(), "not a rerank-plugins index"),
        (lambda p: (p / "documents.jsonl").write_text('{"id": "0"}\n'), "checksum"),
    ],
)
def test_corrupt_index_is_refused_and_left_untouched(index, tmp_path, tiny_bi_path, damage, message):
    path = index.save(tmp_path / "idx")
    damage(path)
    before = _snapshot(path)
    with pytest.raises(IndexLoadError, match=message):
        FaissIndex.load(path, get_bi_encoder(tiny_bi_path))
    assert _snapshot(path) == before


def test_index_saved_before_splitting_existed_loads_with_the_default_settings(index, tmp_path, tiny_bi_path):
    path = index.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("long_documents", "passage_overlap"):
        del manifest[key]
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = FaissIndex.load(path, get_bi_encoder(tiny_bi_path), long_documents="truncate", passage_overlap=32)
    assert loaded.long_documents == "truncate" and len(loaded) == len(TEXTS)
    with pytest.raises(IndexLoadError, match="long_documents='truncate', not 'split'"):
        FaissIndex.load(path, get_bi_encoder(tiny_bi_path), long_documents="split")


def test_manifest_from_another_format_version_or_count(index, tmp_path, tiny_bi_path):
    path = index.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexLoadError, match="format version 99"):
        FaissIndex.load(path, get_bi_encoder(tiny_bi_path))
    (path / "manifest.json").write_text(json.dumps({**manifest, "count": 3}))
    with pytest.raises(IndexLoadError, match="counts disagree"):
        FaissIndex.load(path, get_bi_encoder(tiny_bi_path))


def test_not_an_index_directory(tmp_path, tiny_bi_path):
    with pytest.raises(IndexLoadError, match="not a directory"):
        FaissIndex.load(tmp_path / "missing", get_bi_encoder(tiny_bi_path))
    with pytest.raises(IndexLoadError, match="not a rerank-plugins index"):
        FaissIndex.load(tmp_path, get_bi_encoder(tiny_bi_path))


def test_loading_with_another_embedding_model_is_refused(index, tmp_path, tiny_bi_path):
    from sentence_transformers import SentenceTransformer

    path = index.save(tmp_path / "idx")
    import torch

    other = SentenceTransformer(str(tiny_bi_path))
    torch.manual_seed(5)
    for parameter in other.parameters():  # same architecture and dimension, different weights
        parameter.data.add_(0.5 * torch.randn_like(parameter))
    other.save(str(tmp_path / "other-model"))
    with pytest.raises(IndexLoadError, match="embeds differently"):
        FaissIndex.load(path, get_bi_encoder(tmp_path / "other-model"))


def test_loading_with_another_dimension_is_refused(index, tmp_path, minilm_path):
    path = index.save(tmp_path / "idx")
    with pytest.raises(IndexLoadError, match="dimensions"):
        FaissIndex.load(path, get_bi_encoder(minilm_path))


def test_loading_never_unpickles(index, tmp_path, tiny_bi_path, monkeypatch):
    import pickle

    path = index.save(tmp_path / "idx")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading an index")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    assert len(FaissIndex.load(path, get_bi_encoder(tiny_bi_path))) == len(TEXTS)


def test_metadata_paths_are_never_used_to_write(index, tmp_path, tiny_bi_path):
    index.add_texts(
        ["evil"], metadatas=[{"source": "../../escape.txt", "path": str(tmp_path / "outside.txt")}], ids=["../x"]
    )
    path = index.save(tmp_path / "target" / "idx")
    assert sorted(p.name for p in path.iterdir()) == ["documents.jsonl", "index.faiss", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]
    assert FaissIndex.load(path, get_bi_encoder(tiny_bi_path)).documents[-1].metadata["source"] == "../../escape.txt"


# -- long documents split into passages -------------------------------------------------------------------

LONG = " ".join(f"gene{i}" for i in range(40)) + " seoul korea city"  # multi-token words; Seoul lies past 64 tokens


def test_split_to_fit_covers_the_whole_text_in_passages_that_fit(tiny_bi_path):
    backend = get_bi_encoder(tiny_bi_path)
    short, long = backend.split_to_fit(["cancer risk", LONG], overlap=8)
    assert short == ["cancer risk"]
    tokenizer = backend.model.tokenizer
    assert len(tokenizer(LONG)["input_ids"]) > backend.max_length and len(long) > 1
    assert all(len(tokenizer(p)["input_ids"]) <= backend.max_length for p in long)
    covered = 0
    for passage in long:
        start = LONG.index(passage)  # every word is distinct, so this is the passage's place
        assert start <= covered  # overlapping or touching: no gap
        assert start == 0 or LONG[start - 1] == " "  # starts on a word
        assert start + len(passage) == len(LONG) or LONG[start + len(passage)] == " "  # ends on a word
        covered = start + len(passage)
    assert covered == len(LONG)
    with pytest.raises(ValueError, match="overlap"):
        backend.split_to_fit([LONG], overlap=62)


def test_split_index_scores_a_document_by_its_best_passage(tiny_bi_path):
    backend = get_bi_encoder(tiny_bi_path)
    texts = [LONG, *TEXTS]
    split = FaissIndex.from_texts(texts, backend, long_documents="split", passage_overlap=8)
    assert split.last_add_truncated == 0 and split._faiss.ntotal > len(texts)
    query = "seoul korea city"
    passages = backend.split_to_fit(texts, overlap=8)
    q = backend.encode_queries([query])[0]
    expected = sorted(((max(backend.encode_documents(p) @ q), i) for i, p in enumerate(passages)), reverse=True)
    hits = split.search(query, k=len(texts))
    assert [h.position for h in hits] == [i for _, i in expected]  # each document once, by its best passage
    assert [h.score for h in hits] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert len(split.search(query, k=3)) == 3
    truncated = FaissIndex.from_texts(texts, backend)
    assert truncated.last_add_truncated == 1
    long_score = next(h.score for h in truncated.search(query, k=len(texts)) if h.position == 0)
    assert long_score < hits[[h.position for h in hits].index(0)].score  # the end of LONG now counts


def test_split_index_round_trip_and_refusals(tiny_bi_path, tmp_path):
    backend = get_bi_encoder(tiny_bi_path)
    split = FaissIndex.from_texts([LONG, *TEXTS], backend, long_documents="split", passage_overlap=8)
    split.add_texts([LONG + " brain"], ids=["later"])
    path = split.save(tmp_path / "split")
    loaded = FaissIndex.load(path, backend)
    assert loaded.long_documents == "split" and loaded.passage_overlap == 8
    for query in ("seoul korea city", "cancer", "brain"):
        assert [(h.document.id, round(h.score, 5)) for h in loaded.search(query, k=5)] == [
            (h.document.id, round(h.score, 5)) for h in split.search(query, k=5)
        ]
    with pytest.raises(IndexLoadError, match="long_documents"):
        FaissIndex.load(path, backend, long_documents="truncate")
    import numpy as np

    owners = np.load(path / "passages.npy")
    np.save(path / "passages.npy", owners[::-1].copy())  # same size, wrong order: caught by the checksum
    with pytest.raises(IndexLoadError, match="checksum"):
        FaissIndex.load(path, backend)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"].pop("passages.npy")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="expected"):
        FaissIndex.load(path, backend)
    with pytest.raises(ValueError, match="long_documents"):
        FaissIndex(backend, long_documents="chunk")


def test_a_save_interrupted_between_its_renames_is_recovered_on_load(index, tmp_path, tiny_bi_path, monkeypatch):
    """A crash after the old index was moved aside and before the new one moved in leaves no index at the path;
    the next load puts the old one back (and so does the next save, before writing)."""
    from rerank_plugins.first_stage import load_first_stage, persistence

    index.save(tmp_path / "idx")
    before = sorted(d.id for d in index.documents)
    index.add_texts(["one more"])
    calls = []
    real_replace = os.replace

    def crash_on_second_rename(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        real_replace(source, destination)

    monkeypatch.setattr(persistence.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx")
    monkeypatch.setattr(persistence.os, "replace", real_replace)
    assert not (tmp_path / "idx").exists() and any(p.name.startswith(".idx.old-") for p in tmp_path.iterdir())
    loaded = load_first_stage(tmp_path / "idx", get_bi_encoder(tiny_bi_path))
    assert sorted(d.id for d in loaded.documents) == before
    assert not any(p.name.startswith(".idx.") for p in tmp_path.iterdir())


def test_a_search_does_not_wait_for_an_add_that_is_embedding(index):
    """Embedding is the slow part of an add: it runs outside the index lock, so searches are served meanwhile."""
    import threading

    started, release = threading.Event(), threading.Event()
    encode = index.embedder.encode_documents

    def slow_encode(texts, **kwargs):
        started.set()
        assert release.wait(10), "the search never finished while the add was embedding"
        return encode(texts, **kwargs)

    index.embedder.encode_documents = slow_encode
    try:
        adding = threading.Thread(
            target=index.add_texts, args=(["a new document about rivers"],), kwargs={"ids": ["new"]}
        )
        adding.start()
        assert started.wait(10)
        found = []
        searching = threading.Thread(target=lambda: found.append(index.search("cancer", k=3)))
        searching.start()
        searching.join(5)
        searched_while_adding = not searching.is_alive()
        release.set()
        adding.join(10)
        searching.join(10)
    finally:
        del index.embedder.encode_documents
    assert searched_while_adding and found[0]
    assert index.get_by_ids(["new"])
