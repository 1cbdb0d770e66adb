"""Bi-encoder backend: shapes, normalisation, prompts, cache, truncation count, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_plugins import BiEncoderBackend, get_bi_encoder


def test_float32_normalised_output(tiny_bi_path):
    backend = get_bi_encoder(tiny_bi_path)
    vectors = backend.encode_documents(["cancer risk", "heart blood", ""])
    assert vectors.dtype == np.float32 and vectors.shape == (3, backend.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    raw = backend.encode_documents(["cancer risk"], normalize=False)
    assert not np.isclose(np.linalg.norm(raw), 1.0)


def test_empty_input_gives_empty_matrix(tiny_bi_path):
    backend = get_bi_encoder(tiny_bi_path)
    assert backend.encode_queries([]).shape == (0, backend.dimension)


def test_saved_prompts_are_applied(tmp_path, tiny_bi_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_bi_path))
    model.prompts = {"query": "query: ", "document": "passage: "}
    path = tmp_path / "prompted"
    model.save(str(path))
    backend = BiEncoderBackend(path, cache_size=0)
    plain = BiEncoderBackend(tiny_bi_path, cache_size=0)
    text = "cancer risk"
    np.testing.assert_allclose(backend.encode_queries([text]), plain.encode_documents(["query: " + text]), atol=1e-5)
    np.testing.assert_allclose(
        backend.encode_documents([text]), plain.encode_documents(["passage: " + text]), atol=1e-5
    )


def test_cache_hits_and_stays_bounded(tiny_bi_path):
    backend = BiEncoderBackend(tiny_bi_path, cache_size=4)
    first = backend.encode_documents(["a", "b", "c"])
    again = backend.encode_documents(["c", "b", "a"])
    assert backend.cache_hits == 3
    np.testing.assert_array_equal(first[::-1], again)
    backend.encode_documents([f"text {i}" for i in range(10)])
    assert len(backend._cache) == 4
    # queries and documents are cached separately (prompts may differ)
    backend.encode_queries(["text 9"])
    assert backend.cache_misses >= 14


def test_cache_can_be_turned_off(tiny_bi_path):
    backend = BiEncoderBackend(tiny_bi_path, cache_size=0)
    backend.encode_documents(["a", "a"])
    backend.encode_documents(["a"])
    assert backend.cache_hits == 0 and len(backend._cache) == 0
    with pytest.raises(ValueError, match="cache_size"):
        BiEncoderBackend(tiny_bi_path, cache_size=-1)


def test_count_truncated(tiny_bi_path):
    backend = get_bi_encoder(tiny_bi_path)
    assert (
        backend.count_truncated(["cancer " * 200, "short", "risk " * 62]) == 1
    )  # 62 + [CLS] + [SEP] = 64 fits exactly


@pytest.mark.parametrize("bad", ["a string", [1, 2], [None], ["ok", b"bytes"]])
def test_bad_input_types_name_the_argument(tiny_bi_path, bad):
    with pytest.raises(TypeError, match="texts"):
        get_bi_encoder(tiny_bi_path).encode_documents(bad)


def test_lone_surrogates_are_encoded_not_crashing(tiny_bi_path):
    vectors = get_bi_encoder(tiny_bi_path).encode_documents(["bad \ud800 text", "ctrl \x00\x07 chars"])
    assert np.isfinite(vectors).all()


def test_disk_cache_survives_a_new_backend_and_is_bounded(tiny_bi_path, tmp_path):
    db = tmp_path / "embeddings.sqlite"
    first = BiEncoderBackend(tiny_bi_path, cache_size=0, disk_cache=db)
    vectors = first.encode_documents(["a", "b", "c"])
    second = BiEncoderBackend(tiny_bi_path, cache_size=0, disk_cache=db)
    np.testing.assert_array_equal(second.encode_documents(["c", "a"]), vectors[[2, 0]])
    assert second.cache_hits == 2 and second.cache_misses == 0
    small = BiEncoderBackend(tiny_bi_path, cache_size=0, disk_cache=tmp_path / "small.sqlite", disk_cache_max_entries=2)
    small.encode_documents(["a", "b", "c", "d"])
    assert len(small._disk_cache()) == 2


def test_disk_cache_is_keyed_by_model_content(tiny_bi_path, tmp_path):
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    db = tmp_path / "embeddings.sqlite"
    BiEncoderBackend(tiny_bi_path, cache_size=0, disk_cache=db).encode_documents(["cancer risk"])
    changed = SentenceTransformer(str(tiny_bi_path))
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    changed.save(str(tmp_path / "changed"))
    other = BiEncoderBackend(tmp_path / "changed", cache_size=0, disk_cache=db)
    other.encode_documents(["cancer risk"])
    assert other.cache_hits == 0, "a changed model must not read another model's vectors"
    shutil.rmtree(tmp_path / "changed")


def test_embedding_cache_reaches_users_through_the_registry_adapters_and_cli(tiny_bi_path, tmp_path):
    """The on-disk cache is a documented option of get_bi_encoder, both embedding adapters and the CLI."""
    from rerank_plugins.cli import main
    from rerank_plugins.models import clear_registry

    db = tmp_path / "embeddings.sqlite"
    backend = get_bi_encoder(tiny_bi_path, disk_cache=db)
    assert backend is get_bi_encoder(tiny_bi_path, disk_cache=str(db)) is not get_bi_encoder(tiny_bi_path)
    backend.encode_documents(["cancer risk", "heart dose"])
    clear_registry()  # a new process, as far as the in-memory cache knows
    lc = pytest.importorskip("rerank_plugins.langchain")
    embeddings = lc.BiEncoderEmbeddings(model=str(tiny_bi_path), embedding_cache=str(db))
    embeddings.embed_documents(["cancer risk", "heart dose"])
    assert embeddings.backend.cache_hits == 2 and embeddings.backend.cache_misses == 0
    with pytest.raises(AttributeError, match="fixed"):
        embeddings.embedding_cache = None
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"query": "cancer", "positive": "cancer risk"}\n{"query": "heart", "positive": "heart dose"}\n')
    clear_registry()
    args = ["index", "--data", str(data), "--bi-encoder", str(tiny_bi_path), "--embedding-cache", str(db)]
    assert main([*args, "--output", str(tmp_path / "idx")]) == 0
    assert get_bi_encoder(tiny_bi_path, disk_cache=db).cache_hits == 2
