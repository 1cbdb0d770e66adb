"""An HTTP service for the library's models that rerank and embedding clients use unchanged (``pip install
'rerank-plugins[serve]'``; ``rerank-plugins serve``). See :mod:`rerank_plugins.serve.apis` for the routes."""

from __future__ import annotations

from rerank_plugins.serve.app import ServerSettings, create_app
from rerank_plugins.serve.service import Service, ServiceError, ServiceLimits

GRACEFUL_SHUTDOWN_S = 30.0
"""On SIGTERM/SIGINT the server stops accepting connections and lets requests in flight finish, this long at most."""


def serve(
    service: Service, settings: ServerSettings | None = None, *, host: str = "127.0.0.1", port: int = 8080
) -> None:
    """Serve ``service`` with uvicorn until interrupted; requests in flight are drained on shutdown."""
    import uvicorn

    config = uvicorn.Config(
        create_app(service, settings),
        host=host,
        port=port,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        access_log=False,  # the app logs route, status and time; never the request
    )
    uvicorn.Server(config).run()


__all__ = [
    "GRACEFUL_SHUTDOWN_S",
    "ServerSettings",
    "Service",
    "ServiceError",
    "ServiceLimits",
    "create_app",
    "serve",
]
