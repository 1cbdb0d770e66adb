"""LangChain ``Document`` <-> rerank-plugins types; always new objects, never the caller's."""

from __future__ import annotations

import uuid

from langchain_core.documents import Document as LCDocument

from rerank_plugins.schema import Document, RetrievedDocument


def to_document(document: LCDocument) -> Document:
    return Document(text=document.page_content, id=document.id or uuid.uuid4().hex, metadata=dict(document.metadata))


def to_langchain(result: RetrievedDocument, source: LCDocument | None = None) -> LCDocument:
    """A new LangChain document carrying the result's scores in its metadata (a copy of ``source`` if given)."""
    if source is None:
        return LCDocument(
            page_content=result.document.text,
            metadata={**result.document.metadata, **result.score_metadata()},
            id=result.document.id,
        )
    return LCDocument(
        page_content=source.page_content, metadata={**source.metadata, **result.score_metadata()}, id=source.id
    )
