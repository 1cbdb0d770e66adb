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

from rerank_plugins._files import cache_root, write_atomically, write_json
from rerank_plugins.models.resolve import model_fingerprint
from rerank_plugins.models.runtimes.guard import CHECK_SET_VERSION, require_agreement
from rerank_plugins.models.runtimes.machine import cpu_and_versions

logger = logging.getLogger(__name__)

ONNX_RUNTIMES: tuple[str, ...] = ("onnx", "onnx-int8")


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


def exported_onnx(model_path: Path, hf_model: Any, tokenizer: Any) -> Path:
    """The cached fp32 ONNX export of ``model_path`` (exported on first use); every runtime starts from it."""
    directory = export_directory(model_path)
    fp32 = directory / "model.onnx"
    if not fp32.exists():
        logger.warning("Exporting %s to ONNX (once; cached in %s)", model_path, directory)
        write_atomically(fp32, lambda staging: _export(hf_model, tokenizer, staging))
    return fp32


def export_directory(model_path: Path) -> Path:
    """Where this model's exports and guard reports live (keyed by the model's content)."""
    directory = cache_root() / "onnx" / model_fingerprint(model_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


Check = Callable[[Callable[[dict[str, np.ndarray]], np.ndarray]], dict[str, float]]
"""``check(run) -> {"top10_overlap", "spearman", "queries"}``: a candidate runner's rankings against fp32."""


def guarded(report_path: Path, recipe: str, measure: Callable[[], dict[str, float]], what: str) -> dict[str, float]:
    """The guard's measurement for ``recipe`` (cached in ``report_path``), after requiring agreement.

    The measurement, not the verdict, is cached: a refused recipe is refused again at once on the next load
    (no second quantization), and the thresholds in force are the ones applied. It is reused only on the machine
    that made it (:mod:`~rerank_plugins.models.runtimes.machine`): the int8 export of a reranker trained by the same
    command agreed with fp32 at Spearman 0.9897 (refused) on two Intel Xeons and 0.9917 (accepted) on an AMD EPYC.
    """
    machine = cpu_and_versions()
    report = None
    if report_path.exists():
        stored = json.loads(report_path.read_text(encoding="utf-8"))
        same = (stored.get("recipe"), stored.get("machine"), stored.get("check_set"))
        report = stored if same == (recipe, machine, CHECK_SET_VERSION) else None
    if report is None:
        report = {**measure(), "recipe": recipe, "machine": machine, "check_set": CHECK_SET_VERSION}
        write_json(report_path, report)
    require_agreement(report, what)
    return report


def require_package(module: str, runtime: str, extra: str) -> None:
    """Raise an ImportError naming the extra to install when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"runtime={runtime!r} needs the {module!r} package, which is not installed: "
            f"pip install 'rerank-plugins[{extra}]'"
        )


INT8_RECIPE = "ort-dynamic-int8:MatMul:per-channel:ffn-output-fp32"


def load_onnx(
    model_path: Path,
    hf_model: Any,
    tokenizer: Any,
    runtime: str,
    *,
    check: Check | None = None,
    threads: int | None = None,
) -> OnnxModel:
    """The cached ONNX model for ``model_path`` (exported / quantized on first use).

    The int8 export is kept only if :func:`~rerank_plugins.models.runtimes.guard.require_agreement` accepts
    ``check``'s measurement of it against fp32.
    """
    if runtime not in ONNX_RUNTIMES:
        raise ValueError(f"runtime must be one of {ONNX_RUNTIMES}, got {runtime!r}")
    require_package("onnxruntime", runtime, "fast")
    require_package("onnx", runtime, "fast")
    fp32 = exported_onnx(model_path, hf_model, tokenizer)
    if runtime == "onnx":
        return OnnxModel(fp32, threads)

    directory = fp32.parent
    int8 = directory / "model-int8.onnx"
    report_path = directory / "int8-quality.json"
    what = f"int8 export of {model_path}"
    if int8.exists():
        guarded(report_path, INT8_RECIPE, lambda: _measure(check, OnnxModel(int8, threads)), what)
        return OnnxModel(int8, threads)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = directory / f".int8-{uuid.uuid4().hex}.onnx"
    try:

        def measure() -> dict[str, float]:
            logger.warning("Quantizing %s to int8 (once; cached in %s)", model_path, directory)
            quantize_dynamic(
                str(fp32),
                str(staging),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=_outlier_matmuls(fp32),
            )
            return _measure(check, OnnxModel(staging, threads))

        guarded(report_path, INT8_RECIPE, measure, what)
        if staging.exists():
            os.replace(staging, int8)
        elif not int8.exists():  # accepted from a stored report, but the model file is gone: quantize again
            report_path.unlink()
            return load_onnx(model_path, hf_model, tokenizer, runtime, check=check, threads=threads)
    finally:
        if staging.exists():
            staging.unlink()
    return OnnxModel(int8, threads)


def _measure(check: Check | None, candidate: Callable[[dict[str, np.ndarray]], np.ndarray]) -> dict[str, float]:
    return check(candidate) if check is not None else {"top10_overlap": 1.0, "spearman": 1.0, "queries": 0}


def clear_cache() -> None:
    """Delete every cached export (they are rebuilt on next use)."""
    shutil.rmtree(cache_root() / "onnx", ignore_errors=True)
