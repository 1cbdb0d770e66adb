"""The HTTP application: routes of the APIs in :mod:`rerank_plugins.serve.apis`, plus ``/search``, ``/health``,
``/info`` and ``/metrics``, with the behaviour a shared service needs under load.

- Requests in flight are bounded (``max_in_flight``): one more is answered 429 at once rather than queued without
  limit; concurrent requests below it share forward passes through the backends' micro-batchers.
- Request bodies above ``max_body_bytes`` are refused with 413 while they are read, whatever ``Content-Length``
  claims; per-request limits (documents, text length) are the service's (413 / 422).
- ``api_key``: every route but ``/health`` wants ``Authorization: Bearer <key>``, compared in constant time.
- Logs name the route, status and time of each request, never a query or a document.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

import rerank_plugins.serve.apis as apis
from rerank_plugins.serve.metrics import Metrics
from rerank_plugins.serve.service import Service, ServiceError

logger = logging.getLogger("rerank_plugins.serve")

OPEN_PATHS = frozenset({"/health"})
"""Answered without the API key (load balancers' health checks)."""
UNLIMITED_PATHS = frozenset({"/health", "/info", "/metrics"})
"""Not counted against ``max_in_flight``: cheap, and needed most when the server is busy."""


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None
    max_in_flight: int = 256
    """Requests served at once; one more gets 429 (TEI's ``max_concurrent_requests``)."""
    max_body_bytes: int = 8 * 1024 * 1024
    log_texts: bool = False
    """Log the queries of requests (debugging only: they may be private)."""

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")


def error_body(path: str, status: int, message: str, kind: str) -> dict[str, Any]:
    """An error in the format of the API that owns ``path``, so its client reports the message."""
    if path in ("/rerank", "/embed"):
        return {"error": message, "error_type": kind}
    if path in ("/v1/embeddings", "/embeddings"):
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return {"message": message, "detail": message}


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse (413) a request body larger than ``limit`` bytes while it is read."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: dict[str, Any], send: Callable) -> None:
        message = f"request body larger than this server's limit of {self.limit} bytes"
        response = JSONResponse(error_body(scope["path"], 413, message, "Validation"), status_code=413)
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def create_app(service: Service, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``service`` (run it with uvicorn, or :func:`rerank_plugins.serve.serve`)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    in_flight = 0

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await run_in_threadpool(service.warm_up)
        yield

    app = FastAPI(title="rerank-plugins", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        nonlocal in_flight
        path = request.url.path
        started = time.perf_counter()
        if settings.api_key is not None and path not in OPEN_PATHS and not _authorised(request, settings.api_key):
            response = JSONResponse(error_body(path, 401, "missing or wrong API key", "Unauthorized"), 401)
        elif path not in UNLIMITED_PATHS and in_flight >= settings.max_in_flight:
            message = f"server busy: {in_flight} requests in flight (limit {settings.max_in_flight}); retry later"
            response = JSONResponse(error_body(path, 429, message, "Overloaded"), 429)
        else:
            counted = path not in UNLIMITED_PATHS
            in_flight += counted
            metrics.in_flight.set(in_flight)
            try:
                response = await call_next(request)
            finally:
                in_flight -= counted
                metrics.in_flight.set(in_flight)
        seconds = time.perf_counter() - started
        route = path if path in _ROUTES else "other"
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(seconds)
        logger.info("%s %s %d %.1f ms", request.method, path, response.status_code, seconds * 1000)
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, error.status, error.message, error.kind), error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, 422, _describe(error.errors()), "Validation"), 422)

    async def parse(request: Request, model: type[BaseModel]) -> Any:
        try:
            body = await request.json()
        except ValueError as error:
            raise ServiceError(422, f"request body is not JSON: {error}") from error
        if settings.log_texts:
            logger.info("%s query=%r", request.url.path, body.get("query") if isinstance(body, dict) else None)
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise ServiceError(422, _describe(error.errors())) from error

    @app.post("/rerank")
    async def rerank(request: Request) -> Any:
        """TEI's rerank (``texts``) or infinity's (``documents``): the body says which."""
        raw = await _peek_json(request)  # Starlette keeps the parsed body: parse() below reads it again for free
        if isinstance(raw, dict) and "texts" not in raw and "documents" in raw:
            return await apis.infinity_rerank(service, await parse(request, apis.RerankRequest))
        return await apis.tei_rerank(service, await parse(request, apis.TEIRerankRequest))

    @app.post("/v1/rerank")
    async def rerank_v1(request: Request) -> Any:
        return await apis.cohere_rerank(service, await parse(request, apis.RerankRequest), api="v1")

    @app.post("/v2/rerank")
    async def rerank_v2(request: Request) -> Any:
        return await apis.cohere_rerank(service, await parse(request, apis.RerankRequest), api="v2")

    @app.post("/embed")
    async def embed(request: Request) -> Any:
        return await apis.tei_embed(service, await parse(request, apis.TEIEmbedRequest))

    @app.post("/v1/embeddings")
    @app.post("/embeddings")
    async def embeddings(request: Request) -> Any:
        return await apis.openai_embeddings(service, await parse(request, apis.OpenAIEmbeddingRequest))

    @app.post("/search")
    async def search(request: Request) -> Any:
        parsed = await parse(request, SearchRequest)
        results = await service.search(parsed.query, top_k=parsed.top_k, top_n=parsed.top_n, rerank=parsed.rerank)
        return {
            "results": [
                {
                    "id": r.document.id,
                    "text": r.document.text,
                    "metadata": dict(r.document.metadata),
                    "score": r.score,
                    **r.score_metadata(),
                }
                for r in results
            ]
        }

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> Any:
        return service.info()

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        if service.reranker is not None:
            recent = service.reranker.batcher.batch_sizes[-100:]
            metrics.rerank_batch_requests.set(sum(recent) / len(recent) if recent else 0.0)
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    return app


class SearchRequest(BaseModel):
    query: str
    top_k: int | None = None
    top_n: int | None = None
    rerank: bool = True


_ROUTES = frozenset(
    {"/rerank", "/v1/rerank", "/v2/rerank", "/embed", "/v1/embeddings", "/embeddings", "/search"} | UNLIMITED_PATHS
)


async def _peek_json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _authorised(request: Request, key: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _describe(errors: Any) -> str:
    """Pydantic's errors as one line a client can show: ``field: problem; ...``."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
