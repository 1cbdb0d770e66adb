"""Fusing cross-encoder and first-stage scores: ``a * z(rerank) + (1 - a) * z(retrieval)`` per query.

Per-query z-scores put both on one scale. ``a = 1`` is the reranker alone, ``a = 0`` the first stage's own
order; a weight chosen on held-out queries means a weak reranker cannot make results worse than the first
stage on data like the held-out set, and a strong one is trusted fully.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRAINING_INFO = "rerank_plugins_training.json"


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return np.where(finite, 0.0, -np.inf)
    centred = values - values[finite].mean()
    std = values[finite].std()
    return np.where(finite, centred / std if std > 0 else 0.0, -np.inf)


def fuse(rerank_scores: Sequence[float], retrieval_scores: Sequence[float | None], weight: float) -> np.ndarray:
    """Fused scores for one query's candidates (higher is better)."""
    if not 0.0 <= weight <= 1.0 or math.isnan(weight):
        raise ValueError(f"fusion_weight must be between 0 and 1, got {weight}")
    if any(score is None for score in retrieval_scores):
        raise ValueError("fusion_weight needs a first-stage score for every candidate (retrieval_score)")
    return weight * zscore(np.asarray(rerank_scores)) + (1 - weight) * zscore(np.asarray(retrieval_scores, dtype=float))


def stored_fusion(model_path: str | Path) -> dict[str, Any]:
    """The fusion record saved with a model trained by rerank-plugins (weight, the first stage it was tuned with, the
    sweep); empty when there is none."""
    info = Path(model_path) / TRAINING_INFO
    try:
        fusion = json.loads(info.read_text(encoding="utf-8")).get("fusion", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return fusion if isinstance(fusion, dict) else {}


def stored_fusion_weight(model_path: str | Path) -> float | None:
    """The fusion weight tuned on held-out queries when the model was trained by rerank-plugins, if any."""
    weight = stored_fusion(model_path).get("weight")
    return float(weight) if isinstance(weight, (int, float)) else None
