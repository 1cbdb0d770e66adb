"""Sharded dense index without Ray: exact merge against one flat index, resumable builds, refusals on load."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest

from conftest import WORDS, build_tiny_models
from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage import FaissIndex, IndexLoadError, load_first_stage
from rerank_plugins.first_stage.sharded import ShardedIndex, ShardedIndexWriter, build_sharded_index, shard_name
from rerank_plugins.pipeline import TwoStagePipeline
from rerank_plugins.schema import Document

QUERIES = ["cancer gene risk", "seoul korea city", "heart blood dose", "dense vector index rerank", "the of and"]


def _corpus(n: int = 60, seed: int = 0) -> list[Document]:
    """Random word documents, with repeated texts under other ids (equal scores) spread over the corpus."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(WORDS, k=8)) for _ in range(n)]
    third = n // 3
    for i in range(0, third, 5):  # the same text at positions i, i + n/3 and i + 2n/3: ties across shards
        texts[i + third] = texts[i + 2 * third] = texts[i]
    return [Document(text, f"d{i}") for i, text in enumerate(texts)]


def _hits(stage, queries: list[str], k: int) -> list[list[tuple[str, int, float]]]:
    return [[(h.document.id, h.position, h.score) for h in hits] for hits in stage.search_batch(queries, k)]


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_search_is_identical_to_one_flat_index(tiny_bi_path, tmp_path, shards):
    embedder = get_bi_encoder(tiny_bi_path)
    documents = _corpus()
    single = FaissIndex(embedder)
    single.add_documents(documents)
    sharded = ShardedIndex.load(build_sharded_index(documents, embedder, tmp_path / "idx", shards=shards), embedder)
    assert len(sharded) == len(documents) and len(sharded.shards) == shards
    queries = QUERIES + [documents[0].text, documents[15].text]  # queries that tie exactly with repeated texts
    for k in (1, 4, 10, len(documents) + 5):
        assert _hits(sharded, queries, k) == _hits(single, queries, k)  # ids, positions and scores, exactly
    assert any(len({score for _, _, score in hits[:3]}) == 1 for hits in _hits(single, queries, 3))  # ties tested


async def test_sharded_async_search_and_pipeline_match_the_sync_search(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    path = build_sharded_index(_corpus(), embedder, tmp_path / "idx", shards=4)
    stage = load_first_stage(path, embedder)
    assert isinstance(stage, ShardedIndex) and stage.describe()["shards"] == 4
    hits = await stage.asearch_batch(QUERIES, 5)
    assert [[h.document.id for h in q] for q in hits] == [
        [h.document.id for h in q] for q in stage.search_batch(QUERIES, 5)
    ]
    results = TwoStagePipeline(stage, None, top_k=5).retrieve(QUERIES[0])
    assert [r.document.id for r in results] == [h.document.id for h in hits[0]]


def test_an_interrupted_build_resumes_writing_each_shard_once(tiny_bi_path, tmp_path, monkeypatch):
    embedder = get_bi_encoder(tiny_bi_path)
    documents = _corpus(40)
    writes: list[int] = []
    original = ShardedIndexWriter.write

    def write_then_fail(self, number, docs, vectors):
        if number == 2 and -1 not in writes:
            writes.append(-1)
            raise RuntimeError("simulated crash while the third shard is written")
        writes.append(number)
        return original(self, number, docs, vectors)

    monkeypatch.setattr(ShardedIndexWriter, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_sharded_index(documents, embedder, tmp_path / "idx", shards=4)
    assert not (tmp_path / "idx" / "manifest.json").exists()
    with pytest.raises(IndexLoadError, match="unfinished"):
        load_first_stage(tmp_path / "idx", embedder)
    (tmp_path / "idx" / ".shard-00002.tmp-leftover").mkdir()  # a half-written shard from a killed process
    build_sharded_index(documents, embedder, tmp_path / "idx", shards=4)
    assert writes == [0, 1, -1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "build.json",
        "manifest.json",
        *[shard_name(n) for n in range(4)],
    ]
    fresh = ShardedIndex.load(build_sharded_index(documents, embedder, tmp_path / "fresh", shards=4), embedder)
    resumed = ShardedIndex.load(tmp_path / "idx", embedder)
    assert _hits(resumed, QUERIES, 8) == _hits(fresh, QUERIES, 8)


def test_resuming_with_another_model_or_corpus_is_refused(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    build_sharded_index(_corpus(20), embedder, tmp_path / "idx", shards=2)
    (tmp_path / "idx" / "manifest.json").unlink()  # as if interrupted before the end
    other_model = get_bi_encoder(build_tiny_models(tmp_path / "other", seed=5)[0])
    with pytest.raises(ValueError, match="model_fingerprint"):
        build_sharded_index(_corpus(20), other_model, tmp_path / "idx", shards=2)
    with pytest.raises(ValueError, match="source"):
        build_sharded_index(_corpus(20, seed=1), embedder, tmp_path / "idx", shards=2)
    (tmp_path / "other-dir").mkdir()
    (tmp_path / "other-dir" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a sharded build"):
        build_sharded_index(_corpus(20), embedder, tmp_path / "other-dir", shards=2)


@pytest.fixture()
def built(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    return build_sharded_index(_corpus(30), embedder, tmp_path / "idx", shards=3), embedder


def test_a_missing_shard_is_refused_naming_it(built):
    path, embedder = built
    shutil.rmtree(path / "shard-00001")
    with pytest.raises(IndexLoadError, match="shard-00001"):
        ShardedIndex.load(path, embedder)


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/b", "..", ""])
def test_a_shard_name_that_is_a_path_is_refused(built, name):
    """The manifest says where shards are: a name must never lead out of the index directory."""
    import json

    path, embedder = built
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["shards"][0]["name"] = name
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="names a shard"):
        ShardedIndex.load(path, embedder)


@pytest.mark.parametrize("file", ["index.faiss", "documents.jsonl", "manifest.json"])
def test_a_corrupt_shard_is_refused_naming_it(built, file):
    path, embedder = built
    target = path / "shard-00002" / file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match="shard-00002"):
        ShardedIndex.load(path, embedder)


def test_a_shard_swapped_for_another_valid_one_is_refused(built):
    path, embedder = built
    shutil.rmtree(path / "shard-00000")
    shutil.copytree(path / "shard-00001", path / "shard-00000")  # a complete shard, in the wrong place
    with pytest.raises(IndexLoadError, match="shard-00000"):
        ShardedIndex.load(path, embedder)


def test_a_mismatched_model_is_refused(built, tmp_path):
    path, _ = built
    other = get_bi_encoder(build_tiny_models(tmp_path / "other", seed=3)[0])
    with pytest.raises(IndexLoadError, match="embeds differently"):
        ShardedIndex.load(path, other)


def test_manifest_records_the_plan(built):
    path, embedder = built
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == 30 and manifest["bounds"] == [0, 10, 20, 30]
    assert [s["count"] for s in manifest["shards"]] == [10, 10, 10]
    assert manifest["embedding_dimension"] == embedder.dimension and len(manifest["model_fingerprint"]) == 32


def test_bad_input_is_refused(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    with pytest.raises(ValueError, match="empty"):
        build_sharded_index([], embedder, tmp_path / "a", shards=1)
    with pytest.raises(ValueError, match=r"shards \(5\) is larger than the corpus \(3 documents\)"):
        build_sharded_index(_corpus(3), embedder, tmp_path / "b", shards=5)
    with pytest.raises(ValueError, match="shards must be >= 1"):
        build_sharded_index(_corpus(3), embedder, tmp_path / "c", shards=0)
    duplicated = _corpus(6)
    duplicated[5] = Document("x y", duplicated[0].id)
    with pytest.raises(ValueError, match="repeats document ids"):
        build_sharded_index(duplicated, embedder, tmp_path / "d", shards=2)
    assert not np.any([(tmp_path / name / "manifest.json").exists() for name in "abcd"])


def test_a_dense_index_cuts_and_orders_equal_scores_by_position(tiny_bi_path):
    """FAISS alone keeps whichever tied vectors its scan met first; the index must not depend on that."""
    index = FaissIndex(get_bi_encoder(tiny_bi_path))
    documents = _corpus()
    index.add_documents(documents)
    queries = QUERIES + [documents[0].text, documents[15].text]
    everything = _hits(index, queries, len(documents))
    for hits in everything:
        assert hits == sorted(hits, key=lambda hit: (-hit[2], hit[1]))
    for k in range(1, 12):
        assert _hits(index, queries, k) == [hits[:k] for hits in everything]


def test_cli_writes_searches_and_evaluates_a_sharded_index(tiny_bi_path, tmp_path, capsys):
    from rerank_plugins.cli import main
    from rerank_plugins.data import demo_data_path, load_dataset

    data, output = str(demo_data_path()), str(tmp_path / "idx")
    assert main(["index", "--shards", "3", "--data", data, "--bi-encoder", str(tiny_bi_path), "--output", output]) == 0
    corpus = load_dataset(data, "test").corpus
    assert f"Indexed {len(corpus)} documents (dense, sharded)" in capsys.readouterr().out
    assert main(["search", "--index", output, "--query", "cancer risk", "--bi-encoder", str(tiny_bi_path)]) == 0
    assert "1. cosine" in capsys.readouterr().out
    report = str(tmp_path / "report.json")
    args = ["evaluate", "--index", output, "--data", data, "--bi-encoder", str(tiny_bi_path), "--output", report]
    assert main(args) == 0
    assert json.loads((tmp_path / "report.json").read_text())["first_stage"]["shards"] == 3
    assert main(["index", "--workers", "2", "--data", data, "--output", str(tmp_path / "x")]) == 2  # needs ray


def test_searches_share_one_thread_pool_until_closed(built):
    path, embedder = built
    with ShardedIndex.load(path, embedder, threads=3) as index:
        first = index.search_batch(["topic 3"], 5)
        pool = index._executor
        assert pool is not None and index.search_batch(["topic 3"], 5) == first and index._executor is pool
    assert index._executor is None  # closed on exit; a later search starts a new pool
    assert index.search_batch(["topic 3"], 5) == first
    index.close()
