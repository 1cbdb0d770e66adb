"""What both backends share: lazy, thread-safe loading and device choice."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Literal, get_args

from rerank_plugins.models.lru import LRUCache
from rerank_plugins.models.resolve import resolve_model_path

THREADS_ENV = "RERANK_PLUGINS_THREADS"


def set_num_threads(threads: int) -> None:
    """Threads for model work in this process: torch's intra-op pool and ONNX Runtime sessions created later.

    On a CPU one forward pass already uses every core, so a server running N worker processes on C cores
    should give each C // N threads (or set ``RERANK_PLUGINS_THREADS`` before start-up) to avoid
    oversubscription. torch's setting is process-wide.
    """
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    os.environ[THREADS_ENV] = str(threads)


def _apply_thread_setting() -> None:
    value = os.environ.get(THREADS_ENV)
    if value:
        import torch

        if torch.get_num_threads() != int(value):
            torch.set_num_threads(int(value))


RuntimeName = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "fast"]
RUNTIMES: tuple[str, ...] = get_args(RuntimeName)
"""``torch`` (default); ``onnx`` / ``onnx-int8``: ONNX Runtime fp32 / int8; ``openvino`` / ``openvino-bf16``:
OpenVINO fp32 / bf16; ``fast``: the fastest of these that is installed and passes the quality guard
(:mod:`rerank_plugins.models.runtimes.select`)."""


class LazyModelBackend:
    """Holds a model name and its load options; loads the weights once, on first use.

    Inference is serialised by ``self.lock``: one forward pass already uses every core on a CPU,
    and Hugging Face fast tokenizers are not safe to call from several threads at once.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        revision: str | None = None,
        device: str | None = None,
        max_length: int | None = None,
        runtime: str = "torch",
        trust_remote_code: bool = False,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8
        ):
            raise ValueError(f"max_length must be an int >= 8 or None, got {max_length!r}")
        self.model_name = os.fspath(model)
        self.revision = revision
        self.device = self.normalize_device(device)
        self.runtime = runtime
        self.effective_runtime = runtime
        """The runtime actually used once loaded (what ``runtime="fast"`` chose)."""
        self.trust_remote_code = trust_remote_code
        self._requested_max_length = max_length
        self._path: Path | None = None
        self._model: Any = None
        self._load_lock = threading.Lock()
        self.lock = threading.RLock()

    @staticmethod
    def normalize_device(device: str | None) -> str:
        if device in (None, "auto"):
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return str(device)

    @property
    def path(self) -> Path:
        """Local directory of the model (resolved once)."""
        if self._path is None:
            self._path = resolve_model_path(self.model_name, self.revision)
        return self._path

    @property
    def model(self) -> Any:
        """The loaded model, loaded on first access."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    _apply_thread_setting()
                    self._model = self._load(self.path)
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self, path: Path) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- the in-memory cache each backend keeps (embeddings or pair scores) ------------------------------

    _cache: LRUCache[Any]

    @property
    def cache_size(self) -> int:
        return self._cache.max_size

    @cache_size.setter
    def cache_size(self, value: int) -> None:
        with self.lock:
            self._cache = LRUCache(value)

    @property
    def cache_hits(self) -> int:
        return self._cache.hits

    @property
    def cache_misses(self) -> int:
        return self._cache.misses

    def clear_cache(self) -> None:
        """Empty the in-memory cache (an on-disk embedding cache, if any, is a file you can delete)."""
        with self.lock:
            self._cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, device={self.device!r}, runtime={self.runtime!r})"
