"""Build a sharded dense index on Ray: Ray Data reads and embeds the corpus, the driver writes the shards.

Ray Data streams the corpus (BEIR folder, JSONL or Parquet) through an actor pool, one bi-encoder per actor
(:func:`~rerank_plugins.models.registry.get_bi_encoder` with the same options as a single process; each actor
limited to its share of the cores). Rows come back to the driver in corpus order (Ray Data's ``preserve_order``),
so positions are exact; the driver gathers one shard at a time and writes it with
:class:`~rerank_plugins.first_stage.sharded.ShardedIndexWriter`. Embedding is the slow part (milliseconds per
document against microseconds to write it), so the writing stays on the driver, the output needs no shared file
system, and the driver holds one shard in memory.

Resuming: the writer keeps verified shards; their documents are dropped before embedding, and the rows that
remain are exactly the unfinished shards' rows, in order.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data.datasets import DataError, beir_document_text
from rerank_plugins.distributed.ray_env import require_ray, start_ray
from rerank_plugins.first_stage.sharded import ShardedIndexWriter, shard_name
from rerank_plugins.models.registry import get_bi_encoder
from rerank_plugins.models.resolve import model_fingerprint
from rerank_plugins.schema import Document

logger = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 1_000_000
"""Documents per shard when no shard count is given (1.5 GB of float32 vectors at 384 dimensions)."""
JSON_SUFFIXES = (".jsonl", ".jsonl.gz")
PARQUET_SUFFIX = ".parquet"


def corpus_files(data: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """(``"json"`` or ``"parquet"``, files) for a BEIR folder, a JSONL / Parquet file, or a folder of them."""
    path = Path(data)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        beir = [path / name for name in ("corpus.jsonl", "corpus.jsonl.gz") if (path / name).is_file()]
        files = beir[:1] or sorted(p for p in path.iterdir() if p.name.endswith((*JSON_SUFFIXES, PARQUET_SUFFIX)))
    else:
        raise DataError(f"{path} does not exist")
    kinds = {"parquet" if f.name.endswith(PARQUET_SUFFIX) else "json" for f in files}
    if not files or any(not f.name.endswith((*JSON_SUFFIXES, PARQUET_SUFFIX)) for f in files) or len(kinds) > 1:
        raise DataError(
            f"{path}: expected a BEIR folder (corpus.jsonl[.gz]), a .jsonl[.gz] or .parquet file, "
            f"or a folder of one of those kinds; found {[f.name for f in files][:5]}"
        )
    return kinds.pop(), files


def rows_to_documents(
    batch: Mapping[str, Any], *, kind: str, document_text: Callable[[Mapping[str, Any]], str]
) -> dict[str, np.ndarray]:
    """A batch of corpus rows (JSON lines, or Parquet columns) -> ``id`` and ``text`` columns, checked.

    The id is ``_id`` (BEIR) or ``id``; the text is ``document_text(row)`` (BEIR's title + text by default).
    """
    if kind == "json":
        rows = []
        for line in batch["text"]:  # one per non-empty line (read_text drops empty ones): the count holds
            try:
                row = json.loads(line)
            except ValueError:
                raise DataError(f"a corpus line is not JSON: {line[:80]!r}") from None
            if not isinstance(row, dict):
                raise DataError(f"a corpus line is not a JSON object: {line[:80]!r}")
            rows.append(row)
    else:
        columns = list(batch)
        rows = [dict(zip(columns, values)) for values in zip(*(batch[c] for c in columns))]
    ids, texts = [], []
    for row in rows:
        doc_id = row.get("_id", row.get("id"))
        if doc_id is None or str(doc_id) == "":
            raise DataError(f"a corpus record has no _id or id: {str(row)[:80]}")
        text = document_text(row)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"corpus document {doc_id!r} has no text")
        ids.append(str(doc_id))
        texts.append(text)
    return {"id": np.array(ids, dtype=object), "text": np.array(texts, dtype=object)}


_DONE_IDS: dict[str, frozenset[str]] = {}
"""Per worker process: the ids of finished shards, fetched once from the object store (not once per batch)."""


def drop_ids(batch: Mapping[str, np.ndarray], *, ids: Any) -> dict[str, np.ndarray]:
    """The rows whose id is not in the set behind object ref ``ids`` (the documents of shards already written)."""
    done = _DONE_IDS.get(ids.hex())
    if done is None:
        done = _DONE_IDS.setdefault(ids.hex(), require_ray().get(ids))
    keep = np.array([doc_id not in done for doc_id in batch["id"]], dtype=bool)
    return {name: column[keep] for name, column in batch.items()}


class DocumentEmbedder:
    """A Ray actor: one bi-encoder, loaded once, limited to ``threads`` cores, refusing a model other than planned."""

    def __init__(self, model: str, options: Mapping[str, Any], threads: int, batch_size: int, fingerprint: str):
        from rerank_plugins.models import set_num_threads

        set_num_threads(threads)
        self.backend = get_bi_encoder(model, **options)
        found = model_fingerprint(self.backend.path)
        if found != fingerprint:
            raise ValueError(
                f"a worker's copy of {model!r} ({self.backend.path}) differs from the driver's "
                f"(fingerprint {found} != {fingerprint}); give every node the same model"
            )
        self.batch_size = batch_size

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = self.backend.encode_documents(texts, batch_size=self.batch_size, show_progress=False)
        return {"id": batch["id"], "text": batch["text"], "vector": vectors}


def build_index_ray(
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    shards: int | None = None,
    workers: int = 1,
    threads_per_worker: int | None = None,
    index_type: str = "auto",
    address: str | None = None,
    batch_size: int = 32,
    rows_per_call: int = 256,
    document_text: Callable[[Mapping[str, Any]], str] = beir_document_text,
    **model_options: Any,
) -> Path:
    """Build (or resume building) a sharded dense index of the corpus at ``data`` into directory ``output``.

    ``shards``: how many (default: one per :data:`DEFAULT_SHARD_SIZE` documents). ``workers``: embedding
    actors, each with one copy of ``model`` loaded with ``model_options`` (``runtime``, ``max_length``,
    ``device``, ...: those of :func:`~rerank_plugins.models.registry.get_bi_encoder`) and
    ``threads_per_worker`` threads (default: the cluster's CPUs divided among the workers). ``address``: a Ray
    cluster; ``None`` uses the running Ray or starts one on this machine. ``document_text`` turns a corpus row
    into the text indexed (it runs on the workers). Returns ``output``; load it with
    :class:`~rerank_plugins.first_stage.sharded.ShardedIndex` or ``load_first_stage``.
    """
    kind, files = corpus_files(data)
    workers = check_positive_int(workers, "workers")
    check_positive_int(threads_per_worker, "threads_per_worker", allow_none=True)
    check_positive_int(shards, "shards", allow_none=True)
    ray = require_ray()
    embedder = get_bi_encoder(model, **model_options)  # the driver's copy: the plan's fingerprint and the probe
    started = start_ray(address)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows reach the driver in corpus order: exact positions
        context.enable_progress_bars = False  # ours counts documents written
        if threads_per_worker is None:
            threads_per_worker = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
        # Reading and parsing are light next to embedding: they reserve no CPU.
        light = {"num_cpus": 0}
        paths = [str(f) for f in files]
        read = ray.data.read_text if kind == "json" else ray.data.read_parquet
        rows = read(paths, **light)
        count = rows.count()  # a Parquet footer read, a line count for JSONL: no parsing, no document_text
        documents = rows.map_batches(
            rows_to_documents,
            fn_kwargs={"kind": kind, "document_text": document_text},
            batch_format="numpy",
            **light,
        )
        writer = ShardedIndexWriter(
            output,
            embedder,
            count=count,
            shards=shards or max(1, math.ceil(count / DEFAULT_SHARD_SIZE)),
            index_type=index_type,
            source={"files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]},
        )
        done = set(writer.completed())
        pending = [n for n in range(writer.shard_count) if n not in done]
        if done:
            logger.info(
                "%s: %d of %d shards already written; building the others", output, len(done), len(done) + len(pending)
            )
            documents = documents.map_batches(
                drop_ids, fn_kwargs={"ids": ray.put(frozenset(writer.done_ids()))}, batch_format="numpy", **light
            )
        if pending:
            embedded = documents.map_batches(
                DocumentEmbedder,
                fn_constructor_kwargs={
                    "model": embedder.model_name,
                    "options": model_options,
                    "threads": threads_per_worker,
                    "batch_size": batch_size,
                    "fingerprint": writer.plan["model_fingerprint"],
                },
                batch_size=rows_per_call,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                # Each actor's threads are set explicitly; a logical CPU reservation as large would starve the
                # read and file-listing tasks (Ray Data starts the actors first) and hang a build that fills the
                # machine. Ray Data's default scheduling strategy (DataContext.scheduling_strategy, "SPREAD")
                # places the actors on different nodes of a cluster.
                num_cpus=0,
            )
            _write_shards(writer, pending, embedded)
        return writer.finish()
    finally:
        if started:
            ray.shutdown()


def _write_shards(writer: ShardedIndexWriter, pending: list[int], embedded: Any) -> None:
    """Number the rows arriving in order, gather each pending shard's rows and write it when complete."""
    ranges = writer.ranges()
    todo = iter(pending)
    number = next(todo)
    documents: list[Document] = []
    vectors: list[np.ndarray] = []
    with tqdm(total=sum(ranges[n][1] - ranges[n][0] for n in pending), unit="doc", desc="indexing") as progress:
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            start = 0
            while start < len(batch["id"]):
                if number is None:
                    raise DataError(f"the corpus grew while indexing: more than {ranges[-1][1]} documents")
                room = ranges[number][1] - ranges[number][0] - len(documents)
                end = min(start + room, len(batch["id"]))
                documents += [
                    Document(str(t), str(i)) for i, t in zip(batch["id"][start:end], batch["text"][start:end])
                ]
                vectors.append(batch["vector"][start:end])
                progress.update(end - start)
                start = end
                if len(documents) == ranges[number][1] - ranges[number][0]:
                    writer.write(number, documents, np.concatenate(vectors))
                    documents, vectors, number = [], [], next(todo, None)
    if number is not None:
        raise DataError(f"the corpus shrank while indexing: {shard_name(number)} is incomplete")
