"""Framework imports stay inside the adapter packages; the core works with either framework missing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rerank_plugins"


def test_no_framework_import_outside_adapter_packages():
    pattern = re.compile(r"^\s*(from|import)\s+(langchain\w*|llama_index)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.parent.name not in ("langchain", "llamaindex") and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_core_imports_with_both_frameworks_missing():
    code = (
        "import sys\n"
        "for name in ('langchain_core', 'llama_index', 'llama_index.core'): sys.modules[name] = None\n"
        "import rerank_plugins, rerank_plugins.pipeline, rerank_plugins.first_stage, rerank_plugins.training\n"
        "import rerank_plugins.evaluation.evaluate, rerank_plugins.cli, rerank_plugins.quickstart\n"
        "for adapter in ('rerank_plugins.langchain', 'rerank_plugins.llamaindex'):\n"
        "    try:\n"
        "        __import__(adapter)\n"
        "    except ImportError as error:\n"
        "        assert 'pip install' in str(error), error\n"
        "    else:\n"
        "        raise AssertionError(adapter + ' imported without its framework')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bundled_demo_data_ships_with_its_notice():
    from rerank_plugins.data import demo_data_path

    data = demo_data_path()
    assert (data / "NOTICE.txt").read_text().count("CC BY 4.0") == 1
    assert {p.name for p in data.iterdir()} >= {"corpus.jsonl.gz", "queries.jsonl", "qrels", "NOTICE.txt"}


def test_source_is_ruff_clean():
    """The rule set in pyproject.toml ([tool.ruff]) holds: lint and format, sources, tests, benchmarks, examples."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    root = PACKAGE.parents[1]
    paths = ["src", "tests", "bench", "examples", "scripts"]
    lint = subprocess.run([ruff, "check", *paths], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    formatted = subprocess.run([ruff, "format", "--check", *paths], cwd=root, capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout


def test_core_imports_without_the_lexical_extra_and_lexical_use_names_it():
    code = (
        "import sys\n"
        "for name in ('bm25s', 'Stemmer', 'kiwipiepy'): sys.modules[name] = None\n"
        "import rerank_plugins, rerank_plugins.first_stage, rerank_plugins.cli, rerank_plugins.quickstart\n"
        "from rerank_plugins.first_stage import build_first_stage\n"
        "from rerank_plugins.schema import Document\n"
        "try:\n"
        "    build_first_stage('lexical', [Document('a text', '1')], analyzer='english')\n"
        "except ImportError as error:\n"
        '    assert "rerank-plugins[lexical]" in str(error), error\n'
        "    print('named the extra')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "named the extra" in result.stdout


def test_ray_is_imported_only_inside_functions_of_the_distributed_package():
    pattern = re.compile(r"^(\s*)(from|import)\s+ray\b", re.MULTILINE)
    found = {str(path.relative_to(PACKAGE)): pattern.findall(path.read_text()) for path in PACKAGE.rglob("*.py")}
    assert sorted(name for name, hits in found.items() if hits and not name.startswith("distributed/")) == []
    assert [name for name, hits in found.items() if any(indent == "" for indent, _ in hits)] == []  # lazily
    assert found["distributed/ray_env.py"]  # the one place that does


def test_core_imports_without_ray_and_the_ray_engine_names_the_extra():
    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"
        "import rerank_plugins, rerank_plugins.cli, rerank_plugins.distributed, rerank_plugins.first_stage.sharded\n"
        "from rerank_plugins.data import demo_data_path\n"
        "from rerank_plugins.distributed import build_index_ray\n"
        "try:\n"
        "    build_index_ray(demo_data_path(), 'unused', 'unused-model')\n"
        "except ImportError as error:\n"
        '    assert "rerank-plugins[ray]" in str(error), error\n'
        "    print('named the extra')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "named the extra"
