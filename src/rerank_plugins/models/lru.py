"""A small LRU cache with hit/miss counters: the in-memory caches of both backends (embeddings, pair scores).

Not thread-safe on its own: each backend uses it under its own lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from rerank_plugins._validation import check_non_negative_int

Value = TypeVar("Value")


def text_digest(text: str) -> bytes:
    """A 16-byte hash of ``text``: cache keys hold this, not the text itself."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class LRUCache(Generic[Value]):
    """At most ``max_size`` entries (0 turns the cache off); the least recently used is evicted first."""

    def __init__(self, max_size: int) -> None:
        self.max_size = check_non_negative_int(max_size, "cache_size")
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Value | None:
        """The cached value (marked as recently used), or None; counts a hit or a miss."""
        value = self._entries.get(key) if self.max_size else None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Value) -> None:
        if not self.max_size:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
