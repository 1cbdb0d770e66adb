"""The request and response shapes of the APIs the server speaks, translated to and from :class:`Service` calls.

Each API answers in its own shape and its own error format, so its existing clients work unchanged:

- TEI (text-embeddings-inference): ``POST /rerank`` ``{query, texts, truncate, raw_scores, return_text}`` -> a bare
  list ``[{index, score, text?}]`` sorted by score; ``POST /embed`` ``{inputs, truncate, normalize, prompt_name}``
  -> ``[[float]]``; errors ``{error, error_type}``.
- Cohere ``POST /v1/rerank``, ``/v2/rerank`` and Jina ``POST /v1/rerank``: ``{model, query, documents, top_n,
  return_documents, max_tokens_per_doc}`` -> ``{id, model, results: [{index, relevance_score, document?: {text}}],
  meta, usage}`` (one shape serves both: each client reads its own keys); errors ``{message, detail}``.
- infinity: ``POST /rerank`` with ``documents`` (instead of TEI's ``texts``) -> ``{object, id, model, results:
  [{index, relevance_score, document?}], usage}``, its ``document`` a plain string.
- OpenAI (and infinity): ``POST /v1/embeddings``, ``/embeddings`` ``{input, model, encoding_format}`` ->
  ``{object: "list", data: [{object: "embedding", index, embedding}], model, usage}``; errors
  ``{error: {message, type, param, code}}``.

Scores are the reranker's sigmoid probabilities (TEI's ``raw_scores=true``: its logits), as those servers return.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rerank_plugins.schema import RankedItem
from rerank_plugins.serve.service import EmbedPrompt, Service, ServiceError


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- TEI -------------------------------------------------------------------------------------------------------


class TEIRerankRequest(_Request):
    query: str
    texts: list[str]
    truncate: bool = False
    raw_scores: bool = False
    return_text: bool = False


class TEIEmbedRequest(_Request):
    inputs: str | list[str]
    truncate: bool = False
    normalize: bool = True
    prompt_name: str | None = None


async def tei_rerank(service: Service, request: TEIRerankRequest) -> list[dict[str, Any]]:
    ranked = await service.rerank(
        request.query, request.texts, scale="raw" if request.raw_scores else "sigmoid", truncate=request.truncate
    )
    return [
        {
            "index": item.index,
            "score": item.score,
            **({"text": request.texts[item.index]} if request.return_text else {}),
        }
        for item in ranked
    ]


async def tei_embed(service: Service, request: TEIEmbedRequest) -> list[list[float]]:
    texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    vectors = await service.embed(texts, prompt=_prompt(request.prompt_name), normalize=request.normalize)
    return vectors.tolist()


def _prompt(name: str | None) -> EmbedPrompt:
    """A prompt name (TEI's ``prompt_name``, Cohere's ``input_type``) as the model's query or document prompt."""
    if name is None:
        return None
    prompts = {
        "query": "query",
        "search_query": "query",
        "document": "document",
        "passage": "document",
        "search_document": "document",
    }
    if name not in prompts:
        raise ServiceError(422, f"unknown prompt {name!r}; use one of {sorted(prompts)} or none")
    return prompts[name]  # type: ignore[return-value]


# -- Cohere (v1, v2), Jina and infinity rerank -------------------------------------------------------------------


class TextDocument(_Request):
    text: str


class RerankRequest(_Request):
    """Cohere v1/v2, Jina and infinity: documents are strings or ``{"text": ...}`` objects."""

    query: str
    documents: list[str | TextDocument]
    model: str | None = None
    top_n: int | None = None
    return_documents: bool | None = None
    max_tokens_per_doc: int | None = None
    raw_scores: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


async def cohere_rerank(service: Service, request: RerankRequest, *, api: Literal["v1", "v2"]) -> dict[str, Any]:
    """Cohere's shape, with Jina's ``model`` and ``usage`` too (Jina shares ``/v1/rerank``)."""
    texts = request.texts()
    ranked = await _rerank(service, request, texts)
    documents = request.return_documents
    results = [
        {
            "index": item.index,
            "relevance_score": item.score,
            **({"document": {"text": texts[item.index]}} if documents else {}),
        }
        for item in ranked
    ]
    return {
        "id": str(uuid.uuid4()),
        "model": request.model or _model_id(service),
        "results": results,
        "meta": {"api_version": {"version": "2" if api == "v2" else "1"}, "billed_units": {"search_units": 1}},
        "usage": {"total_tokens": 0},
    }


async def infinity_rerank(service: Service, request: RerankRequest) -> dict[str, Any]:
    texts = request.texts()
    ranked = await _rerank(service, request, texts)
    return {
        "object": "rerank",
        "id": str(uuid.uuid4()),
        "created": 0,
        "model": request.model or _model_id(service),
        "results": [
            {
                "index": item.index,
                "relevance_score": item.score,
                "document": texts[item.index] if request.return_documents else None,
            }
            for item in ranked
        ],
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


async def _rerank(service: Service, request: RerankRequest, texts: list[str]) -> list[RankedItem]:
    return await service.rerank(
        request.query,
        texts,
        top_n=request.top_n,
        scale="raw" if request.raw_scores else "sigmoid",
        max_tokens_per_document=request.max_tokens_per_doc,
    )


def _model_id(service: Service) -> str:
    return service.reranker.model_name if service.reranker is not None else ""


# -- OpenAI / infinity embeddings -----------------------------------------------------------------------------------


class OpenAIEmbeddingRequest(_Request):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    input_type: str | None = None


async def openai_embeddings(service: Service, request: OpenAIEmbeddingRequest) -> dict[str, Any]:
    texts = _openai_texts(request.input)
    vectors = await service.embed(texts, prompt=_prompt(request.input_type))
    if request.dimensions is not None and request.dimensions != vectors.shape[1]:
        raise ServiceError(
            422, f"dimensions={request.dimensions}: this model embeds in {vectors.shape[1]} dimensions only"
        )
    tokens = service.count_tokens(texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(vector, request.encoding_format)}
            for i, vector in enumerate(vectors)
        ],
        "model": request.model or (service.embedder.model_name if service.embedder is not None else ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _openai_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and not all(isinstance(v, str) for v in value):
        raise ServiceError(
            422,
            "input holds token ids; this server embeds text (its model's tokenizer is not OpenAI's). LangChain "
            "OpenAIEmbeddings: pass check_embedding_ctx_length=False",
        )
    return list(value)


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()


__all__ = [
    "OpenAIEmbeddingRequest",
    "RerankRequest",
    "TEIEmbedRequest",
    "TEIRerankRequest",
    "cohere_rerank",
    "infinity_rerank",
    "openai_embeddings",
    "tei_embed",
    "tei_rerank",
]
