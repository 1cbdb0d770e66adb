"""LlamaIndex node postprocessor that reranks nodes with the shared cross-encoder backend."""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from rerank_plugins._adapter_fields import CrossEncoderAdapterFields
from rerank_plugins.llamaindex._convert import with_scores
from rerank_plugins.schema import Document, SearchHit


class CrossEncoderRerank(CrossEncoderAdapterFields, BaseNodePostprocessor):
    """Rerank nodes with a cross-encoder and keep the ``top_n`` best.

    ``NodeWithScore.score`` becomes the rerank score (on ``scale``); each returned node is a copy whose
    metadata also holds ``rerank_score``, ``rerank_scale`` and the first-stage ``retrieval_score``
    (keys excluded from LLM and embedding text). The caller's nodes are not modified.
    """

    @classmethod
    def class_name(cls) -> str:
        return "RerankPluginsCrossEncoderRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query: pass query_bundle or query_str")
        return self.postprocess_batch([(query_bundle.query_str, nodes)])[0]

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """Micro-batched with concurrent calls; the model runs in a worker thread, never on the event loop."""
        if query_bundle is None:
            raise ValueError("CrossEncoderRerank needs the query: pass query_bundle or query_str")
        results = await self._options.arerank(self._backend, query_bundle.query_str, _hits(nodes))
        return [with_scores(nodes[int(r.document.id)].node, r) for r in results]

    def postprocess_batch(self, requests: Sequence[tuple[str, Sequence[NodeWithScore]]]) -> list[list[NodeWithScore]]:
        """Rerank several ``(query, nodes)`` requests in one batched pass; results in input order."""
        ranked = self._options.rerank(self._backend, [(query, _hits(nodes)) for query, nodes in requests])
        return [
            [with_scores(nodes[int(r.document.id)].node, r) for r in results]
            for (_, nodes), results in zip(requests, ranked)
        ]


def _hits(nodes: Sequence[NodeWithScore]) -> list[SearchHit]:
    """Candidates keyed by their position, with the text the embedder saw and the first-stage score."""
    for i, node in enumerate(nodes):
        if not isinstance(node, NodeWithScore):
            raise TypeError(f"nodes[{i}] must be a NodeWithScore, got {type(node).__name__}")
    return [
        SearchHit(Document(n.node.get_content(metadata_mode=MetadataMode.EMBED), str(i), {}), i, n.score)
        for i, n in enumerate(nodes)
    ]
