"""One entry point for every non-torch runtime, and ``runtime="fast"``: the fastest one the quality guard accepts.

Why "fast" measures rather than follows a fixed order: which runtime is fastest depends on the CPU in ways its
feature flags do not tell. OpenVINO bf16 ran 3.4x torch on an AMD EPYC with AVX512_BF16, yet 0.6x OpenVINO fp32
on an Emerald Rapids guest reporting the same flag with AMX hidden (bench/results/speed-fair-peers-xeon-emr.md).
So "fast" loads each installed candidate (OpenVINO bf16 where the CPU reports native bf16, ONNX Runtime int8,
OpenVINO fp32, ONNX Runtime fp32) that the quality guard accepts, times it and torch on one realistic batch, and
keeps the fastest. A refused candidate is skipped with a log line saying why. The choice is stored beside the
model's export, keyed by the CPU, the thread count and the packages' versions, so each machine measures once;
``effective_runtime`` says what was chosen.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._files import write_json
from rerank_plugins.models.pair_scoring import torch_forward
from rerank_plugins.models.runtimes.guard import QuantizationQualityError, check_set
from rerank_plugins.models.runtimes.machine import cpu_and_versions
from rerank_plugins.models.runtimes.onnx import Check, default_threads, export_directory

logger = logging.getLogger(__name__)

FAST_CANDIDATES: tuple[str, ...] = ("openvino-bf16", "onnx-int8", "openvino", "onnx")
TIMING_ROUNDS = 3
"""Timed passes per runtime (interleaved, after one warm-up each); the fastest pass counts."""
CHOICE_FILE = "fast-choice.json"

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]


def load_runtime(
    model_path: Path, hf_model: Any, tokenizer: Any, runtime: str, check: Check, *, max_length: int, pairs: bool
) -> tuple[Any, str]:
    """``(forward, runtime used)`` for ``runtime``; ``forward`` is None when torch itself is the answer.

    ``max_length`` and ``pairs`` (query-document pairs, or single texts) shape the batch "fast" times.
    """
    if runtime != "fast":
        return _load(model_path, hf_model, tokenizer, runtime, check), runtime
    candidates = fast_candidates()
    if not candidates:
        logger.warning(
            "runtime='fast' found no faster runtime than torch for %s (install 'rerank-plugins[openvino]' or "
            "'rerank-plugins[fast]')",
            model_path,
        )
        return None, "torch"
    record_path = export_directory(model_path) / CHOICE_FILE
    machine = machine_key()
    stored = _stored_choice(record_path, machine)
    if stored == "torch":
        return None, "torch"
    if stored in candidates:
        try:
            return _load(model_path, hf_model, tokenizer, stored, check), stored
        except QuantizationQualityError:  # the guard's thresholds changed since the choice: choose again
            pass

    forwards: dict[str, Forward | None] = {"torch": None}
    for candidate in candidates:
        try:
            forwards[candidate] = _load(model_path, hf_model, tokenizer, candidate, check)
        except QuantizationQualityError as error:
            logger.warning("runtime='fast' skips %s: %s", candidate, error)
    sample = timing_batch(tokenizer, max_length, pairs)
    seconds = timings({name: forward or torch_forward(hf_model) for name, forward in forwards.items()}, sample)
    chosen = min(seconds, key=seconds.__getitem__)
    record = {
        "runtime": chosen,
        "seconds_per_batch": {name: round(s, 5) for name, s in seconds.items()},
        "batch_shape": list(sample["input_ids"].shape),
        "machine": machine,
    }
    write_json(record_path, record)
    logger.info(
        "runtime='fast' uses %s for %s (seconds per batch: %s)", chosen, model_path, record["seconds_per_batch"]
    )
    return forwards[chosen], chosen


def fast_candidates() -> list[str]:
    """The runtimes "fast" will try here: those whose packages are installed and that can help."""
    candidates = [name for name in FAST_CANDIDATES if _installed(name)]
    if "openvino-bf16" in candidates:
        from rerank_plugins.models.runtimes.openvino import native_bf16

        if not native_bf16():  # without native bf16 it is fp32 with extra checking
            candidates.remove("openvino-bf16")
    return candidates


def timing_batch(tokenizer: Any, max_length: int, pairs: bool) -> dict[str, np.ndarray]:
    """One realistic padded batch: a check-set query's 30 candidate abstracts (as pairs for a cross-encoder)."""
    query, documents = check_set(queries=1)[0]
    texts = ([query] * len(documents), documents) if pairs else (documents,)
    encoded = tokenizer(*texts, truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {name: np.asarray(encoded[name]) for name in tokenizer.model_input_names if name in encoded}


def timings(forwards: Mapping[str, Forward], batch: dict[str, np.ndarray]) -> dict[str, float]:
    """Seconds each forward takes on ``batch``: best of :data:`TIMING_ROUNDS` interleaved passes after a warm-up."""
    for forward in forwards.values():
        forward(batch)
    best = dict.fromkeys(forwards, float("inf"))
    for _ in range(TIMING_ROUNDS):
        for name, forward in forwards.items():
            start = time.perf_counter()
            forward(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def machine_key() -> dict[str, Any]:
    """What the fastest runtime depends on: the CPU, the runtime packages' versions and the thread count."""
    return {**cpu_and_versions(), "threads": default_threads()}


def _stored_choice(path: Path, machine: dict[str, Any]) -> str | None:
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record.get("runtime") if record.get("machine") == machine else None


def _installed(runtime: str) -> bool:
    module = "openvino" if runtime.startswith("openvino") else "onnxruntime"
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec("onnx") is not None


def _load(model_path: Path, hf_model: Any, tokenizer: Any, runtime: str, check: Check) -> Any:
    if runtime.startswith("openvino"):
        from rerank_plugins.models.runtimes.openvino import load_openvino

        return load_openvino(model_path, hf_model, tokenizer, runtime, check=check)
    from rerank_plugins.models.runtimes.onnx import load_onnx

    return load_onnx(model_path, hf_model, tokenizer, runtime, check=check)
