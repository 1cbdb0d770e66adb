"""The FAISS first stage: build, search, add, save and load without pickle."""

from rerank_plugins.index.store import FaissIndex, IndexLoadError

__all__ = ["FaissIndex", "IndexLoadError"]
