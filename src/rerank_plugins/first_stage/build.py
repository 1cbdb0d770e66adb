"""Build or load a first stage by name: one place that knows the kinds, for adapters, CLI and quickstart."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.first_stage.base import DocumentStore, FirstStage
from rerank_plugins.first_stage.persistence import MANIFEST_FILE, IndexLoadError, recover_interrupted_save
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.schema import Document

FIRST_STAGES: tuple[str, ...] = ("dense", "lexical", "hybrid")
"""``dense``: FAISS over bi-encoder embeddings; ``lexical``: BM25 (bm25s) over a language-aware analyzer;
``hybrid``: both, fused."""


def build_first_stage(
    kind: str,
    documents: Sequence[Document],
    embedder: BiEncoderBackend | None = None,
    *,
    analyzer: Any = "auto",
    dense_options: dict[str, Any] | None = None,
    hybrid_options: dict[str, Any] | None = None,
) -> DocumentStore:
    """A new first stage of ``kind`` holding ``documents`` (``embedder`` is needed for dense and hybrid).

    ``hybrid_options`` (``fusion``, ``dense_weight``, ``rrf_k``, ``candidates``) are for a hybrid stage only.
    """
    if kind not in FIRST_STAGES:
        raise ValueError(f"first_stage must be one of {FIRST_STAGES}, got {kind!r}")
    if hybrid_options and kind != "hybrid":
        raise ValueError(f"hybrid_options {sorted(hybrid_options)} apply to first_stage='hybrid', not {kind!r}")
    if kind != "lexical" and embedder is None:
        raise ValueError(f"a {kind} first stage needs an embedding model")
    stage: DocumentStore
    if kind == "dense":
        from rerank_plugins.first_stage.dense import FaissIndex

        stage = FaissIndex(embedder, **(dense_options or {}))
    elif kind == "lexical":
        from rerank_plugins.first_stage.lexical import LexicalIndex

        stage = LexicalIndex(analyzer)
    else:
        from rerank_plugins.first_stage.dense import FaissIndex
        from rerank_plugins.first_stage.hybrid import HybridIndex
        from rerank_plugins.first_stage.lexical import LexicalIndex

        stage = HybridIndex(
            FaissIndex(embedder, **(dense_options or {})), LexicalIndex(analyzer), **(hybrid_options or {})
        )
    stage.add_documents(documents)
    return stage


def load_first_stage(
    path: str | os.PathLike[str], embedder: BiEncoderBackend | None = None, *, analyzer: Any = None
) -> FirstStage:
    """Load any saved first stage (dense, lexical, hybrid, or sharded dense or lexical); its manifest says which."""
    from rerank_plugins.first_stage.dense import FORMAT_NAME as DENSE

    directory = Path(path)
    recover_interrupted_save(directory)
    try:
        kind = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        kind = None  # the loader below reports what is wrong
    if kind == "rerank-plugins-bm25":
        from rerank_plugins.first_stage.lexical import LexicalIndex

        return LexicalIndex.load(directory, analyzer=analyzer)
    if kind == "rerank-plugins-sharded-bm25":
        from rerank_plugins.first_stage.sharded_lexical import ShardedLexicalIndex

        return ShardedLexicalIndex.load(directory, analyzer)
    if embedder is None:
        raise IndexLoadError(f"{directory}: loading a {kind or 'dense'} index needs its embedding model")
    if kind == "rerank-plugins-sharded" or (kind is None and (directory / "build.json").is_file()):
        from rerank_plugins.first_stage.sharded import ShardedIndex  # it reports an unfinished build

        return ShardedIndex.load(directory, embedder)
    if kind == "rerank-plugins-hybrid":
        from rerank_plugins.first_stage.hybrid import HybridIndex

        return HybridIndex.load(directory, embedder, analyzer=analyzer)
    if kind not in (None, DENSE):
        raise IndexLoadError(f"{directory}: unknown index format {kind!r}")
    from rerank_plugins.first_stage.dense import FaissIndex

    return FaissIndex.load(directory, embedder)
