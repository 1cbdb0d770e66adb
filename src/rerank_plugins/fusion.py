"""Fusing cross-encoder and first-stage scores: ``a * z(rerank) + (1 - a) * z(retrieval)`` per query.

Per-query z-scores put both on one scale. ``a = 1`` is the reranker alone, ``a = 0`` the first stage's own
order; a weight chosen on held-out queries means a weak reranker cannot make results worse than the first
stage on data like the held-out set, and a strong one is trusted fully.
"""

from __future__ import annotations

import functools
import json
import logging
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_number

logger = logging.getLogger(__name__)

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
    check_number(weight, "fusion_weight", 0, 1)
    if any(score is None for score in retrieval_scores):
        raise ValueError("fusion_weight needs a first-stage score for every candidate (retrieval_score)")
    rerank = zscore(np.asarray(rerank_scores))
    retrieval = zscore(np.asarray(retrieval_scores, dtype=float))
    if weight == 0.0:  # the ends are exactly one side: 0 * -inf (a NaN model score) would be NaN
        return retrieval
    if weight == 1.0:
        return rerank
    return weight * rerank + (1 - weight) * retrieval


def stored_fusion(model_path: str | Path) -> dict[str, Any]:
    """The fusion record saved with a model trained by rerank-plugins (weight, the first stage it was tuned with, the
    sweep); empty when the model has no training record (e.g. a hub model) or its record has no fusion entry.

    A record that exists but cannot be read is an error: silently dropping it would turn fusion off. With
    ``fusion_weight="auto"`` (the default) every rerank call asks for it, so a record is read once per version of
    the file (its modification time and size), not once per query.
    """
    info = Path(model_path) / TRAINING_INFO
    fusion = training_record(model_path).get("fusion", {})
    weight = fusion.get("weight") if isinstance(fusion, dict) else None
    if not isinstance(fusion, dict) or not (
        weight is None or (isinstance(weight, (int, float)) and not isinstance(weight, bool) and 0 <= weight <= 1)
    ):
        raise ValueError(
            f"the training record {info} has an invalid fusion entry {fusion!r}: restore it, or delete "
            "it to rank without the stored fusion weight"
        )
    return dict(fusion)


def training_record(model_path: str | Path) -> dict[str, Any]:
    """The training record saved with a model trained by rerank-plugins; empty when there is none (a hub model).

    Read once per version of the file (modification time and size); an unreadable record raises.
    """
    info = Path(model_path) / TRAINING_INFO
    try:
        found = info.stat()
    except OSError:
        return {}
    if not stat.S_ISREG(found.st_mode):
        return {}
    return _read_record(str(info), found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=64)
def _read_record(info: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The record at ``info`` (cached per file version; errors are not cached). Callers must not modify it."""
    try:
        record = json.loads(Path(info).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot read the training record {info} ({error}): restore it, or delete it to rank "
            "without the stored fusion weight"
        ) from error
    if not isinstance(record, dict):
        raise ValueError(f"the training record {info} is not a JSON object: restore it, or delete it")
    return record


def stored_fusion_weight(model_path: str | Path) -> float | None:
    """The fusion weight tuned on held-out queries when the model was trained by rerank-plugins, if any."""
    weight = stored_fusion(model_path).get("weight")
    return None if weight is None else float(weight)


IGNORED_SETTINGS = frozenset({"documents", "shards", "index_type", "chosen_by"})
"""Parts of a first stage's description that do not change its scores' order (size, exact vs approximate search,
how an analyzer was picked): a stored weight still fits when only these differ."""


def scoring_settings(description: Any) -> Any:
    """``description`` without :data:`IGNORED_SETTINGS`, for comparing the first stage a weight was tuned with."""
    if isinstance(description, dict):
        return {k: scoring_settings(v) for k, v in description.items() if k not in IGNORED_SETTINGS}
    if isinstance(description, list):
        return [scoring_settings(v) for v in description]
    return description


_warned: set[tuple[str, ...]] = set()


def warn_once(key: tuple[str, ...], message: str, *args: Any) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process: adapters build a reranking stage
    per call, so a warning kept on the stage would repeat on every query."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def auto_fusion_weight(model_path: str | Path, first_stage: dict[str, Any] | None = None) -> float | None:
    """What ``fusion_weight="auto"`` means for a model: its stored weight, or None (the reranker alone) without one.

    ``first_stage`` is the description of the first stage in use, when known: a weight tuned with another kind or
    other settings is still used (it usually helps), with one warning per process naming both.
    """
    fusion = stored_fusion(model_path)
    weight = fusion.get("weight")
    if weight is None:
        return None
    tuned_with = fusion.get("first_stage")
    if first_stage is not None and tuned_with is not None:
        here = json.loads(json.dumps(first_stage))  # as a training record stores it
        if scoring_settings(tuned_with) != scoring_settings(here):
            warn_once(
                ("first stage", str(model_path), json.dumps(here, sort_keys=True)),
                "the fusion weight %s stored with %s was tuned with another first stage (%s); the first stage "
                "here is %s: the weight is used anyway; retrain the reranker with this first stage, or set "
                "fusion_weight, for a weight that fits",
                weight,
                model_path,
                json.dumps(tuned_with),
                json.dumps(here),
            )
    return float(weight)
