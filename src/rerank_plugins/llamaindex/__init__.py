"""LlamaIndex adapters: ``BaseEmbedding``, ``BaseNodePostprocessor`` and ``BaseRetriever`` over shared backends."""

try:
    import llama_index.core  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rerank_plugins.llamaindex needs llama-index-core: pip install 'rerank-plugins[llamaindex]'"
    ) from error

from rerank_plugins.llamaindex.embedding import BiEncoderEmbedding
from rerank_plugins.llamaindex.first_stage import LlamaIndexFirstStage
from rerank_plugins.llamaindex.postprocessor import CrossEncoderRerank
from rerank_plugins.llamaindex.query_generation import query_generator
from rerank_plugins.llamaindex.retriever import TwoStageRetriever
from rerank_plugins.llamaindex.vector_store import FaissVectorStore

CrossEncoderReranker = CrossEncoderRerank
"""The name the LangChain adapter uses for the same reranker (``CrossEncoderRerank`` follows LlamaIndex's own)."""

__all__ = [
    "BiEncoderEmbedding",
    "CrossEncoderRerank",
    "CrossEncoderReranker",
    "LlamaIndexFirstStage",
    "TwoStageRetriever",
    "FaissVectorStore",
    "query_generator",
]
