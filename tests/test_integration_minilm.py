"""Integration with the real packaged all-MiniLM-L6-v2, offline, through the hub id users would type."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from rerank_plugins import CrossEncoderBackend, get_bi_encoder

pytestmark = pytest.mark.integration
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture()
def offline(monkeypatch, minilm_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return minilm_path


def test_hub_id_loads_the_packaged_copy_and_embeds_meaningfully(offline):
    backend = get_bi_encoder(HUB_ID)
    assert backend.path == offline and backend.dimension == 384 and backend.max_length == 256
    query = backend.encode_queries(["A man is eating food."])[0]
    docs = backend.encode_documents(["A man is eating a piece of bread.", "A man is riding a white horse."])
    assert docs[0] @ query > docs[1] @ query + 0.2


def test_resolution_in_a_fresh_offline_process_is_fast(offline):
    code = (
        "import time; t=time.time(); from rerank_plugins import resolve_model_path; "
        f"print(resolve_model_path('{HUB_ID}')); assert time.time()-t < 20"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert str(offline) in result.stdout


def test_langchain_and_llamaindex_embeddings_agree(offline):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from rerank_plugins.langchain import BiEncoderEmbeddings
    from rerank_plugins.llamaindex import BiEncoderEmbedding

    lc, li = BiEncoderEmbeddings(model=HUB_ID), BiEncoderEmbedding(model_name=HUB_ID)
    assert lc.backend is li.backend
    lc.backend.cache_size = 0  # both calls compute: the second must not just read the first one's cached vector
    np.testing.assert_allclose(lc.embed_query("retrieval"), li.get_query_embedding("retrieval"), atol=1e-6)
    expected = lc.backend.model.encode_query(["retrieval"], normalize_embeddings=True)[0]
    np.testing.assert_allclose(li.get_query_embedding("retrieval"), expected, atol=1e-5)
    np.testing.assert_allclose(lc.embed_documents(["retrieval"])[0], expected, atol=1e-5)  # no prompts: the same


def test_an_embedding_model_is_refused_as_a_cross_encoder(offline):
    with pytest.raises(ValueError, match="not a sequence-classification cross-encoder"):
        CrossEncoderBackend(HUB_ID).score("query", ["document"])
