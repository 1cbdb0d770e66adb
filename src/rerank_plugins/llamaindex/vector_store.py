"""Our dense index as a LlamaIndex vector store: ``VectorStoreIndex`` on top, safe persistence underneath.

Query engines reach a store through LlamaIndex's interface; this one keeps our index's guarantees behind it:
persisting writes an atomic directory with checksums (no pickle), and loading refuses a corrupt directory, or
(given the embed model) one built with an embedding that embeds differently.
"""

from __future__ import annotations

import asyncio
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    DEFAULT_PERSIST_DIR,
    DEFAULT_PERSIST_FNAME,
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
from pydantic import Field, PrivateAttr

from rerank_plugins.first_stage.dense import PROBE_TEXT, VectorIndex
from rerank_plugins.schema import Document

DEFAULT_NAMESPACE = "default"
NAMESPACE_SEP = "__"

Matcher = Callable[[Mapping[str, Any]], bool]


class FaissVectorStore(BasePydanticVectorStore):
    """A FAISS vector store that keeps the nodes (``stores_text=True``): text, metadata, ids, relationships.

    The dimension is taken from the first nodes added. Similarities are cosine (vectors are L2-normalised).
    Adding a node whose id is stored replaces it. Queries support ``similarity_top_k``, ``node_ids``,
    ``doc_ids`` and metadata filters (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``nin``,
    ``contains``, ``any``, ``all``, ``text_match``, ``is_empty``; AND / OR / NOT; nested), in the default mode.

    ``embed_model`` is only used to identify the embedding when persisting and loading: the store then refuses
    to load for an embed model that embeds differently. Persisting writes a directory (also at LlamaIndex's
    ``vector_store.json`` path, which then names a directory); an empty store cannot be persisted.
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    index_type: str = Field(default="flat", description="'flat' (exact), 'hnsw' or 'ivf' (approximate).")
    hnsw_m: int = Field(default=32, description="HNSW graph degree.")
    ef_search: int = Field(default=128, description="HNSW search breadth.")
    ivf_nlist: int | None = Field(default=None, description="IVF lists (None: from the first batch's size).")
    nprobe: int = Field(default=16, description="IVF lists searched per query.")

    _index: VectorIndex = PrivateAttr()
    _embed_model: BaseEmbedding | None = PrivateAttr(default=None)

    def __init__(self, embed_model: BaseEmbedding | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._index = VectorIndex(
            index_type=self.index_type,
            hnsw_m=self.hnsw_m,
            ef_search=self.ef_search,
            ivf_nlist=self.ivf_nlist,
            nprobe=self.nprobe,
        )
        self._embed_model = embed_model

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsFaissVectorStore"

    @property
    def client(self) -> VectorIndex:
        """The underlying :class:`VectorIndex`."""
        return self._index

    # -- adding and deleting ---------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store ``nodes`` with their embeddings (which they must carry); returns their ids."""
        nodes = list(nodes)
        documents = [
            Document(
                text=node.get_content(metadata_mode=MetadataMode.NONE),
                id=node.node_id,
                metadata=node_to_metadata_dict(node, remove_text=True, flat_metadata=False),
            )
            for node in nodes
        ]
        vectors = [node.get_embedding() for node in nodes]
        return self._index.add_vectors(documents, vectors, replace=True)

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Remove every node of the source document ``ref_doc_id``."""
        self._index.delete(self._select(where=lambda metadata: metadata.get("ref_doc_id") == ref_doc_id))

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Remove the nodes with these ids that match ``filters`` (all nodes matching when ``node_ids`` is None)."""
        self._index.delete(self._select(node_ids, _matcher(filters)))

    def clear(self) -> None:
        self._index.delete(self._select())

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes with these ids that match ``filters`` (without their embeddings)."""
        wanted = self._select(node_ids, _matcher(filters))
        return [_to_node(d) for d in self._index.get_by_ids(wanted)]

    def _select(self, node_ids: Sequence[str] | None = None, where: Matcher | None = None) -> list[str]:
        allowed = None if node_ids is None else set(node_ids)
        return [
            d.id
            for d in list(self._index.documents)
            if (allowed is None or d.id in allowed) and (where is None or where(d.metadata))
        ]

    # -- querying --------------------------------------------------------------------------------------

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes most similar to ``query.query_embedding`` (cosine), best first."""
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise NotImplementedError(f"{type(self).__name__} supports the default query mode, not {query.mode!r}")
        if query.query_embedding is None:
            raise ValueError("the query has no embedding (query_embedding is None)")
        where = _where(query.node_ids, query.doc_ids, _matcher(query.filters))
        hits = self._index.search_vectors([query.query_embedding], query.similarity_top_k, where=where)[0]
        return VectorStoreQueryResult(
            nodes=[_to_node(hit.document) for hit in hits],
            similarities=[float(hit.score) for hit in hits],
            ids=[hit.document.id for hit in hits],
        )

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # -- persistence -----------------------------------------------------------------------------------

    def persist(
        self,
        persist_path: str = os.path.join(
            DEFAULT_PERSIST_DIR, f"{DEFAULT_NAMESPACE}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        ),
        fs: fsspec.AbstractFileSystem | None = None,
    ) -> None:
        """Write the store to directory ``persist_path`` atomically (checksums, no pickle; local disk only)."""
        _check_local(fs)
        probe = None if self._embed_model is None else self._embed_model.get_text_embedding(PROBE_TEXT)
        self._index.save(persist_path, embedding_model=_describe(self._embed_model), probe_vector=probe)

    @classmethod
    def from_persist_path(
        cls,
        persist_path: str | os.PathLike[str],
        fs: fsspec.AbstractFileSystem | None = None,
        *,
        embed_model: BaseEmbedding | None = None,
        **search_options: Any,
    ) -> FaissVectorStore:
        """Load a store written by :meth:`persist`, checking every file; raises :class:`IndexLoadError`.

        With ``embed_model`` the store is also refused when that model has another dimension or embeds the
        probe sentence differently from the model it was persisted with. ``search_options``: ``ef_search``,
        ``nprobe``.
        """
        _check_local(fs)
        probe = None if embed_model is None else embed_model.get_text_embedding
        index = VectorIndex.load(persist_path, probe=probe, embedding_model=_describe(embed_model), **search_options)
        store = cls(embed_model=embed_model, index_type=index.index_type, **search_options)
        store._index = index
        return store

    def save(self, path: str | os.PathLike[str]) -> None:
        """The same as :meth:`persist` (the name every other saveable object here uses)."""
        self.persist(str(path))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embed_model: BaseEmbedding | None = None, **search_options: Any
    ) -> FaissVectorStore:
        """The same as :meth:`from_persist_path` (the name every other loadable object here uses)."""
        return cls.from_persist_path(path, embed_model=embed_model, **search_options)

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str | os.PathLike[str] = DEFAULT_PERSIST_DIR,
        namespace: str = DEFAULT_NAMESPACE,
        fs: fsspec.AbstractFileSystem | None = None,
        *,
        embed_model: BaseEmbedding | None = None,
        **search_options: Any,
    ) -> FaissVectorStore:
        """Load the store that ``StorageContext.persist(persist_dir)`` wrote for ``namespace``."""
        path = Path(persist_dir) / f"{namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        return cls.from_persist_path(path, fs, embed_model=embed_model, **search_options)


def _to_node(document: Document) -> BaseNode:
    return metadata_dict_to_node(dict(document.metadata), text=document.text)


def _where(
    node_ids: Sequence[str] | None, doc_ids: Sequence[str] | None, matcher: Matcher | None
) -> Callable[[Document], bool] | None:
    """One predicate on stored documents for a query's node-id, source-document and metadata restrictions.

    An empty id list restricts nothing: ``VectorStoreIndex.as_retriever`` passes its (for a store that keeps
    the nodes, empty) node list on every query, as other such stores read it.
    """
    if not node_ids and not doc_ids and matcher is None:
        return None
    nodes, sources = (set(node_ids) if node_ids else None), (set(doc_ids) if doc_ids else None)
    return lambda d: (
        (nodes is None or d.id in nodes)
        and (sources is None or d.metadata.get("ref_doc_id") in sources)
        and (matcher is None or matcher(d.metadata))
    )


def _matcher(filters: MetadataFilters | None) -> Matcher | None:
    """A predicate on node metadata for ``filters`` (nested filters included); None when there are none."""
    if filters is None or not filters.filters:
        return None
    parts = [_matcher(f) if isinstance(f, MetadataFilters) else _leaf(f) for f in filters.filters]
    checks = [p for p in parts if p is not None]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return lambda metadata: all(check(metadata) for check in checks)
    if condition == FilterCondition.OR:
        return lambda metadata: any(check(metadata) for check in checks)
    if condition == FilterCondition.NOT:
        return lambda metadata: not any(check(metadata) for check in checks)
    raise NotImplementedError(f"filter condition {condition!r} is not supported")


_COMPARISONS: dict[FilterOperator, Callable[[Any, Any], bool]] = {
    FilterOperator.EQ: operator.eq,
    FilterOperator.NE: operator.ne,
    FilterOperator.GT: operator.gt,
    FilterOperator.GTE: operator.ge,
    FilterOperator.LT: operator.lt,
    FilterOperator.LTE: operator.le,
    FilterOperator.IN: lambda value, wanted: value in wanted,
    FilterOperator.NIN: lambda value, wanted: value not in wanted,
    FilterOperator.CONTAINS: lambda value, wanted: isinstance(value, list) and wanted in value,
    FilterOperator.ANY: lambda value, wanted: isinstance(value, list) and any(w in value for w in wanted),
    FilterOperator.ALL: lambda value, wanted: isinstance(value, list) and all(w in value for w in wanted),
    FilterOperator.TEXT_MATCH: lambda value, wanted: isinstance(value, str) and wanted in value,
    FilterOperator.TEXT_MATCH_INSENSITIVE: lambda value, wanted: (
        isinstance(value, str) and wanted.lower() in value.lower()
    ),
}


def _leaf(filter_: MetadataFilter) -> Matcher:
    key, wanted = filter_.key, filter_.value
    if filter_.operator == FilterOperator.IS_EMPTY:
        return lambda metadata: metadata.get(key) in (None, "", [])
    compare = _COMPARISONS.get(filter_.operator)
    if compare is None:
        raise NotImplementedError(f"metadata filter operator {filter_.operator!r} is not supported")
    missing_matches = filter_.operator in (FilterOperator.NE, FilterOperator.NIN)

    def check(metadata: Mapping[str, Any]) -> bool:
        value = metadata.get(key)
        if value is None:
            return missing_matches
        try:
            return bool(compare(value, wanted))
        except TypeError:  # e.g. a number compared with a string: not a match
            return False

    return check


def _check_local(fs: fsspec.AbstractFileSystem | None) -> None:
    if fs is not None and not isinstance(fs, LocalFileSystem):
        raise NotImplementedError("FaissVectorStore persists to the local file system only (atomic renames)")


def _describe(embed_model: BaseEmbedding | None) -> str:
    return "unknown" if embed_model is None else f"{type(embed_model).__name__}({embed_model.model_name})"
