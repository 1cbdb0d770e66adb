"""Where the data bundled with the package lives (see each folder's NOTICE.txt for source and licence)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def demo_data_path(name: str = "scifact-mini") -> Path:
    """A bundled data set in BEIR layout: ``scifact-mini`` (English biomedical claims and abstracts)."""
    path = Path(str(importlib.resources.files("rerank_plugins") / "data" / name))
    if not (path / "queries.jsonl").is_file():
        raise FileNotFoundError(f"no bundled data set named {name!r} ({path})")
    return path
