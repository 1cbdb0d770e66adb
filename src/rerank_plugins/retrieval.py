"""The framework-free two-stage pipeline: FAISS top-k, then a cross-encoder rerank to top-n."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from rerank_plugins._validation import check_positive_int, check_query, check_rank_options, check_scale, select_top
from rerank_plugins.fusion import fuse, stored_fusion_weight
from rerank_plugins.index.store import FaissIndex
from rerank_plugins.models.cross_encoder import CrossEncoderBackend, check_scoring_options
from rerank_plugins.schema import RankedItem, RetrievedDocument, SearchHit


@dataclass
class RerankOptions:
    """How a cross-encoder's scores are turned into a result list; shared by the pipeline and every adapter."""

    top_n: int | None = 5
    score_threshold: float | None = None
    min_keep: int = 0
    scale: str = "raw"
    long_documents: str = "truncate"
    batch_size: int = 32
    fusion_weight: float | str | None = None
    """None: order by the reranker alone. A weight ``a`` in [0, 1]: order by ``a * z(rerank) + (1 - a) * z(retrieval)``
    (see :mod:`rerank_plugins.fusion`). ``"auto"``: the weight stored with a model trained by rerank-plugins
    (tuned on its held-out queries), or the reranker alone if none is stored."""

    def __post_init__(self) -> None:
        check_rank_options(self.top_n, self.score_threshold, self.min_keep)
        check_scale(self.scale)
        check_scoring_options(self.long_documents, self.batch_size)
        if self.fusion_weight is not None and self.fusion_weight != "auto":
            if isinstance(self.fusion_weight, bool) or not isinstance(self.fusion_weight, (int, float)):
                raise TypeError(f"fusion_weight must be a number in [0, 1], 'auto' or None, got {self.fusion_weight!r}")
            if not 0 <= self.fusion_weight <= 1:
                raise ValueError(f"fusion_weight must be between 0 and 1, got {self.fusion_weight}")

    def weight_for(self, reranker: CrossEncoderBackend) -> float | None:
        """The fusion weight in force for ``reranker`` (resolving ``"auto"``)."""
        if self.fusion_weight == "auto":
            return stored_fusion_weight(reranker.path)
        return self.fusion_weight

    def rerank(
        self, reranker: CrossEncoderBackend, requests: Sequence[tuple[str, Sequence[SearchHit]]]
    ) -> list[list[RetrievedDocument]]:
        """Rerank each query's hits in one batched pass; each output is a subset of its hits, best first."""
        weight = self.weight_for(reranker)
        ranked = reranker.rank_batch(
            [(query, [hit.document.text for hit in hits]) for query, hits in requests], **self._rank_kwargs(weight)
        )
        return [self._results(hits, items, weight) for (_, hits), items in zip(requests, ranked)]

    async def arerank(self, reranker: CrossEncoderBackend, query: str, hits: Sequence[SearchHit]) -> list[RetrievedDocument]:
        """:meth:`rerank` for one request from async code: micro-batched with concurrent requests, off the loop."""
        weight = self.weight_for(reranker)
        ranked = await reranker.arank(query, [hit.document.text for hit in hits], **self._rank_kwargs(weight))
        return self._results(hits, ranked, weight)

    def _rank_kwargs(self, weight: float | None) -> dict:
        selection = (
            {"top_n": self.top_n, "score_threshold": self.score_threshold, "min_keep": self.min_keep}
            if weight is None
            else {"top_n": None, "score_threshold": None, "min_keep": 0}  # selection happens after fusion
        )
        return {**selection, "scale": self.scale, "long_documents": self.long_documents, "batch_size": self.batch_size}

    def _results(self, hits: Sequence[SearchHit], items: Sequence[RankedItem], weight: float | None) -> list[RetrievedDocument]:
        fused: list[float | None] = [None] * len(items)
        if weight is not None:
            if len(items) != len(hits):
                raise AssertionError("fusion needs every candidate scored")
            fused_scores = fuse([i.score for i in items], [hits[i.index].score for i in items], weight)
            keep = select_top(fused_scores.tolist(), self.top_n, self.score_threshold, self.min_keep,
                              threshold_scores=[i.score for i in items])
            items, fused = [items[k] for k in keep], [float(fused_scores[k]) for k in keep]
        return [
            RetrievedDocument(
                document=hits[item.index].document,
                retrieval_score=hits[item.index].score,
                rerank_score=item.score,
                rerank_scale=self.scale,
                truncated=item.truncated,
                window=item.window,
                fused_score=fused_score,
            )
            for item, fused_score in zip(items, fused)
        ]


class TwoStagePipeline:
    """``top_k`` candidates from the index, reranked by ``reranker`` and cut to ``options.top_n``.

    Without a reranker the first stage's own top-n is returned, so the two are always comparable.
    """

    def __init__(
        self,
        index: FaissIndex,
        reranker: CrossEncoderBackend | None = None,
        *,
        top_k: int = 30,
        options: RerankOptions | None = None,
    ) -> None:
        self.index = index
        self.reranker = reranker
        self.top_k = check_positive_int(top_k, "top_k")
        self.options = options or RerankOptions()

    def retrieve(self, query: str) -> list[RetrievedDocument]:
        return self.retrieve_batch([query])[0]

    def retrieve_batch(self, queries: Sequence[str]) -> list[list[RetrievedDocument]]:
        """Both stages for many queries: one encoding pass, one search, one rerank pass."""
        candidates = self.index.search_batch(queries, self.top_k)
        if self.reranker is None:
            return [self._first_stage_only(hits) for hits in candidates]
        return self.options.rerank(self.reranker, list(zip(queries, candidates)))

    async def aretrieve(self, query: str) -> list[RetrievedDocument]:
        """:meth:`retrieve` for async code: query encoding and reranking are micro-batched with concurrent
        calls and run in worker threads; the event loop only waits."""
        query = check_query(query)
        vectors = await self.index.embedder.aencode_queries([query], batch_size=self.index.batch_size)
        hits = (await asyncio.to_thread(self.index.search_vectors, vectors, self.top_k))[0]
        if self.reranker is None:
            return self._first_stage_only(hits)
        return await self.options.arerank(self.reranker, query, hits)

    def _first_stage_only(self, hits: Sequence[SearchHit]) -> list[RetrievedDocument]:
        """The first stage's own top-n (rerank options such as ``score_threshold`` need a reranker)."""
        return [RetrievedDocument(hit.document, hit.score) for hit in hits[: self.options.top_n]]
