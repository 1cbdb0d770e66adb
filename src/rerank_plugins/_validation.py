"""Argument checks shared by backends, pipeline and adapters: one wording for every error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any

from rerank_plugins.schema import SCORE_SCALES


def clean_text(text: str) -> str:
    """Return ``text`` as valid UTF-8: lone surrogates (which tokenizers reject) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def check_query(query: Any, name: str = "query") -> str:
    if not isinstance(query, str):
        raise TypeError(f"{name} must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return clean_text(query)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Validate a sequence of strings (empty strings allowed) and return it as a cleaned list."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a sequence of str, got {type(texts).__name__}")
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(text).__name__}")
        out.append(clean_text(text))
    return out


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_non_negative_int(value: Any, name: str) -> int:
    """``value`` if it is an int >= 0 (sizes where 0 means "off" or "none"), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def check_number(value: Any, name: str, low: float, high: float = math.inf) -> float:
    """``value`` as a float after checking it is a real number (not a bool, not NaN) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # NaN fails both comparisons
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def check_rank_options(top_n: Any, score_threshold: Any, min_keep: Any) -> None:
    check_positive_int(top_n, "top_n", allow_none=True)
    if score_threshold is not None:
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, Real):
            raise TypeError(f"score_threshold must be a number or None, got {type(score_threshold).__name__}")
        if math.isnan(score_threshold):
            raise ValueError("score_threshold must not be NaN")
    if isinstance(min_keep, bool) or not isinstance(min_keep, int):
        raise TypeError(f"min_keep must be an int, got {type(min_keep).__name__}")
    if min_keep < 0:
        raise ValueError(f"min_keep must be >= 0, got {min_keep}")


def check_scale(scale: Any) -> str:
    if scale not in SCORE_SCALES:
        raise ValueError(f"scale must be one of {SCORE_SCALES}, got {scale!r}")
    return scale


def select_top(
    scores: Sequence[float],
    top_n: int | None,
    score_threshold: float | None,
    min_keep: int,
    threshold_scores: Sequence[float] | None = None,
) -> list[int]:
    """Positions of the results to keep, best first by ``scores`` (ties keep input order).

    Items whose ``threshold_scores`` (default: ``scores``) fall below ``score_threshold`` are dropped, but
    the ``min_keep`` best are always kept; then at most ``top_n`` remain.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if score_threshold is not None:
        gate = scores if threshold_scores is None else threshold_scores
        passing = [i for i in order if gate[i] >= score_threshold]
        order = passing if len(passing) >= min_keep else order[:min_keep]
    return order if top_n is None else order[:top_n]
