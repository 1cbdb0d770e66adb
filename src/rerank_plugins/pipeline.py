"""The framework-free two-stage pipeline: a first stage's top-k, then the reranking stage's top-n."""

from __future__ import annotations

from collections.abc import Sequence

from rerank_plugins._validation import check_positive_int, check_query
from rerank_plugins.first_stage.base import FirstStage
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.rerank import RerankingStage, RerankOptions, first_stage_results
from rerank_plugins.schema import RetrievedDocument


class TwoStagePipeline:
    """``top_k`` candidates from ``first_stage``, reranked by ``reranker`` and cut to ``options.top_n``.

    ``first_stage`` is any :class:`~rerank_plugins.first_stage.FirstStage` (dense, lexical, hybrid, a wrapped
    framework retriever). ``reranker`` is a :class:`~rerank_plugins.rerank.RerankingStage`, or a cross-encoder
    backend used with ``options``. Without a reranker the first stage's own top-n is returned, so the two are
    always comparable.
    """

    def __init__(
        self,
        first_stage: FirstStage,
        reranker: RerankingStage | CrossEncoderBackend | None = None,
        *,
        top_k: int = 30,
        options: RerankOptions | None = None,
    ) -> None:
        if not isinstance(first_stage, FirstStage):
            raise TypeError(f"first_stage must be a FirstStage, got {type(first_stage).__name__}")
        if isinstance(reranker, CrossEncoderBackend):
            reranker = RerankingStage(reranker, options)
        elif reranker is not None and not isinstance(reranker, RerankingStage):
            raise TypeError(f"reranker must be a RerankingStage, a CrossEncoderBackend or None, got {reranker!r}")
        elif reranker is not None and options is not None and options != reranker.options:
            raise ValueError(
                "options= and a RerankingStage with options of its own: give the options to the stage "
                "(RerankingStage(backend, options)) or pass the backend with options="
            )
        self.first_stage = first_stage
        if reranker is not None and reranker.first_stage is None:
            reranker = reranker.with_first_stage(first_stage.describe())  # what fusion_weight="auto" checks against
        self.reranker = reranker
        self.top_k = check_positive_int(top_k, "top_k")
        self.options = reranker.options if reranker is not None else options or RerankOptions()

    def retrieve(self, query: str) -> list[RetrievedDocument]:
        return self.retrieve_batch([query])[0]

    def retrieve_batch(self, queries: Sequence[str]) -> list[list[RetrievedDocument]]:
        """Both stages for many queries: one first-stage batch, one rerank pass."""
        candidates = self.first_stage.search_batch(queries, self.top_k)
        if self.reranker is None:
            return [first_stage_results(hits, self.options.top_n) for hits in candidates]
        return self.reranker.rerank_batch(list(zip(queries, candidates)))

    async def aretrieve(self, query: str) -> list[RetrievedDocument]:
        """:meth:`retrieve` for async code: model work is micro-batched with concurrent calls in worker threads."""
        query = check_query(query)
        hits = (await self.first_stage.asearch_batch([query], self.top_k))[0]
        if self.reranker is None:
            return first_stage_results(hits, self.options.top_n)
        return await self.reranker.arerank(query, hits)
