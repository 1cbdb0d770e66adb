"""Hybrid first stage: fusion arithmetic, the limits dense_weight 1/0, both sides in step, persistence, async."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage.dense import FaissIndex
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.first_stage.persistence import IndexLoadError, sha256_file
from rerank_plugins.schema import DENSE_SCORE, LEXICAL_SCORE, Document

WORDS = [
    "cells",
    "protein",
    "gene",
    "cancer",
    "risk",
    "patients",
    "expression",
    "disease",
    "mice",
    "blood",
    "human",
    "treatment",
    "study",
    "effect",
    "levels",
    "dna",
    "rna",
    "brain",
    "heart",
    "liver",
    "immune",
    "virus",
    "infection",
    "drug",
    "dose",
    "trial",
    "results",
    "response",
    "growth",
]
RARE = [f"code{i}x" for i in range(40)]
"""One rare term per document: BM25 finds its document at once, the tiny model's tokenizer cannot even spell it."""
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=6) + [RARE[i]]) for i in range(40)]
QUERIES = ["cancer gene risk", "brain heart liver", "immune virus infection dose", f"drug {RARE[7]}"]


@pytest.fixture()
def embedder(tiny_bi_path):
    return get_bi_encoder(tiny_bi_path)


@pytest.fixture()
def hybrid(embedder) -> HybridIndex:
    return HybridIndex.from_texts(
        TEXTS, embedder, ids=[f"d{i}" for i in range(len(TEXTS))], analyzer="english", candidates=10
    )


def ids(hits) -> list[str]:
    return [h.document.id for h in hits]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_weight_one_is_the_dense_ranking_and_zero_the_lexical_one(hybrid, fusion):
    for query in QUERIES:
        hybrid.fusion, hybrid.dense_weight = fusion, 1.0
        dense = hybrid.dense.search(query, k=8)
        assert ids(hybrid.search(query, k=8)) == ids(dense)
        hybrid.dense_weight = 0.0
        lexical = hybrid.lexical.search(query, k=8)
        fused = hybrid.search(query, k=8)
        assert ids(fused[: len(lexical)]) == ids(lexical)
        assert all(h.sources[LEXICAL_SCORE] is None for h in fused[len(lexical) :])  # then the dense-only ones


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_fusion_finds_what_only_bm25_ranks_high(hybrid, fusion):
    hybrid.fusion = fusion
    # documents the dense side ranks far down for their own rare code: only the lexical side knows them
    dense_misses = [i for i in range(len(TEXTS)) if f"d{i}" not in ids(hybrid.dense.search(RARE[i], k=10))]
    assert len(dense_misses) >= 5
    for i in dense_misses:
        assert f"d{i}" in ids(hybrid.search(RARE[i], k=3))


def test_fused_scores_follow_the_formulas(hybrid):
    query, depth = "cancer gene risk", 10
    dense = {h.document.id: (r, h.score) for r, h in enumerate(hybrid.dense.search(query, depth), 1)}
    lexical = {h.document.id: (r, h.score) for r, h in enumerate(hybrid.lexical.search(query, depth), 1)}
    assert dense.keys() != lexical.keys() and dense.keys() & lexical.keys()

    def normalised(side, doc_id):
        low, high = min(s for _, s in side.values()), max(s for _, s in side.values())
        return (side[doc_id][1] - low) / (high - low) if doc_id in side else 0.0

    hybrid.dense_weight = 0.3
    for fusion in ("weighted", "rrf"):
        hybrid.fusion = fusion
        hits = hybrid.search(query, k=depth)  # each side then returns max(k, candidates) = depth
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for hit in hits:
            doc_id = hit.document.id
            if fusion == "weighted":
                expected = 0.3 * normalised(dense, doc_id) + 0.7 * normalised(lexical, doc_id)
            else:
                expected = sum(
                    w / (60 + side[doc_id][0]) for w, side in ((0.3, dense), (0.7, lexical)) if doc_id in side
                )
            assert hit.score == pytest.approx(expected)
            assert hit.sources[DENSE_SCORE] == (dense[doc_id][1] if doc_id in dense else None)
            assert hit.sources[LEXICAL_SCORE] == (lexical[doc_id][1] if doc_id in lexical else None)
            assert hybrid.documents[hit.position] == hit.document
        assert any(h.sources[DENSE_SCORE] is not None and h.sources[LEXICAL_SCORE] is not None for h in hits)


def test_delete_and_upsert_keep_both_sides_in_step(hybrid):
    assert hybrid.delete(["d3", "d7", "nope"]) == 2
    assert [d.id for d in hybrid.dense.documents] == [d.id for d in hybrid.lexical.documents]
    assert len(hybrid) == len(TEXTS) - 2
    assert not {"d3", "d7"} & set(ids(hybrid.search(RARE[7], k=40)))
    hybrid.upsert_documents([Document("volcano lava eruption", "d5")])
    assert [d.id for d in hybrid.dense.documents] == [d.id for d in hybrid.lexical.documents]
    assert hybrid.search("volcano", k=1)[0].document == Document("volcano lava eruption", "d5")
    assert hybrid.get_by_ids(["d5"]) == [Document("volcano lava eruption", "d5")]
    hybrid.add_texts(["glacier ice"])
    assert hybrid.documents[-1].id == "0" and len(hybrid.lexical) == len(hybrid.dense)  # no numeric id was in use


def test_a_failed_add_is_undone_on_both_sides(hybrid, monkeypatch):
    def broken(documents):
        raise RuntimeError("embedding failed")

    monkeypatch.setattr(hybrid.dense, "add_documents", broken)
    with pytest.raises(RuntimeError, match="embedding failed"):
        hybrid.add_texts(["volcano lava"], ids=["v"])
    assert len(hybrid.lexical) == len(hybrid.dense) == len(TEXTS)
    assert hybrid.lexical.search("volcano") == []
    with pytest.raises(ValueError, match="duplicate"):
        hybrid.add_texts(["again"], ids=["d1"])
    assert len(hybrid.lexical) == len(hybrid.dense) == len(TEXTS)


def test_sides_must_hold_the_same_documents(embedder):
    dense = FaissIndex.from_texts(TEXTS[:3], embedder)
    with pytest.raises(ValueError, match="same documents"):
        HybridIndex(dense, LexicalIndex.from_texts(TEXTS[:2]))
    with pytest.raises(ValueError, match="different order"):
        HybridIndex(dense, LexicalIndex.from_texts([TEXTS[1], TEXTS[0], TEXTS[2]], ids=["1", "0", "2"]))
    with pytest.raises(TypeError, match="lexical"):
        HybridIndex(dense, dense)
    lexical = LexicalIndex.from_texts(TEXTS[:3])
    with pytest.raises(ValueError, match="fusion"):
        HybridIndex(dense, lexical, fusion="max")
    with pytest.raises(ValueError, match="dense_weight"):
        HybridIndex(dense, lexical, dense_weight=1.5)
    with pytest.raises(ValueError, match="candidates"):
        HybridIndex(dense, lexical, candidates=0)


def test_options_reach_each_side_and_empty_index(embedder):
    index = HybridIndex.from_texts([], embedder, k1=0.9, index_type="hnsw", fusion="rrf", rrf_k=10)
    description = index.describe()
    assert description["lexical"]["k1"] == 0.9 and description["dense"]["index_type"] == "hnsw"
    assert (description["fusion"], description["rrf_k"]) == ("rrf", 10)
    assert index.search_batch(["cancer", "gene"]) == [[], []]
    with pytest.raises(ValueError, match="empty"):
        index.save("unused")
    with pytest.raises(ValueError, match="k"):
        index.search("cancer", k=0)


def test_async_equals_sync(hybrid):
    assert asyncio.run(hybrid.asearch_batch(QUERIES, k=5)) == hybrid.search_batch(QUERIES, k=5)


def test_round_trip(hybrid, embedder, tmp_path):
    hybrid.fusion, hybrid.dense_weight = "rrf", 0.4
    path = hybrid.save(tmp_path / "hybrid")
    loaded = HybridIndex.load(path, embedder)
    assert loaded.describe() == hybrid.describe()
    assert loaded.search_batch(QUERIES, k=5) == hybrid.search_batch(QUERIES, k=5)
    assert HybridIndex.load(path, embedder, dense_weight=1.0).dense_weight == 1.0  # a search-time setting
    with pytest.raises(IndexLoadError, match="analyzer"):
        HybridIndex.load(path, embedder, analyzer="korean-bigram")


def _rewrite(directory: Path, name: str, content: str) -> None:
    """Replace a file of one side and update both manifests' checksums, so only the content check remains."""
    (directory / name).write_text(content, encoding="utf-8")
    side, file = name.split("/")
    for manifest_path, key in ((directory / side / "manifest.json", file), (directory / "manifest.json", name)):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["files"][key] = sha256_file(directory / name)
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        if manifest_path.parent == directory / side:
            top = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
            top["files"][f"{side}/manifest.json"] = sha256_file(manifest_path)
            (directory / "manifest.json").write_text(json.dumps(top), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "dense" / "documents.jsonl").write_text("{}\n"), "checksum"),
        (lambda p: (p / "lexical" / "tokens.jsonl").unlink(), "missing"),
        (lambda p: _rewrite(p, "lexical/tokens.jsonl", "[1]\n" * len(TEXTS)), "not a list of strings"),
        (
            lambda p: _rewrite(
                p,
                "lexical/documents.jsonl",
                (p / "lexical" / "documents.jsonl").read_text(encoding="utf-8").replace('"id": "d0"', '"id": "other"'),
            ),
            "same documents",
        ),
    ],
)
def test_damaged_hybrid_refused_untouched(hybrid, embedder, tmp_path, damage, message):
    path = hybrid.save(tmp_path / "hybrid")
    damage(path)
    before = snapshot(path)
    with pytest.raises(IndexLoadError, match=message):
        HybridIndex.load(path, embedder)
    assert snapshot(path) == before


def test_a_search_between_the_two_sides_of_an_add_or_delete_sees_neither_half(hybrid):
    """Adds and deletes change the lexical and dense sides one after the other; a search in between returns a
    document only while both sides hold it (never half-added, never half-deleted)."""
    hybrid.lexical.add_documents([Document("volcano lava eruption magma", "half")])  # an add stopped halfway
    assert "half" not in ids(hybrid.search("volcano lava eruption magma", k=40))
    hybrid.dense.add_documents([Document("volcano lava eruption magma", "half")])  # the add completes
    assert ids(hybrid.search("volcano lava eruption magma", k=1)) == ["half"]
    hybrid.dense.delete(["half"])  # a delete stopped halfway
    assert "half" not in ids(hybrid.search("volcano lava eruption magma", k=40))
