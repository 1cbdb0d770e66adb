"""LangChain ``Embeddings`` over the shared bi-encoder backend."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict, Field

from rerank_plugins.adapter_common import DEFAULT_BI_ENCODER, BiEncoderAdapterFields, adopt_backend
from rerank_plugins.models.bi_encoder import BiEncoderBackend


class BiEncoderEmbeddings(BiEncoderAdapterFields, Embeddings):
    """Sentence-transformers embeddings for LangChain; queries and documents use the model's own prompts.

    Pass ``model`` (or ``model_name``; hub id or directory) or an existing ``backend``; the same model is loaded once
    and shared with every other adapter that asks for it.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), populate_by_name=True)

    model: str = Field(
        default=DEFAULT_BI_ENCODER,
        alias="model_name",
        description="Hub id or local directory of the embedding model (or `model_name`, as langchain-huggingface).",
    )
    batch_size: int = Field(default=32, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(default=True, description="L2-normalise, so inner product equals cosine similarity.")
    show_progress: bool | None = Field(default=None, description="Progress bar; None shows one for long inputs.")

    def __init__(self, backend: BiEncoderBackend | None = None, **data: Any) -> None:
        if backend is not None:
            adopt_backend(backend, BiEncoderBackend, data, "model")
        super().__init__(**data)
        self._init_backend(backend, self.model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._backend.encode_documents(
            texts, batch_size=self.batch_size, normalize=self.normalize, show_progress=self.show_progress
        ).tolist()

    def embed_query(self, text: str) -> list[float]:
        vectors = self._backend.encode_queries([text], batch_size=1, normalize=self.normalize, show_progress=False)
        return vectors[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = await self._backend.aencode_documents(texts, batch_size=self.batch_size, normalize=self.normalize)
        return vectors.tolist()

    async def aembed_query(self, text: str) -> list[float]:
        return (await self._backend.aencode_queries([text], normalize=self.normalize))[0].tolist()
