"""First stages: one interface (:class:`FirstStage`), many implementations (dense FAISS, lexical BM25, hybrid).

``LexicalIndex`` and ``HybridIndex`` need the ``lexical`` extra (bm25s, PyStemmer, kiwipiepy) to build or load;
they are exported here like the others (importing them does not need it).
"""

from rerank_plugins.first_stage.base import DocumentStore, FirstStage
from rerank_plugins.first_stage.build import FIRST_STAGES, build_first_stage, load_first_stage
from rerank_plugins.first_stage.dense import FaissIndex
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.first_stage.persistence import IndexLoadError
from rerank_plugins.first_stage.sharded import ShardedIndex
from rerank_plugins.first_stage.sharded_lexical import ShardedLexicalIndex

__all__ = [
    "FIRST_STAGES",
    "DocumentStore",
    "FaissIndex",
    "FirstStage",
    "HybridIndex",
    "IndexLoadError",
    "LexicalIndex",
    "ShardedIndex",
    "ShardedLexicalIndex",
    "build_first_stage",
    "load_first_stage",
]
