"""The HTTP application of :mod:`rerank_plugins.serve` as a Ray Serve deployment: replicas on every node of a Ray
cluster, autoscaled.

Each replica builds its own :class:`~rerank_plugins.serve.Service` (models load in the replica's process) from a
picklable ``build_service`` callable, and serves :func:`~rerank_plugins.serve.create_app`'s routes unchanged; Ray's
proxy spreads requests over the replicas. Inside a replica the micro-batcher still shares forward passes among
the requests it holds, so ``max_ongoing_requests`` should leave room for batches to form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rerank_plugins.models import set_num_threads
from rerank_plugins.serve.app import ServerSettings, create_app
from rerank_plugins.serve.service import Service

DEPLOYMENT_NAME = "rerank-plugins"


def ray_deployment(
    build_service: Callable[[], Service],
    settings: ServerSettings | None = None,
    *,
    replicas: int | str = 1,
    autoscaling: dict[str, Any] | None = None,
    cpus_per_replica: float = 1.0,
    max_ongoing_requests: int = 64,
) -> Any:
    """A bound Ray Serve application serving the app over ``build_service()``.

    ``replicas``: a number, or ``"auto"`` (Ray's autoscaling defaults); ``autoscaling``: a Ray Serve
    ``autoscaling_config`` (``min_replicas``, ``max_replicas``, ``target_ongoing_requests``...), which replaces
    ``replicas``.
    """
    try:
        from ray import serve
    except ImportError as error:
        raise ImportError(
            f"serving on Ray needs Ray Serve ({error}): pip install 'rerank-plugins[serve-ray]'"
        ) from None

    def build_app() -> Any:
        set_num_threads(max(1, int(cpus_per_replica)))  # torch would take every core of the node in every replica
        return create_app(build_service(), settings)

    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": cpus_per_replica},
        "max_ongoing_requests": max_ongoing_requests,
    }
    if autoscaling is not None:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = replicas
    return serve.deployment(serve.ingress(build_app)(), **options).bind()


def serve_on_ray(
    build_service: Callable[[], Service],
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    **deployment_options: Any,
) -> None:
    """Start Ray Serve (a local Ray instance unless ``RAY_ADDRESS`` names a cluster) and serve until interrupted."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(ray_deployment(build_service, settings, **deployment_options), name=DEPLOYMENT_NAME, blocking=True)
