"""LangChain ``BaseRetriever``: FAISS top-k from the bi-encoder, then a cross-encoder rerank to top-n."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field, PrivateAttr

from rerank_plugins.index.store import FaissIndex
from rerank_plugins.langchain._convert import to_document, to_langchain
from rerank_plugins.langchain.compressor import CrossEncoderReranker
from rerank_plugins.langchain.embeddings import BiEncoderEmbeddings
from rerank_plugins.retrieval import RerankOptions, TwoStagePipeline


class TwoStageRetriever(BaseRetriever):
    """Two-stage retrieval for LangChain: ``top_k`` candidates by cosine similarity, reranked to ``top_n``.

    Without a ``reranker`` it returns the first stage's own top-n. Returned documents are new objects with
    ``retrieval_score`` (and ``rerank_score`` / ``rerank_scale``) in their metadata. ``batch`` runs all
    inputs through one encoding pass and one rerank pass.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: FaissIndex = Field(description="The first-stage FAISS index (see `from_documents` / `load`).")
    reranker: CrossEncoderReranker | None = Field(default=None, description="Second stage; None returns first-stage top-n.")
    top_k: int = Field(default=30, description="First-stage candidates handed to the reranker.")
    top_n: int = Field(default=3, description="Documents returned when there is no reranker (else the reranker's top_n).")
    _pipeline: TwoStagePipeline = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        options = self.reranker._options if self.reranker is not None else RerankOptions(top_n=self.top_n)
        reranker_backend = self.reranker.backend if self.reranker is not None else None
        self._pipeline = TwoStagePipeline(self.index, reranker_backend, top_k=self.top_k, options=options)

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[LCDocument],
        embeddings: BiEncoderEmbeddings | None = None,
        reranker: CrossEncoderReranker | None = None,
        *,
        index_type: str = "flat",
        long_documents: str = "truncate",
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Embed ``documents`` into a new FAISS index (``index_type``: flat, hnsw or ivf) and wrap it.

        ``long_documents="split"`` embeds every passage of documents longer than the embedding model's limit
        (a document scores as its best passage); the default embeds their beginning and logs how many.
        """
        embeddings = embeddings or BiEncoderEmbeddings()
        index = FaissIndex(embeddings.backend, index_type=index_type, batch_size=embeddings.batch_size,
                           long_documents=long_documents)
        index.add_documents([to_document(d) for d in documents])
        return cls(index=index, reranker=reranker, **kwargs)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embeddings: BiEncoderEmbeddings | None = None,
        reranker: CrossEncoderReranker | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Load an index saved with :meth:`save`; refused if ``embeddings`` is not the model it was built with."""
        embeddings = embeddings or BiEncoderEmbeddings()
        return cls(index=FaissIndex.load(path, embeddings.backend), reranker=reranker, **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        self.index.save(path)

    def add_documents(self, documents: Sequence[LCDocument]) -> list[str]:
        return self.index.add_documents([to_document(d) for d in documents])

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        return [to_langchain(result) for result in self._pipeline.retrieve(query)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[LCDocument]:
        return [to_langchain(result) for result in await self._pipeline.aretrieve(query)]

    def batch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[LCDocument]]:
        """All queries through one encoding pass and one rerank pass (callbacks, if configured, take the per-query path)."""
        configs = config if isinstance(config, list) else [config or {}]
        if return_exceptions or kwargs or any(c.get("callbacks") for c in configs if c):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        return [[to_langchain(r) for r in results] for results in self._pipeline.retrieve_batch(inputs)]
