"""Files written so that a reader (or a crash) never sees half of one: staged beside the target, then renamed."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """Where the library keeps what it builds once (runtime exports, rebuilt models): ``$RERANK_PLUGINS_CACHE`` or
    ``~/.cache/rerank_plugins``."""
    return Path(os.environ.get("RERANK_PLUGINS_CACHE") or Path.home() / ".cache" / "rerank_plugins")


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a staging file beside ``path``, then move it into place (``os.replace`` is atomic on one disk)."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        if staging.exists():
            staging.unlink()


def write_json(path: Path, content: Any, *, indent: int = 1) -> None:
    """``content`` as UTF-8 JSON (non-ASCII text kept readable), written atomically."""
    text = json.dumps(content, indent=indent, ensure_ascii=False)
    write_atomically(path, lambda staging: staging.write_text(text, encoding="utf-8"))
