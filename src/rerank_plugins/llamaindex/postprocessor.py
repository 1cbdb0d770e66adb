"""LlamaIndex node postprocessor that reranks nodes with the shared cross-encoder backend."""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field

from rerank_plugins.adapter_common import CrossEncoderAdapterFields
from rerank_plugins.llamaindex._convert import with_scores
from rerank_plugins.llamaindex.first_stage import node_hits


class CrossEncoderRerank(CrossEncoderAdapterFields, BaseNodePostprocessor):
    """Rerank nodes with a cross-encoder and keep the ``top_n`` best.

    ``NodeWithScore.score`` becomes the rerank score (on ``scale``); each returned node is a copy whose
    metadata also holds ``rerank_score``, ``rerank_scale`` and the first-stage ``retrieval_score``
    (keys excluded from LLM and embedding text). The caller's nodes are not modified. The reranker reads each
    node as ``metadata_mode`` says (default ``MetadataMode.EMBED``, as the embedder does; a retriever built
    with :meth:`TwoStageRetriever.from_nodes` indexes the same text). Options are read on every call.
    """

    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which node text the reranker reads (get_content(metadata_mode))."
    )

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsCrossEncoderRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query: pass query_bundle or query_str")
        return self.postprocess_batch([(query_bundle.query_str, nodes)])[0]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """Micro-batched with concurrent calls; the model runs in a worker thread, never on the event loop."""
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query: pass query_bundle or query_str")
        results = await self.stage.arerank(query_bundle.query_str, node_hits(nodes, self.metadata_mode))
        return [with_scores(nodes[int(r.document.id)].node, r) for r in results]

    def postprocess_batch(self, requests: Sequence[tuple[str, Sequence[NodeWithScore]]]) -> list[list[NodeWithScore]]:
        """Rerank several ``(query, nodes)`` requests in one batched pass; results in input order."""
        ranked = self.stage.rerank_batch([(query, node_hits(nodes, self.metadata_mode)) for query, nodes in requests])
        return [
            [with_scores(nodes[int(r.document.id)].node, r) for r in results]
            for (_, nodes), results in zip(requests, ranked)
        ]
