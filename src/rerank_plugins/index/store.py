"""A FAISS index over normalised bi-encoder embeddings, with its documents beside it.

Saved as a directory: ``index.faiss`` (FAISS's own format), ``documents.jsonl`` (id, text, metadata),
``passages.npy`` (which document each vector belongs to; only with ``long_documents="split"``) and
``manifest.json`` (format version, embedding model, dimension, count, checksums, and a probe
embedding). Nothing is pickled. Saves are atomic; loads verify everything and refuse a corrupt,
truncated or foreign index, or one built with another embedding model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_non_negative_int, check_positive_int, check_query, check_texts
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import Document, SearchHit

logger = logging.getLogger(__name__)

INDEX_TYPES: tuple[str, ...] = ("flat", "hnsw", "ivf")
LONG_DOCUMENTS: tuple[str, ...] = ("truncate", "split")
FORMAT_NAME = "rerank-plugins-faiss"
FORMAT_VERSION = 1
INDEX_FILE, DOCUMENTS_FILE, MANIFEST_FILE = "index.faiss", "documents.jsonl", "manifest.json"
PASSAGES_FILE = "passages.npy"
DEFAULT_PASSAGE_OVERLAP = 32
PROBE_TEXT = "rerank-plugins probe: a fixed sentence whose embedding identifies the model."
PROBE_MIN_COSINE = 0.99


class IndexLoadError(ValueError):
    """The directory is not a loadable index for this embedding model; nothing was changed."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FaissIndex:
    """Cosine-similarity search over documents embedded by a :class:`BiEncoderBackend`.

    ``index_type``: ``"flat"`` (exact, the default), ``"hnsw"`` (graph, approximate, no training) or
    ``"ivf"`` (inverted lists, approximate; trained on the first batch of documents added).

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
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if long_documents not in LONG_DOCUMENTS:
            raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {long_documents!r}")
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
        self._passage_owner = np.zeros(0, dtype=np.int64)
        """Per vector, the position of its document (``long_documents="split"`` only)."""
        self.last_add_truncated = 0
        """How many documents of the last :meth:`add_texts` were longer than the embedding model's max length
        (and so only partly embedded; 0 with ``long_documents="split"``, which embeds them whole)."""
        self._lock = threading.RLock()

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        embedder: BiEncoderBackend,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        **options: Any,
    ) -> FaissIndex:
        index = cls(embedder, **options)
        index.add_texts(texts, metadatas=metadatas, ids=ids)
        return index

    def add_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Embed and add ``texts``; returns their ids (``ids`` if given, else their positions as strings)."""
        texts = check_texts(texts)
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"metadatas has {len(metadatas)} entries for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"ids has {len(ids)} entries for {n} texts")
        with self._lock:
            start = len(self.documents)
            new_ids = [str(start + i) for i in range(n)] if ids is None else [self._check_id(x, i) for i, x in enumerate(ids)]
            repeated = {x for x, count in Counter(new_ids).items() if count > 1}
            duplicates = sorted({x for x in new_ids if x in self._ids} | repeated)
            if duplicates:
                raise ValueError(f"{len(duplicates)} duplicate document ids, e.g. {duplicates[:5]}")
            documents = [
                Document(text=text, id=doc_id, metadata=self._check_metadata(metadatas[i] if metadatas else None, i))
                for i, (text, doc_id) in enumerate(zip(texts, new_ids))
            ]
            if not documents:
                return []
            if self.long_documents == "split":
                truncated, vectors = 0, self._embed_passages(texts, start)
            else:
                truncated = self.embedder.count_truncated(texts)
                if truncated:
                    logger.warning(
                        "%d of %d documents are longer than the embedding model's %d tokens; only their beginning is "
                        "embedded (long_documents='split' embeds them whole)", truncated, n, self.embedder.max_length,
                    )
                vectors = self.embedder.encode_documents(texts, batch_size=self.batch_size)
            self._add_vectors(vectors)
            self.documents.extend(documents)
            self._ids.update(new_ids)
            self.last_add_truncated = truncated
        return new_ids

    def _embed_passages(self, texts: list[str], first_position: int) -> np.ndarray:
        passages = self.embedder.split_to_fit(texts, overlap=self.passage_overlap)
        split = sum(len(p) > 1 for p in passages)
        if split:
            logger.info("%d of %d documents are longer than the embedding model's %d tokens; split into passages",
                        split, len(texts), self.embedder.max_length)
        owners = np.repeat(np.arange(first_position, first_position + len(texts)), [len(p) for p in passages])
        vectors = self.embedder.encode_documents([t for p in passages for t in p], batch_size=self.batch_size)
        self._passage_owner = np.concatenate([self._passage_owner, owners])
        return vectors

    def add_documents(self, documents: Sequence[Document]) -> list[str]:
        return self.add_texts([d.text for d in documents], [d.metadata for d in documents], [d.id for d in documents])

    @staticmethod
    def _check_id(doc_id: Any, i: int) -> str:
        if not isinstance(doc_id, str) or not doc_id:
            raise TypeError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
        return doc_id

    @staticmethod
    def _check_metadata(metadata: Mapping[str, Any] | None, i: int) -> dict[str, Any]:
        if metadata is None:
            return {}
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadatas[{i}] must be a mapping, got {type(metadata).__name__}")
        metadata = dict(metadata)
        try:
            json.dumps(metadata, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise TypeError(f"metadatas[{i}] must be JSON-serialisable to be stored in the index: {error}") from None
        return metadata

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
        self._faiss.add(vectors)

    # -- searching -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.documents)

    def search(self, query: str, k: int = 10) -> list[SearchHit]:
        """The ``k`` documents most similar to ``query``, best first (fewer if the index is smaller)."""
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, encoded and searched together."""
        check_positive_int(k, "k")
        queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(check_texts(queries, "queries"))]
        if not queries:
            return []
        if not self.documents:
            return [[] for _ in queries]
        vectors = self.embedder.encode_queries(queries, batch_size=self.batch_size)
        return self.search_vectors(vectors, k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Search with query embeddings already computed (same model, normalised)."""
        with self._lock:
            if self._faiss is None:
                return [[] for _ in range(len(vectors))]
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            documents = self.documents
            if self.long_documents != "split":
                scores, positions = self._search_rows(vectors, min(k, len(self)))
                return [
                    [SearchHit(documents[p], int(p), float(s)) for s, p in zip(row_scores, row_positions) if p >= 0]
                    for row_scores, row_positions in zip(scores, positions)
                ]
            # A document is as good as its best passage: fetch passages until k distinct documents are found.
            wanted, total = min(k, len(self)), self._faiss.ntotal
            fetch = min(total, 2 * wanted)
            while True:
                scores, rows = self._search_rows(vectors, fetch)
                results = [self._best_passage_per_document(s, r, wanted) for s, r in zip(scores, rows)]
                if fetch == total or all(len(hits) == wanted for hits in results):
                    return results
                fetch = min(total, 4 * fetch)

    def _search_rows(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.index_type == "hnsw":
            self._faiss.hnsw.efSearch = max(self.ef_search, k)
        return self._faiss.search(vectors, k)

    def _best_passage_per_document(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[SearchHit]:
        hits: list[SearchHit] = []
        seen: set[int] = set()
        for score, row in zip(scores, rows):
            if row < 0:
                continue
            position = int(self._passage_owner[row])
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

        target = Path(path)
        if target.exists() and not (target / MANIFEST_FILE).is_file() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(f"{target} exists and is not a rerank-plugins index; refusing to overwrite it")
        if self._faiss is None:
            raise ValueError("cannot save an empty index; add documents first")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            with self._lock:
                faiss.write_index(self._faiss, str(staging / INDEX_FILE))
                with (staging / DOCUMENTS_FILE).open("w", encoding="utf-8") as handle:
                    for doc in self.documents:
                        handle.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}, ensure_ascii=False))
                        handle.write("\n")
                count = len(self.documents)
                names = [INDEX_FILE, DOCUMENTS_FILE]
                if self.long_documents == "split":
                    np.save(staging / PASSAGES_FILE, self._passage_owner, allow_pickle=False)
                    names.append(PASSAGES_FILE)
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "embedding_model": self.embedder.model_name,
                "embedding_dimension": self.embedder.dimension,
                "normalized": True,
                "metric": "inner_product",
                "index_type": self.index_type,
                "count": count,
                "long_documents": self.long_documents,
                "passage_overlap": self.passage_overlap,
                "probe": {"text": PROBE_TEXT, "vector": self._probe_vector().tolist()},
                "files": {name: _sha256(staging / name) for name in names},
            }
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
            if target.exists():
                os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _probe_vector(self) -> np.ndarray:
        return self.embedder.encode_documents([PROBE_TEXT])[0]

    @classmethod
    def load(cls, path: str | os.PathLike[str], embedder: BiEncoderBackend, **options: Any) -> FaissIndex:
        """Load an index saved by :meth:`save`, checking it fully; raises :class:`IndexLoadError`."""
        import faiss

        directory = Path(path)
        manifest = cls._read_manifest(directory)
        # manifests written before splitting existed hold neither key: they are truncate-mode indexes
        stored = {"long_documents": manifest.get("long_documents", "truncate"),
                  "passage_overlap": manifest.get("passage_overlap", DEFAULT_PASSAGE_OVERLAP)}
        split = stored["long_documents"] == "split"
        expected_files = {INDEX_FILE, DOCUMENTS_FILE} | ({PASSAGES_FILE} if split else set())
        if set(manifest["files"]) != expected_files:
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} lists {sorted(manifest['files'])}, expected {sorted(expected_files)}")
        for name, expected in manifest["files"].items():
            file = directory / name
            if not file.is_file():
                raise IndexLoadError(f"{directory}: {name} is missing")
            if _sha256(file) != expected:
                raise IndexLoadError(f"{directory}: {name} does not match its checksum (corrupt or modified)")
        dimension = embedder.dimension
        if manifest["embedding_dimension"] != dimension:
            raise IndexLoadError(
                f"{directory} was built with {manifest['embedding_model']!r} ({manifest['embedding_dimension']} dimensions); "
                f"the embedding model given, {embedder.model_name!r}, has {dimension}"
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
                f"{embedder.model_name!r}, embeds differently (probe cosine {cosine:.3f}). Rebuild the index or use that model."
            )
        try:
            index._faiss = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as error:
            raise IndexLoadError(f"{directory}: {INDEX_FILE} cannot be read: {error}") from None
        documents = []
        with (directory / DOCUMENTS_FILE).open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                try:
                    row = json.loads(line)
                    documents.append(Document(text=row["text"], id=row["id"], metadata=row["metadata"]))
                except (ValueError, KeyError, TypeError) as error:
                    raise IndexLoadError(f"{directory}: {DOCUMENTS_FILE} line {line_number} is malformed: {error}") from None
        vectors = len(documents)
        if split:
            try:
                owners = np.load(directory / PASSAGES_FILE, allow_pickle=False)
            except ValueError as error:
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} cannot be read: {error}") from None
            vectors = len(owners)
            # one or more consecutive passages per document, every document present, in order
            steps = np.diff(owners, prepend=-1)
            if owners.ndim != 1 or not np.issubdtype(owners.dtype, np.integer) or vectors == 0 \
                    or not np.isin(steps, (0, 1)).all() or owners[-1] != len(documents) - 1:
                raise IndexLoadError(f"{directory}: {PASSAGES_FILE} does not map vectors onto the documents")
            index._passage_owner = owners.astype(np.int64)
        if not (len(documents) == manifest["count"] and vectors == index._faiss.ntotal) or index._faiss.d != dimension:
            raise IndexLoadError(
                f"{directory}: counts disagree (manifest {manifest['count']}, documents {len(documents)}, "
                f"vectors {index._faiss.ntotal}, expected {vectors})"
            )
        if isinstance(index._faiss, faiss.IndexHNSWFlat):
            index._faiss.hnsw.efSearch = index.ef_search
        elif hasattr(index._faiss, "nprobe"):
            index._faiss.nprobe = min(index.nprobe, index._faiss.nlist)
        index.documents = documents
        index._ids = {d.id for d in documents}
        return index

    @staticmethod
    def _read_manifest(directory: Path) -> dict[str, Any]:
        if not directory.is_dir():
            raise IndexLoadError(f"{directory} is not a directory")
        try:
            manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexLoadError(f"{directory} is not a rerank-plugins index (no {MANIFEST_FILE})") from None
        except ValueError as error:
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is not a rerank-plugins index manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexLoadError(
                f"{directory} has index format version {manifest.get('format_version')}; this version reads {FORMAT_VERSION}"
            )
        required = ("embedding_model", "embedding_dimension", "index_type", "count", "probe", "files")
        missing = [key for key in required if key not in manifest]
        if missing or manifest["index_type"] not in INDEX_TYPES:
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is incomplete or invalid (missing {missing})")
        return manifest
