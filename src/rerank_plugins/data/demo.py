"""Where the data bundled with the package lives (see each folder's NOTICE.txt for source and licence)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

DEMO_DATA = {
    "scifact-mini": "",  # BEIR layout: English biomedical claims and abstracts (a SciFact subset)
    "korquad-1.0-dev": "KorQuAD_v1.0_dev.json.gz",  # Korean Wikipedia questions and paragraphs, unchanged
}


def demo_data_path(name: str = "scifact-mini") -> Path:
    """A bundled data set: ``scifact-mini`` (a BEIR folder) or ``korquad-1.0-dev`` (a SQuAD-style file)."""
    if name not in DEMO_DATA:
        raise ValueError(f"no bundled data set named {name!r}; there are {sorted(DEMO_DATA)}")
    path = Path(str(importlib.resources.files("rerank_plugins") / "data" / name)) / DEMO_DATA[name]
    if not path.exists():
        raise FileNotFoundError(f"bundled data set {name!r} is missing from the installation ({path})")
    return path
