"""A dense index split into shards: built shard by shard (resumably), queried by fan-out and an exact merge.

Why: one flat FAISS index over 10M x 384 floats is 15 GB and is built by one process. Shards are built in
parallel (on Ray: :mod:`rerank_plugins.distributed`; here: one process) and each fits one machine. A query goes
to every shard (threads here, Ray actors in :mod:`rerank_plugins.distributed`) and the per-shard top-k are merged.
With flat shards the merged top-k equal what one flat index over the whole corpus returns, ties included:
documents are numbered in corpus order across shards (shard ``i`` holds positions ``bounds[i]`` to
``bounds[i + 1] - 1``) and equal scores are ordered by those global positions, as in one index (:func:`merge_hits`).

Layout of an index directory::

    build.json       the plan, written first: model and its fingerprint, dimension, corpus size, shard bounds
    shard-00000/     a dense index directory (FaissIndex format), written atomically, verified by checksums
    ...
    manifest.json    written last, once every shard is verified: the plan, the shards, and the SHA-256 of every
                     shard's manifest (which holds the SHA-256 of each of the shard's files)

An interrupted build leaves complete shards and no ``manifest.json``; building again with the same plan keeps the
verified shards and writes only the others. A shard is saved through a staging directory and renamed, so a
half-written shard is never mistaken for one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from rerank_plugins._files import write_json
from rerank_plugins._validation import check_positive_int
from rerank_plugins.first_stage.base import FirstStage, QueryVectorSearch
from rerank_plugins.first_stage.dense import INDEX_TYPES as DENSE_INDEX_TYPES
from rerank_plugins.first_stage.dense import PROBE_MIN_COSINE, PROBE_TEXT, FaissIndex, VectorIndex, unit_vector
from rerank_plugins.first_stage.persistence import (
    MANIFEST_FILE,
    IndexLoadError,
    read_manifest,
    sha256_file,
    verify_files,
)
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.resolve import model_fingerprint
from rerank_plugins.schema import Document, SearchHit

logger = logging.getLogger(__name__)

FORMAT_NAME = "rerank-plugins-sharded"
SHARD_NAME = re.compile(r"[A-Za-z0-9._-]+")
FORMAT_VERSION = 1
PLAN_FILE = "build.json"
INDEX_TYPES: tuple[str, ...] = ("auto", *DENSE_INDEX_TYPES)
AUTO_FLAT_MAX = 250_000
"""``index_type="auto"``: shards up to this many documents are flat (exact; a query scans 384 MB at 384 dimensions)."""
AUTO_HNSW_MAX = 2_000_000
"""``index_type="auto"``: larger shards up to this size are HNSW (no training); beyond, IVF (less memory per vector)."""
MANIFEST_KEYS = ("embedding_model", "model_fingerprint", "embedding_dimension", "count", "bounds", "shards")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}"


def shard_bounds(count: int, shards: int) -> list[int]:
    """Shard ``i`` holds corpus positions ``bounds[i]`` to ``bounds[i + 1] - 1``: consecutive, sizes within one."""
    check_positive_int(shards, "shards")
    if count == 0:
        raise ValueError("the corpus is empty: there is nothing to index")
    if shards > count:
        raise ValueError(f"shards ({shards}) is larger than the corpus ({count} documents); use at most {count}")
    return [count * i // shards for i in range(shards + 1)]


def resolve_index_type(index_type: str, largest_shard: int) -> str:
    """``index_type`` itself, or for ``"auto"`` the type that suits a shard of ``largest_shard`` documents."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    if index_type != "auto":
        return index_type
    return "flat" if largest_shard <= AUTO_FLAT_MAX else "hnsw" if largest_shard <= AUTO_HNSW_MAX else "ivf"


def merge_hits(per_shard: Sequence[Sequence[SearchHit]], offsets: Sequence[int], k: int) -> list[SearchHit]:
    """The ``k`` best of several shards' hits, as one index over all of them returns them.

    Positions become global (shard offset + position in the shard); equal scores go by global position, the rule
    every dense index applies (:meth:`VectorIndex.search_vectors`), so a tie at the cut is decided the same way.
    """
    hits = [replace(hit, position=offset + hit.position) for hits, offset in zip(per_shard, offsets) for hit in hits]
    return sorted(hits, key=lambda hit: (-hit.score, hit.position))[:k]


_Shards = TypeVar("_Shards", bound="ShardSet")


class ShardSet:
    """What the in-process sharded stages share: shards holding consecutive global positions and distinct ids,
    searched in the threads of one pool kept for the index's life (made on first use; ``close`` or ``with`` stops it).
    """

    def _init_shards(self, shards: Sequence[Any], threads: int | None, name: str) -> None:
        seen: set[str] = set()
        for number, shard in enumerate(shards):
            repeated = [d.id for d in shard.documents if d.id in seen]
            if repeated:
                raise ValueError(f"shard {number} repeats document ids held by an earlier shard, e.g. {repeated[:5]}")
            seen.update(d.id for d in shard.documents)
        self.shards = list(shards)
        self.threads = check_positive_int(threads, "threads", allow_none=True) or min(len(shards), os.cpu_count() or 1)
        self._thread_name = name
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def _map(self, work: Callable[[Any], Any]) -> list[Any]:
        """``work(shard)`` for every shard, in shard order (in the pool's threads unless one thread is asked for)."""
        if self.threads == 1 or len(self.shards) == 1:
            return [work(shard) for shard in self.shards]
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(min(self.threads, len(self.shards)), self._thread_name)
            executor = self._executor
        return list(executor.map(work, self.shards))

    def close(self) -> None:
        """Stop the search threads (a later search starts them again); ``with`` does it on exit."""
        with self._pool_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def __enter__(self: _Shards) -> _Shards:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def documents(self) -> list[Document]:
        """Every document, in global position order."""
        return [d for shard in self.shards for d in shard.documents]

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents with these ids, in the order asked for (unknown ids are skipped)."""
        found = {d.id: d for shard in self.shards for d in shard.get_by_ids(ids)}
        return [found[i] for i in ids if i in found]


class ShardedIndex(ShardSet, QueryVectorSearch, FirstStage):
    """Dense search over shards (each a :class:`FaissIndex` sharing one embedder), merged exactly.

    Queries are embedded once; every shard is searched in a thread (``threads``, default one per shard up to
    the CPU count; FAISS releases the GIL) and the results merged by :func:`merge_hits`. Read-only: build a new
    index (or add shards) to change it.
    """

    def __init__(self, shards: Sequence[FaissIndex], *, threads: int | None = None, batch_size: int = 32) -> None:
        shards = list(shards)
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        embedder = shards[0].embedder
        if any(shard.embedder is not embedder for shard in shards):
            raise ValueError("every shard must share one embedder (the same BiEncoderBackend instance)")
        self._init_shards(shards, threads, "shard-search")
        self.embedder = embedder
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.offsets = [0, *np.cumsum([len(shard) for shard in shards[:-1]]).tolist()]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "dense",
            "embedding_model": self.embedder.model_name,
            "index_type": sorted({shard.index_type for shard in self.shards}),
            "shards": len(self.shards),
            "documents": len(self),
        }

    def search_vectors(self, vectors: ArrayLike, k: int) -> list[list[SearchHit]]:
        """Fan the query vectors out to every shard, then merge each query's hits."""
        check_positive_int(k, "k")
        vectors = np.asarray(vectors, dtype=np.float32)
        per_shard = self._map(lambda shard: shard.search_vectors(vectors, k))
        return [merge_hits([hits[q] for hits in per_shard], self.offsets, k) for q in range(len(vectors))]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embedder: BiEncoderBackend,
        *,
        threads: int | None = None,
        batch_size: int = 32,
        **options: Any,
    ) -> ShardedIndex:
        """Load a sharded index, refusing (:class:`IndexLoadError`, naming the shard) a missing, corrupt or
        foreign shard and an embedder other than the one the index was built with. ``options``: shard search
        settings (``ef_search``, ``nprobe``)."""
        directory = Path(path)
        manifest = read_sharded_manifest(directory, embedder)
        shards = []
        for number, entry in enumerate(manifest["shards"]):
            shard = FaissIndex.load(directory / entry["name"], embedder, batch_size=batch_size, **options)
            expected = manifest["bounds"][number + 1] - manifest["bounds"][number]
            if len(shard) != expected or entry["count"] != expected:
                raise IndexLoadError(f"{directory}: {entry['name']} holds {len(shard)} documents, expected {expected}")
            shards.append(shard)
        if sum(len(s) for s in shards) != manifest["count"]:
            raise IndexLoadError(
                f"{directory}: the shards hold {sum(map(len, shards))} documents, not {manifest['count']}"
            )
        try:
            return cls(shards, threads=threads, batch_size=batch_size)
        except ValueError as error:
            raise IndexLoadError(f"{directory}: {error}") from None


def read_sharded_manifest(path: str | os.PathLike[str], embedder: BiEncoderBackend) -> dict[str, Any]:
    """The manifest of a finished sharded index, after checking each shard's manifest against its checksum and
    ``embedder`` against the model the index was built with (dimension, probe embedding); before any shard is read.
    """
    directory = Path(path)
    if not (directory / MANIFEST_FILE).is_file() and (directory / PLAN_FILE).is_file():
        raise IndexLoadError(f"{directory} is an unfinished sharded build (no {MANIFEST_FILE}); run the build again")
    manifest = read_manifest(directory, FORMAT_NAME, FORMAT_VERSION, (*MANIFEST_KEYS, "probe"))
    for shard in manifest["shards"]:  # a name is one directory of this index, never a path out of it
        name = shard.get("name") if isinstance(shard, dict) else None
        if not isinstance(name, str) or name in (".", "..") or not SHARD_NAME.fullmatch(name):
            raise IndexLoadError(f"{directory}/{MANIFEST_FILE} names a shard {name!r}, not a shard directory")
    verify_files(directory, manifest, [f"{shard['name']}/{MANIFEST_FILE}" for shard in manifest["shards"]])
    built_with = manifest["embedding_model"]
    if manifest["embedding_dimension"] != embedder.dimension:
        raise IndexLoadError(
            f"{directory} was built with {built_with!r} ({manifest['embedding_dimension']} dimensions); the "
            f"embedding model given, {embedder.model_name!r}, has {embedder.dimension}"
        )
    stored, current = (
        unit_vector(v) for v in (manifest["probe"]["vector"], embedder.encode_documents([PROBE_TEXT])[0])
    )
    cosine = float(stored @ current)
    if cosine < PROBE_MIN_COSINE:
        raise IndexLoadError(
            f"{directory} was built with embedding model {built_with!r}; the model given, {embedder.model_name!r}, "
            f"embeds differently (probe cosine {cosine:.3f}). Rebuild the index or use that model."
        )
    return manifest


class ShardedIndexWriter:
    """Writes a sharded index shard by shard; a new writer over an unfinished build resumes it.

    ``count`` documents go into ``shards`` shards of consecutive corpus positions (:func:`shard_bounds`).
    ``source`` identifies the input (file sizes and dates, or a checksum): resuming is refused when it or any
    other setting of the plan differs, so shards of different corpora or models are never mixed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: BiEncoderBackend,
        *,
        count: int,
        shards: int,
        index_type: str = "auto",
        source: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.embedder = embedder
        self.bounds = shard_bounds(count, shards)
        largest = max(b - a for a, b in zip(self.bounds, self.bounds[1:]))
        self.index_type = resolve_index_type(index_type, largest)
        self.plan = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "embedding_model": embedder.model_name,
            "model_fingerprint": model_fingerprint(embedder.path),
            "embedding_dimension": embedder.dimension,
            "index_type": self.index_type,
            "count": count,
            "bounds": self.bounds,
            "source": dict(source or {}),
        }
        self._ids: dict[int, set[str]] = {}
        self._start()

    @property
    def shard_count(self) -> int:
        return len(self.bounds) - 1

    def ranges(self) -> list[tuple[int, int]]:
        """Each shard's (first position, end position)."""
        return list(zip(self.bounds, self.bounds[1:]))

    def _start(self) -> None:
        plan_file = self.path / PLAN_FILE
        if plan_file.is_file():
            stored = json.loads(plan_file.read_text(encoding="utf-8"))
            changed = sorted(key for key in {*stored, *self.plan} if stored.get(key) != self.plan.get(key))
            if changed:
                raise ValueError(
                    f"{self.path} holds a sharded build with other settings ({', '.join(changed)} differ); "
                    "use another output directory or delete this one"
                )
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise FileExistsError(f"{self.path} exists and is not a sharded build; refusing to write into it")
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(plan_file, self.plan)

    def completed(self) -> list[int]:
        """The shards already written and verified (checksums, counts); others, and staging leftovers, are removed."""
        for leftover in self.path.glob(".shard-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        done = []
        for number, (start, end) in enumerate(self.ranges()):
            directory = self.path / shard_name(number)
            if not directory.exists():
                continue
            try:
                shard = VectorIndex.load(directory)
                if len(shard) != end - start:
                    raise IndexLoadError(f"{directory} holds {len(shard)} documents, expected {end - start}")
            except IndexLoadError as error:
                logger.warning("rebuilding %s: %s", directory, error)
                shutil.rmtree(directory)
                continue
            self._ids[number] = {d.id for d in shard.documents}
            done.append(number)
        return done

    def done_ids(self) -> set[str]:
        """The ids of the documents in completed shards (after :meth:`completed`)."""
        return set().union(*self._ids.values())

    def write(self, number: int, documents: Sequence[Document], vectors: ArrayLike) -> Path:
        """Write shard ``number`` (its documents in corpus order and their vectors) atomically."""
        start, end = self.ranges()[number]
        if len(documents) != end - start:
            raise ValueError(f"shard {number} takes {end - start} documents, got {len(documents)}")
        index = VectorIndex(self.plan["embedding_dimension"], index_type=self.index_type)
        index.add_vectors(documents, vectors)
        written = index.save(
            self.path / shard_name(number), embedding_model=self.embedder.model_name, probe_vector=self._probe()
        )
        self._ids[number] = {d.id for d in documents}
        return written

    def _probe(self) -> np.ndarray:
        return self.embedder.encode_documents([PROBE_TEXT])[0]

    def finish(self) -> Path:
        """Check every shard is there and no id repeats across shards, then write the manifest (last)."""
        missing = [shard_name(n) for n in range(self.shard_count) if n not in self._ids]
        if missing:
            raise ValueError(f"{self.path}: shards not written yet: {missing}")
        seen: set[str] = set()
        for number in range(self.shard_count):
            repeated = self._ids[number] & seen
            if repeated:
                raise ValueError(f"{self.path}: {shard_name(number)} repeats document ids, e.g. {sorted(repeated)[:5]}")
            seen |= self._ids[number]
        names = [shard_name(n) for n in range(self.shard_count)]
        manifest = {
            **self.plan,
            "shards": [
                {"name": name, "first_position": start, "count": end - start}
                for name, (start, end) in zip(names, self.ranges())
            ],
            "probe": {"text": PROBE_TEXT, "vector": self._probe().tolist()},
            "files": {f"{name}/{MANIFEST_FILE}": sha256_file(self.path / name / MANIFEST_FILE) for name in names},
        }
        write_json(self.path / MANIFEST_FILE, manifest)
        return self.path


def documents_checksum(documents: Sequence[Document]) -> str:
    """SHA-256 over ids and texts in order: identifies an in-memory corpus in a build plan."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(json.dumps([document.id, document.text], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def build_sharded_index(
    documents: Sequence[Document],
    embedder: BiEncoderBackend,
    path: str | os.PathLike[str],
    *,
    shards: int,
    index_type: str = "auto",
    batch_size: int = 32,
) -> Path:
    """Build (or resume building) a sharded index in this process; for a cluster see
    :func:`rerank_plugins.distributed.build_index_ray`. Returns the index directory."""
    documents = list(documents)
    writer = ShardedIndexWriter(
        path,
        embedder,
        count=len(documents),
        shards=shards,
        index_type=index_type,
        source={"documents_sha256": documents_checksum(documents)},
    )
    done = set(writer.completed())
    for number, (start, end) in enumerate(writer.ranges()):
        if number not in done:
            part = documents[start:end]
            writer.write(number, part, embedder.encode_documents([d.text for d in part], batch_size=batch_size))
    return writer.finish()
