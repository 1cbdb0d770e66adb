"""Reduced-precision recipes for one reranker: agreement with fp32 on the guard's check set, and speed, in one run.

Each recipe is an ONNX Runtime or OpenVINO model built from the library's cached fp32 ONNX export (or torch
itself). Agreement is what the quality guard measures (mean top-10 overlap and Spearman over the check set:
16 bundled SciFact claims x 30 word-overlap candidates); speed is p50 ms per query of 30 candidates, all
recipes interleaved query by query, so load from other work on the machine hits each of them alike.
Calibration data for the static int8 recipes come from the benchmark data's own training queries (the
user's data), not from the check set.

    pip install -e ".[fast,openvino,bench]" nncf
    python bench/quantization.py --data ../shared/data/scifact \\
        --cross-encoder runs/bench/cross-encoder-hard-listwise-fine-tuned-2ep-128-resampled-mined-hybrid
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
from _machine import result_header

from rerank_plugins import CrossEncoderBackend
from rerank_plugins.data import load_dataset
from rerank_plugins.models.pair_scoring import MIN_DOCUMENT_TOKENS, fit_query, max_length_of, score_pairs, torch_forward
from rerank_plugins.models.runtimes.guard import MIN_SPEARMAN, MIN_TOP10_OVERLAP, check_set, ranking_agreement
from rerank_plugins.models.runtimes.onnx import OnnxModel, _outlier_matmuls
from rerank_plugins.models.runtimes.openvino import OpenVinoModel

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]
lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def calibration_features(model, data, queries: int, depth: int, batch_size: int = 32) -> list[dict[str, np.ndarray]]:
    """Padded feature batches of (training query, word-overlap candidate) pairs: what the reranker will see."""
    doc_ids = list(data.corpus)
    doc_words = [set(data.corpus[d].lower().split()) for d in doc_ids]
    rng = random.Random(0)
    pairs = []
    for query in rng.sample(list(data.queries.values()), min(queries, len(data.queries))):
        words = set(query.lower().split())
        ranked = sorted(range(len(doc_ids)), key=lambda i: -len(words & doc_words[i]))[:depth]
        pairs += [(query, data.corpus[doc_ids[i]]) for i in ranked]
    tokenizer = model.tokenizer
    batches = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        encoded = tokenizer(
            [q for q, _ in chunk],
            [d for _, d in chunk],
            truncation="only_second",
            max_length=max_length_of(model),
            padding=True,
            return_tensors="np",
        )
        batches.append({k: v.astype(np.int64) for k, v in encoded.items()})
    return batches


def ort_dynamic(fp32: Path, target: Path, exclude: list[str]) -> Forward:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
    )
    return OnnxModel(target)


def ort_static(fp32: Path, target: Path, calibration: list[dict[str, np.ndarray]], exclude: list[str]) -> Forward:
    """QDQ static int8 (activations per tensor from calibration, weights per channel), ORT's transformer recipe."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(fp32),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return OnnxModel(target)


def nncf_int8(fp32: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> Forward:
    """OpenVINO int8 from NNCF's post-training quantization (transformer preset, calibration on the user's data)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=sum(len(b["input_ids"]) for b in calibration),
    )
    ov.save_model(quantized, str(target))
    return OpenVinoModel(target, "f32")


def torch_bf16(hf_model) -> Forward:
    forward = torch_forward(hf_model)

    def run(features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(features)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder: train queries calibrate, test queries time")
    parser.add_argument("--cross-encoder", required=True)
    parser.add_argument("--queries", type=int, default=8, help="timed queries (30 random abstracts each)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibration-queries", type=int, default=32)
    parser.add_argument("--work", default="/tmp/rerank-quantization")
    parser.add_argument("--out", default="bench/results/quantization.md")
    args = parser.parse_args()

    say(result_header("Reduced-precision recipes for one reranker") + "  ")
    say(f"load average at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}  ")
    say(f"model: {args.cross_encoder}\n")

    backend = CrossEncoderBackend(args.cross_encoder, runtime="onnx", cache_size=0)
    backend.score("warm", ["up"])
    model = backend.model
    fp32 = backend._onnx.path
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    calibration = calibration_features(model, load_dataset(args.data, "train"), args.calibration_queries, 8)
    ffn_out = _outlier_matmuls(fp32)
    import onnx

    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    ffn_in = [n for n in matmuls if "intermediate/dense" in n]

    recipes: dict[str, Callable[[], Forward]] = {
        "torch fp32 (reference)": lambda: torch_forward(model.model),
        "torch bf16 autocast": lambda: torch_bf16(model.model),
        "ONNX Runtime fp32": lambda: backend._onnx,
        "ORT dynamic int8, every MatMul": lambda: ort_dynamic(fp32, work / "dyn-all.onnx", []),
        "ORT dynamic int8, FFN output fp32 (library's onnx-int8)": lambda: ort_dynamic(
            fp32, work / "dyn.onnx", ffn_out
        ),
        "ORT dynamic int8, attention only (both FFN MatMuls fp32)": lambda: ort_dynamic(
            fp32, work / "dyn-att.onnx", ffn_out + ffn_in
        ),
        "ORT static QDQ int8, calibrated": lambda: ort_static(fp32, work / "qdq.onnx", calibration, []),
        "ORT static QDQ int8, calibrated, FFN output fp32": lambda: ort_static(
            fp32, work / "qdq-ffn.onnx", calibration, ffn_out
        ),
        "OpenVINO fp32": lambda: OpenVinoModel(fp32, "f32"),
        "OpenVINO bf16 (library's openvino-bf16)": lambda: OpenVinoModel(fp32, "bf16"),
        "OpenVINO NNCF static int8, calibrated": lambda: nncf_int8(fp32, work / "nncf.xml", calibration),
    }
    forwards: dict[str, Forward] = {}
    for name, build in recipes.items():
        try:
            forwards[name] = build()
        except Exception as error:  # a recipe that does not build is reported, not fatal
            say(f"- {name}: could not be built ({type(error).__name__}: {error})")

    requests = check_set()
    budget = max_length_of(model) - model.tokenizer.num_special_tokens_to_add(pair=True) - MIN_DOCUMENT_TOKENS
    queries = [fit_query(model.tokenizer, q, budget) for q, _ in requests]
    documents = [d for _, d in requests]
    scores = {
        name: [s.raw for s in score_pairs(model, fwd, queries, documents, "truncate", 32)]
        for name, fwd in forwards.items()
    }
    reference = scores["torch fp32 (reference)"]

    test = load_dataset(args.data, "test")
    rng = random.Random(0)
    corpus = list(test.corpus.values())
    timed = [(q, rng.sample(corpus, 30)) for q in list(test.queries.values())[: args.queries]]
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    for fwd in forwards.values():  # warm-up
        score_pairs(model, fwd, [timed[0][0]], [timed[0][1]], "truncate", 32)
    for _ in range(args.rounds):
        for query, docs in timed:
            for name, fwd in forwards.items():
                start = time.perf_counter()
                score_pairs(model, fwd, [query], [docs], "truncate", 32)
                seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["torch fp32 (reference)"])
    say(f"Guard: top-10 overlap >= {MIN_TOP10_OVERLAP} and Spearman >= {MIN_SPEARMAN} against fp32 on the check set.\n")
    say("| recipe | top-10 overlap | Spearman | guard | p50 ms / 30 pairs | speed vs torch fp32 |")
    say("|---|---|---|---|---|---|")
    for name in forwards:
        agreement = ranking_agreement(reference, scores[name])
        passes = agreement["top10_overlap"] >= MIN_TOP10_OVERLAP and agreement["spearman"] >= MIN_SPEARMAN
        p50 = statistics.median(seconds[name])
        say(
            f"| {name} | {agreement['top10_overlap']:.3f} | {agreement['spearman']:.4f} | "
            f"{'passes' if passes else 'refused'} | {p50 * 1000:.0f} | {base / p50:.2f}x |"
        )
    say(f"\nload average at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
