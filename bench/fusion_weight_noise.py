"""How well the 81 held-out SciFact train claims separate fusion weights, by labels and by agreement with the teacher.

For the teacher (cached scores) and each student given: the held-out nDCG@10 at a few weights and the mean difference
between pairs of weights with its standard error, so one can see whether a weight chosen on labels is
distinguishable from its neighbours. Then, for each student, what the library's rule decides on
(``match_fusion_weight``): the top-10 overlap of its fused ranking with the teacher's fused ranking (at the teacher's
weight tuned on these claims), and each weight's paired difference from the best.

    python bench/fusion_weight_noise.py runs/bench/distilled-... [more students] --out bench/results/distill/...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _machine import result_header
from distill import TEACHER, hybrid_stage

from rerank_plugins.data import load_dataset
from rerank_plugins.evaluation.evaluate import (
    FUSION_WEIGHTS,
    first_stage,
    fused_ndcg_per_query,
    fused_overlap_per_query,
    match_fusion_weight,
    rerank_scores,
    tune_fusion_weight,
)
from rerank_plugins.evaluation.metrics import standard_error
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training.distill import teacher_groups

WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5)
PAIRS = ((0.2, 0.3), (0.2, 0.4), (0.2, 0.5), (0.3, 0.4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("students", nargs="*", help="student directories")
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--out", required=True, help="markdown file to write")
    args = parser.parse_args()
    missing = [s for s in args.students if not (Path(s) / "config.json").is_file()]
    if missing:
        parser.error(f"not a model directory: {', '.join(missing)}")
    work = Path(args.work)
    _, held_out = load_dataset(args.data, "train").split(0.1, seed=0)  # bench/quality.py's held-out claims
    stage = hybrid_stage(held_out, work)
    ids, hits, _ = first_stage(held_out, stage, args.depth)
    pools = {q: [h.document.id for h in row] for q, row in zip(ids, hits)}
    teacher = CrossEncoderBackend(args.teacher, cache_size=0)
    groups = teacher_groups(teacher, held_out, pools, cache=work / "distill-teacher-scores.sqlite", show_progress=False)
    scorers = {f"teacher `{args.teacher}`": [g.teacher for g in groups]}
    for student in args.students:
        backend = CrossEncoderBackend(student, cache_size=0)
        scorers[f"student `{student}`"] = rerank_scores(held_out, ids, hits, backend, show_progress=False)[0]
    header = " | ".join(f"a={w}" for w in WEIGHTS) + " | " + " | ".join(f"a={b} - a={a}" for a, b in PAIRS)
    rows = [f"| reranker | {header} |", "|---" * (1 + len(WEIGHTS) + len(PAIRS)) + "|"]
    for name, scores in scorers.items():
        per = fused_ndcg_per_query(held_out, ids, hits, scores, WEIGHTS)  # what tune_fusion_weight decides on
        cells = [f"{per[w].mean():.4f}" for w in WEIGHTS]
        for a, b in PAIRS:
            diff = per[b] - per[a]
            cells.append(f"{diff.mean():+.4f} ± {standard_error(diff):.4f}")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    teacher_scores = scorers.pop(f"teacher `{args.teacher}`")
    teacher_weight = tune_fusion_weight(held_out, ids, hits, teacher_scores)["weight"]
    matched = [
        "| student | " + " | ".join(f"a={w}" for w in FUSION_WEIGHTS) + " | best |",
        "|---" * (2 + len(FUSION_WEIGHTS)) + "|",
    ]
    for name, scores in scorers.items():
        per = fused_overlap_per_query(hits, scores, teacher_scores, teacher_weight, FUSION_WEIGHTS)
        best = match_fusion_weight(hits, scores, teacher_scores, teacher_weight)["weight"]  # the library's rule
        cells = [
            f"{per[w].mean():.3f}"
            + ("" if w == best else f" ({(per[w] - per[best]).mean():+.3f} ± {standard_error(per[w] - per[best]):.3f})")
            for w in FUSION_WEIGHTS
        ]
        matched.append(f"| {name} | {' | '.join(cells)} | {best} |")
    text = (
        result_header("Held-out fusion weights: how far apart they can be told") + "\n\n"
        f"{len(ids)} held-out SciFact train claims, top-{args.depth} of the hybrid first stage; nDCG@10 fused at "
        "weight a, and paired per-claim differences (mean ± standard error)\n\n" + "\n".join(rows) + "\n\n"
        f"Top-10 overlap of each student's fused ranking with the teacher's fused ranking at a={teacher_weight} "
        "(the teacher's weight tuned on these claims), by the student's weight a; in brackets the paired per-claim "
        "difference from the best weight (mean ± standard error)\n\n" + "\n".join(matched) + "\n"
    )
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
