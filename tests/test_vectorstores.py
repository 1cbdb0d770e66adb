"""Our dense index behind both frameworks' vector-store interfaces: standard suites, persistence, rerank on top."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
from langchain_core.documents import Document as LCDocument  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402
from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.embeddings import MockEmbedding  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from rerank_plugins import get_bi_encoder  # noqa: E402
from rerank_plugins.first_stage import FaissIndex, IndexLoadError  # noqa: E402
from rerank_plugins.first_stage.dense import INDEX_TYPES, VectorIndex  # noqa: E402
from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker  # noqa: E402
from rerank_plugins.langchain import FaissVectorStore as LangChainStore  # noqa: E402
from rerank_plugins.langchain import TwoStageRetriever as LangChainTwoStage  # noqa: E402
from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank  # noqa: E402
from rerank_plugins.llamaindex import FaissVectorStore as LlamaIndexStore  # noqa: E402
from rerank_plugins.llamaindex import TwoStageRetriever as LlamaIndexTwoStage  # noqa: E402
from rerank_plugins.schema import Document  # noqa: E402

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


def _snapshot(path):
    return {p.name: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in path.iterdir()}


class TableEmbeddings(Embeddings):
    """Vectors chosen by hand, so similarities (and MMR's choices) are known exactly."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table.get(t, [0.0, 0.0, 1.0]) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


class RolledEmbedding(DeterministicFakeEmbedding):
    """The same dimension as the fake embedding, other vectors: a different model in disguise."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [list(np.roll(v, 1)) for v in super().embed_documents(texts)]


# -- the model-free core ---------------------------------------------------------------------------------


def test_vector_index_takes_vectors_of_any_dimension_and_normalises_them():
    index = VectorIndex()
    assert index.search_vectors(np.ones((1, 3)), 2) == [[]] and index.dimension is None  # a query fixes nothing
    docs = [Document(f"d{i}", f"id{i}", {"even": i % 2 == 0}) for i in range(5)]
    vectors = np.eye(5, 7) * 10 + 0.01  # scaled: cosine must not depend on the norm
    assert index.add_vectors(docs, vectors) == [d.id for d in docs] and index.dimension == 7
    hits = index.search_vectors(vectors[[3]], k=2)[0]
    assert hits[0].document.id == "id3" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    evens = index.search_vectors(vectors[[3]], 5, where=lambda d: d.metadata["even"])[0]
    assert sorted(h.document.id for h in evens) == ["id0", "id2", "id4"]  # equally similar: any order
    with pytest.raises(ValueError, match="7"):
        index.add_vectors([Document("x", "x")], np.ones((1, 3)))
    with pytest.raises(ValueError, match="duplicate"):
        index.add_vectors([docs[0]], vectors[:1])
    index.add_vectors([Document("new", "id0")], vectors[[4]], replace=True)
    assert len(index) == 5 and index.get_by_ids(["id0"])[0].text == "new"
    assert {h.document.id for h in index.search_vectors(vectors[[4]], 2)[0]} == {"id0", "id4"}  # same vector now
    assert index.delete(["id1", "missing"]) == 1 and len(index) == 4
    with pytest.raises(ValueError, match="vectors for"):
        index.add_vectors([Document("a", "a"), Document("b", "b")], vectors[:1])


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_vector_index_save_load_checks_the_probe(tmp_path, index_type):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 12))
    index = VectorIndex(index_type=index_type)
    index.add_vectors([Document(f"t{i}", f"i{i}") for i in range(50)], vectors)
    probe = rng.normal(size=12)
    path = index.save(tmp_path / "v", embedding_model="table", probe_vector=probe)
    loaded = VectorIndex.load(path, probe=lambda text: probe * 3)
    assert loaded.index_type == index_type
    query = vectors[[7]]
    assert [(h.document.id, round(h.score, 5)) for h in loaded.search_vectors(query, 5)[0]] == [
        (h.document.id, round(h.score, 5)) for h in index.search_vectors(query, 5)[0]
    ]
    with pytest.raises(IndexLoadError, match="embeds differently"):
        VectorIndex.load(path, probe=lambda text: -probe)
    with pytest.raises(IndexLoadError, match="dimensions"):
        VectorIndex.load(path, probe=lambda text: np.ones(5))


# -- LangChain ------------------------------------------------------------------------------------------


class TestLangChainStandardSuite(VectorStoreIntegrationTests):
    """LangChain's own contract tests, sync and async, on every index type."""

    @pytest.fixture(params=INDEX_TYPES)
    def vectorstore(self, request) -> LangChainStore:
        return LangChainStore(self.get_embeddings(), index_type=request.param)


@pytest.fixture()
def fake_store() -> LangChainStore:
    return LangChainStore.from_texts(
        TEXTS, DeterministicFakeEmbedding(size=16), metadatas=[{"n": i, "even": i % 2 == 0} for i in range(len(TEXTS))]
    )


def test_langchain_scores_are_cosine_and_relevance_is_in_unit_range(fake_store):
    found = fake_store.similarity_search_with_score(TEXTS[2], k=3)
    assert found[0][0].page_content == TEXTS[2] and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert found[0][0].id and found[0][0].metadata == {"n": 2, "even": True}
    relevance = fake_store.similarity_search_with_relevance_scores(TEXTS[2], k=len(TEXTS))
    assert relevance[0][1] == pytest.approx(1.0, abs=1e-5) and all(0.0 <= s <= 1.0 for _, s in relevance)
    vector = fake_store.embeddings.embed_query(TEXTS[2])
    assert fake_store.similarity_search_by_vector(vector, k=1)[0].page_content == TEXTS[2]


def test_langchain_metadata_filter(fake_store):
    found = fake_store.similarity_search(TEXTS[1], k=3, filter={"even": True})
    assert len(found) == 3 and all(d.metadata["even"] for d in found)
    assert [d.metadata["n"] for d in fake_store.similarity_search(TEXTS[1], k=3, filter={"n": 5})] == [5]
    by_callable = fake_store.similarity_search(TEXTS[1], k=8, filter=lambda d: d.metadata["n"] > 5)
    assert sorted(d.metadata["n"] for d in by_callable) == [6, 7]
    assert fake_store.similarity_search(TEXTS[1], k=3, filter={"missing": None}) == []


def test_langchain_metadata_must_be_json(fake_store):
    with pytest.raises(TypeError, match="JSON"):
        fake_store.add_texts(["x"], metadatas=[{"when": object()}])


async def test_langchain_mmr_prefers_diverse_results_over_duplicates():
    table = {"query": [1.0, 0.2, 0.0], "apple": [1.0, 0.0, 0.0], "banana": [0.6, 0.8, 0.0], "cherry": [0.0, 0.0, 1.0]}
    store = LangChainStore(TableEmbeddings(table))
    store.add_texts(["apple", "apple", "apple", "banana", "cherry"], ids=["a1", "a2", "a3", "b", "c"])
    assert [d.page_content for d in store.similarity_search("query", k=2)] == ["apple", "apple"]
    diverse = store.max_marginal_relevance_search("query", k=2, fetch_k=5, lambda_mult=0.5)
    assert [d.page_content for d in diverse] == ["apple", "banana"] and diverse[0].id in {"a1", "a2", "a3"}
    assert [d.page_content for d in await store.amax_marginal_relevance_search("query", k=2, fetch_k=5)] == [
        "apple",
        "banana",
    ]
    similar_only = store.max_marginal_relevance_search("query", k=2, fetch_k=5, lambda_mult=1.0)
    assert [d.page_content for d in similar_only] == ["apple", "apple"]
    filtered = store.max_marginal_relevance_search("query", k=2, filter=lambda d: d.page_content != "banana")
    assert [d.page_content for d in filtered] == ["apple", "cherry"]
    assert LangChainStore(TableEmbeddings(table)).max_marginal_relevance_search("query") == []


def test_langchain_save_local_load_round_trip_and_refusals(fake_store, tmp_path, monkeypatch):
    path = fake_store.save_local(tmp_path / "store")
    assert sorted(p.name for p in path.iterdir()) == ["documents.jsonl", "index.faiss", "manifest.json"]
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle used"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle used"))
    loaded = LangChainStore.load(path, DeterministicFakeEmbedding(size=16))
    for query in TEXTS[:3]:
        assert loaded.similarity_search_with_score(query, k=4) == fake_store.similarity_search_with_score(query, k=4)
    ids = [d.id for d in fake_store.similarity_search(TEXTS[0], k=2)]
    assert loaded.get_by_ids(ids) == fake_store.get_by_ids(ids)
    loaded.add_texts(["later"], ids=["later"])
    assert loaded.get_by_ids(["later"])[0].page_content == "later"

    with pytest.raises(IndexLoadError, match="dimensions"):
        LangChainStore.load(path, DeterministicFakeEmbedding(size=8))
    with pytest.raises(IndexLoadError, match="embeds differently"):
        LangChainStore.load(path, RolledEmbedding(size=16))

    (path / "index.faiss").write_bytes((path / "index.faiss").read_bytes()[:-10])
    before = _snapshot(path)
    with pytest.raises(IndexLoadError, match="checksum"):
        LangChainStore.load(path, DeterministicFakeEmbedding(size=16))
    assert _snapshot(path) == before


def test_langchain_save_refuses_to_overwrite_other_files(fake_store, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        fake_store.save_local(tmp_path / "precious")
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "keep"


def test_langchain_store_saved_with_our_embeddings_loads_as_a_faiss_index(tiny_bi_path, tmp_path):
    store = LangChainStore.from_texts(TEXTS, BiEncoderEmbeddings(model=str(tiny_bi_path)))
    path = store.save_local(tmp_path / "store")
    index = FaissIndex.load(path, get_bi_encoder(tiny_bi_path))
    hits = index.search("seoul korea city", k=3)
    assert [(h.document.id, round(h.score, 4)) for h in hits] == [
        (d.id, round(s, 4)) for d, s in store.similarity_search_with_score("seoul korea city", k=3)
    ]


async def test_langchain_reranker_on_top_of_the_store(tiny_bi_path, tiny_cross_path):
    store = LangChainStore.from_documents(
        [LCDocument(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)],
        BiEncoderEmbeddings(model=str(tiny_bi_path)),
    )
    retriever = LangChainTwoStage(
        base_retriever=store.as_retriever(search_kwargs={"k": 5}),
        reranker=CrossEncoderReranker(model=str(tiny_cross_path), top_n=2),
    )
    for found in (retriever.invoke("cancer risk"), await retriever.ainvoke("cancer risk")):
        assert len(found) == 2 and all("rerank_score" in d.metadata and d.id for d in found)
        assert found[0].metadata["rerank_score"] >= found[1].metadata["rerank_score"]


# -- LlamaIndex -----------------------------------------------------------------------------------------


def _nodes() -> list[TextNode]:
    """Two nodes per source document; metadata to filter on."""
    return [
        TextNode(
            text=text,
            id_=f"n{i}",
            metadata={"topic": "bio" if i < 3 else "other", "year": 2000 + i, "tags": ["even" if i % 2 else "odd"]},
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc{i // 2}")},
        )
        for i, text in enumerate(TEXTS)
    ]


@pytest.fixture()
def embed_model(tiny_bi_path) -> BiEncoderEmbedding:
    return BiEncoderEmbedding(model_name=str(tiny_bi_path))


@pytest.fixture()
def llama_store(embed_model) -> tuple[LlamaIndexStore, VectorStoreIndex]:
    store = LlamaIndexStore(embed_model=embed_model)
    index = VectorStoreIndex(
        _nodes(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )
    return store, index


def _retrieved(index: VectorStoreIndex, query: str, **kwargs) -> list[tuple[str, float]]:
    return [(n.node.node_id, round(n.score, 5)) for n in index.as_retriever(**kwargs).retrieve(query)]


async def test_llamaindex_store_keeps_nodes_and_answers_queries(llama_store):
    store, index = llama_store
    assert len(store.client) == len(TEXTS) and store.stores_text
    found = index.as_retriever(similarity_top_k=3).retrieve(TEXTS[3])
    assert len(found) == 3 and found[0].node.node_id == "n3"  # nodes are embedded with their metadata: not 1.0
    assert [n.score for n in found] == sorted((n.score for n in found), reverse=True)
    node = found[0].node
    assert node.get_content() == TEXTS[3] and node.metadata == {"topic": "other", "year": 2003, "tags": ["even"]}
    assert node.ref_doc_id == "doc1"
    assert [(n.node.node_id, round(n.score, 5)) for n in await index.as_retriever().aretrieve(TEXTS[3])] == (
        _retrieved(index, TEXTS[3])
    )
    index.insert_nodes([TextNode(text="korea river mountain", id_="new")])
    assert _retrieved(index, "korea river mountain", similarity_top_k=1)[0][0] == "new"
    assert [n.node_id for n in store.get_nodes(node_ids=["n1", "new", "nope"])] == ["n1", "new"]


def test_llamaindex_delete_nodes_and_ref_docs(llama_store):
    store, index = llama_store
    index.delete_nodes(["n3"])
    assert "n3" not in dict(_retrieved(index, TEXTS[3], similarity_top_k=8)) and len(store.client) == len(TEXTS) - 1
    index.delete_ref_doc("doc0")
    remaining = {n for n, _ in _retrieved(index, TEXTS[0], similarity_top_k=8)}
    assert remaining == {"n2", "n4", "n5", "n6", "n7"}
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="topic", value="other")]))
    assert [n.node_id for n in store.get_nodes()] == ["n2"]
    store.clear()
    assert len(store.client) == 0 and _retrieved(index, TEXTS[0]) == []


def _ids(store: LlamaIndexStore, embed_model, filters=None, **query) -> list[str]:
    vector = embed_model.get_query_embedding(TEXTS[0])
    result = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=8, filters=filters, **query))
    assert result.ids == [n.node_id for n in result.nodes] and len(result.similarities) == len(result.ids)
    return sorted(result.ids)


def test_llamaindex_filters_and_restrictions(llama_store, embed_model):
    store, index = llama_store
    eq = MetadataFilter(key="topic", value="bio")
    late = MetadataFilter(key="year", value=2006, operator=FilterOperator.GTE)
    assert _ids(store, embed_model, MetadataFilters(filters=[eq])) == ["n0", "n1", "n2"]
    assert _ids(store, embed_model, MetadataFilters(filters=[eq, late], condition=FilterCondition.OR)) == [
        "n0",
        "n1",
        "n2",
        "n6",
        "n7",
    ]
    assert _ids(store, embed_model, MetadataFilters(filters=[eq, late])) == []
    assert _ids(store, embed_model, MetadataFilters(filters=[eq], condition=FilterCondition.NOT)) == [
        "n3",
        "n4",
        "n5",
        "n6",
        "n7",
    ]
    nested = MetadataFilters(
        filters=[
            MetadataFilters(filters=[eq, late], condition=FilterCondition.OR),
            MetadataFilter(key="tags", value="odd", operator=FilterOperator.CONTAINS),
        ]
    )
    assert _ids(store, embed_model, nested) == ["n0", "n2", "n6"]
    in_filter = MetadataFilter(key="year", value=[2001, 2005], operator=FilterOperator.IN)
    assert _ids(store, embed_model, MetadataFilters(filters=[in_filter])) == ["n1", "n5"]
    assert _ids(store, embed_model, node_ids=["n4", "n7", "gone"]) == ["n4", "n7"]
    assert _ids(store, embed_model, doc_ids=["doc3"]) == ["n6", "n7"]
    retriever_filters = MetadataFilters(filters=[eq])
    assert {n for n, _ in _retrieved(index, TEXTS[5], similarity_top_k=8, filters=retriever_filters)} == {
        "n0",
        "n1",
        "n2",
    }
    with pytest.raises(NotImplementedError, match="query mode"):
        store.query(VectorStoreQuery(query_embedding=[0.0] * 32, mode=VectorStoreQueryMode.MMR))


def test_llamaindex_persist_and_load_round_trip(llama_store, embed_model, tmp_path, monkeypatch):
    store, index = llama_store
    index.storage_context.persist(persist_dir=str(tmp_path / "storage"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle used"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle used"))
    loaded = LlamaIndexStore.from_persist_dir(str(tmp_path / "storage"), embed_model=embed_model)
    reloaded = VectorStoreIndex.from_vector_store(loaded, embed_model=embed_model)
    for query in TEXTS[:4]:
        assert _retrieved(reloaded, query, similarity_top_k=4) == _retrieved(index, query, similarity_top_k=4)
    assert [n.ref_doc_id for n in loaded.get_nodes(node_ids=["n5"])] == ["doc2"]
    reloaded.delete_ref_doc("doc1")
    assert len(loaded.client) == len(TEXTS) - 2

    direct = tmp_path / "direct"
    store.persist(str(direct))
    with pytest.raises(IndexLoadError, match="embeds differently"):
        LlamaIndexStore.from_persist_path(direct, embed_model=MockEmbedding(embed_dim=32))
    with pytest.raises(IndexLoadError, match="dimensions"):
        LlamaIndexStore.from_persist_path(direct, embed_model=MockEmbedding(embed_dim=8))
    assert len(LlamaIndexStore.from_persist_path(direct).client) == len(TEXTS)  # no model given: nothing to compare


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "index.faiss").write_bytes((p / "index.faiss").read_bytes()[:100]), "checksum"),
        (lambda p: (p / "documents.jsonl").write_text('{"id": "n0"}\n'), "checksum"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "documents.jsonl").unlink(), "missing"),
    ],
)
def test_llamaindex_corrupt_store_is_refused_and_left_untouched(llama_store, tmp_path, damage, message):
    store, _ = llama_store
    path = tmp_path / "store"
    store.persist(str(path))
    damage(path)
    before = _snapshot(path)
    with pytest.raises(IndexLoadError, match=message):
        LlamaIndexStore.from_persist_path(path)
    assert _snapshot(path) == before


def test_llamaindex_manifest_count_mismatch_is_refused(llama_store, tmp_path):
    store, _ = llama_store
    path = tmp_path / "store"
    store.persist(str(path))
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "count": 2}))
    with pytest.raises(IndexLoadError, match="counts disagree"):
        LlamaIndexStore.from_persist_path(path)


async def test_llamaindex_reranker_on_top_of_the_index(llama_store, tiny_cross_path):
    _, index = llama_store
    retriever = LlamaIndexTwoStage(
        base_retriever=index.as_retriever(similarity_top_k=5),
        reranker=CrossEncoderRerank(model=str(tiny_cross_path), top_n=2),
    )
    for found in (retriever.retrieve("cancer risk"), await retriever.aretrieve("cancer risk")):
        assert len(found) == 2 and all("rerank_score" in n.node.metadata for n in found)
        assert found[0].score >= found[1].score
