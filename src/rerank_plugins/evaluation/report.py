"""Write an evaluation report as JSON, a Markdown table, and a PNG plot of metrics against k."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def markdown_table(report: dict[str, Any]) -> str:
    stages = report["metrics"]
    names = list(stages["first_stage"])
    fused = "reranker_only" in stages
    header = (
        f"| metric | first stage | reranker alone | fused (a={report.get('fusion_weight')}) | change |\n"
        "|---|---|---|---|---|"
        if fused
        else "| metric | first stage | reranked | change |\n|---|---|---|---|"
    )
    rows = []
    for name in names:
        before = stages["first_stage"][name]
        after = stages.get("reranked", {}).get(name)
        alone = f"{stages['reranker_only'][name]:.4f} | " if fused else ""
        rows.append(
            f"| {name} | {before:.4f} | {alone}"
            + ("— | — |" if after is None else f"{after:.4f} | {after - before:+.4f} |")
        )
    latency = report.get("latency", {})
    lines = [header, *rows, ""]
    for stage, values in latency.items():
        extra = f", {values['pairs_per_s']:.1f} pairs/s" if "pairs_per_s" in values else ""
        lines.append(
            f"- {stage}: {values['ms_per_query']:.1f} ms/query ({values['queries_per_s']:.1f} queries/s{extra})"
        )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Hit@k and recall@k against k, first stage vs reranked. Returns None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install 'rerank-plugins[plot]')")
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for stage, style in (("first_stage", "--"), ("reranked", "-")):
        metrics = report["metrics"].get(stage)
        if not metrics:
            continue
        for family in ("hit", "recall"):
            points = sorted(
                (int(m.group(1)), v) for n, v in metrics.items() if (m := re.fullmatch(f"{family}@(\\d+)", n))
            )
            if points:
                axis.plot(
                    [k for k, _ in points], [v for _, v in points], style, marker="o", label=f"{family}@k, {stage}"
                )
    axis.set_xscale("log")
    axis.set_xlabel("k")
    axis.set_ylabel("score")
    axis.set_ylim(0, 1)
    axis.grid(True, alpha=0.3)
    axis.set_title(f"{report['dataset']}: first stage vs reranked (top-{report['first_stage_k']})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(report: dict[str, Any], json_path: str | Path) -> dict[str, Path]:
    """Write ``report`` to ``json_path`` plus ``.md`` and ``.png`` beside it; returns the paths written."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    written = {"json": json_path}
    markdown = json_path.with_suffix(".md")
    markdown.write_text(markdown_table(report) + "\n", encoding="utf-8")
    written["markdown"] = markdown
    png = plot_report(report, json_path.with_suffix(".png"))
    if png is not None:
        written["png"] = png
    return written
