"""ONNX Runtime backends: fp32 matches torch, exports are cached by content, the int8 guard refuses bad exports."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rerank_plugins import BiEncoderBackend, CrossEncoderBackend  # noqa: E402
from rerank_plugins.models.runtimes import guard, onnx  # noqa: E402

DOCS = ["cancer gene risk", "heart blood dose " * 5, "brain immune virus", "", "seoul korea city " * 30]


def test_onnx_cross_encoder_matches_torch_and_flags_truncation(tiny_cross_path):
    torch_backend = CrossEncoderBackend(tiny_cross_path)
    onnx_backend = CrossEncoderBackend(tiny_cross_path, runtime="onnx")
    np.testing.assert_allclose(
        onnx_backend.score("cancer risk", DOCS), torch_backend.score("cancer risk", DOCS), atol=1e-4
    )
    assert [r.truncated for r in onnx_backend.rank("cancer", DOCS)] == [
        r.truncated for r in torch_backend.rank("cancer", DOCS)
    ]


def test_onnx_bi_encoder_matches_torch(tiny_bi_path):
    torch_backend = BiEncoderBackend(tiny_bi_path, cache_size=0)
    onnx_backend = BiEncoderBackend(tiny_bi_path, runtime="onnx", cache_size=0)
    np.testing.assert_allclose(onnx_backend.encode_documents(DOCS), torch_backend.encode_documents(DOCS), atol=1e-4)
    np.testing.assert_allclose(
        onnx_backend.encode_queries(["cancer"]), torch_backend.encode_queries(["cancer"]), atol=1e-4
    )


def test_export_is_cached_by_model_content(tiny_cross_path, tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_PLUGINS_CACHE", str(tmp_path))
    CrossEncoderBackend(tiny_cross_path, runtime="onnx").score("q", ["d"])
    exports = list((tmp_path / "onnx").glob("*/model.onnx"))
    assert len(exports) == 1
    stamp = exports[0].stat().st_mtime_ns
    CrossEncoderBackend(tiny_cross_path, runtime="onnx").score("q", ["d"])
    assert exports[0].stat().st_mtime_ns == stamp, "an unchanged model is not exported again"
    assert exports[0].parent.name == onnx.model_fingerprint(tiny_cross_path)


def test_int8_guard_refuses_an_export_that_ranks_differently(tiny_cross_path, tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_PLUGINS_CACHE", str(tmp_path))
    monkeypatch.setattr(
        onnx.OnnxModel,
        "__call__",
        lambda self, features: (
            np.random.default_rng(0).normal(size=(len(features["input_ids"]), 1))
            if "int8" in self.path.name
            else _real_call(self, features)
        ),
    )
    with pytest.raises(guard.QuantizationQualityError, match="refused"):
        CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("q", ["d"])
    assert not list(tmp_path.glob("onnx/*/model-int8.onnx")), "a refused export is not kept"


_real_call = onnx.OnnxModel.__call__


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_int8_export_runs_the_guard_and_is_kept_when_rankings_agree(
    tiny_cross_path, tiny_bi_path, tmp_path, monkeypatch, kind
):
    monkeypatch.setenv("RERANK_PLUGINS_CACHE", str(tmp_path))
    measured = []

    def agreement(reference, candidate, k=10):
        measured.append(len(reference))
        return {"top10_overlap": 1.0, "spearman": 1.0, "queries": len(reference)}

    monkeypatch.setattr(guard, "ranking_agreement", agreement)
    if kind == "cross":
        assert CrossEncoderBackend(tiny_cross_path, runtime="onnx-int8").score("cancer", DOCS).shape == (len(DOCS),)
    else:
        assert BiEncoderBackend(tiny_bi_path, runtime="onnx-int8").encode_documents(DOCS).shape[0] == len(DOCS)
    assert measured == [16], "the guard compared int8 with fp32 on the whole check set"
    assert list(tmp_path.glob("onnx/*/int8-quality.json"))
    import onnx as onnx_lib

    nodes = onnx_lib.load(str(next(tmp_path.glob("onnx/*/model-int8.onnx")))).graph.node
    assert any(n.op_type == "MatMulInteger" for n in nodes), "MatMul weights are int8"
    kept = [n.name for n in nodes if n.op_type == "MatMul" and onnx.FFN_OUTPUT.search(n.name)]
    assert len(kept) == 2, "each layer's FFN output projection stays fp32"


def test_ranking_agreement_and_spearman():
    a = np.arange(20, dtype=float)
    assert guard.ranking_agreement([a], [a]) == {"top10_overlap": 1.0, "spearman": 1.0, "queries": 1}
    assert guard.spearman(a, -a) == pytest.approx(-1.0)
    assert guard.ranking_agreement([a], [-a])["top10_overlap"] == 0.0
