"""LlamaIndex ``BaseEmbedding`` over the shared bi-encoder backend."""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import Field

from rerank_plugins.adapter_common import DEFAULT_BI_ENCODER, BiEncoderAdapterFields, adopt_backend
from rerank_plugins.models.bi_encoder import BiEncoderBackend


class BiEncoderEmbedding(BiEncoderAdapterFields, BaseEmbedding):
    """Sentence-transformers embeddings for LlamaIndex; queries and documents use the model's own prompts.

    Pass ``model_name`` (hub id or directory) or an existing ``backend``; the loaded model is shared
    with every other adapter that asks for it. ``model=`` and ``batch_size=`` (the names the other adapters use)
    are accepted for ``model_name`` and ``embed_batch_size``.
    """

    model_name: str = Field(default=DEFAULT_BI_ENCODER, description="Hub id or local directory of the embedding model.")
    embed_batch_size: int = Field(default=32, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalise, so inner product equals cosine similarity.")

    def __init__(self, backend: BiEncoderBackend | None = None, **data: Any) -> None:
        for ours, theirs in (("model", "model_name"), ("batch_size", "embed_batch_size")):
            if ours in data:
                if theirs in data:
                    raise ValueError(f"{ours} and {theirs} are the same argument: give one")
                data[theirs] = data.pop(ours)
        if backend is not None:
            adopt_backend(backend, BiEncoderBackend, data, "model_name")
        super().__init__(**data)
        self._init_backend(backend, self.model_name)

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsBiEncoderEmbedding"

    @property
    def model(self) -> str:
        """The same as ``model_name``."""
        return self.model_name

    @property
    def batch_size(self) -> int:
        """The same as ``embed_batch_size``."""
        return self.embed_batch_size

    def _get_query_embedding(self, query: str) -> list[float]:
        vectors = self._backend.encode_queries([query], batch_size=1, normalize=self.normalize, show_progress=False)
        return vectors[0].tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._backend.encode_documents(
            texts, batch_size=self.embed_batch_size, normalize=self.normalize
        ).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await self._backend.aencode_queries([query], normalize=self.normalize))[0].tolist()

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await self._aget_text_embeddings([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._backend.aencode_documents(
            texts, batch_size=self.embed_batch_size, normalize=self.normalize
        )
        return vectors.tolist()
