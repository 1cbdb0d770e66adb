"""First stages: one interface (:class:`FirstStage`), many implementations (dense FAISS, lexical BM25, hybrid).

``LexicalIndex`` and ``HybridIndex`` need the ``lexical`` extra (bm25s, PyStemmer, kiwipiepy); they are
imported from their modules, so ``import rerank_plugins.first_stage`` works without it.
"""

from rerank_plugins.first_stage.base import DocumentStore, FirstStage
from rerank_plugins.first_stage.build import FIRST_STAGES, build_first_stage, load_first_stage
from rerank_plugins.first_stage.dense import FaissIndex
from rerank_plugins.first_stage.persistence import IndexLoadError

__all__ = [
    "FIRST_STAGES",
    "DocumentStore",
    "FaissIndex",
    "FirstStage",
    "IndexLoadError",
    "build_first_stage",
    "load_first_stage",
]
