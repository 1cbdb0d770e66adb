"""Any LlamaIndex ``BaseRetriever`` as a first stage: our reranker on top of the retriever a query engine has."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore

from rerank_plugins.first_stage.base import FirstStage, check_search_args
from rerank_plugins.schema import Document, SearchHit


class LlamaIndexFirstStage(FirstStage):
    """Candidates from ``retriever`` (``VectorStoreIndex.as_retriever()``, ``QueryFusionRetriever``, ...).

    The retriever's own settings (e.g. ``similarity_top_k``) decide how many candidates come back (``k`` only
    caps them); ``NodeWithScore.score`` becomes the hit's score (None when the retriever gives none: reranking
    works, fusion needs scores and says so). Its sync and async paths are used as they are; nodes are never
    changed. A hit's document id is its position in the retriever's answer, so callers can map back to nodes.
    """

    def __init__(self, retriever: BaseRetriever) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(f"base_retriever must be a llama_index BaseRetriever, got {type(retriever).__name__}")
        self.retriever = retriever

    def describe(self) -> dict[str, str]:
        return {"kind": "llamaindex-retriever", "retriever": type(self.retriever).__name__}

    def retrieve_nodes(self, queries: Sequence[str], k: int) -> list[list[NodeWithScore]]:
        queries = check_search_args(queries, k)
        return [_checked(self.retriever.retrieve(query))[:k] for query in queries]

    async def aretrieve_nodes(self, queries: Sequence[str], k: int) -> list[list[NodeWithScore]]:
        queries = check_search_args(queries, k)
        found = await asyncio.gather(*(self.retriever.aretrieve(query) for query in queries))
        return [_checked(nodes)[:k] for nodes in found]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        return [node_hits(nodes) for nodes in self.retrieve_nodes(queries, k)]

    async def asearch_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        return [node_hits(nodes) for nodes in await self.aretrieve_nodes(queries, k)]


def _checked(nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
    for i, node in enumerate(nodes):
        if not isinstance(node, NodeWithScore):
            raise TypeError(f"nodes[{i}] must be a NodeWithScore, got {type(node).__name__}")
    return list(nodes)


def node_hits(nodes: Sequence[NodeWithScore], metadata_mode: MetadataMode = MetadataMode.EMBED) -> list[SearchHit]:
    """Candidates keyed by their position, with the node's text in ``metadata_mode`` and its score."""
    return [
        SearchHit(Document(n.node.get_content(metadata_mode=metadata_mode), str(i), dict(n.node.metadata)), i, n.score)
        for i, n in enumerate(_checked(nodes))
    ]
