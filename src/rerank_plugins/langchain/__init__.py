"""LangChain adapters: ``Embeddings``, ``BaseDocumentCompressor`` and ``BaseRetriever`` over shared backends."""

try:
    import langchain_core  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rerank_plugins.langchain needs langchain-core: pip install 'rerank-plugins[langchain]'"
    ) from error

from rerank_plugins.langchain.compressor import CrossEncoderReranker
from rerank_plugins.langchain.embeddings import BiEncoderEmbeddings
from rerank_plugins.langchain.first_stage import LangChainFirstStage
from rerank_plugins.langchain.query_generation import query_generator
from rerank_plugins.langchain.retriever import TwoStageRetriever
from rerank_plugins.langchain.vectorstore import FaissVectorStore

__all__ = [
    "BiEncoderEmbeddings",
    "CrossEncoderReranker",
    "LangChainFirstStage",
    "TwoStageRetriever",
    "FaissVectorStore",
    "query_generator",
]
