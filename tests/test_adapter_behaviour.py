"""Adapters that behave like native components: traced batches, live settings, and the micro-batcher's limit.

A batch must look to callbacks and tracers like that many ``invoke`` calls (one run each, its own error);
settings assigned after construction take effect on the next call or are refused without changing anything.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.tracers.context import collect_runs  # noqa: E402
from llama_index.core.schema import NodeWithScore, TextNode  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from rerank_plugins import get_cross_encoder  # noqa: E402
from rerank_plugins.batching import MicroBatcher  # noqa: E402
from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker, TwoStageRetriever  # noqa: E402
from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank  # noqa: E402
from rerank_plugins.llamaindex import TwoStageRetriever as LITwoStage  # noqa: E402
from rerank_plugins.rerank import DEFAULT_TOP_N  # noqa: E402

TEXTS = ["cancer gene risk", "heart blood dose", "brain immune virus", "seoul korea city", "the cells protein"]
QUERIES = ["cat", "car", "sea"]


class RetrieverEvents(BaseCallbackHandler):
    """Records every retriever start, end and error a callback handler is told about."""

    def __init__(self) -> None:
        self.starts: dict[UUID, dict[str, Any]] = {}
        self.ends: list[UUID] = []
        self.errors: dict[UUID, BaseException] = {}
        self._lock = threading.Lock()

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self.starts[run_id] = {"query": query, **kwargs}

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self.ends.append(run_id)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self.errors[run_id] = error


@pytest.fixture()
def documents() -> list[Document]:
    return [Document(page_content=t, metadata={"n": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]


@pytest.fixture()
def retriever(tiny_bi_path, tiny_cross_path, documents) -> TwoStageRetriever:
    return TwoStageRetriever.from_documents(
        documents,
        BiEncoderEmbeddings(model=str(tiny_bi_path)),
        CrossEncoderReranker(model=str(tiny_cross_path), top_n=2),
        top_k=4,
    )


# -- batch: one traced run per input -----------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
async def test_batch_traces_one_run_per_input_with_config(retriever, use_async):
    handler = RetrieverEvents()
    config = {"callbacks": [handler], "run_name": "my-search", "tags": ["t1"], "metadata": {"user": "u1"}}
    with collect_runs() as collected:
        if use_async:
            out = await retriever.abatch(QUERIES, config)
        else:
            out = retriever.batch(QUERIES, config)
    assert out == [retriever.invoke(q) for q in QUERIES]
    runs = collected.traced_runs
    assert len(runs) == 3 and sorted(r.inputs["query"] for r in runs) == sorted(QUERIES)
    for run in runs:
        assert run.run_type == "retriever" and run.name == "my-search" and run.error is None
        assert "t1" in run.tags and run.extra["metadata"]["user"] == "u1"
        assert len(run.outputs["documents"]) == 2
    assert len(handler.starts) == 3 and sorted(handler.ends) == sorted(handler.starts) and not handler.errors
    for start in handler.starts.values():
        assert start["name"] == "my-search" and "t1" in start["tags"] and start["metadata"]["user"] == "u1"


@pytest.mark.parametrize("use_async", [False, True])
async def test_per_input_configs_and_max_concurrency(retriever, use_async):
    handler = RetrieverEvents()
    configs = [{"callbacks": [handler], "run_name": f"q{i}", "max_concurrency": 1} for i in range(3)]
    out = await retriever.abatch(QUERIES, configs) if use_async else retriever.batch(QUERIES, configs)
    assert out == [retriever.invoke(q) for q in QUERIES]
    assert sorted(s["name"] for s in handler.starts.values()) == ["q0", "q1", "q2"]
    assert {s["query"]: s["name"] for s in handler.starts.values()} == dict(zip(QUERIES, ["q0", "q1", "q2"]))


@pytest.mark.parametrize("use_async", [False, True])
async def test_an_invalid_input_fails_only_its_own_run(retriever, use_async):
    queries = ["cat", "", "sea"]

    async def run(**kwargs: Any) -> list[Any]:
        if use_async:
            return await retriever.abatch(queries, {"callbacks": [handler]}, **kwargs)
        return retriever.batch(queries, {"callbacks": [handler]}, **kwargs)

    handler = RetrieverEvents()
    with collect_runs() as collected:
        out = await run(return_exceptions=True)
    assert isinstance(out[1], ValueError) and "query" in str(out[1])
    assert out[0] == retriever.invoke("cat") and out[2] == retriever.invoke("sea")
    assert len(handler.starts) == 3 and len(handler.ends) == 2
    (failed,) = handler.errors
    assert handler.starts[failed]["query"] == ""
    errors = {r.inputs["query"]: r.error for r in collected.traced_runs}
    assert errors["cat"] is None and errors["sea"] is None and "query" in errors[""]

    handler = RetrieverEvents()
    with pytest.raises(ValueError, match="query"):
        await run()
    assert len(handler.starts) == 3 and len(handler.ends) == 2 and len(handler.errors) == 1  # every run ended


def test_batch_of_nothing_and_single_input(retriever):
    assert retriever.batch([]) == []
    assert retriever.batch(["cancer risk"]) == [retriever.invoke("cancer risk")]


# -- top_n: the retriever's own, per call, or the reranker's (live) -----------------------------------------


async def test_retriever_follows_the_reranker_top_n_and_its_own_overrides(retriever):
    assert len(retriever.invoke("cancer risk")) == 2
    retriever.reranker.top_n = 1
    assert len(retriever.invoke("cancer risk")) == 1 and len(await retriever.ainvoke("cancer risk")) == 1
    assert [len(r) for r in retriever.batch(QUERIES)] == [1, 1, 1]
    assert len(retriever.invoke("cancer risk", top_n=3)) == 3  # per call
    assert len(retriever.invoke("cancer risk", verbose=False)) == 1  # invoke's own option is still accepted
    assert [len(r) for r in await retriever.abatch(QUERIES, top_n=3)] == [3, 3, 3]
    retriever.top_n = 4
    assert len(retriever.invoke("cancer risk")) == 4 and retriever.reranker.top_n == 1
    with pytest.raises(ValueError, match="top_n"):
        retriever.invoke("cancer risk", top_n=0)
    with pytest.raises(TypeError, match="unexpected"):
        retriever.invoke("cancer risk", k=2)
    with pytest.raises(ValidationError):
        retriever.top_n = 0
    assert retriever.top_n == 4


def test_llamaindex_retriever_follows_the_reranker_top_n(tiny_bi_path, tiny_cross_path):
    nodes = [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(TEXTS)]
    rerank = CrossEncoderRerank(model=str(tiny_cross_path), top_n=2)
    retriever = LITwoStage.from_nodes(nodes, BiEncoderEmbedding(model_name=str(tiny_bi_path)), rerank, top_k=4)
    assert len(retriever.retrieve("cancer risk")) == 2
    rerank.top_n = 1
    assert len(retriever.retrieve("cancer risk")) == 1
    own = LITwoStage(retriever.index, rerank, top_n=3)
    assert len(own.retrieve("cancer risk")) == 3 and len(own.retrieve_batch(["cancer risk"])[0]) == 3
    assert len(LITwoStage(retriever.index).retrieve("cancer risk")) == DEFAULT_TOP_N  # no reranker, no top_n


# -- live settings: read on every call, validated on assignment, model fields fixed -------------------------


def test_langchain_reranker_settings_are_live(tiny_cross_path, documents):
    reranker = CrossEncoderReranker(model=str(tiny_cross_path), top_n=3)
    reranker.top_n = 1
    assert len(reranker.compress_documents(documents, "q")) == 1
    for bad in (0, -1):
        with pytest.raises(ValidationError, match="top_n"):
            reranker.top_n = bad
        assert reranker.top_n == 1  # refused values are not kept
    with pytest.raises(ValidationError):
        reranker.scale = "softmax"
    assert reranker.scale == "raw"
    with pytest.raises(ValidationError):
        reranker.fusion_weight = 2.0
    assert reranker.fusion_weight == "auto" and len(reranker.compress_documents(documents, "q")) == 1
    reranker.scale = "sigmoid"
    assert all(0 <= d.metadata["rerank_score"] <= 1 for d in reranker.compress_documents(documents, "q"))
    for field, value in (("model", "other"), ("runtime", "onnx"), ("device", "cpu"), ("max_length", 8)):
        with pytest.raises(AttributeError, match="fixed"):
            setattr(reranker, field, value)
    assert reranker.model == str(tiny_cross_path) and reranker.runtime == "torch"


async def test_llamaindex_reranker_settings_are_live(tiny_cross_path):
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.1 * i) for i, t in enumerate(TEXTS)]
    rerank = CrossEncoderRerank(model=str(tiny_cross_path), top_n=3)
    rerank.top_n = 1
    assert len(rerank.postprocess_nodes(nodes, query_str="q")) == 1
    assert len(await rerank.apostprocess_nodes(nodes, query_str="q")) == 1
    with pytest.raises(ValidationError, match="top_n"):
        rerank.top_n = 0
    assert rerank.top_n == 1 and len(rerank.postprocess_nodes(nodes, query_str="q")) == 1
    for field, value in (("model", "other"), ("runtime", "onnx")):
        with pytest.raises(AttributeError, match="fixed"):
            setattr(rerank, field, value)
    assert rerank.model == str(tiny_cross_path)


def test_langchain_retriever_refuses_unknown_arguments(retriever, tiny_bi_path, documents):
    """A misspelt setting (``topk``) or one meant for another class must not be dropped without a word."""
    with pytest.raises(ValidationError, match="topk"):
        TwoStageRetriever(index=retriever.first_stage, topk=50)
    with pytest.raises(ValidationError, match="dense_weight"):
        TwoStageRetriever.from_documents(documents, BiEncoderEmbeddings(model=str(tiny_bi_path)), dense_weight=0.5)
    assert TwoStageRetriever(index=retriever.first_stage, top_k=5, tags=["t"], metadata={"m": 1}).top_k == 5


@pytest.mark.parametrize(
    ("adapter", "model_field", "kind"),
    [
        (BiEncoderEmbeddings, "model", "bi"),
        (BiEncoderEmbedding, "model_name", "bi"),
        (CrossEncoderReranker, "model", "cross"),
        (CrossEncoderRerank, "model", "cross"),
    ],
)
def test_a_backend_with_load_options_beside_it_is_refused(tiny_bi_path, tiny_cross_path, adapter, model_field, kind):
    """The backend is loaded already: options that would load another model must not be reported and ignored."""
    from rerank_plugins import get_bi_encoder, get_cross_encoder

    backend = get_bi_encoder(tiny_bi_path) if kind == "bi" else get_cross_encoder(tiny_cross_path)
    for conflict in ({"runtime": "onnx"}, {model_field: "another/model"}, {"max_length": 16}):
        with pytest.raises(ValueError, match=next(iter(conflict))):
            adapter(backend=backend, **conflict)
    same_model = adapter(backend=backend, **{model_field: backend.model_name})
    assert same_model.backend is backend and getattr(same_model, model_field) == backend.model_name


def test_hybrid_options_reach_the_first_stage_from_both_frameworks(tiny_bi_path, documents):
    options = {"fusion": "rrf", "dense_weight": 0.7, "rrf_k": 10, "candidates": 5}
    lc = TwoStageRetriever.from_documents(
        documents, BiEncoderEmbeddings(model=str(tiny_bi_path)), first_stage="hybrid", hybrid_options=options
    )
    nodes = [TextNode(text=d.page_content, id_=d.id) for d in documents]
    li = LITwoStage.from_nodes(
        nodes, BiEncoderEmbedding(model_name=str(tiny_bi_path)), first_stage="hybrid", hybrid_options=options
    )
    for stage in (lc.index, li.index):
        assert {key: stage.describe()[key] for key in options} == options
    with pytest.raises(ValueError, match="hybrid_options"):
        TwoStageRetriever.from_documents(
            documents,
            BiEncoderEmbeddings(model=str(tiny_bi_path)),
            first_stage="dense",
            hybrid_options={"dense_weight": 0.7},
        )


def test_a_query_too_long_for_the_reranker_is_cut_with_a_warning_or_refused(tiny_cross_path, documents, caplog):
    """A condensed chat history can be longer than the reranker's pairs: by default its beginning is read."""
    reranker = CrossEncoderReranker(backend=get_cross_encoder(tiny_cross_path), top_n=None)
    room = reranker.backend.query_room()
    long_query = " ".join(["cancer risk"] * room)  # about twice the room
    fitted, length = reranker.backend.shorten_query(long_query)
    assert length > room and long_query.startswith(fitted) and fitted != long_query
    assert len(reranker.backend.model.tokenizer(fitted, add_special_tokens=False)["input_ids"]) == room

    ranked = reranker.compress_documents(documents, long_query)
    assert f"query of {length} tokens cut to its first {room}" in caplog.text
    expected = reranker.compress_documents(documents, fitted)
    scored = [(d.id, d.metadata["rerank_score"]) for d in ranked]
    assert scored == [(d.id, d.metadata["rerank_score"]) for d in expected]
    li = CrossEncoderRerank(backend=reranker.backend, top_n=None)
    nodes = [NodeWithScore(node=TextNode(text=d.page_content, id_=d.id), score=1.0) for d in documents]
    assert [n.node.node_id for n in li.postprocess_nodes(nodes, query_str=long_query)] == [d.id for d in ranked]

    reranker.long_queries = "error"
    with pytest.raises(ValueError, match="leaves fewer than"):
        reranker.compress_documents(documents, long_query)
    with pytest.raises(ValueError, match="long_queries"):
        reranker.long_queries = "drop"


def test_embedding_settings_are_live(tiny_bi_path):
    lc = BiEncoderEmbeddings(model=str(tiny_bi_path))
    before = lc.embed_documents(TEXTS)
    lc.batch_size = 2
    assert lc.batch_size == 2
    np.testing.assert_allclose(lc.embed_documents(TEXTS), before, atol=1e-5)
    with pytest.raises(ValidationError):
        lc.batch_size = 0
    assert lc.batch_size == 2
    with pytest.raises(AttributeError, match="fixed"):
        lc.model = "other"
    li = BiEncoderEmbedding(model_name=str(tiny_bi_path))
    li.embed_batch_size = 2
    assert li.embed_batch_size == 2 and len(li.get_text_embedding_batch(TEXTS)) == len(TEXTS)
    with pytest.raises(ValidationError):
        li.embed_batch_size = 0
    assert li.embed_batch_size == 2
    with pytest.raises(AttributeError, match="fixed"):
        li.model_name = "other"
    assert lc.model == li.model_name == str(tiny_bi_path)


# -- the micro-batcher never exceeds max_weight (unless one item alone does) --------------------------------


async def _passes(weights: list[int], max_weight: int = 10) -> list[list[int]]:
    """The batches ``process`` was called with when items of these weights arrive together."""
    seen: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [item * 10 for item in items]

    batcher = MicroBatcher(process, weight=lambda item: item, max_weight=max_weight, max_wait_s=0.05)
    results = await asyncio.gather(*(batcher.submit(w) for w in weights))
    assert results == [w * 10 for w in weights]
    assert batcher.batch_sizes == [len(batch) for batch in seen]
    return seen


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ([6, 6], [[6], [6]]),  # 12 > 10: two passes
        ([4, 6], [[4, 6]]),  # exactly 10: one pass
        ([5, 5, 1], [[5, 5], [1]]),  # full at 10: the next item waits
        ([1] * 10, [[1] * 10]),
        ([1] * 11, [[1] * 10, [1]]),
        ([11], [[11]]),  # heavier than the limit alone: processed alone
        ([3, 11, 2], [[3], [11], [2]]),  # never joined by others either
        ([9, 2, 1], [[9], [2, 1]]),  # in arrival order: 9 + 2 > 10 closes the first pass
    ],
)
async def test_micro_batches_stay_within_max_weight(weights, expected):
    assert await _passes(weights) == expected


def test_llamaindex_retrieve_batch_is_traced_per_query(tiny_bi_path, tiny_cross_path):
    """Like ``retrieve``: one RETRIEVE event per query (with its nodes) and retrieval start/end events."""
    from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent, RetrievalStartEvent
    from llama_index.core.schema import TextNode

    from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank
    from rerank_plugins.llamaindex import TwoStageRetriever as LlamaIndexRetriever

    class Recorder(BaseEventHandler):
        events: list = []

        def handle(self, event, **kwargs) -> None:
            if isinstance(event, (RetrievalStartEvent, RetrievalEndEvent)):
                self.events.append(type(event).__name__)

    recorder = Recorder()
    get_dispatcher().add_event_handler(recorder)
    debug = LlamaDebugHandler()
    nodes = [TextNode(text=t, id_=str(i)) for i, t in enumerate(["cancer risk", "heart dose", "seoul city"])]
    retriever = LlamaIndexRetriever.from_nodes(
        nodes,
        BiEncoderEmbedding(model_name=str(tiny_bi_path)),
        CrossEncoderRerank(model=str(tiny_cross_path), top_n=2),
        callback_manager=CallbackManager([debug]),
    )
    try:
        results = retriever.retrieve_batch(["cancer", "heart", "seoul"])
    finally:
        get_dispatcher().event_handlers.remove(recorder)
    pairs = debug.get_event_pairs(CBEventType.RETRIEVE)
    assert len(pairs) == 3 and [len(r) for r in results] == [2, 2, 2]
    assert [p[1].payload["nodes"] for p in pairs] == results
    assert recorder.events.count("RetrievalStartEvent") == recorder.events.count("RetrievalEndEvent") == 3


# -- one vocabulary in both frameworks --------------------------------------------------------------------------


def test_both_frameworks_take_the_same_argument_names(tiny_bi_path, tiny_cross_path, tmp_path, documents):
    from rerank_plugins.llamaindex import CrossEncoderReranker as LIReranker

    lc = BiEncoderEmbeddings(model_name=str(tiny_bi_path), batch_size=4)  # langchain-huggingface's name too
    li = BiEncoderEmbedding(model=str(tiny_bi_path), batch_size=4)  # LlamaIndex's model_name / embed_batch_size too
    assert lc.model == li.model == li.model_name == str(tiny_bi_path) and li.embed_batch_size == li.batch_size == 4
    assert lc.backend is li.backend
    with pytest.raises(ValueError, match="same argument"):
        BiEncoderEmbedding(model=str(tiny_bi_path), model_name=str(tiny_bi_path))
    assert LIReranker is CrossEncoderRerank
    nodes = [TextNode(text=d.page_content, id_=d.id) for d in documents]
    li_retriever = LITwoStage.from_nodes(nodes, li, first_stage="dense")
    assert LITwoStage(first_stage=li_retriever.first_stage).index is li_retriever.first_stage
    with pytest.raises(ValueError, match="same argument"):
        LITwoStage(first_stage=li_retriever.first_stage, index=li_retriever.first_stage)


def test_every_store_saves_with_save_and_loads_with_load(tiny_bi_path, tmp_path, documents):
    from llama_index.core.vector_stores.types import VectorStoreQuery

    from rerank_plugins.langchain import FaissVectorStore as LCStore
    from rerank_plugins.llamaindex import FaissVectorStore as LIStore

    lc_embeddings = BiEncoderEmbeddings(model=str(tiny_bi_path))
    store = LCStore.from_documents(documents, lc_embeddings)
    store.save(tmp_path / "lc")
    for loader in (LCStore.load, LCStore.load_local):
        found = loader(tmp_path / "lc", lc_embeddings).similarity_search("cancer", k=1)
        assert found == store.similarity_search("cancer", k=1)
    li_embedding = BiEncoderEmbedding(model_name=str(tiny_bi_path))
    li_store = LIStore(embed_model=li_embedding)
    li_store.add(
        [
            TextNode(text=d.page_content, id_=d.id, embedding=li_embedding.get_text_embedding(d.page_content))
            for d in documents
        ]
    )
    li_store.save(tmp_path / "li")
    query = VectorStoreQuery(query_embedding=li_embedding.get_query_embedding("cancer"), similarity_top_k=1)
    assert LIStore.load(tmp_path / "li", embed_model=li_embedding).query(query).ids == li_store.query(query).ids


def test_every_first_stage_is_exported_from_one_place():
    import rerank_plugins.first_stage as first_stage

    for name in ("FaissIndex", "LexicalIndex", "HybridIndex", "ShardedIndex"):
        assert issubclass(getattr(first_stage, name), first_stage.FirstStage)
