"""LlamaIndex ``BaseRetriever``: a first stage's top-k (ours, or a retriever you have), then a cross-encoder rerank."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent, RetrievalStartEvent
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from rerank_plugins._validation import check_positive_int
from rerank_plugins.adapter_common import CandidateCountCheck
from rerank_plugins.first_stage import DocumentStore, FirstStage, build_first_stage, load_first_stage
from rerank_plugins.llamaindex._convert import to_document, to_node, with_scores
from rerank_plugins.llamaindex.embedding import BiEncoderEmbedding
from rerank_plugins.llamaindex.first_stage import LlamaIndexFirstStage, node_hits
from rerank_plugins.llamaindex.postprocessor import CrossEncoderRerank
from rerank_plugins.rerank import DEFAULT_TOP_N, RerankingStage, first_stage_results

dispatcher = get_dispatcher(__name__)


class TwoStageRetriever(BaseRetriever):
    """Two-stage retrieval for LlamaIndex; use it alone or in a ``RetrieverQueryEngine``.

    The first stage is ours (``first_stage``, or ``index``, the same: dense, lexical or hybrid; see
    :meth:`from_nodes`) or any LlamaIndex
    retriever (``base_retriever=``, whose own settings decide how many candidates come back; its nodes are
    returned as scored copies). Returns ``NodeWithScore`` whose score is the rerank score (or the first stage's
    score without a reranker); node metadata holds ``retrieval_score`` and ``rerank_score``. ``top_n`` sets how
    many nodes come back; left None, the reranker's own ``top_n`` decides (read on every call), or 5 without one.
    """

    def __init__(
        self,
        first_stage: FirstStage | None = None,
        reranker: CrossEncoderRerank | None = None,
        *,
        base_retriever: BaseRetriever | None = None,
        top_k: int = 30,
        top_n: int | None = None,
        index: FirstStage | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if first_stage is not None and index is not None:
            raise ValueError("first_stage and index are the same argument: give one")
        index = first_stage if first_stage is not None else index
        if (index is None) == (base_retriever is None):
            raise ValueError("give exactly one of first_stage (index) and base_retriever")
        if reranker is not None and not isinstance(reranker, CrossEncoderRerank):
            raise TypeError(f"reranker must be a CrossEncoderRerank, got {type(reranker).__name__}")
        if index is not None and not isinstance(index, FirstStage):
            raise TypeError(f"index must be a FirstStage, got {type(index).__name__}")
        self.first_stage = index
        self.base = LlamaIndexFirstStage(base_retriever) if base_retriever is not None else None
        self._candidate_check = CandidateCountCheck(
            "Raise its similarity_top_k, e.g. index.as_retriever(similarity_top_k=30)."
        )
        self.reranker = reranker
        self.top_k = check_positive_int(top_k, "top_k")
        self.top_n = check_positive_int(top_n, "top_n", allow_none=True)

    @classmethod
    def from_nodes(
        cls,
        nodes: Sequence[BaseNode],
        embed_model: BiEncoderEmbedding | None = None,
        reranker: CrossEncoderRerank | None = None,
        *,
        first_stage: str = "hybrid",
        analyzer: Any = "auto",
        index_type: str = "flat",
        long_documents: str = "truncate",
        hybrid_options: dict[str, Any] | None = None,
        metadata_mode: MetadataMode | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Index ``nodes`` (documents are nodes too) in a new first stage and wrap it.

        ``first_stage``: ``"dense"`` (FAISS; ``index_type`` flat, hnsw or ivf), ``"lexical"`` (BM25; ``analyzer``
        "auto", "english", "korean-bigram", "korean-morph", "generic" or a callable) or ``"hybrid"`` (both).
        ``hybrid_options`` (hybrid only): ``fusion`` ("weighted" or "rrf"), ``dense_weight``, ``rrf_k``, ``candidates``.
        ``long_documents="split"`` embeds every passage of nodes longer than the embedding model's limit.
        ``metadata_mode``: which node text is indexed (``get_content(metadata_mode)``); default: the reranker's
        (``MetadataMode.EMBED`` unless it says otherwise), so both stages read one text per node.
        """
        if metadata_mode is None:
            metadata_mode = reranker.metadata_mode if reranker is not None else MetadataMode.EMBED
        embed_model = embed_model if embed_model is not None or first_stage == "lexical" else BiEncoderEmbedding()
        stage = build_first_stage(
            first_stage,
            [to_document(n, metadata_mode) for n in nodes],
            embed_model.backend if embed_model else None,
            analyzer=analyzer,
            hybrid_options=hybrid_options,
            dense_options={
                "index_type": index_type,
                "long_documents": long_documents,
                "batch_size": embed_model.embed_batch_size if embed_model else 32,
            },
        )
        return cls(stage, reranker, **kwargs)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embed_model: BiEncoderEmbedding | None = None,
        reranker: CrossEncoderRerank | None = None,
        *,
        analyzer: Any = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Load a first stage saved with :meth:`save`; refused if ``embed_model`` is not the model it was built with."""
        embed_model = embed_model or BiEncoderEmbedding()
        return cls(load_first_stage(path, embed_model.backend, analyzer=analyzer), reranker, **kwargs)

    @property
    def index(self) -> FirstStage | None:
        """The same as :attr:`first_stage` (the name older code used)."""
        return self.first_stage

    def save(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(self.index, DocumentStore):
            raise TypeError("this retriever's first stage does not hold its own documents (a base_retriever does)")
        self.index.save(path)

    @property
    def _metadata_mode(self) -> MetadataMode:
        """The node text the reranker reads (a base retriever's nodes are read as the reranker says)."""
        return self.reranker.metadata_mode if self.reranker is not None else MetadataMode.EMBED

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._retrieve_batch([query_bundle.query_str])[0]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        query = query_bundle.query_str
        if self.base is not None:
            nodes = (await self.base.aretrieve_nodes([query], self.top_k))[0]
            if self.reranker is None:
                return self._first_stage_nodes(nodes)
            stage = self._rerank_stage()
            self._candidate_check([len(nodes)], stage.options.top_n)
            results = await stage.arerank(query, node_hits(nodes, self._metadata_mode))
            return [with_scores(nodes[int(r.document.id)].node, r) for r in results]
        hits = (await self.index.asearch_batch([query], self.top_k))[0]
        if self.reranker is None:
            return [to_node(r) for r in first_stage_results(hits, self.top_n or DEFAULT_TOP_N)]
        return [to_node(r) for r in await self._rerank_stage().arerank(query, hits)]

    def retrieve_batch(self, queries: Sequence[str]) -> list[list[NodeWithScore]]:
        """Many queries through one first-stage batch and one rerank pass.

        Traced like ``retrieve``: each query gets its own retrieval start/end events (instrumentation dispatcher)
        and ``RETRIEVE`` callback event, inside one ``query`` trace.
        """
        queries = list(queries)
        self._check_callback_manager()
        with self.callback_manager.as_trace("query"):
            event_ids = []
            for query in queries:
                dispatcher.event(RetrievalStartEvent(str_or_query_bundle=query))
                event_ids.append(
                    self.callback_manager.on_event_start(CBEventType.RETRIEVE, payload={EventPayload.QUERY_STR: query})
                )
            results = self._retrieve_batch(queries)
            for query, event_id, nodes in zip(queries, event_ids, results):
                self.callback_manager.on_event_end(
                    CBEventType.RETRIEVE, payload={EventPayload.NODES: nodes}, event_id=event_id
                )
                dispatcher.event(RetrievalEndEvent(str_or_query_bundle=query, nodes=nodes))
        return results

    def _retrieve_batch(self, queries: list[str]) -> list[list[NodeWithScore]]:
        if self.base is not None:
            found = self.base.retrieve_nodes(queries, self.top_k)
            if self.reranker is None:
                return [self._first_stage_nodes(nodes) for nodes in found]
            stage = self._rerank_stage()
            self._candidate_check([len(nodes) for nodes in found], stage.options.top_n)
            ranked = stage.rerank_batch(
                [(query, node_hits(nodes, self._metadata_mode)) for query, nodes in zip(queries, found)]
            )
            return [
                [with_scores(nodes[int(r.document.id)].node, r) for r in results]
                for nodes, results in zip(found, ranked)
            ]
        candidates = self.index.search_batch(queries, self.top_k)
        if self.reranker is None:
            return [[to_node(r) for r in first_stage_results(hits, self.top_n or DEFAULT_TOP_N)] for hits in candidates]
        stage = self._rerank_stage()
        return [[to_node(r) for r in row] for row in stage.rerank_batch(list(zip(queries, candidates)))]

    def _rerank_stage(self) -> RerankingStage:
        first_stage = self.first_stage if self.first_stage is not None else self.base
        return self.reranker.stage_for(self.top_n, first_stage.describe())

    def _first_stage_nodes(self, nodes: Sequence[NodeWithScore]) -> list[NodeWithScore]:
        """The base retriever's own top-n, as copies carrying ``retrieval_score``."""
        return [
            with_scores(nodes[int(r.document.id)].node, r)
            for r in first_stage_results(node_hits(nodes, self._metadata_mode), self.top_n or DEFAULT_TOP_N)
        ]

    async def aretrieve_batch(self, queries: Sequence[str]) -> list[list[NodeWithScore]]:
        """:meth:`retrieve_batch` for async code (model work in worker threads)."""
        return list(await asyncio.gather(*(self.aretrieve(query) for query in queries)))
