"""Model backends: the only place that touches sentence-transformers, transformers and torch."""

from rerank_plugins.models._base import RUNTIMES, set_num_threads
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.registry import clear_registry, get_bi_encoder, get_cross_encoder
from rerank_plugins.models.resolve import ModelNotFoundError, resolve_model_path

__all__ = [
    "BiEncoderBackend",
    "CrossEncoderBackend",
    "ModelNotFoundError",
    "RUNTIMES",
    "clear_registry",
    "get_bi_encoder",
    "get_cross_encoder",
    "resolve_model_path",
    "set_num_threads",
]
