"""A short README.md written next to every trained model: what it was trained from, on what, how, and how well."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rerank_plugins._files import write_json
from rerank_plugins.fusion import TRAINING_INFO


def write_model_card(
    directory: Path,
    *,
    kind: str,
    base_model: str,
    data: str,
    parameters: dict[str, Any],
    training: dict[str, Any],
    scores: dict[str, Any],
) -> None:
    info = {
        "kind": kind,
        "base_model": base_model,
        "data": data,
        "parameters": parameters,
        "training": training,
        "scores": scores,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "library": "rerank-plugins",
    }
    write_json(directory / TRAINING_INFO, info, indent=2)
    rows = "\n".join(f"| {k} | {v} |" for k, v in parameters.items())
    score_rows = "\n".join(
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scores.items()
    )
    loader = "SentenceTransformer" if kind == "bi-encoder" else "CrossEncoder"
    (directory / "README.md").write_text(
        f"""---
library_name: sentence-transformers
tags: [rerank-plugins, {kind}]
base_model: {base_model}
---
# {kind} trained with rerank-plugins

- Base model: `{base_model}`
- Training data: {data}
- Trained: {info["created"]}, {training.get("steps")} steps in {training.get("seconds", 0):.0f} s
  (planned {training.get("planned_steps")}; stopped by time budget: {training.get("stopped_by_time_budget")})

## Parameters
| parameter | value |
|---|---|
{rows}

## Held-out scores (measured at the end of training)
| metric | value |
|---|---|
{score_rows or "| (none) | |"}

## Use
```python
from sentence_transformers import {loader}
model = {loader}("{directory}")
```
or pass this directory as `model=` to the rerank-plugins adapters.
""",
        encoding="utf-8",
    )
