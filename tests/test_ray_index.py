"""Sharded builds on a local Ray (2 CPUs): the same answers as one process, resume after a worker fails, bad input.

Marked ``ray``: they start Ray (about 10 s) and its actors, so the default run leaves them to ``make test-slow``.
"""

from __future__ import annotations

import json
import random
import sys
from functools import partial
from pathlib import Path

import pytest

from conftest import WORDS
from rerank_plugins import get_bi_encoder
from rerank_plugins.data import beir_document_text
from rerank_plugins.first_stage import FaissIndex, IndexLoadError, load_first_stage
from rerank_plugins.first_stage.sharded import ShardedIndex, ShardedIndexWriter, build_sharded_index
from rerank_plugins.schema import Document

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from rerank_plugins.distributed import RayShardedIndex, build_index_ray  # noqa: E402 - needs ray

QUERIES = ["cancer gene risk", "seoul korea city", "heart blood dose", "dense vector index rerank", "the of and"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests folder
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"_id": f"d{i}", "title": rng.choice(WORDS), "text": " ".join(rng.choices(WORDS, k=10))} for i in range(n)]
    for i in range(0, n // 3, 4):  # repeated documents in different shards: equal scores
        rows[i + n // 3] = {**rows[i], "_id": f"d{i + n // 3}"}
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _single(rows: list[dict], embedder) -> FaissIndex:
    index = FaissIndex(embedder)
    index.add_documents([Document(beir_document_text(row), row["_id"]) for row in rows])
    return index


def _assert_same_answers(stage, reference, queries: list[str], k: int) -> None:
    for got, expected in zip(stage.search_batch(queries, k), reference.search_batch(queries, k)):
        assert [(h.document.id, h.position, h.document.text) for h in got] == [
            (h.document.id, h.position, h.document.text) for h in expected
        ]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-6)


def test_ray_build_answers_like_one_process(tiny_bi_path, tmp_path):
    rows = _rows(90)
    embedder = get_bi_encoder(tiny_bi_path)
    reference = _single(rows, embedder)
    queries = QUERIES + [beir_document_text(rows[0])]
    jsonl = build_index_ray(
        _write_jsonl(tmp_path / "corpus.jsonl", rows), tmp_path / "a", tiny_bi_path, shards=3, workers=2
    )
    stage = load_first_stage(jsonl, embedder)
    assert isinstance(stage, ShardedIndex) and [len(s) for s in stage.shards] == [30, 30, 30]
    for k in (1, 5, 100):
        _assert_same_answers(stage, reference, queries, k)

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "corpus.parquet")
    parquet = build_index_ray(tmp_path / "corpus.parquet", tmp_path / "b", tiny_bi_path, shards=2, workers=1)
    _assert_same_answers(ShardedIndex.load(parquet, embedder), reference, queries, 10)


def _fail_once(row: dict, *, marker: str) -> str:
    """Runs on a Ray worker: raise for the first document of the third shard, the first time only."""
    if row["_id"] == "d60" and not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("simulated worker failure")
    return beir_document_text(row)


def test_a_build_resumes_after_crashes_writing_every_shard_once(tiny_bi_path, tmp_path, monkeypatch):
    rows = _rows(90)
    corpus = _write_jsonl(tmp_path / "corpus.jsonl", rows)
    writes: list[int] = []
    original = ShardedIndexWriter.write

    def write_or_crash(self, number, documents, vectors):
        if number == 2 and "crashed" not in writes:
            writes.append("crashed")
            raise RuntimeError("simulated driver crash")
        writes.append(number)
        return original(self, number, documents, vectors)

    monkeypatch.setattr(ShardedIndexWriter, "write", write_or_crash)
    with pytest.raises(RuntimeError, match="simulated driver crash"):
        build_index_ray(corpus, tmp_path / "idx", tiny_bi_path, shards=3, workers=2)
    assert writes == [0, 1, "crashed"] and not (tmp_path / "idx" / "manifest.json").exists()
    text = partial(_fail_once, marker=str(tmp_path / "failed-once"))
    with pytest.raises(Exception, match="simulated worker failure"):  # shard 2's rows are all that is left
        build_index_ray(corpus, tmp_path / "idx", tiny_bi_path, shards=3, workers=2, document_text=text)
    assert writes == [0, 1, "crashed"]
    build_index_ray(corpus, tmp_path / "idx", tiny_bi_path, shards=3, workers=2, document_text=text)
    assert writes == [0, 1, "crashed", 2]
    embedder = get_bi_encoder(tiny_bi_path)
    _assert_same_answers(ShardedIndex.load(tmp_path / "idx", embedder), _single(rows, embedder), QUERIES, 10)


def test_bad_input_is_refused_before_any_embedding(tiny_bi_path, tmp_path):
    empty = _write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="empty"):
        build_index_ray(empty, tmp_path / "a", tiny_bi_path, shards=1)
    small = _write_jsonl(tmp_path / "small.jsonl", _rows(4))
    with pytest.raises(ValueError, match=r"shards \(9\) is larger than the corpus \(4 documents\)"):
        build_index_ray(small, tmp_path / "b", tiny_bi_path, shards=9)
    no_text = _write_jsonl(tmp_path / "no-text.jsonl", [{"_id": "x1", "title": "", "text": " "}])
    with pytest.raises(Exception, match="'x1' has no text"):
        build_index_ray(no_text, tmp_path / "c", tiny_bi_path, shards=1)
    (tmp_path / "notes.txt").write_text("not a corpus")
    with pytest.raises(ValueError, match="expected a BEIR folder"):
        build_index_ray(tmp_path / "notes.txt", tmp_path / "d", tiny_bi_path)


def test_shards_held_by_ray_actors_answer_like_the_threaded_fan_out(tiny_bi_path, tmp_path):
    embedder = get_bi_encoder(tiny_bi_path)
    documents = [Document(beir_document_text(row), row["_id"]) for row in _rows(60)]
    path = build_sharded_index(documents, embedder, tmp_path / "idx", shards=5)
    threaded = ShardedIndex.load(path, embedder)
    remote = RayShardedIndex(path, embedder, actors=2)
    try:
        assert len(remote) == 60 and remote.describe()["shards"] == 5
        for k in (1, 7, 60):
            got = [[(h.document.id, h.position, h.score) for h in q] for q in remote.search_batch(QUERIES, k)]
            assert got == [[(h.document.id, h.position, h.score) for h in q] for q in threaded.search_batch(QUERIES, k)]
    finally:
        remote.close()
    data = bytearray((path / "shard-00003" / "index.faiss").read_bytes())
    data[-1] ^= 0x01
    (path / "shard-00003" / "index.faiss").write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match="shard-00003"):
        RayShardedIndex(path, embedder, actors=2)
