"""Every adapter pair asking for the same model shares one loaded backend instance."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from rerank_plugins import langchain as lc  # noqa: E402
from rerank_plugins import llamaindex as li  # noqa: E402


def test_cross_encoder_adapters_share_one_backend(tiny_cross_path):
    model = str(tiny_cross_path)
    assert lc.CrossEncoderReranker(model=model).backend is li.CrossEncoderRerank(model=model).backend


def test_bi_encoder_adapters_share_one_backend(tiny_bi_path):
    model = str(tiny_bi_path)
    assert lc.BiEncoderEmbeddings(model=model).backend is li.BiEncoderEmbedding(model_name=model).backend


def test_retrievers_share_with_the_adapters_they_were_built_from(tiny_bi_path, tiny_cross_path):
    from langchain_core.documents import Document
    from llama_index.core.schema import TextNode

    lc_retriever = lc.TwoStageRetriever.from_documents(
        [Document(page_content="cancer risk")],
        lc.BiEncoderEmbeddings(model=str(tiny_bi_path)),
        lc.CrossEncoderReranker(model=str(tiny_cross_path)),
    )
    li_retriever = li.TwoStageRetriever.from_nodes(
        [TextNode(text="cancer risk")],
        li.BiEncoderEmbedding(model_name=str(tiny_bi_path)),
        li.CrossEncoderRerank(model=str(tiny_cross_path)),
    )
    assert lc_retriever.index.dense.embedder is li_retriever.index.dense.embedder  # the hybrid's dense sides
    assert lc_retriever.reranker.backend is li_retriever.reranker.backend


def test_an_existing_backend_can_be_passed_in(tiny_cross_path):
    backend = lc.CrossEncoderReranker(model=str(tiny_cross_path)).backend
    assert li.CrossEncoderRerank(backend=backend).backend is backend
    with pytest.raises(TypeError, match="CrossEncoderBackend"):
        li.CrossEncoderRerank(backend="not a backend")


def test_runtime_is_part_of_what_is_shared(tiny_cross_path):
    pytest.importorskip("onnxruntime")
    model = str(tiny_cross_path)
    onnx_lc = lc.CrossEncoderReranker(model=model, runtime="onnx")
    assert onnx_lc.backend is li.CrossEncoderRerank(model=model, runtime="onnx").backend
    assert onnx_lc.backend is not lc.CrossEncoderReranker(model=model).backend
    assert onnx_lc.backend.runtime == "onnx"
