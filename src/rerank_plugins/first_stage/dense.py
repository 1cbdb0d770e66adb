"""The dense first stage: a FAISS index over normalised embeddings, with its documents beside them.

:class:`VectorIndex` is the part that needs no model (vectors computed anywhere, any dimension): the FAISS
structure, the documents, the vector -> document map, delete, search by vector and persistence. The framework
vector stores build on it. :class:`FaissIndex` adds our bi-encoder: it embeds documents and queries itself.

Saved as a directory (see :mod:`rerank_plugins.first_stage.persistence`): ``index.faiss`` (FAISS's own
format), ``documents.jsonl``, ``passages.npy`` (which document each vector belongs to; only with
``long_documents="split"``) and ``manifest.json`` (format version, embedding model, dimension, count,
checksums, and a probe embedding that identifies the model). Nothing is pickled.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rerank_plugins._validation import check_non_negative_int, check_positive_int, check_texts
from rerank_plugins.first_stage.base import DocumentStore, QueryVectorSearch, check_new_ids
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
MANIFEST_KEYS = ("embedding_model", "embedding_dimension", "index_type", "count", "probe")


class VectorIndex:
    """Cosine-similarity search over vectors computed elsewhere, with the documents they stand for.

    Vectors are L2-normalised on the way in, so scores are cosine similarities whatever the embedding's scale;
    the dimension is fixed by ``dimension`` or by the first add. A document may own several vectors (passages)
    and is then scored by its best one.

    ``index_type``: ``"flat"`` (exact, the default), ``"hnsw"`` (graph, approximate, no training) or
    ``"ivf"`` (inverted lists, approximate; trained on the first batch added). With the approximate types a
    very selective ``where`` filter can find fewer than ``k`` documents.

    Deleting never re-embeds: a flat index removes the vectors in place (FAISS ``remove_ids``); HNSW and IVF mark
    them deleted and searches skip them, until deleted vectors outnumber live ones and the structure is rebuilt from
    the live vectors (IVF keeps its trained centroids), so a delete costs O(1) amortised FAISS work. All methods
    are thread-safe.
    """

    def __init__(
        self,
        dimension: int | None = None,
        *,
        index_type: str = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ivf_nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        self.index_type = index_type
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m")
        self.ef_search = check_positive_int(ef_search, "ef_search")
        self.ivf_nlist = check_positive_int(ivf_nlist, "ivf_nlist", allow_none=True)
        self.nprobe = check_positive_int(nprobe, "nprobe")
        self._dimension = check_positive_int(dimension, "dimension", allow_none=True)
        self.documents: list[Document] = []
        self._ids: set[str] = set()
        self._faiss: Any = None
        self._owner = np.zeros(0, dtype=np.int64)
        """Per vector (FAISS row), the position of its document in :attr:`documents` (one vector each unless split);
        -1 for a vector marked deleted."""
        self._dead_rows = 0
        self._skip_dead: tuple[Any, ...] | None = None
        """A FAISS selector of every row but the dead ones (with the batch it negates, kept alive), made on the first
        search after a delete: built from the few dead rows, not the many live ones."""
        self._lock = threading.RLock()

    @property
    def dimension(self) -> int | None:
        """The vectors' dimension (None until the first add when none was given)."""
        return self._dimension

    def __len__(self) -> int:
        return len(self.documents)

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents with these ids, in the order asked for (unknown ids are skipped)."""
        wanted = set(ids)
        with self._lock:
            by_id = {d.id: d for d in self.documents if d.id in wanted}
        return [by_id[i] for i in ids if i in by_id]

    # -- building --------------------------------------------------------------------------------------

    def add_vectors(
        self,
        documents: Sequence[Document],
        vectors: ArrayLike,
        *,
        owners: ArrayLike | None = None,
        replace: bool = False,
    ) -> list[str]:
        """Store ``documents`` with their ``vectors`` (one row each); returns their ids.

        ``owners`` gives several vectors to a document: row ``i`` belongs to ``documents[owners[i]]`` (rows of a
        document together, documents in order). Ids must be new unless ``replace=True``, which replaces the
        stored documents with those ids (an upsert, checked completely before anything is removed).
        """
        documents = list(documents)
        with self._lock:
            check_new_ids(documents, set() if replace else self._ids)
            if not documents:
                return []
            matrix = self._checked_matrix(vectors, "vectors")
            rows = np.arange(len(documents), dtype=np.int64) if owners is None else np.asarray(owners)
            if len(rows) != len(matrix) or not _maps_rows_onto(rows, len(documents)):
                raise ValueError(
                    f"{len(matrix)} vectors for {len(documents)} documents: give one vector per document, or owners "
                    "mapping each vector to its document (every document, in order)"
                )
            if replace:
                self.delete([d.id for d in documents])
            self._dimension = matrix.shape[1]
            start = len(self.documents)
            if self._faiss is None:
                self._faiss = self._new_faiss_index(matrix)
            self._faiss.add(matrix)
            self._owner = np.concatenate([self._owner, rows.astype(np.int64) + start])
            self.documents.extend(documents)
            self._ids.update(d.id for d in documents)
        return [d.id for d in documents]

    def _checked_matrix(self, vectors: ArrayLike, name: str) -> np.ndarray:
        """``vectors`` as a contiguous, L2-normalised float32 matrix of this index's dimension (if known)."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise ValueError(f"{name} must be a 2-D array (one row per vector), got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError(f"{name} hold NaN or infinite values")
        if self._dimension is not None and matrix.shape[1] != self._dimension:
            raise ValueError(f"{name} have {matrix.shape[1]} dimensions; this index holds {self._dimension}")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        # Rows already of unit length (within float32 rounding) stay as they are: dividing again would move their
        # last bits, so vectors read back from an index (shards, a rebuild) would no longer score identically.
        unit = np.abs(norms - 1.0) <= 1e-6
        return np.ascontiguousarray(np.where(unit, matrix, matrix / np.maximum(norms, 1e-12)))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the documents with these ids (their vectors too); returns how many were removed."""
        import faiss

        wanted = set(check_texts(ids, "ids"))
        with self._lock:
            if wanted.isdisjoint(self._ids):
                return 0
            removed = np.array([d.id in wanted for d in self.documents], dtype=bool)
            live = self._owner >= 0
            gone_rows = live.copy()
            gone_rows[live] = removed[self._owner[live]]
            new_position = np.cumsum(~removed) - 1
            self.documents = [d for d, gone in zip(self.documents, removed) if not gone]
            self._ids.difference_update(wanted)
            if not self.documents:
                self._faiss, self._owner, self._dead_rows = None, np.zeros(0, dtype=np.int64), 0
            elif self.index_type == "flat":  # removed in place; the rows after them move up, in order
                self._faiss.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(gone_rows).astype(np.int64)))
                self._owner = new_position[self._owner[~gone_rows]]
            else:  # marked deleted: searches skip them until there are more of them than live vectors
                self._owner = np.where(live & ~gone_rows, new_position[np.maximum(self._owner, 0)], -1)
                self._dead_rows += int(gone_rows.sum())
                self._skip_dead = None
                if self._dead_rows > self._faiss.ntotal - self._dead_rows:
                    self._rebuild()
            return int(removed.sum())

    def _rebuild(self) -> None:
        """The FAISS structure again from the live vectors only (vectors marked deleted are dropped)."""
        live = self._owner >= 0
        vectors = self._vectors()[live]
        self._faiss = self._empty_like()
        self._faiss.add(np.ascontiguousarray(vectors))
        self._owner, self._dead_rows, self._skip_dead = self._owner[live], 0, None

    def _vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The stored (normalised) vectors in ``rows`` (all by default)."""
        import faiss

        if self.index_type == "ivf":
            ivf = faiss.extract_index_ivf(self._faiss)
            if ivf.direct_map.no():
                ivf.make_direct_map()
        if rows is None:
            return self._faiss.reconstruct_n(0, self._faiss.ntotal)
        return self._faiss.reconstruct_batch(np.asarray(rows, dtype=np.int64))

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
        wanted = self.ivf_nlist or round(4 * math.sqrt(n))
        nlist = max(1, min(wanted, n // 39))  # faiss wants at least 39 training vectors per list
        if self.ivf_nlist and nlist < self.ivf_nlist:
            logger.warning(
                "ivf_nlist=%d lowered to %d: %d vectors train at most that many lists (faiss wants 39 per list)",
                self.ivf_nlist,
                nlist,
                n,
            )
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(self.nprobe, nlist)
        return index

    # -- searching -------------------------------------------------------------------------------------

    def search_vectors(
        self, vectors: ArrayLike, k: int, *, where: Callable[[Document], bool] | None = None
    ) -> list[list[SearchHit]]:
        """The ``k`` documents most similar to each query vector (one per row), best first, by cosine.

        ``where`` keeps only the documents it accepts (evaluated inside FAISS's search, not after it).
        """
        return [[hit for hit, _ in hits] for hits in self._search(vectors, k, where)]

    def search_with_vectors(
        self, vector: ArrayLike, k: int, *, where: Callable[[Document], bool] | None = None
    ) -> tuple[list[SearchHit], np.ndarray]:
        """The hits for one query vector and, row for row, the stored vector that matched each (for MMR).

        Read together under the lock, so a concurrent delete cannot pair a hit with another document's vector.
        """
        with self._lock:
            found = self._search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k, where)[0]
            dimension = self._dimension or 0
            vectors = self._vectors(np.array([row for _, row in found])) if found else np.zeros((0, dimension))
        return [hit for hit, _ in found], vectors

    def _search(
        self, vectors: ArrayLike, k: int, where: Callable[[Document], bool] | None
    ) -> list[list[tuple[SearchHit, int]]]:
        check_positive_int(k, "k")
        with self._lock:
            if len(np.asarray(vectors)) == 0:
                return []
            queries = self._checked_matrix(vectors, "query vectors")
            if self._faiss is None:
                return [[] for _ in queries]
            documents, rows, selector = len(self), self._faiss.ntotal - self._dead_rows, None
            if where is None and self._dead_rows:
                selector = self._dead_rows_skipped()
            elif where is not None:
                accepted = np.fromiter((bool(where(d)) for d in self.documents), dtype=bool, count=len(self))
                allowed_rows = np.flatnonzero((self._owner >= 0) & accepted[np.maximum(self._owner, 0)])
                documents, rows = int(accepted.sum()), len(allowed_rows)
                if not documents:
                    return [[] for _ in queries]
                selector = _row_selector(allowed_rows)
            # A document is as good as its best vector: fetch vectors until k distinct documents are found, and
            # past every vector tied with the k-th (FAISS picks among ties at the cut by scan history; we pick the
            # lowest positions, so results do not depend on how the vectors are split into indexes or shards).
            wanted, one_vector_each = min(k, documents), rows == documents
            fetch = min(rows, wanted + 1 if one_vector_each else 2 * wanted)
            while True:
                scores, found_rows = self._search_rows(queries, fetch, selector)
                results = [self._best_vector_per_document(s, r, wanted) for s, r in zip(scores, found_rows)]
                if fetch == rows or all(
                    r[-1] < 0 or (len(hits) == wanted and s[-1] < hits[-1][0].score)
                    for hits, s, r in zip(results, scores, found_rows)
                ):
                    return results
                fetch = min(rows, 4 * fetch)

    def _dead_rows_skipped(self) -> Any:
        import faiss

        if self._skip_dead is None:
            dead = faiss.IDSelectorBatch(np.flatnonzero(self._owner < 0).astype(np.int64))
            self._skip_dead = (faiss.IDSelectorNot(dead), dead)
        return self._skip_dead[0]

    def _search_rows(self, vectors: np.ndarray, k: int, selector: Any) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self.index_type == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, k)
        if selector is None:
            return self._faiss.search(vectors, k)
        if self.index_type == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self._faiss.hnsw.efSearch)
        elif self.index_type == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=faiss.extract_index_ivf(self._faiss).nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        return self._faiss.search(vectors, k, params=params)

    def _best_vector_per_document(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[tuple[SearchHit, int]]:
        """The ``k`` best documents among the fetched vectors, by their best vector; equal scores by position."""
        best: dict[int, tuple[float, int]] = {}
        for score, row in zip(scores, rows):
            if row >= 0:
                best.setdefault(int(self._owner[row]), (float(score), int(row)))
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:k]
        return [(SearchHit(self.documents[position], position, score), row) for position, (score, row) in ranked]

    # -- persistence -----------------------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike[str], *, embedding_model: str = "unknown", probe_vector: ArrayLike | None = None
    ) -> Path:
        """Write the index to directory ``path`` atomically (a complete new index or the old one, never half).

        ``probe_vector`` is the vectors' model's embedding of :data:`PROBE_TEXT`: kept so that :meth:`load` can
        refuse an embedding that embeds differently. Without one only the dimension can be checked at load.
        """
        probe = None if probe_vector is None else unit_vector(probe_vector).tolist()
        with self._lock:
            split = self._faiss is not None and self._faiss.ntotal - self._dead_rows != len(self.documents)
            settings = {"long_documents": "split" if split else "truncate"}
            return self._write(path, embedding_model, probe, settings, with_passages=split)

    def _write(
        self,
        path: str | os.PathLike[str],
        embedding_model: str,
        probe: list[float] | None,
        settings: dict[str, Any],
        *,
        with_passages: bool,
    ) -> Path:
        import faiss

        with self._lock:
            if self._faiss is None:
                raise ValueError("cannot save an empty index; add documents first")
            if self._dead_rows:  # the saved structure holds live vectors only
                self._rebuild()
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "embedding_model": embedding_model,
                "embedding_dimension": self._faiss.d,
                "normalized": True,
                "metric": "inner_product",
                "index_type": self.index_type,
                "count": len(self.documents),
                **settings,
                "probe": None if probe is None else {"text": PROBE_TEXT, "vector": probe},
            }

            def write_files(staging: Path) -> None:
                faiss.write_index(self._faiss, str(staging / INDEX_FILE))
                write_documents(staging / DOCUMENTS_FILE, self.documents)
                if with_passages:
                    np.save(staging / PASSAGES_FILE, self._owner, allow_pickle=False)

            return save_directory(path, write_files, manifest)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        probe: Callable[[str], ArrayLike] | None = None,
        embedding_model: str = "the embedding given",
        **options: Any,
    ) -> VectorIndex:
        """Load an index saved by :meth:`save` (or by :class:`FaissIndex`), checking it fully.

        ``probe`` embeds a text with the embedding that will query the index; the index is refused
        (:class:`IndexLoadError`) when its dimension or its embedding of :data:`PROBE_TEXT` differs from the one
        stored. ``options``: the search settings (``hnsw_m``, ``ef_search``, ``nprobe``...).
        """
        directory = Path(path)
        manifest = _read_manifest(directory)
        split = manifest.get("long_documents", "truncate") == "split"
        verify_files(directory, manifest, _files(split))
        index = cls(manifest["embedding_dimension"], index_type=manifest["index_type"], **options)
        if probe is not None:
            current = unit_vector(probe(PROBE_TEXT))
            _check_dimension(directory, manifest, len(current), embedding_model)
            _check_probe(directory, manifest, current, embedding_model)
        index._install(directory, manifest, split)
        return index

    def _install(self, directory: Path, manifest: dict[str, Any], split: bool) -> None:
        """Read the FAISS structure, documents and vector map of a verified directory into this index."""
        import faiss

        try:
            structure = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:
            raise IndexLoadError(f"{directory}: {INDEX_FILE} cannot be read: {error}") from None
        documents = read_documents(directory / DOCUMENTS_FILE)
        owners = np.arange(len(documents), dtype=np.int64)
        if split:
            try:
                owners = np.load(directory / PASSAGES_FILE, allow_pickle=False)
            except ValueError as error:
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} cannot be read: {error}") from None
            if not _maps_rows_onto(owners, len(documents)) or not len(owners):
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} does not map vectors onto the documents")
        if (
            not (len(documents) == manifest["count"] and len(owners) == structure.ntotal)
            or structure.d != manifest["embedding_dimension"]
            or (self._dimension is not None and structure.d != self._dimension)
        ):
            raise IndexLoadError(
                f"{directory}: counts disagree (manifest {manifest['count']}, documents {len(documents)}, "
                f"vectors {structure.ntotal}, expected {len(owners)})"
            )
        if isinstance(structure, faiss.IndexHNSWFlat):
            structure.hnsw.efSearch = self.ef_search
        elif hasattr(structure, "nprobe"):
            structure.nprobe = min(self.nprobe, structure.nlist)
        with self._lock:
            self._faiss = structure
            self._dimension = structure.d
            self._owner = owners.astype(np.int64)
            self.documents = documents
            self._ids = {d.id for d in documents}


def _maps_rows_onto(owners: np.ndarray, documents: int) -> bool:
    """Whether ``owners`` gives every one of ``documents`` one or more consecutive rows, in order."""
    if owners.ndim != 1 or not np.issubdtype(owners.dtype, np.integer):
        return False
    steps = np.diff(owners, prepend=-1)
    return bool(np.isin(steps, (0, 1)).all()) and (owners[-1] == documents - 1 if len(owners) else documents == 0)


def _row_selector(rows: np.ndarray) -> Any:
    import faiss

    return faiss.IDSelectorBatch(rows.astype(np.int64))


def unit_vector(vector: ArrayLike) -> np.ndarray:
    """``vector`` flattened to float32 and scaled to length 1 (a zero vector stays zero)."""
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _files(split: bool) -> set[str]:
    return {INDEX_FILE, DOCUMENTS_FILE} | ({PASSAGES_FILE} if split else set())


def _read_manifest(directory: Path) -> dict[str, Any]:
    manifest = read_manifest(directory, FORMAT_NAME, FORMAT_VERSION, MANIFEST_KEYS)
    if manifest["index_type"] not in INDEX_TYPES:
        raise IndexLoadError(f"{directory}: unknown index_type {manifest['index_type']!r}")
    return manifest


def _check_dimension(directory: Path, manifest: dict[str, Any], dimension: int, given: str) -> None:
    if manifest["embedding_dimension"] != dimension:
        raise IndexLoadError(
            f"{directory} was built with {manifest['embedding_model']!r} ({manifest['embedding_dimension']} "
            f"dimensions); the embedding model given, {given!r}, has {dimension}"
        )


def _check_probe(directory: Path, manifest: dict[str, Any], current: np.ndarray, given: str) -> None:
    """Refuse an embedding that embeds the probe text differently from the one the index was built with."""
    if manifest["probe"] is None:
        logger.warning("%s was saved without a probe embedding; only its dimension could be checked", directory)
        return
    stored = unit_vector(manifest["probe"]["vector"])
    cosine = float(np.dot(stored, current)) if stored.shape == current.shape else -1.0
    if cosine < PROBE_MIN_COSINE:
        raise IndexLoadError(
            f"{directory} was built with embedding model {manifest['embedding_model']!r}; the model given, "
            f"{given!r}, embeds differently (probe cosine {cosine:.3f}). Rebuild the index or use that model."
        )


class FaissIndex(QueryVectorSearch, VectorIndex, DocumentStore):
    """Cosine-similarity search over documents embedded by a :class:`BiEncoderBackend`.

    Index types and deletion are those of :class:`VectorIndex`.

    ``long_documents``: ``"truncate"`` (default) embeds the beginning of a document longer than the embedding
    model's max length (counted and logged); ``"split"`` embeds every passage of it (``passage_overlap``
    tokens of overlap) and scores the document by its best passage, so text past the limit is searchable.
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
        if long_documents not in LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {long_documents!r}")
        if not isinstance(embedder, BiEncoderBackend):
            raise TypeError(f"embedder must be a BiEncoderBackend, got {type(embedder).__name__}")
        super().__init__(
            embedder.dimension,
            index_type=index_type,
            hnsw_m=hnsw_m,
            ef_search=ef_search,
            ivf_nlist=ivf_nlist,
            nprobe=nprobe,
        )
        self.long_documents = long_documents
        self.passage_overlap = check_non_negative_int(passage_overlap, "passage_overlap")
        self.embedder = embedder
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.last_add_truncated = 0
        """How many documents of the last add were longer than the embedding model's max length (and so
        only partly embedded; 0 with ``long_documents="split"``, which embeds them whole)."""

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
            check_new_ids(documents, self._ids)  # before embedding, which is the slow part
        if not documents:
            return []
        # Embedding runs outside the lock, so searches are served meanwhile; the ids are checked again under it,
        # since a concurrent add may have taken one while this one embedded.
        if self.long_documents == "split":
            truncated, (vectors, owners) = 0, self._embed_passages(texts)
        else:
            truncated, owners = self.embedder.count_truncated(texts), None
            if truncated:
                logger.warning(
                    "%d of %d documents are longer than the embedding model's %d tokens; only their beginning "
                    "is embedded (long_documents='split' embeds them whole)",
                    truncated,
                    len(texts),
                    self.embedder.max_length,
                )
            vectors = self.embedder.encode_documents(texts, batch_size=self.batch_size)
        with self._lock:
            check_new_ids(documents, self._ids)
            self.add_vectors(documents, vectors, owners=owners)
            self.last_add_truncated = truncated
        return [d.id for d in documents]

    def _embed_passages(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        passages = self.embedder.split_to_fit(texts, overlap=self.passage_overlap)
        split = sum(len(p) > 1 for p in passages)
        if split:
            logger.info(
                "%d of %d documents are longer than the embedding model's %d tokens; split into passages",
                split,
                len(texts),
                self.embedder.max_length,
            )
        owners = np.repeat(np.arange(len(texts), dtype=np.int64), [len(p) for p in passages])
        vectors = self.embedder.encode_documents([t for p in passages for t in p], batch_size=self.batch_size)
        return vectors, owners

    # -- searching -------------------------------------------------------------------------------------

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:  # type: ignore[override]  # the model gives the probe
        """Write the index to directory ``path`` atomically (a complete new index or the old one, never half)."""
        with self._lock:
            settings = {"long_documents": self.long_documents, "passage_overlap": self.passage_overlap}
            probe = self._probe_vector().tolist()
            split = self.long_documents == "split"
            return self._write(path, self.embedder.model_name, probe, settings, with_passages=split)

    def _probe_vector(self) -> np.ndarray:
        return self.embedder.encode_documents([PROBE_TEXT])[0]

    @classmethod
    def load(  # type: ignore[override]  # the backend is the probe
        cls, path: str | os.PathLike[str], embedder: BiEncoderBackend, **options: Any
    ) -> FaissIndex:
        """Load an index saved by :meth:`save`, checking it fully; raises :class:`IndexLoadError`."""
        directory = Path(path)
        manifest = _read_manifest(directory)
        # manifests written before splitting existed hold neither key: they are truncate-mode indexes
        stored = {
            "long_documents": manifest.get("long_documents", "truncate"),
            "passage_overlap": manifest.get("passage_overlap", DEFAULT_PASSAGE_OVERLAP),
        }
        split = stored["long_documents"] == "split"
        verify_files(directory, manifest, _files(split))
        _check_dimension(directory, manifest, embedder.dimension, embedder.model_name)
        for key, value in stored.items():
            requested = options.pop(key, value)
            if requested != value:
                raise IndexLoadError(f"{directory} was built with {key}={value!r}, not {requested!r}")
        index = cls(embedder, index_type=manifest["index_type"], **stored, **options)
        _check_probe(directory, manifest, unit_vector(index._probe_vector()), embedder.model_name)
        index._install(directory, manifest, split)
        return index
