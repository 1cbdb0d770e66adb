"""LangChain ``Document`` <-> rerank-plugins types; always new objects, never the caller's."""

from __future__ import annotations

import uuid

from langchain_core.documents import Document as LCDocument

from rerank_plugins.schema import Document, RetrievedDocument


def to_document(document: LCDocument) -> Document:
    """For indexing: a document without an id gets a new unique one."""
    return Document(text=document.page_content, id=document.id or uuid.uuid4().hex, metadata=dict(document.metadata))


def to_langchain(result: RetrievedDocument) -> LCDocument:
    """A new LangChain document carrying the result's scores in its metadata (an empty id stays None)."""
    return LCDocument(
        page_content=result.document.text,
        metadata={**result.document.metadata, **result.score_metadata()},
        id=result.document.id or None,
    )
