"""The README's main job, end to end, with numbers: `pytest -m slow` (CI runs it after the default suite).

Each run is the quickstart with its defaults (a real reranker trained within the demo's time budget), so it takes
about ten minutes per language on 2 cores. The first stage is deterministic, so its score must land on the
measured value. The reranker must have learned: alone it must rank clearly above what a reranker that learned
nothing gives (see LEARNED_NDCG); and the final pipeline (fused with a weight tuned on held-out training queries)
must not fall below its first stage by more than the noise of one tuning run.
"""

from __future__ import annotations

import pytest

from rerank_plugins.quickstart import run_quickstart

pytestmark = pytest.mark.slow

FIRST_STAGE_NDCG = {"en": 0.8212, "ko": 0.9576}
"""Measured on the bundled data with the quickstart's default first stages (hybrid, top 20; Korean BM25, top 10)."""
LEARNED_NDCG = {"en": 0.60, "ko": 0.55}
"""The reranker alone must reach these. With training broken on purpose (AdamW's step a no-op) it scored en 0.188,
ko 0.505, and this test failed; idle runs of the default recipes on 2 AVX2 cores scored en 0.750-0.779 (111-172
steps), ko 0.583-0.816 (43-75 steps: the Korean reranker barely leaves its plateau when steps are slow)."""
FUSED_TOLERANCE = 0.01
"""The fusion weight is chosen on held-out training queries, not on the test queries reported here."""


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_quickstart_end_to_end(tmp_path, capsys, lang):
    report = run_quickstart(tmp_path / "qs", lang=lang)
    metrics = report["metrics"]
    first = metrics["first_stage"]["ndcg@10"]
    assert first == pytest.approx(FIRST_STAGE_NDCG[lang], abs=0.005)
    assert metrics["reranker_only"]["ndcg@10"] >= LEARNED_NDCG[lang], "the reranker learned (almost) nothing"
    assert metrics["reranked"]["ndcg@10"] >= first - FUSED_TOLERANCE
    assert (tmp_path / "qs" / "report.png").exists() and (tmp_path / "qs" / "index" / "manifest.json").exists()
    out = capsys.readouterr().out
    assert "LangChain TwoStageRetriever" in out and "LlamaIndex TwoStageRetriever" in out


def test_adapt_without_labels_on_the_bundled_corpus(tmp_path, capsys):
    """`rerank-plugins adapt` on the bundled SciFact subset (labels unused), the packaged MiniLM, a short budget:
    the contracted layout, a guard decision that follows its rule, and a final pipeline whose held-out nDCG@10 is
    at least the base first stage's (what refusing guarantees)."""
    import json

    from rerank_plugins.cli import main
    from rerank_plugins.data import demo_data_path

    assert (
        main(["adapt", "--corpus", str(demo_data_path()), "--output", str(tmp_path / "out"), "--time-budget", "120"])
        == 0
    )
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    bi, cross = report["bi_encoder"], report["cross_encoder"]
    assert bi["kept"] == (bi["gain"] > bi["standard_error"])
    first, final = report["metrics"]["first_stage"]["ndcg@10"], report["metrics"]["reranked"]["ndcg@10"]
    assert first == pytest.approx(bi["adapted_ndcg@10"] if bi["kept"] else bi["base_ndcg@10"])
    tolerance = 1e-9  # the guard's mean and the report's mean sum the same per-query values in another order
    assert first >= bi["base_ndcg@10"] - tolerance and final >= first - tolerance, "never below the base"
    assert cross["kept"] == (final > first + tolerance)
    assert all((out / name).exists() for name in ("bi-encoder", "cross-encoder", "report.md", "report.png"))
    assert "Guard" in (out / "report.md").read_text() and "kept" in capsys.readouterr().out
