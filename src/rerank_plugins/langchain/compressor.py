"""LangChain ``BaseDocumentCompressor`` that reranks documents with the shared cross-encoder backend."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor
from langchain_core.documents import Document as LCDocument
from pydantic import ConfigDict

from rerank_plugins.adapter_common import CrossEncoderAdapterFields, first_stage_score
from rerank_plugins.schema import Document, RetrievedDocument, SearchHit


class CrossEncoderReranker(CrossEncoderAdapterFields, BaseDocumentCompressor):
    """Rerank retrieved documents with a cross-encoder; keep the ``top_n`` best.

    Returns **copies** of the input documents, best first, with ``rerank_score`` and ``rerank_scale``
    (and ``retrieval_score`` when the input carried a first-stage score) in their metadata. Options are read
    on every call, so ``reranker.top_n = 5`` takes effect at once (and is validated when assigned).
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
        results = await self.stage.arerank(query, _hits(documents))
        return [_scored_copy(documents, result) for result in results]

    def compress_batch(self, requests: Sequence[tuple[str, Sequence[LCDocument]]]) -> list[list[LCDocument]]:
        """Rerank several ``(query, documents)`` requests in one batched pass; results in input order."""
        ranked = self.stage.rerank_batch([(query, _hits(documents)) for query, documents in requests])
        return [
            [_scored_copy(documents, result) for result in results] for (_, documents), results in zip(requests, ranked)
        ]


def _hits(documents: Sequence[LCDocument]) -> list[SearchHit]:
    """Candidates keyed by their position, carrying any first-stage score found in their metadata."""
    for i, doc in enumerate(documents):
        if not isinstance(doc, LCDocument):
            raise TypeError(f"documents[{i}] must be a langchain Document, got {type(doc).__name__}")
    return [
        SearchHit(Document(doc.page_content, str(i), {}), i, first_stage_score(doc.metadata))
        for i, doc in enumerate(documents)
    ]


def _scored_copy(documents: Sequence[LCDocument], result: RetrievedDocument) -> LCDocument:
    source = documents[int(result.document.id)]
    return LCDocument(
        page_content=source.page_content, metadata={**source.metadata, **result.score_metadata()}, id=source.id
    )
