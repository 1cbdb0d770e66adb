"""ONNX Runtime execution, fp32 or int8, for both backends.

The Hugging Face model is exported once (TorchScript exporter) and cached on disk under a key made from
the model's own files (config and weights), so a changed model is exported again and an unchanged one
never is. int8 weights come from ONNX Runtime's dynamic quantization of the MatMul weights with one scale
per output channel; each layer's FFN output projection, whose inputs carry large outliers, stays fp32
(measured on MiniLM-L6: plain per-tensor int8 gave top-10 overlap 0.88-0.91 with fp32, this recipe
0.97-0.98). The quality guard (:mod:`rerank_plugins.models.runtimes.guard`) compares int8 rankings with
fp32 on a check set and refuses the export when they disagree.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins.models.resolve import model_fingerprint
from rerank_plugins.models.runtimes.guard import require_agreement

logger = logging.getLogger(__name__)

ONNX_RUNTIMES: tuple[str, ...] = ("onnx", "onnx-int8")


def cache_root() -> Path:
    """Where exports are cached: ``$RERANK_PLUGINS_CACHE`` or ``~/.cache/rerank_plugins``."""
    return Path(os.environ.get("RERANK_PLUGINS_CACHE") or Path.home() / ".cache" / "rerank_plugins")


class OnnxModel:
    """An ONNX Runtime session that takes the tokenizer's numpy features and returns the first output."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(None, feeds)[0]


def default_threads() -> int:
    """``$RERANK_PLUGINS_THREADS`` if set, else torch's intra-op thread count (the cores available)."""
    env = os.environ.get("RERANK_PLUGINS_THREADS")  # see rerank_plugins.models._base.set_num_threads
    if env:
        return max(1, int(env))
    import torch

    return torch.get_num_threads()


def _export(hf_model: Any, tokenizer: Any, target: Path) -> None:
    import torch

    # A padded batch: with an all-ones mask the model's masking code takes a shortcut that tracing would bake in.
    sample = tokenizer(
        ["a query", "a much longer query for the trace"],
        ["a document", "another document"],
        padding=True,
        return_tensors="pt",
    )
    assert not bool(sample["attention_mask"].all()), "the trace sample must contain padding"
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    output = "logits" if type(hf_model).__name__.endswith("ForSequenceClassification") else "last_hidden_state"

    class Named(torch.nn.Module):
        """Fixes the argument order of the traced graph (tokenizers and forward() disagree on it)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs)))[0]

    previous = getattr(hf_model.config, "_attn_implementation", None)
    hf_model.set_attn_implementation("eager")  # a plain graph; sdpa's Python branches do not trace
    try:
        with torch.no_grad():
            torch.onnx.export(
                Named().eval(),
                tuple(sample[n] for n in names),
                str(target),
                input_names=names,
                output_names=[output],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, output: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
    finally:
        if previous is not None:
            hf_model.set_attn_implementation(previous)


FFN_OUTPUT = re.compile(r"layers?\.\d+/(output/dense|ffn/lin2|mlp/fc2|mlp/down_proj)/MatMul$")


def _outlier_matmuls(path: Path) -> list[str]:
    """Names of the FFN output projections, kept in fp32 by the int8 recipe."""
    import onnx

    return [
        node.name
        for node in onnx.load(str(path)).graph.node
        if node.op_type == "MatMul" and FFN_OUTPUT.search(node.name)
    ]


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        if staging.exists():
            staging.unlink()


def load_onnx(
    model_path: Path,
    hf_model: Any,
    tokenizer: Any,
    runtime: str,
    *,
    check: Callable[[Callable[[dict[str, np.ndarray]], np.ndarray]], dict[str, float]] | None = None,
    threads: int | None = None,
) -> OnnxModel:
    """The cached ONNX model for ``model_path`` (exported / quantized on first use).

    ``check(run) -> {"top10_overlap", "spearman"}`` measures an int8 runner against fp32; the int8 export is
    kept only if :func:`~rerank_plugins.models.runtimes.guard.require_agreement` accepts it.
    """
    if runtime not in ONNX_RUNTIMES:
        raise ValueError(f"runtime must be one of {ONNX_RUNTIMES}, got {runtime!r}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ImportError("runtime='onnx' needs onnxruntime and onnx: pip install 'rerank-plugins[fast]'") from error
    directory = cache_root() / "onnx" / model_fingerprint(model_path)
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = directory / "model.onnx"
    if not fp32.exists():
        logger.warning("Exporting %s to ONNX (once; cached in %s)", model_path, directory)
        _atomic(fp32, lambda staging: _export(hf_model, tokenizer, staging))
    if runtime == "onnx":
        return OnnxModel(fp32, threads)

    int8 = directory / "model-int8.onnx"
    report_path = directory / "int8-quality.json"
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logger.warning("Quantizing %s to int8 (once; cached in %s)", model_path, directory)
        staging = directory / f".int8-{uuid.uuid4().hex}.onnx"
        try:
            quantize_dynamic(
                str(fp32),
                str(staging),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=_outlier_matmuls(fp32),
            )
            candidate = OnnxModel(staging, threads)
            report = check(candidate) if check is not None else {"top10_overlap": 1.0, "spearman": 1.0, "queries": 0}
            require_agreement(report, f"int8 export of {model_path}")
            os.replace(staging, int8)
            report_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
        finally:
            if staging.exists():
                staging.unlink()
    return OnnxModel(int8, threads)


def clear_cache() -> None:
    """Delete every cached export (they are rebuilt on next use)."""
    shutil.rmtree(cache_root() / "onnx", ignore_errors=True)
