"""LlamaIndex ``BaseEmbedding`` over the shared bi-encoder backend."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import Field, PrivateAttr

from rerank_plugins._adapter_fields import ModelLoadFields
from rerank_plugins._adapters import DEFAULT_BI_ENCODER, backend_model_name, bi_encoder_backend
from rerank_plugins.models.bi_encoder import BiEncoderBackend


class BiEncoderEmbedding(ModelLoadFields, BaseEmbedding):
    """Sentence-transformers embeddings for LlamaIndex; queries and documents use the model's own prompts.

    Pass ``model_name`` (hub id or directory) or an existing ``backend``; the loaded model is shared
    with every other adapter that asks for it.
    """

    model_name: str = Field(default=DEFAULT_BI_ENCODER, description="Hub id or local directory of the embedding model.")
    embed_batch_size: int = Field(default=32, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalise, so inner product equals cosine similarity.")
    _backend: BiEncoderBackend = PrivateAttr()

    def __init__(self, backend: BiEncoderBackend | None = None, **data: Any) -> None:
        if backend is not None:
            data.setdefault("model_name", backend_model_name(backend, BiEncoderBackend))
        super().__init__(**data)
        self._backend = bi_encoder_backend(backend, self.model_name, self.load_options())

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsBiEncoderEmbedding"

    @property
    def backend(self) -> BiEncoderBackend:
        return self._backend

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._backend.encode_queries([query], batch_size=1, normalize=self.normalize, show_progress=False)[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._backend.encode_documents(texts, batch_size=self.embed_batch_size, normalize=self.normalize).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._backend.aencode_queries([query], normalize=self.normalize))[0].tolist()

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._backend.aencode_documents(texts, batch_size=self.embed_batch_size, normalize=self.normalize)
        return vectors.tolist()
