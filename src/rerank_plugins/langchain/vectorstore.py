"""Our dense index as a LangChain ``VectorStore``: any LangChain ``Embeddings``, safe persistence, MMR.

Chains reach a store through LangChain's interface; this one keeps our index's guarantees behind it: saves
are atomic directories with checksums (no pickle), and a load is refused when the directory is corrupt or the
embedding given embeds differently from the one it was built with.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.documents import Document as LCDocument
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from rerank_plugins._validation import check_positive_int
from rerank_plugins.first_stage.base import make_documents
from rerank_plugins.first_stage.dense import PROBE_TEXT, VectorIndex
from rerank_plugins.schema import Document

Filter = Mapping[str, Any] | Callable[[LCDocument], bool]
"""Metadata equality (``{"source": "a.txt"}``: every key equal) or a predicate on the stored document."""


class FaissVectorStore(VectorStore):
    """A FAISS vector store over any LangChain ``Embeddings``, with ids, upserts, deletes, MMR and safe saves.

    Scores are cosine similarities (vectors are L2-normalised, whatever the embedding's own scale): higher is
    more similar, in [-1, 1]; relevance scores map them to [0, 1] as ``(1 + cosine) / 2``. Adding a document
    whose id is stored replaces it. Metadata must be JSON-serialisable (it is saved as JSON). ``filter`` on the
    search methods is a dict of metadata values that must all be equal, or a predicate on the document.

    ``index_type``: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate; see :class:`VectorIndex`).
    Deleting rebuilds the FAISS structure from the stored vectors (nothing is re-embedded).
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        index_type: str = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ivf_nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
        self.embedding = embedding
        self.index = VectorIndex(
            index_type=index_type, hnsw_m=hnsw_m, ef_search=ef_search, ivf_nlist=ivf_nlist, nprobe=nprobe
        )

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> FaissVectorStore:
        """A new store holding ``texts``; ``kwargs`` are the constructor's options (``index_type``...)."""
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # -- adding and deleting ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store ``texts``; a missing id becomes a new UUID, a stored id is replaced. Returns the ids."""
        documents = _documents(texts, metadatas, ids)
        vectors = self.embedding.embed_documents([d.text for d in documents]) if documents else []
        return self.index.add_vectors(documents, vectors, replace=True)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        documents = _documents(texts, metadatas, ids)
        vectors = await self.embedding.aembed_documents([d.text for d in documents]) if documents else []
        return await asyncio.to_thread(self.index.add_vectors, documents, vectors, replace=True)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Remove the documents with these ids (all of them when ``ids`` is None); unknown ids are ignored."""
        self.index.delete([d.id for d in self.index.documents] if ids is None else ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[LCDocument]:
        return [_to_langchain(d) for d in self.index.get_by_ids(ids)]

    # -- searching -------------------------------------------------------------------------------------

    def similarity_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter=filter)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter=filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        """The ``k`` most similar documents with their cosine similarity (higher is more similar)."""
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter=filter)

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(self.similarity_search_with_score_by_vector, vector, k, filter=filter)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[LCDocument]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter=filter)]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Filter | None = None, **kwargs: Any
    ) -> list[tuple[LCDocument, float]]:
        """The ``k`` documents most similar to ``embedding``, with their cosine similarity."""
        hits = self.index.search_vectors([embedding], k, where=_where(filter))[0]
        return [(_to_langchain(hit.document), float(hit.score)) for hit in hits]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, filter=filter
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        vector = await self.embedding.aembed_query(query)
        return await asyncio.to_thread(
            self.max_marginal_relevance_search_by_vector, vector, k, fetch_k, lambda_mult, filter=filter
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Filter | None = None,
        **kwargs: Any,
    ) -> list[LCDocument]:
        """``k`` of the ``fetch_k`` most similar documents, chosen by MMR on their stored vectors.

        ``lambda_mult``: 1 ranks by similarity alone, 0 by diversity alone.
        """
        check_positive_int(k, "k")
        hits, vectors = self.index.search_with_vectors(
            embedding, max(k, check_positive_int(fetch_k, "fetch_k")), where=_where(filter)
        )
        if not hits:
            return []
        chosen = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors, lambda_mult, k)
        return [_to_langchain(hits[i].document) for i in chosen]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _cosine_to_unit

    # -- persistence -----------------------------------------------------------------------------------

    def save_local(self, folder_path: str | os.PathLike[str]) -> Path:
        """Write the store to directory ``folder_path`` atomically, with checksums and the embedding's probe.

        A directory that exists and is not a saved index is never overwritten; nothing is pickled.
        """
        probe = self.embedding.embed_documents([PROBE_TEXT])[0]
        return self.index.save(folder_path, embedding_model=_describe(self.embedding), probe_vector=probe)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """The same as :meth:`save_local` (the name every other saveable object here uses)."""
        return self.save_local(path)

    @classmethod
    def load_local(
        cls, folder_path: str | os.PathLike[str], embedding: Embeddings, **search_options: Any
    ) -> FaissVectorStore:
        """The same as :meth:`load` (the name LangChain's own FAISS store uses; nothing is unpickled here)."""
        return cls.load(folder_path, embedding, **search_options)

    @classmethod
    def load(
        cls, folder_path: str | os.PathLike[str], embedding: Embeddings, **search_options: Any
    ) -> FaissVectorStore:
        """Load a store saved by :meth:`save_local` (or a :class:`FaissIndex` directory) for ``embedding``.

        Raises :class:`IndexLoadError`, leaving the directory untouched, when it is corrupt or incomplete, or
        when ``embedding`` has another dimension or embeds the probe sentence differently from the one saved.
        ``search_options``: ``ef_search``, ``nprobe``.
        """
        store = cls(embedding)
        store.index = VectorIndex.load(
            folder_path,
            probe=lambda text: embedding.embed_documents([text])[0],
            embedding_model=_describe(embedding),
            **search_options,
        )
        return store


def _documents(
    texts: Iterable[str], metadatas: Sequence[Mapping[str, Any] | None] | None, ids: Sequence[str | None] | None
) -> list[Document]:
    """Checked documents; an id that is missing (None or empty) becomes a new UUID."""
    texts = list(texts)
    ids = [None] * len(texts) if ids is None else list(ids)
    return make_documents(texts, metadatas, [doc_id or str(uuid.uuid4()) for doc_id in ids])


def _to_langchain(document: Document) -> LCDocument:
    return LCDocument(page_content=document.text, metadata=dict(document.metadata), id=document.id)


def _where(filter: Filter | None) -> Callable[[Document], bool] | None:
    if filter is None:
        return None
    if callable(filter):
        return lambda document: bool(filter(_to_langchain(document)))
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a dict of metadata values or a callable, got {type(filter).__name__}")
    wanted = dict(filter)
    return lambda document: all(
        key in document.metadata and document.metadata[key] == value for key, value in wanted.items()
    )


def _cosine_to_unit(cosine: float) -> float:
    """Cosine similarity in [-1, 1] as a relevance score in [0, 1]."""
    return (1.0 + cosine) / 2.0


def _describe(embedding: Embeddings) -> str:
    """The embedding's class and model name, for the manifest and error messages (the probe decides)."""
    model = next(
        (getattr(embedding, a) for a in ("model", "model_name") if isinstance(getattr(embedding, a, None), str)), None
    )
    return f"{type(embedding).__name__}({model})" if model else type(embedding).__name__
