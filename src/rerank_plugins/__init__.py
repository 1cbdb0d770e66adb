"""rerank-plugins: two-stage retrieval (bi-encoder + FAISS, then a cross-encoder rerank).

Framework-free core; the LangChain and LlamaIndex adapters live in ``rerank_plugins.langchain`` and
``rerank_plugins.llamaindex`` and are imported only when asked for.
"""

from rerank_plugins.models import (
    BiEncoderBackend,
    CrossEncoderBackend,
    ModelNotFoundError,
    get_bi_encoder,
    get_cross_encoder,
    resolve_model_path,
    set_num_threads,
)
from rerank_plugins.schema import Document, RankedItem, RetrievedDocument, SearchHit

__version__ = "0.1.0"

__all__ = [
    "BiEncoderBackend",
    "CrossEncoderBackend",
    "Document",
    "ModelNotFoundError",
    "RankedItem",
    "RetrievedDocument",
    "SearchHit",
    "get_bi_encoder",
    "get_cross_encoder",
    "resolve_model_path",
    "set_num_threads",
]
