"""An on-disk embedding cache (SQLite), so re-indexing unchanged documents is free across processes.

Keys carry the model's content fingerprint and runtime, so a changed model never reads stale vectors.
Bounded: past ``max_entries`` the oldest entries are deleted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class DiskEmbeddingCache:
    def __init__(self, path: str | Path, namespace: str, dimension: int, max_entries: int = 1_000_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace.encode()
        self.dimension = dimension
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        self._db.commit()

    def _key(self, key: bytes) -> bytes:
        return self.namespace + b"|" + key

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = [self._key(k) for k in keys[start : start + 500]]
                rows = self._db.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape == (self.dimension,):
                        found[bytes(key)[len(self.namespace) + 1 :]] = vector
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings (key, vector) VALUES (?, ?)",
                [(self._key(k), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )
            excess = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] - self.max_entries
            if excess > 0:
                self._db.execute(
                    "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings ORDER BY rowid LIMIT ?)",
                    (excess,),
                )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
