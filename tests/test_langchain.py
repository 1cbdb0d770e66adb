"""LangChain adapters: standard Embeddings tests, compressor invariants, retriever sync/async/batch/LCEL."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("langchain_core")
from langchain_core.documents import Document  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker, TwoStageRetriever  # noqa: E402
from rerank_plugins.models.cross_encoder import CrossEncoderBackend  # noqa: E402

TEXTS = ["cancer gene risk", "heart blood dose", "brain immune virus", "seoul korea city", "the cells protein"]


class _TinyBiEncoderParams:
    """What LangChain's standard embedding tests need: the class and how to build it (a tiny model)."""

    @pytest.fixture(autouse=True)
    def _model_path(self, tiny_bi_path):
        type(self)._path = str(tiny_bi_path)

    @property
    def embeddings_class(self):
        return BiEncoderEmbeddings

    @property
    def embedding_model_params(self):
        return {"model": self._path}


class TestBiEncoderEmbeddingsUnit(_TinyBiEncoderParams, EmbeddingsUnitTests):
    pass


class TestBiEncoderEmbeddingsIntegration(_TinyBiEncoderParams, EmbeddingsIntegrationTests):
    pass


def _uncached(path) -> CrossEncoderBackend:
    """A backend of its own without a score cache: two paths compared must both compute their scores."""
    return CrossEncoderBackend(path, cache_size=0)


def _assert_same_ranking(got: list[Document], want: list[Document]) -> None:
    """What two ways of reranking must agree on: which documents, in which order, and their scores (to 1e-5)."""
    assert [d.id for d in got] == [d.id for d in want]
    assert [(d.page_content, _without_score(d)) for d in got] == [(d.page_content, _without_score(d)) for d in want]
    assert [d.metadata["rerank_score"] for d in got] == pytest.approx(
        [d.metadata["rerank_score"] for d in want], abs=1e-5
    )


def _without_score(document: Document) -> dict:
    return {k: v for k, v in document.metadata.items() if k != "rerank_score"}


@pytest.fixture()
def documents():
    return [Document(page_content=t, metadata={"n": i, "score": 0.1 * i}, id=f"doc-{i}") for i, t in enumerate(TEXTS)]


def test_compressor_returns_sorted_copies_and_never_mutates(tiny_cross_path, documents):
    before = copy.deepcopy(documents)
    reranker = CrossEncoderReranker(backend=_uncached(tiny_cross_path), top_n=3)
    out = reranker.compress_documents(documents, "cancer risk")
    assert documents == before
    assert len(out) == 3 and all(d not in documents or d is not documents[d.metadata["n"]] for d in out)
    scores = [d.metadata["rerank_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    for d in out:
        assert d.metadata["rerank_scale"] == "raw"
        assert d.metadata["retrieval_score"] == pytest.approx(0.1 * d.metadata["n"])
        assert d.id == f"doc-{d.metadata['n']}" and d.page_content == TEXTS[d.metadata["n"]]
    expected = _uncached(tiny_cross_path).rank("cancer risk", TEXTS, top_n=3)  # computed again, not cached
    assert [d.metadata["n"] for d in out] == [r.index for r in expected]
    assert scores == pytest.approx([r.score for r in expected], abs=1e-5)


def test_compressor_sigmoid_threshold_and_min_keep(tiny_cross_path, documents):
    strict = CrossEncoderReranker(model=str(tiny_cross_path), top_n=None, scale="sigmoid", score_threshold=1.01)
    assert strict.compress_documents(documents, "cancer") == []
    kept = CrossEncoderReranker(
        model=str(tiny_cross_path), top_n=None, scale="sigmoid", score_threshold=1.01, min_keep=2
    )
    out = kept.compress_documents(documents, "cancer")
    assert len(out) == 2 and all(0 <= d.metadata["rerank_score"] <= 1 for d in out)


def test_compressor_validates_options_at_construction(tiny_cross_path):
    with pytest.raises(ValueError, match="top_n"):
        CrossEncoderReranker(model=str(tiny_cross_path), top_n=0)
    with pytest.raises(ValueError):
        CrossEncoderReranker(model=str(tiny_cross_path), scale="softmax")


def test_compressor_rejects_non_documents(tiny_cross_path):
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        CrossEncoderReranker(model=str(tiny_cross_path)).compress_documents(["plain string"], "q")


async def test_async_compress_matches_sync(tiny_cross_path, documents):
    reranker = CrossEncoderReranker(backend=_uncached(tiny_cross_path), top_n=3)
    assync = await reranker.acompress_documents(documents, "cancer risk")
    sync = reranker.compress_documents(documents, "cancer risk")
    _assert_same_ranking(assync, sync)


@pytest.fixture()
def retriever(tiny_bi_path, tiny_cross_path, documents):
    return TwoStageRetriever.from_documents(
        documents,
        BiEncoderEmbeddings(model=str(tiny_bi_path)),
        CrossEncoderReranker(backend=_uncached(tiny_cross_path), top_n=2),
        top_k=4,
    )


def test_retriever_invoke_async_and_batch_agree(retriever):
    sync = retriever.invoke("cancer risk")
    assert len(sync) == 2 and {"retrieval_score", "rerank_score", "rerank_scale"} <= set(sync[0].metadata)
    assert sync[0].metadata["rerank_score"] >= sync[1].metadata["rerank_score"]
    batched = retriever.batch(["cancer risk", "korea city"])
    _assert_same_ranking(batched[0], sync)
    assert len(batched[1]) == 2


async def test_retriever_ainvoke(retriever):
    _assert_same_ranking(await retriever.ainvoke("cancer risk"), retriever.invoke("cancer risk"))


def test_retriever_without_reranker_returns_first_stage_top_n(tiny_bi_path, documents):
    plain = TwoStageRetriever.from_documents(documents, BiEncoderEmbeddings(model=str(tiny_bi_path)), top_n=3)
    out = plain.invoke("cancer gene risk")
    assert len(out) == 3 and out[0].page_content == "cancer gene risk" and "rerank_score" not in out[0].metadata


def test_retriever_can_split_long_documents(tiny_bi_path, documents):
    long = Document(page_content=" ".join(f"gene{i}" for i in range(40)) + " seoul korea city", id="long")
    split = TwoStageRetriever.from_documents(
        [*documents, long], BiEncoderEmbeddings(model=str(tiny_bi_path)), top_k=10, top_n=10, long_documents="split"
    )
    dense = split.index.dense  # the default hybrid's dense side
    assert dense.long_documents == "split" and dense._faiss.ntotal > len(documents) + 1
    out = split.invoke("seoul korea city")
    assert len(out) == len(documents) + 1 and len({d.id for d in out}) == len(out)  # the long one appears once


def test_retriever_in_an_lcel_chain(retriever):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    prompt = ChatPromptTemplate.from_template("Context: {context}\nQuestion: {question}")
    seen = []

    def format_docs(docs):
        seen.extend(docs)
        return "\n".join(d.page_content for d in docs)

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | FakeListChatModel(responses=["an answer"])
        | StrOutputParser()
    )
    assert chain.invoke("cancer risk") == "an answer"
    assert len(seen) == 2


def test_retriever_save_and_load(retriever, tmp_path, tiny_bi_path, tiny_cross_path):
    retriever.save(tmp_path / "idx")
    loaded = TwoStageRetriever.load(
        tmp_path / "idx",
        BiEncoderEmbeddings(model=str(tiny_bi_path)),
        CrossEncoderReranker(backend=_uncached(tiny_cross_path), top_n=2),
        top_k=4,
    )
    _assert_same_ranking(loaded.invoke("cancer risk"), retriever.invoke("cancer risk"))
