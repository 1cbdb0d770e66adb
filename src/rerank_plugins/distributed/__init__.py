"""Ray jobs: build sharded indexes on a Ray cluster (or this machine), query shards held by Ray actors, and serve
the HTTP application as a Ray Serve deployment (:mod:`rerank_plugins.distributed.serve`).

The only package that imports Ray, and only inside functions (:func:`require_ray`), so ``import rerank_plugins``
never needs it. Install it with ``pip install 'rerank-plugins[ray]'``.
"""

from rerank_plugins.distributed.build import build_index_ray
from rerank_plugins.distributed.ray_env import require_ray
from rerank_plugins.distributed.search import RayShardedIndex

__all__ = ["RayShardedIndex", "build_index_ray", "require_ray"]
