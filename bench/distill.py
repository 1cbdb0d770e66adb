"""A smaller, faster reranker distilled from the trained one: quality on SciFact test and speed, side by side.

The teacher is the 6-layer reranker bench/quality.py trained on SciFact train (max length 128); the first stage is
that run's fine-tuned hybrid (`--pipelines hb`: fine-tuned bi-encoder + English BM25, dense weight 0.4). The student
keeps ``--layers`` of the teacher's layers and learns the teacher's scores on the hybrid's top-``--distill-depth`` (16:
the CPU budget of a 2-core machine) for SciFact *train* queries (no labels used) and, with ``--corpus-queries``, for
offline pseudo-queries made from every abstract (a sentence taken out of it, its title); the same 10% of train queries
the teacher was held out from choose both fusion weights at the test depth (top-30): the teacher's on their labels,
the student's as the weight whose fused ranking best reproduces the teacher's (the library's rule).
Then on SciFact *test* (top-30): nDCG@10 of the first stage, teacher and student alone and fused; and p50/p95 per
query for 30 candidates: sentence-transformers ``CrossEncoder(teacher).predict`` vs our backend with the teacher and
with the student (torch, onnx, fast), interleaved round by round in one run.

    python bench/distill.py --layers 2 --corpus-queries sentence title --teacher-runtime fast --bf16 \
        --out bench/results/distill
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _machine import result_header

from rerank_plugins.data import load_dataset
from rerank_plugins.data.corpus import load_corpus
from rerank_plugins.evaluation.evaluate import first_stage, rankings, rerank_scores, tune_fusion_weight
from rerank_plugins.evaluation.metrics import compute_metrics
from rerank_plugins.first_stage import FaissIndex
from rerank_plugins.first_stage.hybrid import HybridIndex
from rerank_plugins.fusion import stored_fusion, stored_fusion_weight
from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.models.runtimes.guard import spearman
from rerank_plugins.training.distill import (
    DistillationConfig,
    distill_cross_encoder,
    record_student_fusion_weight,
    teacher_groups,
)
from rerank_plugins.training.mining import corpus_first_stage
from rerank_plugins.training.pseudo_queries import offline_pseudo_queries

TEACHER = "runs/bench/cross-encoder-hard-listwise-fine-tuned-2ep-128-resampled-mined-hybrid"


def hybrid_stage(dataset, work: Path) -> HybridIndex:
    """bench/quality.py's `hb`: the fine-tuned bi-encoder's saved index + English BM25, weighted, dense weight 0.4."""
    dense = FaissIndex.load(work / "index-fine-tuned", BiEncoderBackend(str(work / "bi-encoder"), cache_size=0))
    lexical = corpus_first_stage(dataset, None, "lexical", analyzer="auto")
    return HybridIndex(dense, lexical, fusion="weighted", dense_weight=0.4)


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(values, 50)), "p95_ms": 1000 * float(np.percentile(values, 95))}


def speed(teacher: str, student: str, requests: list[tuple[str, list[str]]], rounds: int) -> dict[str, dict]:
    """Per-query seconds for each scorer, interleaved round by round (each round: every scorer, every request)."""
    from sentence_transformers import CrossEncoder

    st_teacher = CrossEncoder(teacher, max_length=128, local_files_only=True)
    scorers = {
        "sentence-transformers CrossEncoder.predict, teacher (6 layers)": lambda q, d: st_teacher.predict(
            [(q, x) for x in d], batch_size=32, show_progress_bar=False
        ),
        "ours torch, teacher (6 layers)": CrossEncoderBackend(teacher, cache_size=0).score,
        "ours torch, student": CrossEncoderBackend(student, cache_size=0).score,
        "ours onnx, student": CrossEncoderBackend(student, cache_size=0, runtime="onnx").score,
        "ours fast, teacher (6 layers)": CrossEncoderBackend(teacher, cache_size=0, runtime="fast").score,
        "ours fast, student": CrossEncoderBackend(student, cache_size=0, runtime="fast").score,
    }
    for score in scorers.values():  # load, export, warm up
        score(*requests[0])
    times: dict[str, list[float]] = {name: [] for name in scorers}
    for _ in range(rounds):
        for query, docs in requests:
            for name, score in scorers.items():
                start = time.perf_counter()
                score(query, docs)
                times[name].append(time.perf_counter() - start)
    reference = float(np.median(times[next(iter(scorers))]))
    return {
        name: {**percentiles(t), "speed-up_vs_st_teacher_p50": reference / float(np.median(t)), "calls": len(t)}
        for name, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--work", default="runs/bench")
    parser.add_argument("--teacher", default=TEACHER)
    parser.add_argument("--layers", default="2", help="number of layers, or comma-separated layer indices")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--time-budget", type=float, help="seconds of student training")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--depth", type=int, default=30, help="candidates reranked on test and held-out queries")
    parser.add_argument(
        "--distill-depth",
        "--distil-depth",  # the spelling of the commands in bench/results/distill
        type=int,
        default=16,
        help="candidates per train query the teacher scores for the student",
    )
    parser.add_argument("--queries-per-batch", type=int, default=4)
    parser.add_argument(
        "--corpus-queries",
        nargs="+",
        default=[],
        help="offline pseudo-query strategies over the corpus to distill on as well (`sentence title`, as in the CLI, "
        "or comma-separated)",
    )
    parser.add_argument(
        "--teacher-runtime", default="torch", help="runtime scoring the student's targets (evaluation: always torch)"
    )
    parser.add_argument("--bf16", action="store_true", help="train the student in bfloat16 autocast")
    parser.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="hard-label term beside the KL (train qrels; pseudo-queries' own abstracts); 0: pure distillation",
    )
    parser.add_argument("--speed-queries", type=int, default=8)
    parser.add_argument("--speed-rounds", type=int, default=3, help="0: no speed measurement")
    parser.add_argument("--reuse", action="store_true", help="reuse a student already in --work")
    parser.add_argument(
        "--skip-teacher-test",
        action="store_true",
        help="do not score the test queries with the teacher (its figures are in bench/results/scifact-hybrid)",
    )
    parser.add_argument("--out", default="bench/results/distill")
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")] if "," in args.layers else int(args.layers)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = work / "distill-teacher-scores.sqlite"
    timings: dict[str, float] = {}
    load_before = os.getloadavg()

    train_all = load_dataset(args.data, "train")
    test = load_dataset(args.data, "test")
    _, held_out = train_all.split(0.1, seed=0)  # the teacher's own held-out queries (bench/quality.py)
    stage = hybrid_stage(test, work)
    teacher = CrossEncoderBackend(args.teacher, cache_size=0)

    name = f"{args.layers.replace(',', '-')}{'-layers' if ',' not in args.layers else ''}-top{args.distill_depth}"
    name += f"-{args.epochs}ep-lr{args.learning_rate:g}" + (f"-budget{args.time_budget:g}" if args.time_budget else "")
    strategies = [s for arg in args.corpus_queries for s in arg.split(",") if s]
    if strategies:
        name += f"-plus-{'-'.join(strategies)}"
    if args.label_weight:
        name += f"-labels{args.label_weight:g}"
    student_dir = work / f"distilled-{name}"
    start = time.perf_counter()
    if not (args.reuse and (student_dir / "config.json").exists()):
        documents = load_corpus(args.data)  # BEIR folder: titles kept apart from the text
        more = [offline_pseudo_queries(documents, s).dataset for s in strategies]
        for extra in more:
            print(f"{extra.name}: {len(extra.queries)} queries", flush=True)
        _, log = distill_cross_encoder(
            CrossEncoderBackend(args.teacher, cache_size=0, runtime=args.teacher_runtime),
            train_all,
            student_dir,
            candidates=stage,
            layers=layers,
            first_stage_k=args.distill_depth,
            more_queries=more,
            config=DistillationConfig(
                epochs=args.epochs,
                queries_per_batch=args.queries_per_batch,
                learning_rate=args.learning_rate,
                time_budget_s=args.time_budget,
                bf16=args.bf16,
                label_weight=args.label_weight,
            ),
            teacher_cache=cache,
        )
        print(f"distilled: {log.steps} steps, {log.seconds:.0f} s, held-out: {log.evaluations}", flush=True)
    fusion = stored_fusion(student_dir)
    if fusion.get("depth") != args.depth or "top10_overlap_by_weight" not in fusion:
        # The student reranks the top-args.depth at test time: its fusion weight is chosen at that depth (and again
        # for a reused student whose weight an earlier rule chose).
        record_student_fusion_weight(student_dir, teacher, held_out, stage, depth=args.depth, cache=cache)
    timings["distill (teacher scores of train + training + fusion tuning)"] = round(time.perf_counter() - start, 1)
    record = json.loads((student_dir / "rerank_plugins_training.json").read_text(encoding="utf-8"))

    # The teacher's fusion weight on the same held-out queries, from the cached teacher scores.
    held_ids, held_hits, _ = first_stage(held_out, stage, args.depth)
    held_groups = teacher_groups(
        teacher, held_out, {q: [h.document.id for h in row] for q, row in zip(held_ids, held_hits)}, cache=cache
    )
    teacher_fusion = tune_fusion_weight(held_out, held_ids, held_hits, [g.teacher for g in held_groups])
    student_weight = stored_fusion_weight(student_dir)

    student = CrossEncoderBackend(str(student_dir), cache_size=0)
    held_student, _ = rerank_scores(held_out, held_ids, held_hits, student)
    agreement = [spearman(g.teacher, s) for g, s in zip(held_groups, held_student)]

    query_ids, hits, _ = first_stage(test, stage, args.depth)
    student_scores, seconds = rerank_scores(test, query_ids, hits, student)
    timings["student scores of test"] = round(seconds, 1)

    def metrics(scores, weight) -> dict[str, float]:
        return compute_metrics(rankings(query_ids, hits, scores, weight), test.qrels, (1, 10), (args.depth,))

    first = compute_metrics({q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}, test.qrels, (1, 10))
    rows = {"first stage: hybrid (fine-tuned bi-encoder + BM25, w=0.4)": first}
    if not args.skip_teacher_test:
        start = time.perf_counter()
        test_groups = teacher_groups(
            teacher, test, {q: [h.document.id for h in row] for q, row in zip(query_ids, hits)}, cache=cache
        )
        timings["teacher scores of test (or cache)"] = round(time.perf_counter() - start, 1)
        teacher_scores = [g.teacher for g in test_groups]
        rows["teacher alone (6 layers)"] = metrics(teacher_scores, None)
        rows[f"teacher fused (a={teacher_fusion['weight']})"] = metrics(teacher_scores, teacher_fusion["weight"])
    rows[f"student alone ({record['parameters']['layers_kept']})"] = metrics(student_scores, None)
    rows[f"student fused (a={student_weight})"] = metrics(student_scores, student_weight)
    # Diagnostic only: what each weight would give on test. Never used to choose one (held-out queries do that).
    test_sweep = {f"{a:.1f}": round(metrics(student_scores, a)["ndcg@10"], 4) for a in np.linspace(0, 1, 11)}

    requests = [(test.queries[q], [h.document.text for h in row]) for q, row in zip(query_ids, hits)]
    requests = requests[: args.speed_queries]
    load_speed = os.getloadavg()
    timing = speed(args.teacher, str(student_dir), requests, args.speed_rounds) if args.speed_rounds else {}

    table = ["| pipeline (SciFact test, top-30) | nDCG@10 | hit@1 | hit@10 |", "|---|---|---|---|"]
    table += [f"| {k} | {m['ndcg@10']:.4f} | {m['hit@1']:.4f} | {m['hit@10']:.4f} |" for k, m in rows.items()]
    speed_table = ["| scorer (30 candidates, max length 128, batch 32) | p50 ms | p95 ms | speed-up (p50) |"]
    speed_table.append("|---|---|---|---|")
    speed_table += [
        f"| {k} | {v['p50_ms']:.0f} | {v['p95_ms']:.0f} | {v['speed-up_vs_st_teacher_p50']:.2f}x |"
        for k, v in timing.items()
    ]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    text = (
        result_header(
            "Distilled reranker on SciFact",
            f"load average {load_before[0]:.2f} at start, {load_speed[0]:.2f} before the speed rounds",
            f"`uptime` at the end: {uptime}",
        )
        + "\n\n"
        f"Teacher: `{args.teacher}`. Student: `{student_dir}`, layers kept {record['parameters']['layers_kept']}, "
        f"{record['training']['steps']} steps in {record['training']['seconds']:.0f} s (planned "
        f"{record['training']['planned_steps']}, stopped by time budget: "
        f"{record['training']['stopped_by_time_budget']}); held-out scores: {json.dumps(record['scores'])}\n\n"
        + "\n".join(table)
        + (
            "\n\nTeacher on test not re-scored in this run (`--skip-teacher-test`, CPU time): the same teacher, "
            "first stage (hb) and test queries are in bench/results/scifact-hybrid/quality.md."
            if args.skip_teacher_test
            else ""
        )
        + f"\n\nStudent vs teacher on the {len(held_ids)} held-out train queries: Spearman of the top-{args.depth} "
        f"candidates' scores per query, mean {np.mean(agreement):.3f} (median {np.median(agreement):.3f}).\n\n"
        f"Fusion weights on the {len(held_ids)} held-out train queries. Teacher, tuned on their labels (nDCG@10 by "
        f"weight): {json.dumps(teacher_fusion['ndcg@10_by_weight'])}. Student, matched to the teacher's fused "
        f"ranking at a={record['fusion']['reference_weight']} (mean top-10 overlap by weight): "
        f"{json.dumps({w: round(v, 4) for w, v in record['fusion']['top10_overlap_by_weight'].items()})}; "
        f"its labelled nDCG@10 by weight, not used to choose: {json.dumps(record['fusion']['ndcg@10_by_weight'])}\n\n"
        f"Diagnostic, not used to choose: student fused on test, nDCG@10 by weight {json.dumps(test_sweep)}\n\n"
        + (
            f"Speed: {len(requests)} test queries x {args.speed_rounds} rounds, interleaved\n\n"
            + "\n".join(speed_table)
            if timing
            else "Speed: not measured (`--speed-rounds 0`)"
        )
        + f"\n\nTimings (s): {json.dumps(timings)}\n"
    )
    print(text)
    (out / f"distill-{name}.md").write_text(text, encoding="utf-8")
    (out / f"distill-{name}.json").write_text(
        json.dumps(
            {"argv": sys.argv, "metrics": rows, "speed": timing, "teacher_fusion": teacher_fusion, "record": record},
            indent=2,
        ),
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
