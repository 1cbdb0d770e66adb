"""Query a sharded index whose shards are held by Ray actors (shards too large for one process, or on a cluster).

The driver checks the index (shard checksums via the manifest, the embedding model by its probe), embeds the
queries once and sends the vectors to every actor; each searches its shards and the driver merges with the same
:func:`~rerank_plugins.first_stage.sharded.merge_hits` as the threaded :class:`ShardedIndex`, so the answers are
the same. The index directory must be readable at the same path wherever the actors run (a shared file system
on a cluster).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_positive_int
from rerank_plugins.distributed.ray_env import require_ray, start_ray
from rerank_plugins.first_stage.base import FirstStage, QueryVectorSearch
from rerank_plugins.first_stage.dense import VectorIndex
from rerank_plugins.first_stage.persistence import IndexLoadError
from rerank_plugins.first_stage.sharded import merge_hits, read_sharded_manifest
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import SearchHit


class ShardServer:
    """A Ray actor holding some shards (each loaded and verified by :meth:`VectorIndex.load`)."""

    def __init__(self, directory: str, names: Sequence[str]) -> None:
        self.shards = [VectorIndex.load(Path(directory) / name) for name in names]

    def search(self, vectors: np.ndarray, k: int) -> list[list[list[SearchHit]]]:
        """Per shard, per query: the shard's top-k (positions within the shard)."""
        return [shard.search_vectors(vectors, k) for shard in self.shards]


class RayShardedIndex(QueryVectorSearch, FirstStage):
    """A sharded index searched by ``actors`` Ray actors (default one per shard), shards dealt out in turn.

    ``address``: the Ray cluster (``None``: the running Ray, or one started on this machine). Call
    :meth:`close` to release the actors.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        embedder: BiEncoderBackend,
        *,
        actors: int | None = None,
        address: str | None = None,
        batch_size: int = 32,
    ) -> None:
        ray = require_ray()
        self.directory = Path(path).resolve()
        manifest = read_sharded_manifest(self.directory, embedder)
        names = [shard["name"] for shard in manifest["shards"]]
        count = min(check_positive_int(actors, "actors", allow_none=True) or len(names), len(names))
        self.embedder = embedder
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.size = manifest["count"]
        self._started = start_ray(address)
        groups = [list(range(a, len(names), count)) for a in range(count)]
        self._offsets = [[manifest["shards"][n]["first_position"] for n in group] for group in groups]
        server = ray.remote(ShardServer)
        self._actors = [server.remote(str(self.directory), [names[n] for n in group]) for group in groups]
        empty = np.zeros((0, embedder.dimension), dtype=np.float32)
        for actor, group in zip(self._actors, groups):
            try:
                ray.get(actor.search.remote(empty, 1))  # each actor has loaded and verified its shards
            except ray.exceptions.RayError as error:
                self.close()
                cause = [line for line in str(error).splitlines() if line.strip()][-1]
                raise IndexLoadError(f"shards {[names[n] for n in group]} could not be loaded: {cause}") from None

    def __len__(self) -> int:
        return self.size

    def describe(self) -> dict[str, Any]:
        return {"kind": "dense", "embedding_model": self.embedder.model_name, "shards": sum(map(len, self._offsets))}

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Send the vectors to every actor at once, then merge each query's hits over all shards."""
        check_positive_int(k, "k")
        vectors = np.asarray(vectors, dtype=np.float32)
        answers = require_ray().get([actor.search.remote(vectors, k) for actor in self._actors])
        per_shard = [shard for answer in answers for shard in answer]
        offsets = [offset for group in self._offsets for offset in group]
        return [merge_hits([hits[q] for hits in per_shard], offsets, k) for q in range(len(vectors))]

    def __enter__(self) -> RayShardedIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the actors (and Ray, if this index started it); ``with RayShardedIndex(...) as index`` does it."""
        ray = require_ray()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started:
            ray.shutdown()
