"""LangChain ``BaseDocumentCompressor`` that reranks documents with the shared cross-encoder backend."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.documents import Document as LCDocument
from pydantic import ConfigDict

from rerank_plugins._adapter_fields import CrossEncoderAdapterFields
from rerank_plugins._adapters import first_stage_score
from rerank_plugins.langchain._convert import to_langchain
from rerank_plugins.schema import Document, SearchHit


class CrossEncoderReranker(CrossEncoderAdapterFields, BaseDocumentCompressor):
    """Rerank retrieved documents with a cross-encoder; keep the ``top_n`` best.

    Returns **copies** of the input documents, best first, with ``rerank_score`` and ``rerank_scale``
    (and ``retrieval_score`` when the input carried a first-stage score) in their metadata.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def compress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> list[LCDocument]:
        return self.compress_batch([(query, documents)])[0]

    async def acompress_documents(
        self, documents: Sequence[LCDocument], query: str, callbacks: Callbacks | None = None
    ) -> list[LCDocument]:
        """Micro-batched with concurrent calls; the model runs in a worker thread, never on the event loop."""
        results = await self._options.arerank(self._backend, query, _hits(documents))
        return [to_langchain(result, documents[int(result.document.id)]) for result in results]

    def compress_batch(self, requests: Sequence[tuple[str, Sequence[LCDocument]]]) -> list[list[LCDocument]]:
        """Rerank several ``(query, documents)`` requests in one batched pass; results in input order."""
        ranked = self._options.rerank(self._backend, [(query, _hits(documents)) for query, documents in requests])
        return [
            [to_langchain(result, documents[int(result.document.id)]) for result in results]
            for (_, documents), results in zip(requests, ranked)
        ]



def _hits(documents: Sequence[LCDocument]) -> list[SearchHit]:
    """Candidates keyed by their position, carrying any first-stage score found in their metadata."""
    for i, doc in enumerate(documents):
        if not isinstance(doc, LCDocument):
            raise TypeError(f"documents[{i}] must be a langchain Document, got {type(doc).__name__}")
    return [SearchHit(Document(doc.page_content, str(i), {}), i, first_stage_score(doc.metadata)) for i, doc in enumerate(documents)]
