"""LlamaIndex ``BaseRetriever``: FAISS top-k from the bi-encoder, then a cross-encoder rerank to top-n."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle

from rerank_plugins._validation import check_positive_int
from rerank_plugins.index.store import FaissIndex
from rerank_plugins.llamaindex._convert import to_document, to_node
from rerank_plugins.llamaindex.embedding import BiEncoderEmbedding
from rerank_plugins.llamaindex.postprocessor import CrossEncoderRerank
from rerank_plugins.retrieval import RerankOptions, TwoStagePipeline


class TwoStageRetriever(BaseRetriever):
    """Two-stage retrieval for LlamaIndex; use it alone or in a ``RetrieverQueryEngine``.

    Returns ``NodeWithScore`` whose score is the rerank score (or the cosine similarity without a
    reranker); node metadata holds ``retrieval_score`` and ``rerank_score``.
    """

    def __init__(
        self,
        index: FaissIndex,
        reranker: CrossEncoderRerank | None = None,
        *,
        top_k: int = 30,
        top_n: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.index = index
        self.reranker = reranker
        options = reranker._options if reranker is not None else RerankOptions(top_n=check_positive_int(top_n, "top_n"))
        self.pipeline = TwoStagePipeline(index, reranker.backend if reranker else None, top_k=top_k, options=options)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        embed_model: BiEncoderEmbedding | None = None,
        reranker: CrossEncoderRerank | None = None,
        *,
        index_type: str = "flat",
        long_documents: str = "truncate",
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Embed ``nodes`` (documents are nodes too) into a new FAISS index and wrap it.

        ``long_documents="split"`` embeds every passage of nodes longer than the embedding model's limit
        (a node scores as its best passage); the default embeds their beginning and logs how many.
        """
        embed_model = embed_model or BiEncoderEmbedding()
        index = FaissIndex(embed_model.backend, index_type=index_type, batch_size=embed_model.embed_batch_size,
                           long_documents=long_documents)
        index.add_documents([to_document(n) for n in nodes])
        return cls(index, reranker, **kwargs)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embed_model: BiEncoderEmbedding | None = None,
        reranker: CrossEncoderRerank | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Load an index saved with :meth:`save`; refused if ``embed_model`` is not the model it was built with."""
        embed_model = embed_model or BiEncoderEmbedding()
        return cls(FaissIndex.load(path, embed_model.backend), reranker, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        self.index.save(path)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(result) for result in self.pipeline.retrieve(query_bundle.query_str)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [to_node(result) for result in await self.pipeline.aretrieve(query_bundle.query_str)]

    def retrieve_batch(self, queries: Sequence[str]) -> list[list[NodeWithScore]]:
        """Many queries through one encoding pass and one rerank pass."""
        return [[to_node(r) for r in results] for results in self.pipeline.retrieve_batch(queries)]
