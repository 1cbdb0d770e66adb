"""The dense first stage: a FAISS index over normalised bi-encoder embeddings, with its documents beside it.

Saved as a directory (see :mod:`rerank_plugins.first_stage.persistence`): ``index.faiss`` (FAISS's own
format), ``documents.jsonl``, ``passages.npy`` (which document each vector belongs to; only with
``long_documents="split"``) and ``manifest.json`` (format version, embedding model, dimension, count,
checksums, and a probe embedding that identifies the model). Nothing is pickled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_non_negative_int, check_positive_int, check_texts
from rerank_plugins.first_stage.base import DocumentStore, check_new_ids, check_search_args
from rerank_plugins.first_stage.persistence import (
    DOCUMENTS_FILE,
    IndexLoadError,
    read_documents,
    read_manifest,
    save_directory,
    verify_files,
    write_documents,
)
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import Document, SearchHit

logger = logging.getLogger(__name__)

INDEX_TYPES: tuple[str, ...] = ("flat", "hnsw", "ivf")
LONG_DOCUMENTS: tuple[str, ...] = ("truncate", "split")
FORMAT_NAME = "rerank-plugins-faiss"
FORMAT_VERSION = 1
INDEX_FILE, PASSAGES_FILE = "index.faiss", "passages.npy"
DEFAULT_PASSAGE_OVERLAP = 32
PROBE_TEXT = "rerank-plugins probe: a fixed sentence whose embedding identifies the model."
PROBE_MIN_COSINE = 0.99


class FaissIndex(DocumentStore):
    """Cosine-similarity search over documents embedded by a :class:`BiEncoderBackend`.

    ``index_type``: ``"flat"`` (exact, the default), ``"hnsw"`` (graph, approximate, no training) or
    ``"ivf"`` (inverted lists, approximate; trained on the first batch of documents added).

    ``long_documents``: ``"truncate"`` (default) embeds the beginning of a document longer than the embedding
    model's max length (counted and logged); ``"split"`` embeds every passage of it (``passage_overlap``
    tokens of overlap) and scores the document by its best passage, so text past the limit is searchable.

    Deleting rebuilds the FAISS structure from the stored vectors (no re-embedding); an HNSW graph is rebuilt
    whole, so on large HNSW indexes delete in batches.
    """

    def __init__(
        self,
        embedder: BiEncoderBackend,
        *,
        index_type: str = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ivf_nlist: int | None = None,
        nprobe: int = 16,
        batch_size: int = 32,
        long_documents: str = "truncate",
        passage_overlap: int = DEFAULT_PASSAGE_OVERLAP,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if long_documents not in LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {long_documents!r}")
        if not isinstance(embedder, BiEncoderBackend):
            raise TypeError(f"embedder must be a BiEncoderBackend, got {type(embedder).__name__}")
        self.long_documents = long_documents
        self.passage_overlap = check_non_negative_int(passage_overlap, "passage_overlap")
        self.embedder = embedder
        self.index_type = index_type
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_search = check_positive_int(ef_search, "ef_search")
        self.ivf_nlist = check_positive_int(ivf_nlist, "ivf_nlist", allow_none=True)
        self.nprobe = check_positive_int(nprobe, "nprobe")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.documents: list[Document] = []
        self._ids: set[str] = set()
        self._faiss: Any = None
        self._owner = np.zeros(0, dtype=np.int64)
        """Per vector, the position of its document in :attr:`documents` (one vector each unless split)."""
        self.last_add_truncated = 0
        """How many documents of the last add were longer than the embedding model's max length (and so
        only partly embedded; 0 with ``long_documents="split"``, which embeds them whole)."""
        self._lock = threading.RLock()

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        embedder: BiEncoderBackend,
        metadatas: Sequence[Any] | None = None,
        ids: Sequence[str] | None = None,
        **options: Any,
    ) -> FaissIndex:
        index = cls(embedder, **options)
        index.add_texts(texts, metadatas=metadatas, ids=ids)
        return index

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dense",
            "embedding_model": self.embedder.model_name,
            "index_type": self.index_type,
            "long_documents": self.long_documents,
        }

    # -- building --------------------------------------------------------------------------------------

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        """Embed and add ``documents``; returns their ids. Ids must be new (see :meth:`upsert_documents`)."""
        documents = list(documents)
        texts = check_texts([d.text for d in documents], "documents")
        with self._lock:
            check_new_ids(documents, self._ids)
            if not documents:
                return []
            start = len(self.documents)
            if self.long_documents == "split":
                truncated, vectors, owners = 0, *self._embed_passages(texts, start)
            else:
                truncated = self.embedder.count_truncated(texts)
                if truncated:
                    logger.warning(
                        "%d of %d documents are longer than the embedding model's %d tokens; only their beginning "
                        "is embedded (long_documents='split' embeds them whole)",
                        truncated,
                        len(texts),
                        self.embedder.max_length,
                    )
                vectors = self.embedder.encode_documents(texts, batch_size=self.batch_size)
                owners = np.arange(start, start + len(texts), dtype=np.int64)
            self._add_vectors(vectors)
            self._owner = np.concatenate([self._owner, owners])
            self.documents.extend(documents)
            self._ids.update(d.id for d in documents)
            self.last_add_truncated = truncated
        return [d.id for d in documents]

    def _embed_passages(self, texts: list[str], first_position: int) -> tuple[np.ndarray, np.ndarray]:
        passages = self.embedder.split_to_fit(texts, overlap=self.passage_overlap)
        split = sum(len(p) > 1 for p in passages)
        if split:
            logger.info(
                "%d of %d documents are longer than the embedding model's %d tokens; split into passages",
                split,
                len(texts),
                self.embedder.max_length,
            )
        owners = np.repeat(np.arange(first_position, first_position + len(texts)), [len(p) for p in passages])
        vectors = self.embedder.encode_documents([t for p in passages for t in p], batch_size=self.batch_size)
        return vectors, owners.astype(np.int64)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids (their vectors too); returns how many were removed."""
        wanted = set(check_texts(ids, "ids"))
        with self._lock:
            removed = np.array([d.id in wanted for d in self.documents], dtype=bool)
            if not removed.any():
                return 0
            keep_rows = ~removed[self._owner]
            vectors = self._all_vectors()[keep_rows]
            new_position = np.cumsum(~removed) - 1
            self._owner = new_position[self._owner[keep_rows]]
            self.documents = [d for d, gone in zip(self.documents, removed) if not gone]
            self._ids = {d.id for d in self.documents}
            self._faiss = self._empty_like() if len(vectors) else None
            if len(vectors):
                self._faiss.add(np.ascontiguousarray(vectors))
            return int(removed.sum())

    def _all_vectors(self) -> np.ndarray:
        import faiss

        if self.index_type == "ivf":
            faiss.extract_index_ivf(self._faiss).make_direct_map()
        return self._faiss.reconstruct_n(0, self._faiss.ntotal)

    def _empty_like(self) -> Any:
        """An empty index of the same kind and dimension, keeping an IVF index's trained centroids."""
        import faiss

        if self.index_type == "ivf":
            empty = faiss.clone_index(self._faiss)
            empty.reset()
            return empty
        return self._new_faiss_index(np.zeros((0, self._faiss.d), dtype=np.float32))

    def _new_faiss_index(self, vectors: np.ndarray) -> Any:
        import faiss

        dim = vectors.shape[1]
        if self.index_type == "flat":
            return faiss.IndexFlatIP(dim)
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = self.ef_search
            return index
        n = len(vectors)
        nlist = max(1, min(self.ivf_nlist or round(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(self.nprobe, nlist)
        return index

    def _add_vectors(self, vectors: np.ndarray) -> None:
        if self._faiss is None:
            self._faiss = self._new_faiss_index(vectors)
        self._faiss.add(np.ascontiguousarray(vectors, dtype=np.float32))

    # -- searching -------------------------------------------------------------------------------------

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` documents most similar to each query, best first; queries are encoded together."""
        queries = check_search_args(queries, k)
        if not queries:
            return []
        if not self.documents:
            return [[] for _ in queries]
        vectors = self.embedder.encode_queries(queries, batch_size=self.batch_size)
        return self.search_vectors(vectors, k)

    async def asearch_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """Query encoding is micro-batched with concurrent callers; the search runs in a worker thread."""
        queries = check_search_args(queries, k)
        if not queries:
            return []
        vectors = await self.embedder.aencode_queries(queries, batch_size=self.batch_size)
        return await asyncio.to_thread(self.search_vectors, vectors, k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Search with query embeddings already computed (same model, normalised)."""
        check_positive_int(k, "k")
        with self._lock:
            if self._faiss is None:
                return [[] for _ in range(len(vectors))]
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            # A document is as good as its best vector: fetch vectors until k distinct documents are found.
            wanted, total = min(k, len(self)), self._faiss.ntotal
            fetch = wanted if total == len(self) else min(total, 2 * wanted)
            while True:
                scores, rows = self._search_rows(vectors, fetch)
                results = [self._best_vector_per_document(s, r, wanted) for s, r in zip(scores, rows)]
                one_vector_each = total == len(self)
                if one_vector_each or fetch == total or all(len(hits) == wanted for hits in results):
                    return results
                fetch = min(total, 4 * fetch)

    def _search_rows(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index_type == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, k)
        return self._faiss.search(vectors, k)

    def _best_vector_per_document(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[SearchHit]:
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for score, row in zip(scores, rows):
            if row < 0:
                continue
            position = int(self._owner[row])
            if position not in seen:
                seen.add(position)
                hits.append(SearchHit(self.documents[position], position, float(score)))
                if len(hits) == k:
                    break
        return hits

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to directory ``path`` atomically (a complete new index or the old one, never half)."""
        import faiss

        with self._lock:
            if self._faiss is None:
                raise ValueError("cannot save an empty index; add documents first")
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "embedding_model": self.embedder.model_name,
                "embedding_dimension": self.embedder.dimension,
                "normalized": True,
                "metric": "inner_product",
                "index_type": self.index_type,
                "count": len(self.documents),
                "long_documents": self.long_documents,
                "passage_overlap": self.passage_overlap,
                "probe": {"text": PROBE_TEXT, "vector": self._probe_vector().tolist()},
            }

            def write_files(staging: Path) -> None:
                faiss.write_index(self._faiss, str(staging / INDEX_FILE))
                write_documents(staging / DOCUMENTS_FILE, self.documents)
                if self.long_documents == "split":
                    np.save(staging / PASSAGES_FILE, self._owner, allow_pickle=False)

            return save_directory(path, write_files, manifest)

    def _probe_vector(self) -> np.ndarray:
        return self.embedder.encode_documents([PROBE_TEXT])[0]

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedder: BiEncoderBackend, **options: Any) -> FaissIndex:
        """Load an index saved by :meth:`save`, checking it fully; raises :class:`IndexLoadError`."""
        import faiss

        directory = Path(path)
        manifest = read_manifest(
            directory,
            FORMAT_NAME,
            FORMAT_VERSION,
            ("embedding_model", "embedding_dimension", "index_type", "count", "probe"),
        )
        if manifest["index_type"] not in INDEX_TYPES:
            raise IndexLoadError(f"{directory}: unknown index_type {manifest['index_type']!r}")
        # manifests written before splitting existed hold neither key: they are truncate-mode indexes
        stored = {
            "long_documents": manifest.get("long_documents", "truncate"),
            "passage_overlap": manifest.get("passage_overlap", DEFAULT_PASSAGE_OVERLAP),
        }
        split = stored["long_documents"] == "split"
        verify_files(directory, manifest, {INDEX_FILE, DOCUMENTS_FILE} | ({PASSAGES_FILE} if split else set()))
        dimension = embedder.dimension
        if manifest["embedding_dimension"] != dimension:
            raise IndexLoadError(
                f"{directory} was built with {manifest['embedding_model']!r} ({manifest['embedding_dimension']} "
                f"dimensions); the embedding model given, {embedder.model_name!r}, has {dimension}"
            )
        for key, value in stored.items():
            requested = options.pop(key, value)
            if requested != value:
                raise IndexLoadError(f"{directory} was built with {key}={value!r}, not {requested!r}")
        index = cls(embedder, index_type=manifest["index_type"], **stored, **options)
        probe = np.asarray(manifest["probe"]["vector"], dtype=np.float32)
        current = index._probe_vector()
        cosine = float(np.dot(probe, current) / (np.linalg.norm(probe) * np.linalg.norm(current) + 1e-12))
        if cosine < PROBE_MIN_COSINE:
            raise IndexLoadError(
                f"{directory} was built with embedding model {manifest['embedding_model']!r}; the model given, "
                f"{embedder.model_name!r}, embeds differently (probe cosine {cosine:.3f}). "
                "Rebuild the index or use that model."
            )
        try:
            index._faiss = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:
            raise IndexLoadError(f"{directory}: {INDEX_FILE} cannot be read: {error}") from None
        documents = read_documents(directory / DOCUMENTS_FILE)
        owners = np.arange(len(documents), dtype=np.int64)
        if split:
            try:
                owners = np.load(directory / PASSAGES_FILE, allow_pickle=False)
            except ValueError as error:
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} cannot be read: {error}") from None
            # one or more consecutive passages per document, every document present, in order
            steps = np.diff(owners, prepend=-1)
            if (
                owners.ndim != 1
                or not np.issubdtype(owners.dtype, np.integer)
                or len(owners) == 0
                or not np.isin(steps, (0, 1)).all()
                or owners[-1] != len(documents) - 1
            ):
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} does not map vectors onto the documents")
        if (
            not (len(documents) == manifest["count"] and len(owners) == index._faiss.ntotal)
            or index._faiss.d != dimension
        ):
            raise IndexLoadError(
                f"{directory}: counts disagree (manifest {manifest['count']}, documents {len(documents)}, "
                f"vectors {index._faiss.ntotal}, expected {len(owners)})"
            )
        if isinstance(index._faiss, faiss.IndexHNSWFlat):
            index._faiss.hnsw.efSearch = index.ef_search
        elif hasattr(index._faiss, "nprobe"):
            index._faiss.nprobe = min(index.nprobe, index._faiss.nlist)
        index._owner = owners.astype(np.int64)
        index.documents = documents
        index._ids = {d.id for d in documents}
        return index
