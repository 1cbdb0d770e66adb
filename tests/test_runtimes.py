"""Every runtime scores like torch fp32 within its stated tolerance; reduced precision is guarded; "fast" is fastest."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rerank_plugins import BiEncoderBackend, CrossEncoderBackend  # noqa: E402
from rerank_plugins.models.runtimes import guard, onnx, select  # noqa: E402

DOCS = ["cancer gene risk", "heart blood dose " * 5, "brain immune virus", "", "seoul korea city " * 30]
BF16_TOLERANCE = 3e-2
"""bf16 keeps 8 mantissa bits (relative error ~2^-8 per product); scores of the tiny model are O(1)."""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_PLUGINS_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_fp32_runtimes_score_like_torch(tiny_cross_path, tiny_bi_path, cache, runtime):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    reference = CrossEncoderBackend(tiny_cross_path).score("cancer risk", DOCS)
    np.testing.assert_allclose(
        CrossEncoderBackend(tiny_cross_path, runtime=runtime).score("cancer risk", DOCS), reference, atol=1e-4
    )
    np.testing.assert_allclose(
        BiEncoderBackend(tiny_bi_path, runtime=runtime, cache_size=0).encode_documents(DOCS),
        BiEncoderBackend(tiny_bi_path, cache_size=0).encode_documents(DOCS),
        atol=1e-4,
    )


def test_openvino_bf16_scores_like_torch_within_bf16_precision(tiny_cross_path, cache, monkeypatch):
    pytest.importorskip("openvino")
    from rerank_plugins.models.runtimes.openvino import OpenVinoModel

    monkeypatch.setattr(guard, "ranking_agreement", lambda ref, cand, k=10: {"top10_overlap": 1, "spearman": 1})
    backend = CrossEncoderBackend(tiny_cross_path, runtime="openvino-bf16")
    scores = backend.score("cancer risk", DOCS)
    assert isinstance(backend._onnx, OpenVinoModel) and backend._onnx.precision == "bf16"
    reference = CrossEncoderBackend(tiny_cross_path).score("cancer risk", DOCS)
    np.testing.assert_allclose(scores, reference, atol=BF16_TOLERANCE * max(1.0, np.abs(reference).max()))


def _broken_bf16(monkeypatch):
    from rerank_plugins.models.runtimes.openvino import OpenVinoModel

    real = OpenVinoModel.__call__
    noise = np.random.default_rng(0)

    def call(self, features):
        if self.precision == "bf16":  # a deliberately broken reduced-precision model: scores are noise
            return noise.normal(size=(len(features["input_ids"]), 1)).astype(np.float32)
        return real(self, features)

    monkeypatch.setattr(OpenVinoModel, "__call__", call)


def test_guard_refuses_a_broken_bf16_model_and_remembers_its_measurement(tiny_cross_path, cache, monkeypatch):
    pytest.importorskip("openvino")
    _broken_bf16(monkeypatch)
    with pytest.raises(guard.QuantizationQualityError, match="refused"):
        CrossEncoderBackend(tiny_cross_path, runtime="openvino-bf16").score("q", ["d"])
    reports = list(cache.glob("onnx/*/openvino-bf16-quality.json"))
    assert len(reports) == 1
    measured = []
    monkeypatch.setattr(guard, "ranking_agreement", lambda *a, **k: measured.append(1))
    with pytest.raises(guard.QuantizationQualityError, match="refused"):
        CrossEncoderBackend(tiny_cross_path, runtime="openvino-bf16").score("q", ["d"])
    assert not measured, "the stored measurement is reused, not measured again"


def _timed(monkeypatch, seconds):
    """Make "fast" see ``seconds`` per runtime instead of timing; records which runtimes it timed."""
    timed = []

    def fake(forwards, batch):
        timed.append(sorted(forwards))
        return {name: seconds[name] for name in forwards}

    monkeypatch.setattr(select, "timings", fake)
    return timed


def test_fast_never_keeps_a_refused_runtime_even_when_it_is_fastest(tiny_cross_path, cache, monkeypatch):
    pytest.importorskip("openvino")
    _broken_bf16(monkeypatch)
    monkeypatch.setattr(select, "fast_candidates", lambda: ["openvino-bf16", "openvino"])
    timed = _timed(monkeypatch, {"openvino-bf16": 0.1, "openvino": 0.5, "torch": 1.0})
    backend = CrossEncoderBackend(tiny_cross_path, runtime="fast")
    scores = backend.score("cancer risk", DOCS)
    assert backend.effective_runtime == "openvino" and timed == [["openvino", "torch"]]
    np.testing.assert_allclose(scores, CrossEncoderBackend(tiny_cross_path).score("cancer risk", DOCS), atol=1e-4)


@pytest.mark.parametrize(
    ("fastest", "kind"), [("openvino", "OpenVinoModel"), ("onnx", "OnnxModel"), ("torch", "NoneType")]
)
def test_fast_keeps_the_fastest_runtime_and_remembers_the_choice(tiny_cross_path, cache, monkeypatch, fastest, kind):
    pytest.importorskip("openvino")
    monkeypatch.setattr(select, "fast_candidates", lambda: ["openvino", "onnx"])
    seconds = {"torch": 1.0, "openvino": 0.6, "onnx": 0.8, fastest: 0.1}
    timed = _timed(monkeypatch, seconds)
    backend = CrossEncoderBackend(tiny_cross_path, runtime="fast")
    backend.score("q", ["d"])
    assert backend.effective_runtime == fastest and type(backend._onnx).__name__ == kind
    again = CrossEncoderBackend(tiny_cross_path, runtime="fast")
    np.testing.assert_allclose(again.score("cancer risk", DOCS), backend.score("cancer risk", DOCS), atol=1e-6)
    assert again.effective_runtime == fastest and len(timed) == 1, "the stored choice is used without timing again"

    machine = {**select.machine_key(), "cpu": "another CPU"}
    monkeypatch.setattr(select, "machine_key", lambda: machine)
    CrossEncoderBackend(tiny_cross_path, runtime="fast").score("q", ["d"])
    assert len(timed) == 2, "another machine measures again"


def test_fast_times_every_accepted_runtime_and_records_the_fastest(tiny_bi_path, cache):
    pytest.importorskip("openvino")
    backend = BiEncoderBackend(tiny_bi_path, runtime="fast", cache_size=0)
    np.testing.assert_allclose(
        backend.encode_documents(DOCS), BiEncoderBackend(tiny_bi_path, cache_size=0).encode_documents(DOCS), atol=3e-2
    )
    record = json.loads(next(cache.glob(f"onnx/*/{select.CHOICE_FILE}")).read_text())
    seconds = record["seconds_per_batch"]
    assert {"torch", "openvino", "onnx"} <= set(seconds) <= {"torch", *select.fast_candidates()}  # fp32: never refused
    assert all(s > 0 for s in seconds.values())
    assert record["runtime"] == backend.effective_runtime == min(seconds, key=seconds.get)
    assert record["batch_shape"][0] == len(guard.check_set(queries=1)[0][1])


def test_fast_tries_bf16_only_where_the_cpu_computes_it(monkeypatch):
    pytest.importorskip("openvino")
    from rerank_plugins.models.runtimes import openvino

    monkeypatch.setattr(openvino, "native_bf16", lambda: False)
    assert select.fast_candidates() == ["onnx-int8", "openvino", "onnx"]
    monkeypatch.setattr(openvino, "native_bf16", lambda: True)
    assert "openvino-bf16" in select.fast_candidates()


@pytest.mark.parametrize(
    ("runtime", "module", "extra"),
    [("openvino", "openvino", "openvino"), ("openvino-bf16", "openvino", "openvino"), ("onnx", "onnxruntime", "fast")],
)
def test_a_missing_package_names_the_extra(tiny_cross_path, cache, monkeypatch, runtime, module, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(ImportError, match=rf"{module!r} package.*rerank-plugins\[{extra}\]"):
        CrossEncoderBackend(tiny_cross_path, runtime=runtime).score("q", ["d"])


def test_fast_without_any_runtime_package_runs_torch(tiny_cross_path, cache, monkeypatch):
    real = importlib.util.find_spec
    missing = {"openvino", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    backend = CrossEncoderBackend(tiny_cross_path, runtime="fast")
    np.testing.assert_array_equal(
        backend.score("cancer", DOCS), CrossEncoderBackend(tiny_cross_path).score("cancer", DOCS)
    )
    assert backend.effective_runtime == "torch" and backend._onnx is None


def test_int8_refusal_is_remembered_without_quantizing_again(tiny_cross_path, cache, monkeypatch):
    monkeypatch.setattr(guard, "ranking_agreement", lambda *a, **k: {"top10_overlap": 0.5, "spearman": 0.5})
    with pytest.raises(guard.QuantizationQualityError):
        CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    import onnxruntime.quantization

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", lambda *a, **k: pytest.fail("quantized again"))
    with pytest.raises(guard.QuantizationQualityError, match="0.500"):
        CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    assert onnx.INT8_RECIPE in next(cache.glob("onnx/*/int8-quality.json")).read_text()


@pytest.fixture()
def measured(monkeypatch) -> list[int]:
    """Each guard measurement, recorded (the query count), with rankings that always agree."""
    calls: list[int] = []

    def agreement(reference, candidate, k=10):
        calls.append(len(reference))
        return {"top10_overlap": 1.0, "spearman": 1.0}

    monkeypatch.setattr(guard, "ranking_agreement", agreement)
    return calls


def test_a_guard_report_from_another_machine_is_measured_again(tiny_cross_path, cache, monkeypatch, measured):
    from rerank_plugins.models.runtimes import machine

    CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    assert len(measured) == 1, "the same machine reuses its measurement"
    other = {**machine.cpu_and_versions(), "cpu_flags_sha1": "flags of another CPU"}
    monkeypatch.setattr(onnx, "cpu_and_versions", lambda: other)
    CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    assert len(measured) == 2, "int8 numerics depend on the CPU's instruction set: another CPU measures again"
    report = json.loads(next(cache.glob("onnx/*/int8-quality.json")).read_text(encoding="utf-8"))
    assert report["machine"] == other


def test_a_guard_report_from_an_older_check_set_is_measured_again(tiny_cross_path, cache, measured):
    """A measurement belongs to the check set it was made on (Korean questions joined it in version 2)."""
    CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    report_path = next(cache.glob("onnx/*/int8-quality.json"))
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["check_set"] == guard.CHECK_SET_VERSION
    report_path.write_text(json.dumps({**report, "check_set": guard.CHECK_SET_VERSION - 1}), encoding="utf-8")
    CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    assert len(measured) == 2
