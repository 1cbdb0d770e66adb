"""The reranking stage: a cross-encoder backend plus options turns first-stage hits into ranked results.

Shared by the pipeline and every adapter, so selection (``top_n``, thresholds), score scales, long-document
handling and fusion with the first stage behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rerank_plugins._validation import check_number, check_rank_options, check_scale, select_top
from rerank_plugins.fusion import auto_fusion_weight, fuse, warn_once
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.pair_scoring import MIN_DOCUMENT_TOKENS, check_scoring_options
from rerank_plugins.schema import RankedItem, RetrievedDocument, SearchHit

logger = logging.getLogger(__name__)


LONG_QUERY_POLICIES = ("truncate", "error")

DEFAULT_TOP_N = 5
"""Documents kept by default, by every reranker and two-stage retriever (and the CLI)."""


@dataclass(frozen=True)
class RerankOptions:
    """How a cross-encoder's scores become a result list (validated on construction)."""

    top_n: int | None = DEFAULT_TOP_N
    score_threshold: float | None = None
    min_keep: int = 0
    scale: str = "raw"
    long_documents: str = "auto"
    """``"truncate"``, ``"window"`` or ``"auto"``: what the reranker was trained for (see
    :attr:`CrossEncoderBackend.trained_long_documents`)."""
    long_queries: str = "truncate"
    """A query too long to leave the document ``MIN_DOCUMENT_TOKENS`` of the pair: ``"truncate"`` keeps its
    beginning (with a warning naming both lengths), ``"error"`` raises."""
    batch_size: int = 32
    fusion_weight: float | str | None = "auto"
    """``"auto"``: the weight stored with a model trained by rerank-plugins (tuned on its held-out queries, so the
    result is not below the first stage on data like them), or the reranker alone without one (a hub model) or when
    candidates carry no first-stage score. A weight ``a`` in [0, 1]: order by ``a * z(rerank) + (1 - a) *
    z(retrieval)`` (see :mod:`rerank_plugins.fusion`). None: the reranker alone."""

    def __post_init__(self) -> None:
        check_rank_options(self.top_n, self.score_threshold, self.min_keep)
        check_scale(self.scale)
        check_scoring_options(self.long_documents, self.batch_size)
        if self.long_queries not in LONG_QUERY_POLICIES:
            raise ValueError(f"long_queries must be one of {LONG_QUERY_POLICIES}, got {self.long_queries!r}")
        if self.fusion_weight is not None and self.fusion_weight != "auto":
            if isinstance(self.fusion_weight, str):
                raise TypeError(f"fusion_weight must be a number in [0, 1], 'auto' or None, got {self.fusion_weight!r}")
            check_number(self.fusion_weight, "fusion_weight", 0, 1)


class RerankingStage:
    """A cross-encoder backend with its :class:`RerankOptions`: hits in, ranked :class:`RetrievedDocument` out.

    Each output is a subset of its input hits, each at most once, best first. ``first_stage`` describes the first
    stage the hits come from (:meth:`FirstStage.describe`), when known: ``fusion_weight="auto"`` checks a stored
    weight against it.
    """

    def __init__(
        self,
        backend: CrossEncoderBackend,
        options: RerankOptions | None = None,
        *,
        first_stage: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(backend, CrossEncoderBackend):
            raise TypeError(f"backend must be a CrossEncoderBackend, got {type(backend).__name__}")
        self.backend = backend
        self.options = options or RerankOptions()
        self.first_stage = first_stage

    def with_first_stage(self, first_stage: dict[str, Any] | None) -> RerankingStage:
        """This stage (same backend and options) for hits from the first stage ``first_stage`` describes."""
        return RerankingStage(self.backend, self.options, first_stage=first_stage)

    @property
    def fusion_weight(self) -> float | None:
        """The fusion weight in force (``"auto"`` resolved from the model's training record)."""
        if self.options.fusion_weight == "auto":
            return auto_fusion_weight(self.backend.path, self.first_stage)
        return self.options.fusion_weight

    def rerank_batch(self, requests: Sequence[tuple[str, Sequence[SearchHit]]]) -> list[list[RetrievedDocument]]:
        """Rerank each query's hits in one batched pass."""
        weight = self.fusion_weight
        ranked = self.backend.rank_batch(
            [(self._fit(query), [hit.document.text for hit in hits]) for query, hits in requests], **self._rank_kwargs()
        )
        return [self._results(hits, items, weight) for (_, hits), items in zip(requests, ranked)]

    def rerank(self, query: str, hits: Sequence[SearchHit]) -> list[RetrievedDocument]:
        return self.rerank_batch([(query, hits)])[0]

    async def arerank(self, query: str, hits: Sequence[SearchHit]) -> list[RetrievedDocument]:
        """:meth:`rerank` from async code: micro-batched with concurrent requests, off the event loop."""
        weight = self.fusion_weight
        query = await asyncio.to_thread(self._fit, query)  # tokenising waits for the backend's lock: off the loop
        ranked = await self.backend.arank(query, [hit.document.text for hit in hits], **self._rank_kwargs())
        return self._results(hits, ranked, weight)

    def _fit(self, query: str) -> str:
        """The query as the reranker reads it: cut to leave the document room, unless ``long_queries="error"``."""
        if self.options.long_queries == "error" or not isinstance(query, str):
            return query  # the backend raises for a query that leaves no room, and checks types
        fitted, length = self.backend.shorten_query(query)
        if fitted != query:
            logger.warning(
                "query of %d tokens cut to its first %d: the reranker reads %d tokens a pair and keeps %d for the "
                "document (long_queries='error' raises instead)",
                length,
                self.backend.query_room(),
                self.backend.max_length,
                MIN_DOCUMENT_TOKENS,
            )
        return fitted

    def _rank_kwargs(self) -> dict[str, Any]:
        """Every candidate scored, best first; selection happens in :meth:`_results` (after fusion, if any)."""
        options = self.options
        return {"scale": options.scale, "long_documents": options.long_documents, "batch_size": options.batch_size}

    def _usable_weight(self, hits: Sequence[SearchHit], weight: float | None) -> float | None:
        """``weight``, unless ``"auto"`` chose it and a candidate has no first-stage score to fuse with."""
        if weight is None or self.options.fusion_weight != "auto" or all(hit.score is not None for hit in hits):
            return weight
        warn_once(
            ("no first-stage scores", str(self.backend.path)),
            "fusion_weight='auto' found the stored weight %s, but the candidates carry no first-stage score: "
            "ranking by the reranker alone; a first stage that returns its scores enables fusion",
            weight,
        )
        return None

    def _results(
        self, hits: Sequence[SearchHit], items: Sequence[RankedItem], weight: float | None
    ) -> list[RetrievedDocument]:
        options = self.options
        if len(items) != len(hits):
            raise AssertionError("every candidate is scored before selection")
        keep, fused = final_order(
            [item.score for item in items],
            [hits[item.index].score for item in items],
            self._usable_weight(hits, weight),
            top_n=options.top_n,
            score_threshold=options.score_threshold,
            min_keep=options.min_keep,
        )
        return [
            RetrievedDocument(
                document=hits[items[k].index].document,
                retrieval_score=hits[items[k].index].score,
                rerank_score=items[k].score,
                rerank_scale=options.scale,
                truncated=items[k].truncated,
                window=items[k].window,
                fused_score=None if fused is None else float(fused[k]),
                first_stage_sources=hits[items[k].index].sources,
            )
            for k in keep
        ]


def final_order(
    rerank_scores: Sequence[float],
    retrieval_scores: Sequence[float | None],
    weight: float | None,
    *,
    top_n: int | None = None,
    score_threshold: float | None = None,
    min_keep: int = 0,
) -> tuple[list[int], np.ndarray | None]:
    """The positions kept, best first, and the fused scores (None without fusion).

    The one ranking rule of serving (:class:`RerankingStage`) and evaluation, so reported metrics are those of the
    code that serves: order by the reranker (``weight=None``) or fused with the first stage; ``score_threshold``
    applies to the reranker's score; ties keep input order.
    """
    fused = None if weight is None else fuse(rerank_scores, retrieval_scores, weight)
    order_by = list(rerank_scores) if fused is None else fused.tolist()
    return select_top(order_by, top_n, score_threshold, min_keep, threshold_scores=list(rerank_scores)), fused


def first_stage_results(hits: Sequence[SearchHit], top_n: int | None) -> list[RetrievedDocument]:
    """The first stage's own top-n as results (what a pipeline without a reranker returns)."""
    return [RetrievedDocument(hit.document, hit.score, first_stage_sources=hit.sources) for hit in hits[:top_n]]
