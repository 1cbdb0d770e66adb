"""How fast would a distilled student rerank on this machine? Students cost the same trained or not, so this times
students cut from the teacher (no training) against sentence-transformers `CrossEncoder(teacher).predict`: whether
a student of a given depth can meet a speed target here, before spending an hour distilling it.

    python bench/student_speed.py --teacher runs/bench/cross-encoder-... --layers 0,2,5 0,2,3,5 0,5 \
        --out bench/results/student-speed.md

Speed only: the runtime `fast` chooses for an untrained student may differ from a trained one's (the quality guard
judges each model's own scores), so the `fast` figures are indicative; the torch figures are not affected.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from _machine import result_header
from sentence_transformers import CrossEncoder
from transformers import AutoTokenizer

from rerank_plugins.data import load_dataset
from rerank_plugins.models.cross_encoder import CrossEncoderBackend
from rerank_plugins.training.distill import truncated_student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="trained cross-encoder directory")
    parser.add_argument("--layers", nargs="+", default=["0,2,5", "0,2,3,5", "0,5"], help="kept layer indices")
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all queries")
    parser.add_argument("--out", default="bench/results/student-speed.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    data = load_dataset(args.data, "test")
    rng = random.Random(0)
    documents = list(data.corpus)
    requests = [
        (data.queries[q], [data.corpus[d] for d in rng.sample(documents, args.candidates)])
        for q in rng.sample(sorted(data.queries), args.queries)
    ]
    peer = CrossEncoder(args.teacher, max_length=128)
    peer.predict([("warm up", "the first call is slower")], show_progress_bar=False)
    scorers = {
        "sentence-transformers CrossEncoder.predict, teacher": lambda q, ds: peer.predict(
            [(q, d) for d in ds], batch_size=32, show_progress_bar=False
        )
    }
    with tempfile.TemporaryDirectory() as work:
        tokenizer = AutoTokenizer.from_pretrained(args.teacher)
        models = {"teacher": args.teacher}
        for spec in args.layers:
            student, keep = truncated_student(args.teacher, [int(i) for i in spec.split(",")])
            path = Path(work) / "-".join(map(str, keep))
            student.save_pretrained(path)
            tokenizer.save_pretrained(path)
            models[f"student {keep}"] = str(path)
        for name, path in models.items():
            for runtime in ("torch", "fast"):
                backend = CrossEncoderBackend(path, runtime=runtime, cache_size=0)
                backend.score("warm up", ["the first call loads, exports and chooses"])
                label = f"fast ({backend.effective_runtime})" if runtime == "fast" else runtime
                scorers[f"ours {label}, {name}"] = backend.score
        seconds: dict[str, list[float]] = {name: [] for name in scorers}
        for _ in range(args.rounds):
            for query, candidates in requests:
                for name, score in scorers.items():
                    start = time.perf_counter()
                    score(query, candidates)
                    seconds[name].append(time.perf_counter() - start)

    peer_p50 = float(np.median(next(iter(seconds.values()))))
    rows = [
        f"| {name} | {1000 * np.median(s):.0f} | {1000 * np.percentile(s, 95):.0f} | {peer_p50 / np.median(s):.2f}x |"
        for name, s in seconds.items()
    ]
    text = (
        result_header(
            "Student speed on this machine (untrained students cut from the teacher)",
            f"load average {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end",
        )
        + "\n\n"
        f"{args.queries} SciFact test claims x {args.candidates} random abstracts, max length 128, batch 32, "
        f"{args.rounds} interleaved rounds; p50 per query\n\n"
        "| scorer | p50 ms | p95 ms | speed-up vs predict (p50) |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
