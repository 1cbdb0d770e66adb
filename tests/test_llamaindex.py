"""LlamaIndex adapters: postprocessor invariants, embedding, retriever in a RetrieverQueryEngine."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("llama_index.core")
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank, TwoStageRetriever  # noqa: E402
from rerank_plugins.models.cross_encoder import CrossEncoderBackend  # noqa: E402

TEXTS = ["cancer gene risk", "heart blood dose", "brain immune virus", "seoul korea city", "the cells protein"]


def _uncached(path) -> CrossEncoderBackend:
    """A backend of its own without a score cache: two paths compared must both compute their scores."""
    return CrossEncoderBackend(path, cache_size=0)


def _assert_same_ranking(got: list[NodeWithScore], want: list[NodeWithScore]) -> None:
    """What two ways of reranking must agree on: which nodes, in which order, and their scores (to 1e-5)."""
    assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
    assert [n.score for n in got] == pytest.approx([n.score for n in want], abs=1e-5)


@pytest.fixture()
def nodes():
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"n": i}), score=0.1 * i) for i, t in enumerate(TEXTS)
    ]


def test_postprocessor_scores_copies_and_never_mutates(tiny_cross_path, nodes):
    before = copy.deepcopy(nodes)
    rerank = CrossEncoderRerank(backend=_uncached(tiny_cross_path), top_n=3)
    out = rerank.postprocess_nodes(nodes, query_str="cancer risk")
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    assert len(out) == 3
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    for n in out:
        i = n.node.metadata["n"]
        assert n.node is not nodes[i].node and n.node.node_id == f"n{i}"
        assert n.node.metadata["retrieval_score"] == pytest.approx(0.1 * i)
        assert n.node.metadata["rerank_score"] == pytest.approx(n.score)
        assert "rerank_score" not in n.node.get_content(metadata_mode=MetadataMode.LLM)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]  # what the reranker reads
    expected = _uncached(tiny_cross_path).rank("cancer risk", texts, top_n=3)
    assert [n.node.metadata["n"] for n in out] == [r.index for r in expected]
    assert [n.score for n in out] == pytest.approx([r.score for r in expected], abs=1e-5)


def test_postprocessor_needs_a_query(tiny_cross_path, nodes):
    with pytest.raises(ValueError, match="query"):
        CrossEncoderRerank(model=str(tiny_cross_path)).postprocess_nodes(nodes)


async def test_async_postprocess_matches_sync(tiny_cross_path, nodes):
    rerank = CrossEncoderRerank(backend=_uncached(tiny_cross_path), top_n=3)
    sync = rerank.postprocess_nodes(nodes, QueryBundle("cancer risk"))
    assync = await rerank.apostprocess_nodes(nodes, QueryBundle("cancer risk"))
    _assert_same_ranking(sync, assync)


def test_embedding_query_and_text(tiny_bi_path):
    embed = BiEncoderEmbedding(model_name=str(tiny_bi_path))
    assert len(embed.get_query_embedding("cancer")) == embed.backend.dimension
    assert len(embed.get_text_embedding_batch(TEXTS)) == len(TEXTS)


async def test_embedding_async(tiny_bi_path):
    embed = BiEncoderEmbedding(model_name=str(tiny_bi_path))
    assert await embed.aget_query_embedding("cancer") == pytest.approx(embed.get_query_embedding("cancer"))


@pytest.fixture()
def retriever(tiny_bi_path, tiny_cross_path, nodes):
    return TwoStageRetriever.from_nodes(
        [n.node for n in nodes],
        BiEncoderEmbedding(model_name=str(tiny_bi_path)),
        CrossEncoderRerank(backend=_uncached(tiny_cross_path), top_n=2),
        top_k=4,
    )


def test_retriever_returns_reranked_nodes(retriever):
    out = retriever.retrieve("cancer risk")
    assert len(out) == 2 and out[0].score >= out[1].score
    assert out[0].node.metadata["rerank_score"] == pytest.approx(out[0].score)
    _assert_same_ranking(retriever.retrieve_batch(["cancer risk", "korea city"])[0], out)


def test_retriever_can_split_long_nodes(tiny_bi_path, nodes):
    long = TextNode(text=" ".join(f"gene{i}" for i in range(40)) + " seoul korea city", id_="long")
    split = TwoStageRetriever.from_nodes(
        [*[n.node for n in nodes], long],
        BiEncoderEmbedding(model_name=str(tiny_bi_path)),
        top_k=10,
        top_n=10,
        long_documents="split",
    )
    out = split.retrieve("seoul korea city")
    assert split.index.dense.long_documents == "split"  # the default hybrid's dense side
    assert len(out) == len(nodes) + 1 and len({n.node.node_id for n in out}) == len(out)


async def test_retriever_async(retriever):
    out = await retriever.aretrieve("cancer risk")
    _assert_same_ranking(out, retriever.retrieve("cancer risk"))


def test_retriever_inside_a_query_engine(retriever):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    response = engine.query("cancer risk")
    assert len(response.source_nodes) == 2
    assert all("rerank_score" in n.node.metadata for n in response.source_nodes)


def test_one_text_per_node_for_indexing_and_reranking(tiny_bi_path, tiny_cross_path):
    """The retriever indexes exactly the text the reranker reads, and hands back the original node."""
    from llama_index.core.schema import Document as LIDocument

    nodes = [
        LIDocument(text=text, id_=f"n{i}", metadata={"topic": topic})
        for i, (text, topic) in enumerate(zip(TEXTS, ["oncology", "cardio", "neuro", "geo", "bio"]))
    ]
    for mode in (MetadataMode.EMBED, MetadataMode.NONE):
        reranker = CrossEncoderRerank(model=str(tiny_cross_path), top_n=5, metadata_mode=mode)
        retriever = TwoStageRetriever.from_nodes(
            nodes, BiEncoderEmbedding(model_name=str(tiny_bi_path)), reranker, top_k=5
        )
        indexed = {d.id: d.text for d in retriever.index.documents}
        assert indexed == {n.node_id: n.get_content(metadata_mode=mode) for n in nodes}
        assert ("topic: oncology" in indexed["n0"]) == (mode == MetadataMode.EMBED)
        out = retriever.retrieve("cancer risk")
        direct = reranker.postprocess_nodes([NodeWithScore(node=n) for n in nodes], query_str="cancer risk")
        assert [n.node.node_id for n in out] == [n.node.node_id for n in direct]
        assert [n.node.metadata["rerank_score"] for n in out] == pytest.approx([n.score for n in direct], abs=1e-5)
        for n in out:  # the original text and metadata come back (a Document as a TextNode, as LlamaIndex's stores do)
            i = int(n.node.node_id[1:])
            assert n.node.text == TEXTS[i] and n.node.metadata["topic"] == nodes[i].metadata["topic"]
