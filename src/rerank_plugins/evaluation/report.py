"""Write an evaluation report as JSON, a Markdown table, and a PNG plot (every pipeline side by side)."""

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


PIPELINES = (
    ("dense_first_stage", "dense first stage alone", "#bcbd22", "v", "-."),
    ("first_stage", "first stage", "#7f7f7f", "o", "--"),
    ("reranker_only", "reranker alone", "#1f77b4", "s", ":"),
    ("reranked", "reranked", "#d62728", "^", "-"),
)


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Left: nDCG@10 and MRR@10 per pipeline (bars); right: hit@k against k, one line per pipeline.

    Pipelines are the first stage, the reranker alone and the final order (fused when fusion is on), each with
    its own colour, marker and line style so none hides another. Returns None if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed; skipping the plot (pip install 'rerank-plugins[plot]')")
        return None
    metrics = report["metrics"]
    fused = "reranker_only" in metrics
    shown = [
        (key, f"fused (a={report.get('fusion_weight')})" if key == "reranked" and fused else label, color, marker, line)
        for key, label, color, marker, line in PIPELINES
        if key in metrics
    ]
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.8 / len(shown)
    for offset, (key, label, color, _, _) in enumerate(shown):
        values = [metrics[key].get("ndcg@10", 0.0), metrics[key].get("mrr@10", 0.0)]
        positions = [x + (offset - (len(shown) - 1) / 2) * width for x in range(2)]
        drawn = bars.bar(positions, values, width, label=label, color=color)
        bars.bar_label(drawn, fmt="%.3f", fontsize=7)
    bars.set_xticks(range(2), ["nDCG@10", "MRR@10"])
    bars.set_ylim(0, 1)
    bars.legend(fontsize=8)
    for key, label, color, marker, line in shown:
        points = sorted((int(m.group(1)), v) for n, v in metrics[key].items() if (m := re.fullmatch(r"hit@(\d+)", n)))
        curves.plot([k for k, _ in points], [v for _, v in points], line, marker=marker, color=color, label=label)
    curves.set_xlabel("k")
    curves.set_ylabel("hit@k")
    curves.set_ylim(0, 1)
    curves.grid(True, alpha=0.3)
    curves.legend(fontsize=8)
    figure.suptitle(f"{report['dataset']}: first stage top-{report['first_stage_k']} and after reranking")
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
