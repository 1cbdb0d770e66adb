"""One backend instance per model: adapters that ask for the same model share it.

The key is everything that changes what gets loaded: resolved path, revision, device, runtime,
max length and ``trust_remote_code``. Backends load their weights lazily, on first use, so getting
one from the registry is cheap and adapters can be constructed without touching the model.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.resolve import resolve_model_path

_lock = threading.Lock()
_instances: dict[tuple[Any, ...], Any] = {}


def _key(kind: str, model: str | os.PathLike[str], revision: str | None, options: dict[str, Any]) -> tuple:
    path = resolve_model_path(model, revision)
    return (kind, str(path), revision, *sorted(options.items()))


def _get(kind: str, cls: type, model: str | os.PathLike[str], revision: str | None, **options: Any):
    options["device"] = cls.normalize_device(options.get("device"))
    key = _key(kind, model, revision, options)
    with _lock:
        instance = _instances.get(key)
        if instance is None:
            instance = cls(model, revision=revision, **options)
            _instances[key] = instance
        return instance


def get_bi_encoder(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | None = None,
    max_length: int | None = None,
    runtime: str = "torch",
    trust_remote_code: bool = False,
    disk_cache: str | os.PathLike[str] | None = None,
) -> BiEncoderBackend:
    """The shared :class:`BiEncoderBackend` for this model and these load options.

    ``disk_cache``: an SQLite file that keeps embeddings across processes, keyed by the model's content, so
    re-indexing unchanged documents costs nothing (see :class:`~rerank_plugins.models.disk_cache.DiskEmbeddingCache`).
    """
    return _get(
        "bi",
        BiEncoderBackend,
        model,
        revision,
        device=device,
        max_length=max_length,
        runtime=runtime,
        trust_remote_code=trust_remote_code,
        disk_cache=None if disk_cache is None else os.path.abspath(os.fspath(disk_cache)),
    )


def get_cross_encoder(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | None = None,
    max_length: int | None = None,
    runtime: str = "torch",
    trust_remote_code: bool = False,
) -> CrossEncoderBackend:
    """The shared :class:`CrossEncoderBackend` for this model and these load options."""
    return _get(
        "cross",
        CrossEncoderBackend,
        model,
        revision,
        device=device,
        max_length=max_length,
        runtime=runtime,
        trust_remote_code=trust_remote_code,
    )


def forget(model: str | os.PathLike[str]) -> None:
    """Drop the shared instances of ``model`` (every kind and option): its files on disk were replaced."""
    path = str(resolve_model_path(model))
    with _lock:
        for key in [k for k in _instances if k[1] == path]:
            del _instances[key]


def clear_registry() -> None:
    """Forget every shared instance (tests, or freeing memory); adapters holding one keep it."""
    with _lock:
        _instances.clear()
