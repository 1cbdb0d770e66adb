"""One entry point for every non-torch runtime, and ``runtime="fast"``: the fastest one the quality guard accepts.

"fast" tries, in order, what measured fastest on CPUs (bench/results/quantization.md): OpenVINO bf16 where the
CPU computes bf16 natively, ONNX Runtime int8, OpenVINO fp32, ONNX Runtime fp32, then torch. A reduced-precision
candidate the guard refuses, or one whose package is missing, is skipped with a log line saying why; the
backend records what it chose in ``effective_runtime``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from rerank_plugins.models.runtimes.guard import QuantizationQualityError
from rerank_plugins.models.runtimes.onnx import Check

logger = logging.getLogger(__name__)

FAST_ORDER: tuple[str, ...] = ("openvino-bf16", "onnx-int8", "openvino", "onnx")


def load_runtime(model_path: Path, hf_model: Any, tokenizer: Any, runtime: str, check: Check) -> tuple[Any, str]:
    """``(forward, runtime used)`` for ``runtime``; ``forward`` is None when torch itself is the answer."""
    if runtime != "fast":
        return _load(model_path, hf_model, tokenizer, runtime, check), runtime
    for candidate in fast_candidates():
        try:
            forward = _load(model_path, hf_model, tokenizer, candidate, check)
        except QuantizationQualityError as error:
            logger.warning("runtime='fast' skips %s: %s", candidate, error)
            continue
        logger.info("runtime='fast' uses %s for %s", candidate, model_path)
        return forward, candidate
    logger.warning(
        "runtime='fast' found no faster runtime than torch for %s (install 'rerank-plugins[openvino]' or "
        "'rerank-plugins[fast]')",
        model_path,
    )
    return None, "torch"


def fast_candidates() -> list[str]:
    """The runtimes "fast" will try here, best first: those whose packages are installed and that can help."""
    candidates = [name for name in FAST_ORDER if _installed(name)]
    if "openvino-bf16" in candidates:
        from rerank_plugins.models.runtimes.openvino import native_bf16

        if not native_bf16():  # without native bf16 it is fp32 with extra checking
            candidates.remove("openvino-bf16")
    return candidates


def _installed(runtime: str) -> bool:
    module = "openvino" if runtime.startswith("openvino") else "onnxruntime"
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec("onnx") is not None


def _load(model_path: Path, hf_model: Any, tokenizer: Any, runtime: str, check: Check) -> Any:
    if runtime.startswith("openvino"):
        from rerank_plugins.models.runtimes.openvino import load_openvino

        return load_openvino(model_path, hf_model, tokenizer, runtime, check=check)
    from rerank_plugins.models.runtimes.onnx import load_onnx

    return load_onnx(model_path, hf_model, tokenizer, runtime, check=check)
