"""Pydantic fields shared by the LangChain and LlamaIndex adapters (both frameworks use pydantic 2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from rerank_plugins._adapters import DEFAULT_CROSS_ENCODER, backend_model_name, cross_encoder_backend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.retrieval import RerankOptions


class ModelLoadFields(BaseModel):
    """How to load the backend model when none is passed in."""

    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    device: str | None = Field(default=None, description="'cpu', 'cuda', ...; None picks CUDA when available.")
    max_length: int | None = Field(default=None, description="Override the model's max sequence length (tokens).")
    trust_remote_code: bool = Field(default=False, description="Run model code from the hub. Off unless you trust it.")
    runtime: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="torch", description="'torch', or ONNX Runtime fp32 ('onnx') / int8 ('onnx-int8', quality-guarded)."
    )

    def load_options(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "device": self.device,
            "max_length": self.max_length,
            "trust_remote_code": self.trust_remote_code,
            "runtime": self.runtime,
        }


class RerankFields(BaseModel):
    """How cross-encoder scores become a result list (validated by :class:`RerankOptions`)."""

    top_n: int | None = Field(default=3, description="Keep at most this many documents (None: all).")
    score_threshold: float | None = Field(default=None, description="Drop documents scoring below this, in `scale` units.")
    min_keep: int = Field(default=0, description="Always keep this many of the best, whatever the threshold.")
    scale: Literal["raw", "sigmoid"] = Field(default="raw", description="'raw' logits or 'sigmoid' probabilities.")
    long_documents: Literal["truncate", "window"] = Field(
        default="truncate", description="Cut a too-long document (flagged) or score it in overlapping windows."
    )
    batch_size: int = Field(default=32, description="Pairs per forward pass.")
    fusion_weight: float | Literal["auto"] | None = Field(
        default=None,
        description="Order by a*z(rerank)+(1-a)*z(first stage) (needs first-stage scores); 'auto' uses the weight "
        "tuned on held-out queries when the model was trained; None ranks by the reranker alone.",
    )

    def rerank_options(self) -> RerankOptions:
        return RerankOptions(
            top_n=self.top_n,
            score_threshold=self.score_threshold,
            min_keep=self.min_keep,
            scale=self.scale,
            long_documents=self.long_documents,
            batch_size=self.batch_size,
            fusion_weight=self.fusion_weight,
        )


class CrossEncoderAdapterFields(ModelLoadFields, RerankFields):
    """Fields and set-up shared by the LangChain and LlamaIndex rerankers: a model (or backend) and options."""

    model: str = Field(default=DEFAULT_CROSS_ENCODER, description="Hub id or local directory of the cross-encoder.")
    _backend: CrossEncoderBackend = PrivateAttr()
    _options: RerankOptions = PrivateAttr()

    def __init__(self, backend: CrossEncoderBackend | None = None, **data: Any) -> None:
        if backend is not None:
            data.setdefault("model", backend_model_name(backend, CrossEncoderBackend))
        super().__init__(**data)
        self._options = self.rerank_options()
        self._backend = cross_encoder_backend(backend, self.model, self.load_options())

    @property
    def backend(self) -> CrossEncoderBackend:
        """The shared backend (the same instance for every adapter asking for this model and options)."""
        return self._backend
