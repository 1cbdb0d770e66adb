"""The quantization quality guard: a faster runtime is kept only if it ranks like fp32 on a check set.

The check set is realistic reranking work (bundled SciFact claims, each with its 30 word-overlap candidates),
so agreement is measured where it matters: among plausible documents, as a reranker sees them. A model whose
tokenizer reads Hangul is checked on bundled KorQuAD questions too (a Korean reranker's int8 or bf16 copy must
agree with fp32 on Korean, not only on English biomedical text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rerank_plugins.data import demo_data_path, load_beir, load_dataset

MIN_TOP10_OVERLAP = 0.95
MIN_SPEARMAN = 0.99
CHECK_SET_VERSION = 2
"""Stored with each measurement, so a changed check set is measured again (2: Korean questions added)."""


class QuantizationQualityError(RuntimeError):
    """The quantized model ranks differently from fp32 on the check set; it was not kept."""


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no tie correction; 1.0 for fewer than two items)."""
    if len(a) < 2:
        return 1.0
    ra, rb = np.argsort(np.argsort(a)).astype(float), np.argsort(np.argsort(b)).astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return 1.0
    return float(np.corrcoef(ra, rb)[0, 1])


def top_k_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Share of the reference's top ``k`` (or all, if fewer) that the candidate scores also put in their top ``k``."""
    top = min(k, len(reference))
    return len(set(np.argsort(-reference)[:top]) & set(np.argsort(-candidate)[:top])) / top


def ranking_agreement(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], k: int = 10
) -> dict[str, float]:
    """Mean top-k overlap and mean Spearman between two sets of per-query score vectors."""
    overlaps, correlations = [], []
    for ref, cand in zip(reference, candidate):
        if len(ref) == 0:
            continue
        overlaps.append(top_k_overlap(ref, cand, k))
        correlations.append(spearman(ref, cand))
    return {
        "top10_overlap": float(np.mean(overlaps)),
        "spearman": float(np.mean(correlations)),
        "queries": len(overlaps),
    }


def require_agreement(report: dict[str, float], what: str) -> None:
    """Raise :class:`QuantizationQualityError` unless ``report`` meets both thresholds."""
    if report["top10_overlap"] < MIN_TOP10_OVERLAP or report["spearman"] < MIN_SPEARMAN:
        raise QuantizationQualityError(
            f"{what} refused: against fp32 on the check set, top-10 overlap {report['top10_overlap']:.3f} "
            f"(needs >= {MIN_TOP10_OVERLAP}) and Spearman {report['spearman']:.4f} (needs >= {MIN_SPEARMAN}). "
            "Use a fp32 runtime ('torch', 'onnx', 'openvino') for this model, or runtime='fast' to pick the "
            "fastest one the guard accepts."
        )


def reads_hangul(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` keeps Hangul syllables (a Korean-capable model) rather than jamo or unknown tokens."""
    return any(any("\uac00" <= ch <= "\ud7a3" for ch in token) for token in tokenizer.tokenize("한국어 문장을 읽는다"))


def check_set(queries: int = 16, depth: int = 30, *, korean: bool = False) -> list[tuple[str, list[str]]]:
    """Realistic (query, candidates) requests for the quality guard, from the bundled SciFact subset, plus as many
    bundled KorQuAD questions with ``korean``.

    Candidates are each query's ``depth`` documents with the most words (Korean: character bigrams) in common with
    it, so the check compares rankings among plausible documents, as a reranker sees them.
    """
    data = load_beir(demo_data_path(), "test")
    requests = _overlap_requests(data.corpus, list(data.queries.values())[:queries], depth, str.split)
    if korean:
        korquad = load_dataset(demo_data_path("korquad-1.0-dev"), "test")
        requests += _overlap_requests(korquad.corpus, list(korquad.queries.values())[:queries], depth, _bigrams)
    return requests


def _bigrams(text: str) -> list[str]:
    text = "".join(text.split())
    return [text[i : i + 2] for i in range(len(text) - 1)]


def _overlap_requests(
    corpus: dict[str, str], queries: list[str], depth: int, units: Callable[[str], list[str]]
) -> list[tuple[str, list[str]]]:
    doc_ids = list(corpus)
    doc_units = [set(units(corpus[d].lower())) for d in doc_ids]
    requests = []
    for query in queries:
        query = " ".join(query.split()[:12])  # short enough for any model's max length to leave room
        found = set(units(query.lower()))
        ranked = sorted(range(len(doc_ids)), key=lambda i: -len(found & doc_units[i]))[:depth]
        requests.append((query, [corpus[doc_ids[i]] for i in ranked]))
    return requests
