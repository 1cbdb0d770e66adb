"""What the HTTP routes call: reranking, embedding and two-stage search over the shared backends, with request limits.

Knows nothing of HTTP or of any API's request shape: :mod:`rerank_plugins.serve.apis` translates those. Model work
goes through the backends' async methods, whose micro-batchers let concurrent requests share forward passes in a
worker thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.pipeline import TwoStagePipeline
from rerank_plugins.rerank import DEFAULT_TOP_N, RerankingStage, RerankOptions
from rerank_plugins.schema import RankedItem, RetrievedDocument


class ServiceError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, ``kind`` a short machine-readable reason."""

    def __init__(self, status: int, message: str, kind: str = "Validation") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask for; beyond it the service answers 413 (too many items) or 422 (too long a text)."""

    max_documents: int = 1000
    """Documents per rerank request, inputs per embedding request."""
    max_text_chars: int = 100_000
    """Characters per query, document or input."""
    max_top_k: int = 1000
    """First-stage candidates a search may ask for."""


EmbedPrompt = Literal["query", "document"] | None


class Service:
    """The models behind a server: a reranker, an embedding model and a first stage over an index (each optional)."""

    def __init__(
        self,
        reranker: CrossEncoderBackend | None = None,
        embedder: BiEncoderBackend | None = None,
        first_stage: FirstStage | None = None,
        *,
        options: RerankOptions | None = None,
        top_k: int = 30,
        limits: ServiceLimits | None = None,
    ) -> None:
        if reranker is None and embedder is None and first_stage is None:
            raise ValueError("a server needs a reranker, an embedding model or an index")
        self.reranker = reranker
        self.embedder = embedder
        self.first_stage = first_stage
        self.options = options or RerankOptions()
        self.top_k = top_k
        self.limits = limits or ServiceLimits()

    def warm_up(self) -> None:
        """Load every model now, so the first request does not pay for it (and /health means ready)."""
        for backend in (self.reranker, self.embedder):
            if backend is not None:
                _ = backend.model

    def info(self) -> dict[str, Any]:
        """What /info reports: models, their limits, the index and the request limits."""
        info: dict[str, Any] = {"limits": dataclasses.asdict(self.limits)}
        if self.reranker is not None:
            info["reranker"] = {
                "model_id": self.reranker.model_name,
                "max_input_length": self.reranker.max_length,
                "long_documents": self.reranker.resolve_long_documents(self.options.long_documents),
                "runtime": self.reranker.effective_runtime,
            }
        if self.embedder is not None:
            info["embedder"] = {
                "model_id": self.embedder.model_name,
                "max_input_length": self.embedder.max_length,
                "dimension": self.embedder.dimension,
                "runtime": self.embedder.effective_runtime,
            }
        if self.first_stage is not None:
            info["index"] = self.first_stage.describe()
            info["search"] = {"top_k": self.top_k, "top_n": self.options.top_n}
        return info

    # -- reranking -------------------------------------------------------------------------------------

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        scale: str = "sigmoid",
        truncate: bool | None = None,
        max_tokens_per_document: int | None = None,
    ) -> list[RankedItem]:
        """``documents`` ranked for ``query``, best first (at most ``top_n``).

        ``truncate=True`` reads the beginning of a long document; otherwise the server's policy applies
        (``long_documents`` of its options: by default what the reranker was trained for).
        ``max_tokens_per_document`` cuts every document to that many reranker tokens first.
        """
        reranker = self._require(self.reranker, "reranker", "--cross-encoder")
        self._check_texts([query], "query")
        self._check_count(documents, "documents")
        self._check_texts(documents, "documents")
        if top_n is not None and top_n < 1:
            raise ServiceError(422, f"top_n must be at least 1, got {top_n}")
        if max_tokens_per_document is not None:
            if max_tokens_per_document < 1:
                raise ServiceError(422, f"max_tokens_per_doc must be at least 1, got {max_tokens_per_document}")
            documents = self._cut_to_tokens(reranker, documents, max_tokens_per_document)
        policy = "truncate" if truncate else self.options.long_documents
        try:
            return await reranker.arank(
                query,
                documents,
                top_n=top_n,
                scale=scale,
                long_documents=policy,
                batch_size=self.options.batch_size,
            )
        except ValueError as error:  # a query too long to leave the document room
            raise ServiceError(422, str(error)) from error

    @staticmethod
    def _cut_to_tokens(reranker: CrossEncoderBackend, documents: Sequence[str], tokens: int) -> list[str]:
        tokenizer = reranker.model.tokenizer
        with reranker.lock:
            encoded = tokenizer(list(documents), add_special_tokens=False, return_offsets_mapping=True)
        return [
            text if len(offsets) <= tokens else text[: offsets[tokens - 1][1]]
            for text, offsets in zip(documents, encoded["offset_mapping"])
        ]

    # -- embedding -------------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, prompt: EmbedPrompt = None, normalize: bool = True) -> np.ndarray:
        """Embeddings of ``texts`` (float32 rows). ``prompt`` applies the model's query or document prompt
        (e5: ``query: `` / ``passage: ``); ``None`` embeds the texts exactly as sent, as TEI and OpenAI do."""
        embedder = self._require(self.embedder, "embedding model", "--bi-encoder")
        self._check_count(texts, "inputs")
        self._check_texts(texts, "inputs")
        if not texts:
            raise ServiceError(400, "no inputs to embed", "Empty")
        if prompt == "query":
            return await embedder.aencode_queries(list(texts), normalize=normalize)
        if prompt == "document":
            return await embedder.aencode_documents(list(texts), normalize=normalize)
        return await embedder.aencode_texts(list(texts), normalize=normalize)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the embedding model reads for ``texts`` (OpenAI's ``usage``), special tokens included."""
        embedder = self._require(self.embedder, "embedding model", "--bi-encoder")
        tokenizer = embedder.model.tokenizer
        with embedder.lock:
            lengths = tokenizer(list(texts), truncation=True, max_length=embedder.max_length, return_length=True)
        return int(sum(lengths["length"]))

    # -- two-stage search ------------------------------------------------------------------------------

    async def search(
        self, query: str, *, top_k: int | None = None, top_n: int | None = None, rerank: bool = True
    ) -> list[RetrievedDocument]:
        """The index's top-``top_k`` for ``query``, reranked (when the server has a reranker and ``rerank``), top-n."""
        stage = self._require(self.first_stage, "index", "--index")
        self._check_texts([query], "query")
        top_k = self.top_k if top_k is None else top_k
        if not 1 <= top_k <= self.limits.max_top_k:
            raise ServiceError(422, f"top_k must be in [1, {self.limits.max_top_k}], got {top_k}")
        options = self.options if top_n is None else dataclasses.replace(self.options, top_n=top_n)
        if options.top_n is not None and options.top_n < 1:
            raise ServiceError(422, f"top_n must be at least 1, got {top_n}")
        reranker = RerankingStage(self.reranker, options) if self.reranker is not None and rerank else None
        pipeline = TwoStagePipeline(stage, reranker, top_k=top_k, options=None if reranker else options)
        return await pipeline.aretrieve(query)

    # -- checks ----------------------------------------------------------------------------------------

    @staticmethod
    def _require(component: Any, what: str, flag: str) -> Any:
        if component is None:
            raise ServiceError(404, f"this server has no {what} (start it with {flag})", "NotConfigured")
        return component

    def _check_count(self, items: Sequence[Any], name: str) -> None:
        if len(items) > self.limits.max_documents:
            raise ServiceError(
                413, f"{len(items)} {name} in one request; this server takes at most {self.limits.max_documents}"
            )

    def _check_texts(self, texts: Sequence[str], name: str) -> None:
        for i, text in enumerate(texts):
            if len(text) > self.limits.max_text_chars:
                where = name if len(texts) == 1 and name == "query" else f"{name}[{i}]"
                raise ServiceError(
                    422, f"{where} has {len(text)} characters; this server takes at most {self.limits.max_text_chars}"
                )
        if name == "query" and not texts[0].strip():
            raise ServiceError(422, "query must be a non-empty string")


__all__ = ["DEFAULT_TOP_N", "EmbedPrompt", "Service", "ServiceError", "ServiceLimits"]
