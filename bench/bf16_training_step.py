"""One training step of a 2-layer MiniLM cross-encoder (64 pairs x 128 tokens) in fp32 and in bf16 autocast, side by
side (interleaved, best and median of --rounds): what `DistillationConfig(bf16=True)` / `distill --bf16` buys here.

    python bench/bf16_training_step.py --out bench/results/bf16-training-step.md
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _machine import result_header
from transformers import AutoConfig, AutoModelForSequenceClassification

from rerank_plugins.models.resolve import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default="bench/results/bf16-training-step.md")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    config.num_hidden_layers, config.num_labels = 2, 1
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (64, 128))

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        logits.float().pow(2).mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in times:  # warm up
        step(bf16)
    for _ in range(args.rounds):
        for bf16 in times:
            times[bf16].append(step(bf16))
    rows = [
        f"| {'bf16 autocast' if bf16 else 'fp32'} | {1000 * min(t):.0f} | {1000 * float(np.median(t)):.0f} |"
        for bf16, t in times.items()
    ]
    ratio = float(np.median(times[False]) / np.median(times[True]))
    text = (
        result_header(
            "Training step, fp32 vs bf16 autocast",
            f"torch {torch.__version__}, {torch.get_num_threads()} threads",
            f"load average {os.getloadavg()[0]:.2f}",
        )
        + "\n\n"
        "2-layer MiniLM cross-encoder, 64 pairs x 128 tokens, forward + backward + AdamW, interleaved rounds\n\n"
        "| precision | best ms | median ms |\n|---|---|---|\n"
        + "\n".join(rows)
        + f"\n\nbf16 autocast speed-up (median): {ratio:.2f}x\n"
    )
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
