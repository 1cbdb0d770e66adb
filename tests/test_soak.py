"""Soak: searches from several threads while another thread adds, deletes, upserts and saves.

Afterwards no call has raised and the index answers exactly as one rebuilt from its final documents; search
latencies are printed. A short run is in the default suite; a long one is marked slow.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage import HybridIndex, load_first_stage
from rerank_plugins.schema import Document

WORDS = "cancer gene risk heart blood dose brain immune virus seoul korea city cells protein mice liver drug".split()
QUERIES = ["cancer risk", "heart blood", "seoul city", "immune virus cells", "liver drug mice"]


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def soak(embedder, directory, seconds: float, searchers: int = 2) -> dict[str, float]:
    rng = random.Random(0)
    index = HybridIndex.from_texts(
        [_text(rng) for _ in range(60)], embedder, ids=[f"d{i}" for i in range(60)], analyzer="english"
    )
    errors: list[BaseException] = []
    latencies: list[float] = []
    writes = [0]
    stop = threading.Event()

    def search() -> None:
        local = random.Random(threading.get_ident())
        while not stop.is_set():
            start = time.perf_counter()
            try:
                hits = index.search(local.choice(QUERIES), k=10)
                assert len({h.document.id for h in hits}) == len(hits)
            except BaseException as error:  # noqa: BLE001 - every failure is reported below
                errors.append(error)
                return
            latencies.append(time.perf_counter() - start)

    def write() -> None:
        next_id = 1000
        try:
            while not stop.is_set():
                stored = [d.id for d in index.documents]
                action = rng.choice(("add", "delete", "upsert", "save"))
                if action == "add":
                    index.add_documents([Document(_text(rng), f"n{next_id}")])
                    next_id += 1
                elif action == "delete" and len(stored) > 20:
                    index.delete(rng.sample(stored, 2))
                elif action == "upsert":
                    index.upsert_documents([Document(_text(rng), rng.choice(stored))])
                elif action == "save":
                    index.save(directory)
                writes[0] += 1
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=search) for _ in range(searchers)] + [threading.Thread(target=write)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors, f"{len(errors)} calls raised, first: {errors[0]!r}"
    assert latencies and writes[0] > 5

    final = index.documents
    rebuilt = HybridIndex.from_texts([d.text for d in final], embedder, ids=[d.id for d in final], analyzer="english")
    for query in QUERIES:
        live, fresh = index.search(query, k=10), rebuilt.search(query, k=10)
        assert [h.document.id for h in live] == [h.document.id for h in fresh]
        np.testing.assert_allclose([h.score for h in live], [h.score for h in fresh], atol=1e-5)
    index.save(directory)
    assert sorted(d.id for d in load_first_stage(directory, embedder).documents) == sorted(d.id for d in final)
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"soak {seconds:.0f} s: {len(latencies)} searches, p50 {p50:.1f} ms, p99 {p99:.1f} ms, {writes[0]} writes")
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


def test_soak_short(tiny_bi_path, tmp_path):
    pytest.importorskip("bm25s")
    soak(get_bi_encoder(tiny_bi_path), tmp_path / "idx", seconds=3)


@pytest.mark.slow
def test_soak_long(tiny_bi_path, tmp_path):
    pytest.importorskip("bm25s")
    soak(get_bi_encoder(tiny_bi_path), tmp_path / "idx", seconds=120, searchers=4)
