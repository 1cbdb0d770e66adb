"""LlamaIndex nodes <-> rerank-plugins types; scores go into copies, never into the caller's nodes."""

from __future__ import annotations

from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode

from rerank_plugins.schema import SCORE_KEYS, Document, RetrievedDocument


def to_document(node: BaseNode) -> Document:
    return Document(
        text=node.get_content(metadata_mode=MetadataMode.NONE), id=node.node_id, metadata=dict(node.metadata)
    )


def with_scores(node: BaseNode, result: RetrievedDocument) -> NodeWithScore:
    """A shallow copy of ``node`` whose metadata carries the scores (hidden from the LLM and the embedder)."""
    copy = node.model_copy(
        update={
            "metadata": {**node.metadata, **result.score_metadata()},
            "excluded_llm_metadata_keys": list(dict.fromkeys([*node.excluded_llm_metadata_keys, *SCORE_KEYS])),
            "excluded_embed_metadata_keys": list(dict.fromkeys([*node.excluded_embed_metadata_keys, *SCORE_KEYS])),
        }
    )
    return NodeWithScore(node=copy, score=result.score)


def to_node(result: RetrievedDocument) -> NodeWithScore:
    document = result.document
    return with_scores(TextNode(id_=document.id, text=document.text, metadata=dict(document.metadata)), result)
