"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rerank_plugins_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rerank_plugins_request_seconds",
            "Request time by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.in_flight = Gauge("rerank_plugins_in_flight", "Requests being served", registry=self.registry)
        self.rerank_batch_requests = Gauge(
            "rerank_plugins_rerank_batch_requests",
            "Requests per reranker forward pass, averaged over the last 100 passes",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
