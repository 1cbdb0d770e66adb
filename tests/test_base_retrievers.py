"""Reranking on top of a retriever the user already has (LangChain and LlamaIndex), and our own first stages.

A user's retriever must behave as it does alone: its documents unchanged, its errors raised as they are, its
sync and async paths used, its run traced under ours. Our first stages (dense, lexical, hybrid) round-trip
through save/load.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever as LCBaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402
from langchain_core.tracers.context import collect_runs  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402
from llama_index.core.base.base_retriever import BaseRetriever as LIBaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import Field  # noqa: E402

from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker  # noqa: E402
from rerank_plugins.langchain import TwoStageRetriever as LCTwoStage  # noqa: E402
from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank  # noqa: E402
from rerank_plugins.llamaindex import TwoStageRetriever as LITwoStage  # noqa: E402

TEXTS = [
    "cancer gene risk",
    "heart blood dose",
    "brain immune virus",
    "seoul korea city",
    "the cells protein",
    "music film history",
    "river mountain king",
    "dna rna expression",
]
QUERY = "cancer risk"


def _documents() -> list[Document]:
    return [Document(page_content=t, metadata={"n": i, "tags": ["x"]}, id=f"d{i}") for i, t in enumerate(TEXTS)]


def _ids(documents: list[Document]) -> list[str]:
    return [d.id for d in documents]


class ScoredRetriever(LCBaseRetriever):
    """A retriever that puts its own ``score`` in metadata, counts which path ran, and can fail.

    It hands out its stored documents themselves (not copies), so any mutation downstream would show.
    """

    documents: list[Document]
    k: int = 6
    fail: bool = False
    fail_on: str | None = None
    calls: dict[str, int] = Field(default_factory=lambda: {"sync": 0, "async": 0})

    def _found(self, query: str) -> list[Document]:
        if self.fail or query == self.fail_on:
            raise RuntimeError("boom")
        return self.documents[: self.k]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        self.calls["sync"] += 1
        return self._found(query)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.calls["async"] += 1
        return self._found(query)


def _scored_documents() -> list[Document]:
    return [
        Document(page_content=t, metadata={"n": i, "score": 1.0 - 0.1 * i}, id=f"d{i}") for i, t in enumerate(TEXTS)
    ]


@pytest.fixture()
def embeddings(tiny_bi_path) -> BiEncoderEmbeddings:
    return BiEncoderEmbeddings(model=str(tiny_bi_path))


@pytest.fixture()
def reranker(tiny_cross_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(model=str(tiny_cross_path), top_n=3)


@pytest.fixture()
def vector_base(embeddings):
    store = InMemoryVectorStore(embeddings)
    store.add_documents(_documents())
    return store.as_retriever(search_kwargs={"k": 6})


@pytest.fixture()
def over_vector_store(vector_base, reranker) -> LCTwoStage:
    return LCTwoStage(base_retriever=vector_base, reranker=reranker)


# -- LangChain: a vector store's retriever as the first stage ------------------------------------------------


def test_reranks_what_the_vector_store_retriever_returned(over_vector_store, vector_base, reranker):
    base = vector_base.invoke(QUERY)
    out = over_vector_store.invoke(QUERY)
    assert len(base) == 6 and len(out) == 3
    assert set(_ids(out)) <= set(_ids(base))
    scores = [d.metadata["rerank_score"] for d in out]
    assert scores == sorted(scores, reverse=True)
    # InMemoryVectorStore's retriever puts no score in metadata, so there is no retrieval_score to carry
    assert all("score" not in d.metadata for d in base)
    assert all("retrieval_score" not in d.metadata for d in out)
    assert _ids(out) == _ids(reranker.compress_documents(base, QUERY))
    for d in out:
        assert d.page_content == TEXTS[d.metadata["n"]] and d.metadata["tags"] == ["x"]


async def test_ainvoke_batch_and_abatch_agree_with_invoke(over_vector_store):
    queries = [QUERY, "seoul city", "brain virus"]
    expected = [over_vector_store.invoke(q) for q in queries]
    assert await over_vector_store.ainvoke(QUERY) == expected[0]
    assert over_vector_store.batch(queries) == expected
    assert await over_vector_store.abatch(queries) == expected


def test_inside_lcel_chains(over_vector_store):
    seen: list[Document] = []

    def format_docs(documents: list[Document]) -> str:
        seen.extend(documents)
        return "\n".join(d.page_content for d in documents)

    chain = over_vector_store | RunnableLambda(format_docs)
    assert chain.invoke(QUERY) == "\n".join(d.page_content for d in over_vector_store.invoke(QUERY))
    assert len(seen) == 3
    both = {"context": over_vector_store | RunnableLambda(format_docs), "question": RunnablePassthrough()}
    answer = (RunnablePassthrough() | both).invoke(QUERY)
    assert answer["question"] == QUERY and answer["context"].count("\n") == 2
    assert len((over_vector_store | RunnableLambda(format_docs)).batch([QUERY, "seoul city"])) == 2


def test_without_base_scores_fusion_is_refused_clearly(vector_base, tiny_cross_path):
    fused = LCTwoStage(
        base_retriever=vector_base,
        reranker=CrossEncoderReranker(model=str(tiny_cross_path), top_n=3, fusion_weight=0.5),
    )
    with pytest.raises(ValueError, match="first-stage score"):
        fused.invoke(QUERY)


def test_base_score_becomes_retrieval_score_and_fusion_uses_it(reranker, tiny_cross_path):
    base = ScoredRetriever(documents=_scored_documents())
    out = LCTwoStage(base_retriever=base, reranker=reranker).invoke(QUERY)
    assert len(out) == 3
    for d in out:
        assert d.metadata["retrieval_score"] == pytest.approx(1.0 - 0.1 * d.metadata["n"])
        assert d.metadata["score"] == d.metadata["retrieval_score"]
    fused = LCTwoStage(
        base_retriever=base,
        reranker=CrossEncoderReranker(model=str(tiny_cross_path), top_n=3, fusion_weight=0.5),
    ).invoke(QUERY)
    assert len(fused) == 3 and all("fused_score" in d.metadata for d in fused)


async def test_base_documents_are_never_mutated(reranker):
    base = ScoredRetriever(documents=_scored_documents())
    before = copy.deepcopy(base.documents)
    retriever = LCTwoStage(base_retriever=base, reranker=reranker)
    out = [*retriever.invoke(QUERY), *await retriever.ainvoke(QUERY), *retriever.batch([QUERY, "seoul"])[1]]
    out += (await retriever.abatch([QUERY]))[0]
    assert base.documents == before
    assert all(all(d is not b for b in base.documents) for d in out)
    assert all("rerank_score" not in b.metadata for b in base.documents)


async def test_a_base_error_surfaces_as_itself(reranker):
    retriever = LCTwoStage(base_retriever=ScoredRetriever(documents=_scored_documents(), fail=True), reranker=reranker)
    with pytest.raises(RuntimeError, match="boom"):
        retriever.invoke(QUERY)
    with pytest.raises(RuntimeError, match="boom"):
        await retriever.ainvoke(QUERY)
    with pytest.raises(RuntimeError, match="boom"):
        retriever.batch([QUERY, "seoul"])
    returned = await retriever.abatch([QUERY], return_exceptions=True)
    assert isinstance(returned[0], RuntimeError) and str(returned[0]) == "boom"


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_base_error_on_one_query_fails_only_that_query_in_a_batch(reranker, use_async):
    retriever = LCTwoStage(
        base_retriever=ScoredRetriever(documents=_scored_documents(), fail_on="bad"), reranker=reranker
    )
    queries = [QUERY, "bad", "seoul"]
    with collect_runs() as collected:
        if use_async:
            out = await retriever.abatch(queries, return_exceptions=True)
        else:
            out = retriever.batch(queries, return_exceptions=True)
    assert out[0] == retriever.invoke(QUERY) and out[2] == retriever.invoke("seoul")
    assert isinstance(out[1], RuntimeError) and str(out[1]) == "boom"
    runs = sorted(collected.traced_runs, key=lambda r: queries.index(r.inputs["query"]))
    assert [r.error is None for r in runs] == [True, False, True]
    assert "boom" in runs[1].error and runs[1].child_runs[0].error  # the base's run failed too
    with pytest.raises(RuntimeError, match="boom"):
        await retriever.abatch(queries) if use_async else retriever.batch(queries)


async def test_the_base_sync_and_async_paths_are_the_ones_used(reranker):
    base = ScoredRetriever(documents=_scored_documents())
    retriever = LCTwoStage(base_retriever=base, reranker=reranker)
    retriever.invoke(QUERY)
    retriever.batch([QUERY, "seoul"])
    assert base.calls == {"sync": 3, "async": 0}
    await retriever.ainvoke(QUERY)
    await retriever.abatch([QUERY, "seoul"])
    assert base.calls == {"sync": 3, "async": 3}


async def test_the_base_run_nests_under_ours(over_vector_store):
    with collect_runs() as sync_runs:
        over_vector_store.invoke(QUERY)
    with collect_runs() as async_runs:
        await over_vector_store.ainvoke(QUERY)
    for collected in (sync_runs, async_runs):
        (ours,) = collected.traced_runs
        assert ours.name == "TwoStageRetriever" and ours.run_type == "retriever"
        assert [(c.name, c.run_type) for c in ours.child_runs] == [("VectorStoreRetriever", "retriever")]
        assert ours.child_runs[0].parent_run_id == ours.id and ours.error is None


def test_top_k_caps_the_base_candidates(tiny_cross_path):
    base = ScoredRetriever(documents=_scored_documents(), k=8)
    everything = CrossEncoderReranker(model=str(tiny_cross_path), top_n=None)
    out = LCTwoStage(base_retriever=base, reranker=everything, top_k=2).invoke(QUERY)
    assert sorted(_ids(out)) == ["d0", "d1"]
    plain = LCTwoStage(base_retriever=base, top_k=4, top_n=10).invoke(QUERY)
    assert _ids(plain) == ["d0", "d1", "d2", "d3"]  # without a reranker: the base's own order, capped


def test_index_construction_still_works(embeddings, reranker):
    built = LCTwoStage.from_documents(_documents(), embeddings, reranker)
    again = LCTwoStage(index=built.first_stage, reranker=reranker)
    assert again.index is built.first_stage and again.invoke(QUERY) == built.invoke(QUERY)
    with pytest.raises(ValueError, match="exactly one"):
        LCTwoStage(index=built.first_stage, base_retriever=ScoredRetriever(documents=[]), reranker=reranker)
    with pytest.raises(TypeError, match="own documents"):
        LCTwoStage(base_retriever=ScoredRetriever(documents=[])).save("/nonexistent")


# -- LangChain: our own first stages -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "lexical", "hybrid"])
def test_from_documents_each_kind_saves_loads_and_deletes(kind, embeddings, tiny_cross_path, tmp_path):
    def make_reranker() -> CrossEncoderReranker:
        return CrossEncoderReranker(model=str(tiny_cross_path), top_n=3)

    retriever = LCTwoStage.from_documents(
        _documents(), embeddings if kind != "lexical" else None, make_reranker(), first_stage=kind
    )
    out = retriever.invoke(QUERY)
    assert out and all("rerank_score" in d.metadata for d in out)
    if kind == "lexical":
        assert _ids(out) == ["d0"]  # BM25 finds only the document sharing a word with the query
    retriever.save(tmp_path / kind)
    loaded = LCTwoStage.load(tmp_path / kind, embeddings, make_reranker())
    assert type(loaded.first_stage) is type(retriever.first_stage)
    assert loaded.invoke(QUERY) == out
    assert retriever.delete([out[0].id]) == 1
    assert out[0].id not in _ids(retriever.invoke(QUERY))
    assert out[0].id not in _ids(retriever.batch([QUERY])[0])


# -- LangChain standard retriever tests: built from documents, and over a base retriever --------------------


class _TinyModels:
    """The standard suite builds retrievers from properties; the tiny models' paths come from fixtures."""

    @pytest.fixture(autouse=True)
    def _paths(self, tiny_bi_path, tiny_cross_path):
        type(self)._bi, type(self)._cross = str(tiny_bi_path), str(tiny_cross_path)

    @property
    def retriever_query_example(self) -> str:
        return QUERY

    @property
    def num_results_arg_name(self) -> str:
        return "top_n"  # ours is top_n (constructor and per call); top_k is the first stage's candidate count


class TestFromDocumentsStandard(_TinyModels, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> Any:
        return LCTwoStage.from_documents  # builds the index, then a TwoStageRetriever with the other arguments

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "documents": _documents(),
            "embeddings": BiEncoderEmbeddings(model=self._bi),
            "reranker": CrossEncoderReranker(model=self._cross, top_n=2),
        }


class TestOverBaseRetrieverStandard(_TinyModels, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[LCTwoStage]:
        return LCTwoStage

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        store = InMemoryVectorStore(BiEncoderEmbeddings(model=self._bi))
        store.add_documents(_documents())
        return {
            "base_retriever": store.as_retriever(search_kwargs={"k": 6}),
            "reranker": CrossEncoderReranker(model=self._cross, top_n=2),
        }


# -- LlamaIndex: a VectorStoreIndex retriever as the first stage --------------------------------------------


def _nodes() -> list[TextNode]:
    return [TextNode(text=t, id_=f"n{i}", metadata={"n": i}) for i, t in enumerate(TEXTS)]


class FixedRetriever(LIBaseRetriever):
    """Hands out its stored NodeWithScore objects themselves; counts sync/async calls; can fail."""

    def __init__(self, nodes: list[NodeWithScore], fail: bool = False) -> None:
        super().__init__()
        self.nodes, self.fail, self.calls = nodes, fail, {"sync": 0, "async": 0}

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["sync"] += 1
        if self.fail:
            raise RuntimeError("boom")
        return self.nodes

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls["async"] += 1
        if self.fail:
            raise RuntimeError("boom")
        return self.nodes


@pytest.fixture()
def li_base(tiny_bi_path):
    from llama_index.core import VectorStoreIndex

    index = VectorStoreIndex(_nodes(), embed_model=BiEncoderEmbedding(model_name=str(tiny_bi_path)))
    return index.as_retriever(similarity_top_k=6)


@pytest.fixture()
def li_rerank(tiny_cross_path) -> CrossEncoderRerank:
    return CrossEncoderRerank(model=str(tiny_cross_path), top_n=3)


async def test_llamaindex_over_a_vector_index_retriever(li_base, li_rerank):
    retriever = LITwoStage(base_retriever=li_base, reranker=li_rerank)
    base = {n.node.node_id: n for n in li_base.retrieve(QUERY)}
    out = retriever.retrieve(QUERY)
    assert len(base) == 6 and len(out) == 3 and {n.node.node_id for n in out} <= set(base)
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    for n in out:
        assert n.node.metadata["retrieval_score"] == pytest.approx(base[n.node.node_id].score)
        assert n.node.metadata["rerank_score"] == pytest.approx(n.score)
    assert [(n.node.node_id, n.score) for n in await retriever.aretrieve(QUERY)] == [
        (n.node.node_id, n.score) for n in out
    ]
    assert [n.node.node_id for n in retriever.retrieve_batch([QUERY, "seoul"])[0]] == [n.node.node_id for n in out]
    assert all("rerank_score" not in n.node.metadata for n in li_base.retrieve(QUERY))  # the index's nodes are clean


async def test_llamaindex_inside_a_query_engine_sync_and_async(li_base, li_rerank):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    retriever = LITwoStage(base_retriever=li_base, reranker=li_rerank)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    expected = [n.node.node_id for n in retriever.retrieve(QUERY)]
    sync = engine.query(QUERY)
    assync = await engine.aquery(QUERY)
    for response in (sync, assync):
        assert [n.node.node_id for n in response.source_nodes] == expected
        assert all("retrieval_score" in n.node.metadata for n in response.source_nodes)


async def test_llamaindex_base_nodes_are_copied_never_mutated(li_rerank):
    given = [NodeWithScore(node=n, score=1.0 - 0.1 * i) for i, n in enumerate(_nodes())]
    before = [n.model_dump() for n in given]
    base = FixedRetriever(given)
    retriever = LITwoStage(base_retriever=base, reranker=li_rerank)
    out = [*retriever.retrieve(QUERY), *await retriever.aretrieve(QUERY), *retriever.retrieve_batch([QUERY])[0]]
    assert [n.model_dump() for n in given] == before
    assert all(all(o.node is not g.node and o is not g for g in given) for o in out)
    for o in out:
        assert o.node.metadata["retrieval_score"] == pytest.approx(1.0 - 0.1 * o.node.metadata["n"])
    assert base.calls == {"sync": 2, "async": 1}


async def test_llamaindex_base_error_surfaces(li_rerank):
    retriever = LITwoStage(base_retriever=FixedRetriever([], fail=True), reranker=li_rerank)
    with pytest.raises(RuntimeError, match="boom"):
        retriever.retrieve(QUERY)
    with pytest.raises(RuntimeError, match="boom"):
        await retriever.aretrieve(QUERY)


@pytest.mark.parametrize("kind", ["dense", "lexical", "hybrid"])
def test_llamaindex_from_nodes_each_kind_saves_and_loads(kind, tiny_bi_path, tiny_cross_path, tmp_path):
    embed = BiEncoderEmbedding(model_name=str(tiny_bi_path))
    retriever = LITwoStage.from_nodes(
        _nodes(),
        embed if kind != "lexical" else None,
        CrossEncoderRerank(model=str(tiny_cross_path), top_n=3),
        first_stage=kind,
    )
    out = [(n.node.node_id, n.score) for n in retriever.retrieve(QUERY)]
    assert out and (kind != "lexical" or [i for i, _ in out] == ["n0"])
    retriever.save(tmp_path / kind)
    loaded = LITwoStage.load(tmp_path / kind, embed, CrossEncoderRerank(model=str(tiny_cross_path), top_n=3))
    assert [(n.node.node_id, n.score) for n in loaded.retrieve(QUERY)] == out


@pytest.mark.parametrize("use_async", [False, True])
async def test_too_few_base_candidates_are_warned_about_once(tiny_cross_path, li_base, caplog, use_async):
    """A base retriever's own small k (LangChain vector stores default to 4) leaves the reranker nothing to choose."""
    reranker = CrossEncoderReranker(model=str(tiny_cross_path), top_n=3)
    few = LCTwoStage(base_retriever=ScoredRetriever(documents=_scored_documents(), k=3), reranker=reranker)
    for _ in range(2):
        await few.ainvoke(QUERY) if use_async else few.invoke(QUERY)
    assert caplog.text.count("no more than top_n=3") == 1 and "search_kwargs={'k': 30}" in caplog.text
    caplog.clear()
    enough = LCTwoStage(base_retriever=ScoredRetriever(documents=_scored_documents(), k=6), reranker=reranker)
    await enough.ainvoke(QUERY) if use_async else enough.batch([QUERY, QUERY])
    assert "no more than top_n" not in caplog.text

    li_few = LITwoStage(base_retriever=li_base, reranker=CrossEncoderRerank(model=str(tiny_cross_path), top_n=6))
    await li_few.aretrieve(QUERY) if use_async else li_few.retrieve(QUERY)
    assert "no more than top_n=6" in caplog.text and "similarity_top_k=30" in caplog.text
