"""The one interface every first stage implements: dense, lexical, hybrid, sharded, or someone else's retriever.

The pipeline, both frameworks' ``TwoStageRetriever``, evaluation and hard-negative mining only ever call
these methods, so a new kind of first stage plugs in everywhere at once.
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rerank_plugins._validation import check_positive_int, check_query, check_texts
from rerank_plugins.schema import Document, SearchHit


class FirstStage(ABC):
    """Finds candidates for queries: ``search_batch(queries, k)`` returns each query's best hits, best first.

    Every hit's ``score`` is the stage's own similarity (higher is better; ``None`` only for an external
    retriever that gave none). ``asearch_batch`` must not block the event loop; the default runs
    :meth:`search_batch` in a worker thread.
    """

    @abstractmethod
    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` best hits for each query, best first (fewer when the stage holds fewer documents)."""

    async def asearch_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """:meth:`search_batch` for async callers, off the event loop."""
        return await asyncio.to_thread(self.search_batch, queries, k)

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        """:meth:`search_batch` for one query."""
        return self.search_batch([query], k)[0]

    def describe(self) -> dict[str, Any]:
        """What this stage is, for reports and model cards (JSON-serialisable)."""
        return {"kind": type(self).__name__}


class DocumentStore(FirstStage):
    """A first stage that holds its own documents: add, delete and update by id, save and load.

    Ids are unique strings; adding an id that exists is an error (use :meth:`upsert_documents` to replace).
    """

    documents: list[Document]

    @abstractmethod
    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Index ``documents`` under their ids; returns the ids."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids; returns how many were removed (unknown ids are ignored)."""

    @abstractmethod
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the stage to directory ``path`` atomically (a complete new one or the old one, never half)."""

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Add ``texts`` (with optional metadata and ids). Default ids are numbers continuing past the largest
        numeric id stored, so they never collide with a stored document, deletions included."""
        numeric = [int(d.id) for d in self.documents if d.id.isdecimal()]
        return self.add_documents(make_documents(texts, metadatas, ids, first_position=max(numeric, default=-1) + 1))

    def upsert_documents(self, documents: Sequence[Document]) -> list[str]:
        """Add ``documents``, replacing any stored document with the same id."""
        documents = list(documents)
        check_new_ids(documents, set())  # refuse a repeated id before anything is deleted
        check_texts([d.text for d in documents], "documents")
        self.delete([d.id for d in documents])
        return self.add_documents(documents)

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents with these ids, in the order asked for (unknown ids are skipped)."""
        by_id = {d.id: d for d in self.documents}
        return [by_id[i] for i in ids if i in by_id]

    def __len__(self) -> int:
        return len(self.documents)


class QueryVectorSearch:
    """``search_batch`` / ``asearch_batch`` for stages that embed the queries, then search by vector.

    The class provides ``embedder``, ``batch_size``, ``__len__`` and ``search_vectors(vectors, k)``; dense, sharded
    and Ray-sharded indexes share this one query path (an empty index answers without embedding anything).
    """

    embedder: Any
    batch_size: int

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` documents most similar to each query, best first; queries are encoded together."""
        queries = check_search_args(queries, k)
        if not queries or not len(self):  # type: ignore[arg-type]
            return [[] for _ in queries]
        return self.search_vectors(  # type: ignore[attr-defined]
            self.embedder.encode_queries(queries, batch_size=self.batch_size), k
        )

    async def asearch_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """Query encoding is micro-batched with concurrent callers; the search runs in a worker thread."""
        queries = check_search_args(queries, k)
        if not queries or not len(self):  # type: ignore[arg-type]
            return [[] for _ in queries]
        vectors = await self.embedder.aencode_queries(queries, batch_size=self.batch_size)
        return await asyncio.to_thread(self.search_vectors, vectors, k)  # type: ignore[attr-defined]


def check_search_args(queries: Sequence[str], k: int) -> list[str]:
    """Validated, cleaned queries for :meth:`FirstStage.search_batch` (one wording for every stage)."""
    check_positive_int(k, "k")
    return [check_query(q, f"queries[{i}]") for i, q in enumerate(check_texts(queries, "queries"))]


def make_documents(
    texts: Sequence[str],
    metadatas: Sequence[Mapping[str, Any]] | None,
    ids: Sequence[str] | None,
    *,
    first_position: int = 0,
) -> list[Document]:
    """Documents from parallel lists, checked: texts are strings, ids non-empty strings, metadata JSON."""
    texts = check_texts(texts)
    n = len(texts)
    if metadatas is not None and len(metadatas) != n:
        raise ValueError(f"metadatas has {len(metadatas)} entries for {n} texts")
    if ids is not None and len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} texts")
    new_ids = [str(first_position + i) for i in range(n)] if ids is None else list(ids)
    documents = []
    for i, (text, doc_id) in enumerate(zip(texts, new_ids)):
        if not isinstance(doc_id, str) or not doc_id:
            raise TypeError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
        metadata = {} if metadatas is None or metadatas[i] is None else metadatas[i]
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadatas[{i}] must be a mapping, got {type(metadata).__name__}")
        metadata = dict(metadata)
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"metadatas[{i}] must be JSON-serialisable to be stored in the index: {error}") from None
        documents.append(Document(text=text, id=doc_id, metadata=metadata))
    return documents


def check_new_ids(documents: Sequence[Document], existing: set[str] | Mapping[str, Any]) -> None:
    """Refuse ids repeated within ``documents`` or already stored (one counting pass)."""
    seen: set[str] = set()
    duplicates: set[str] = set()
    for document in documents:
        if document.id in seen or document.id in existing:
            duplicates.add(document.id)
        seen.add(document.id)
    if duplicates:
        shown = sorted(duplicates)
        raise ValueError(f"{len(shown)} duplicate document ids, e.g. {shown[:5]} (use upsert_documents to replace)")
