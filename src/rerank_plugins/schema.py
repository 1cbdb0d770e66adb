"""Small framework-free result types shared by every backend and adapter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ScoreScale = Literal["raw", "sigmoid"]
"""How a cross-encoder score is reported.

``raw``: the model's logit (unbounded; what the model was trained to separate).
``sigmoid``: ``1 / (1 + exp(-logit))``, a probability-like value in [0, 1]; the ranking is identical.
"""

SCORE_SCALES: tuple[str, ...] = ("raw", "sigmoid")


@dataclass(frozen=True)
class Document:
    """A text with an id and JSON-serialisable metadata, as the index stores it."""

    text: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RankedItem:
    """One reranked candidate: its position in the input list and its score.

    ``truncated`` is True when the document did not fit the model with the query and was cut;
    ``window`` is the index of the best-scoring window when long documents are scored in windows.
    """

    index: int
    score: float
    truncated: bool = False
    window: int | None = None


@dataclass(frozen=True)
class SearchHit:
    """A first-stage hit: the document, its position in the index (or input list) and its similarity.

    ``score`` is None only for candidates handed in by a caller whose retriever gave no score.
    ``sources`` holds the scores a fused first stage combined (e.g. ``{"dense_score": .., "lexical_score": ..}``;
    a side that did not find the document has None), empty for a single first stage.
    """

    document: Document
    position: int
    score: float | None
    sources: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrievedDocument:
    """A final two-stage result: first-stage similarity and (if reranked) the cross-encoder score."""

    document: Document
    retrieval_score: float | None
    rerank_score: float | None = None
    rerank_scale: str | None = None
    truncated: bool = False
    window: int | None = None
    fused_score: float | None = None
    first_stage_sources: Mapping[str, float | None] = field(default_factory=dict)
    """The per-source scores of a fused first stage (see :attr:`SearchHit.sources`)."""

    @property
    def score(self) -> float | None:
        """The score that ordered this result: fused if fusion was on, else the rerank, else the retrieval score."""
        if self.fused_score is not None:
            return self.fused_score
        return self.retrieval_score if self.rerank_score is None else self.rerank_score

    def score_metadata(self) -> dict[str, Any]:
        """The metadata keys every adapter writes into the documents it returns (see the README)."""
        metadata: dict[str, Any] = {k: v for k, v in self.first_stage_sources.items() if v is not None}
        if self.retrieval_score is not None:
            metadata[RETRIEVAL_SCORE] = self.retrieval_score
        if self.rerank_score is not None:
            metadata[RERANK_SCORE] = self.rerank_score
            metadata[RERANK_SCALE] = self.rerank_scale
            metadata[RERANK_TRUNCATED] = self.truncated
            if self.window is not None:
                metadata[RERANK_WINDOW] = self.window
        if self.fused_score is not None:
            metadata[FUSED_SCORE] = self.fused_score
        return metadata


RETRIEVAL_SCORE = "retrieval_score"
"""Metadata key: the first stage's score: cosine similarity (dense), BM25 (lexical), the fused score (hybrid),
or the score an external retriever reported."""
RERANK_SCORE = "rerank_score"
"""Metadata key: cross-encoder score, on the scale named by ``rerank_scale``."""
RERANK_SCALE = "rerank_scale"
RERANK_TRUNCATED = "rerank_truncated"
"""Metadata key: True when the document was cut to fit the cross-encoder with the query."""
RERANK_WINDOW = "rerank_window"
"""Metadata key: index of the best-scoring window, when ``long_documents="window"`` split the document."""
FUSED_SCORE = "fused_score"
"""Metadata key: ``a * z(rerank_score) + (1 - a) * z(retrieval_score)`` over the query's candidates (fusion on)."""
DENSE_SCORE = "dense_score"
"""Metadata key: a hybrid first stage's dense (cosine) score for the document, when the dense side found it."""
LEXICAL_SCORE = "lexical_score"
"""Metadata key: a hybrid first stage's BM25 score for the document, when the lexical side found it."""
SCORE_KEYS = (
    RETRIEVAL_SCORE,
    DENSE_SCORE,
    LEXICAL_SCORE,
    RERANK_SCORE,
    RERANK_SCALE,
    RERANK_TRUNCATED,
    RERANK_WINDOW,
    FUSED_SCORE,
)
