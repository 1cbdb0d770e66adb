"""LlamaIndex nodes <-> rerank-plugins types; scores go into copies, never into the caller's nodes.

A node is searched and reranked as one text: ``node.get_content(metadata_mode)``, by default what the embedder
sees (``MetadataMode.EMBED``: the text with its embed-visible metadata), as LlamaIndex's own indexes do. The whole
node is kept beside it (LlamaIndex's own serialisation), so results come back with the original text, metadata
and relationships (a ``Document`` comes back as a ``TextNode``, as from LlamaIndex's own vector stores).
"""

from __future__ import annotations

from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from rerank_plugins.schema import SCORE_KEYS, Document, RetrievedDocument

NODE_CONTENT = "_node_content"
"""Where LlamaIndex's serialisation puts the node itself (see ``node_to_metadata_dict``)."""


def to_document(node: BaseNode, metadata_mode: MetadataMode = MetadataMode.EMBED) -> Document:
    return Document(
        text=node.get_content(metadata_mode=metadata_mode),
        id=node.node_id,
        metadata=node_to_metadata_dict(node, remove_text=False, flat_metadata=False),
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
    """The original node of a document indexed from a node; a ``TextNode`` for documents indexed as plain text."""
    document = result.document
    if NODE_CONTENT in document.metadata:
        node = metadata_dict_to_node(dict(document.metadata))
    else:
        node = TextNode(id_=document.id, text=document.text, metadata=dict(document.metadata))
    return with_scores(node, result)
