"""Crash safety: a process killed with SIGKILL while saving leaves the old index or the new one, never neither.

A child process saves an index over and over, alternating between two versions (20 and 21 documents); the test
kills it at random moments, then loads the path: it must be one complete version (checksums verified by the
loader), recovering a save cut off between its two renames. Bounded here (a few kills per kind).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage import load_first_stage

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

CHILD = """
import sys
from rerank_plugins import get_bi_encoder
from rerank_plugins.first_stage import FaissIndex, HybridIndex, LexicalIndex, ShardedLexicalIndex
from rerank_plugins.langchain import BiEncoderEmbeddings, FaissVectorStore

kind, model, path = sys.argv[1:4]
texts = [f"document {i} about topic {i % 7} and word{i}" for i in range(21)]
embedder = get_bi_encoder(model)


def vector_store(t):  # HNSW with a deleted vector: the save drops it
    store = FaissVectorStore.from_texts(["gone", *t], BiEncoderEmbeddings(model=model), index_type="hnsw")
    store.delete([store.index.documents[0].id])
    return store


builders = {
    "dense": lambda t: FaissIndex.from_texts(t, embedder),
    "lexical": lambda t: LexicalIndex.from_texts(t, analyzer="english"),
    "hybrid": lambda t: HybridIndex.from_texts(t, embedder, analyzer="english"),
    "sharded-lexical": lambda t: ShardedLexicalIndex(
        [LexicalIndex.from_texts(t[:7], analyzer="english", ids=[str(i) for i in range(7)]),
         LexicalIndex.from_texts(t[7:], analyzer="english", ids=[str(i) for i in range(7, len(t))])]
    ),
    "vector-store": vector_store,
}
versions = [builders[kind](texts[:20]), builders[kind](texts)]
versions[0].save(path)
print("ready", flush=True)
while True:
    for version in versions:
        version.save(path)
"""


@pytest.mark.parametrize("kind", ["dense", "lexical", "hybrid", "sharded-lexical", "vector-store"])
def test_a_save_killed_at_any_moment_leaves_a_complete_index(kind, tmp_path, tiny_bi_path):
    pytest.importorskip("bm25s")
    path = tmp_path / "idx"
    rng = random.Random(0)
    embedder = get_bi_encoder(tiny_bi_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, str(tiny_bi_path), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert child.stdout.readline().strip() == b"ready", "the child could not build and save an index"
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside one of the saves that follow
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        loaded = load_first_stage(path, embedder)
        assert len(loaded) in (20, 21), f"attempt {attempt}: {len(loaded)} documents"
        leftovers = [p.name for p in Path(tmp_path).iterdir() if p.name.startswith(".idx.old-")]
        assert not leftovers, f"a backup was left beside a complete index: {leftovers}"
