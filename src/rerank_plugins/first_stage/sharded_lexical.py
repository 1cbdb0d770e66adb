"""BM25 over shards that scores exactly as one index over the whole corpus.

A BM25 score depends on corpus-wide statistics (document count, average length, each term's document frequency);
shards scoring with their own would rank differently from one index (a term rare in one shard is common in
another). So a query runs in two steps, as distributed search engines do (Elasticsearch's "DFS query then fetch"):
every shard reports its statistics for the query's terms, and every shard then scores its documents with their sums.
The shards' top-k merge exactly (:func:`~rerank_plugins.first_stage.sharded.merge_hits`): ids, order and scores
equal one :class:`LexicalIndex` over the corpus, ties by global position. Statistics are gathered per query, so they
are right whatever the shards hold.

Saved as a directory: ``shard-00000/`` ... (each a lexical index directory) and ``manifest.json`` (format, analyzer,
BM25 parameters, each shard's name and count, and the SHA-256 of every file), written atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins.first_stage.base import FirstStage, check_search_args
from rerank_plugins.first_stage.lexical import TOKENS_FILE, AnalyzerSpec, LexicalIndex
from rerank_plugins.first_stage.persistence import (
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    IndexLoadError,
    read_manifest,
    save_directory,
    verify_files,
)
from rerank_plugins.first_stage.sharded import SHARD_NAME, ShardSet, merge_hits, shard_bounds, shard_name
from rerank_plugins.schema import Document, SearchHit

logger = logging.getLogger(__name__)

FORMAT_NAME = "rerank-plugins-sharded-bm25"
FORMAT_VERSION = 1
SHARD_FILES = (DOCUMENTS_FILE, TOKENS_FILE)


class ShardedLexicalIndex(ShardSet, FirstStage):
    """BM25 search over :class:`LexicalIndex` shards (one analyzer and BM25 setting), merged exactly.

    Shards are searched in threads (``threads``, default one per shard up to the CPU count). Shard ``i`` holds the
    global positions after those of shards ``0 .. i-1``. Change the corpus through the shards (``shards[i].add_texts``):
    scores stay exact, as statistics are gathered per query.
    """

    def __init__(self, shards: Sequence[LexicalIndex], *, threads: int | None = None) -> None:
        shards = list(shards)
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        for number, shard in enumerate(shards):
            if not isinstance(shard, LexicalIndex):
                raise TypeError(f"shards[{number}] must be a LexicalIndex, got {type(shard).__name__}")
        settings = [_settings(shard) for shard in shards]
        differing = [n for n, s in enumerate(settings) if s != settings[0]]
        if differing:
            raise ValueError(
                f"every shard must use one analyzer and BM25 setting; shard {differing[0]} has "
                f"{settings[differing[0]]}, shard 0 {settings[0]}"
            )
        self._init_shards(shards, threads, "lexical-shard-search")

    def describe(self) -> dict[str, Any]:
        return {**self.shards[0].describe(), "shards": len(self.shards), "documents": len(self)}

    # -- searching -------------------------------------------------------------------------------------

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchHit]]:
        """The ``k`` best documents by BM25 for each query, as one index over every shard's documents ranks them."""
        queries = check_search_args(queries, k)
        analyzer = next((s.analyzer for s in self.shards if s.analyzer is not None), None)
        if analyzer is None or not len(self):
            return [[] for _ in queries]
        token_lists = analyzer.analyze(queries)
        self.shards[0]._warn_without_tokens(token_lists)
        statistics = reduce(add, self._map(lambda shard: shard.term_statistics(token_lists)))
        per_shard = self._map(lambda shard: shard.search_tokens(token_lists, k, statistics))
        offsets = np.cumsum([0] + [len(shard) for shard in self.shards[:-1]]).tolist()
        return [merge_hits([hits[q] for hits in per_shard], offsets, k) for q in range(len(queries))]

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write every shard and a manifest to directory ``path`` atomically."""
        names = [shard_name(n) for n in range(len(self.shards))]
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            **_settings(self.shards[0]),
            "count": len(self),
            "shards": [{"name": name, "count": len(shard)} for name, shard in zip(names, self.shards)],
        }

        def write_files(staging: Path) -> None:
            for name, shard in zip(names, self.shards):
                shard.save(staging / name)

        return save_directory(path, write_files, manifest)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], analyzer: AnalyzerSpec | None = None, *, threads: int | None = None
    ) -> ShardedLexicalIndex:
        """Load an index saved by :meth:`save`, verifying every file; a missing or corrupt shard is named."""
        directory = Path(path)
        manifest = read_manifest(directory, FORMAT_NAME, FORMAT_VERSION, ("count", "shards", "analyzer"))
        entries = manifest["shards"]
        if not isinstance(entries, list) or not entries:
            raise IndexLoadError(f"{directory}: the manifest lists no shards")
        for entry in entries:  # a name is one directory of this index, never a path out of it
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(name, str) or name in (".", "..") or not SHARD_NAME.fullmatch(name):
                raise IndexLoadError(f"{directory}/manifest.json names a shard {name!r}, not a shard directory")
        for entry in entries:
            if not (directory / entry["name"]).is_dir():
                raise IndexLoadError(f"{directory}: shard {entry['name']} is missing")
        verify_files(
            directory, manifest, [f"{e['name']}/{file}" for e in entries for file in (*SHARD_FILES, MANIFEST_FILE)]
        )
        shards = []
        for entry in entries:
            shard = LexicalIndex.load(directory / entry["name"], analyzer)
            if len(shard) != entry.get("count"):
                raise IndexLoadError(f"{directory}: {entry['name']} holds {len(shard)} documents, not {entry['count']}")
            shards.append(shard)
        try:
            return cls(shards, threads=threads)
        except (TypeError, ValueError) as error:
            raise IndexLoadError(f"{directory}: {error}") from None


def build_sharded_lexical_index(
    documents: Sequence[Document], path: str | os.PathLike[str], *, shards: int, analyzer: AnalyzerSpec = "auto"
) -> Path:
    """Split ``documents`` into ``shards`` consecutive ranges, index each and save them as one sharded index.

    ``"auto"`` chooses the analyzer once, from the first documents, for every shard."""
    documents = list(documents)
    bounds = shard_bounds(len(documents), shards)
    parts = []
    for start, end in zip(bounds, bounds[1:]):
        part = LexicalIndex(parts[0].analyzer if parts else analyzer)
        part.add_documents(documents[start:end])
        parts.append(part)
    return ShardedLexicalIndex(parts, threads=1).save(path)


def _settings(shard: LexicalIndex) -> dict[str, Any]:
    analyzer = None if shard.analyzer is None else shard.analyzer.config()
    return {"analyzer": analyzer, "k1": shard.k1, "b": shard.b, "method": shard.method}
