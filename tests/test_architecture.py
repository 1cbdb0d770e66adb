"""The import picture: every module sits on one floor and imports only from its own floor or below, without circles.

Read from the source with ``ast`` (imports inside functions count too: a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rerank_plugins"

FLOORS: list[tuple[str, ...]] = [
    ("schema", "_validation", "_files", "batching", "fusion", "data"),  # bottom: types, checks, files, data sets
    ("models",),  # backends: the only place touching sentence-transformers / torch / runtimes
    ("first_stage",),  # dense, lexical, hybrid first stages behind one interface
    ("rerank", "pipeline"),  # the reranking stage and the two-stage pipeline
    ("evaluation",),
    ("training",),
    ("adapter_common", "langchain", "llamaindex", "distributed", "serve"),  # adapters, Ray jobs, the HTTP server
    ("cli", "quickstart", "__init__"),  # top: the command, the demo, the package's facade
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _floor(module: str) -> int:
    relative = module.split(".")[1:] or ["__init__"]
    for number, names in enumerate(FLOORS):
        if relative[0] in names:
            return number
    raise AssertionError(f"{module} is on no floor: add it to FLOORS in {__file__}")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The rerank_plugins modules ``module`` imports (the most specific existing module for each name)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("rerank_plugins"):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}  # an edge to a package means its __init__


def test_every_module_is_on_a_floor():
    for module in _modules():
        _floor(module)


def test_no_module_imports_from_a_floor_above_its_own():
    upward = [
        f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _floor(target) > _floor(module)
    ]
    assert not upward, "imports that run upward:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize(
    ("planted_in", "source", "check", "message"),
    [
        ("models/lru.py", "from rerank_plugins.quickstart import run_quickstart\n", "upward", "run upward"),
        ("models/lru.py", "def f():\n    from rerank_plugins.training import recipes\n", "upward", "run upward"),
        ("schema.py", "def f():\n    from rerank_plugins._validation import check_query\n", "circle", "circles"),
    ],
)
def test_the_checks_catch_a_planted_import(monkeypatch, planted_in, source, check, message):
    """Control: a (lazy) upward import or a circle planted in the source makes the checks fail."""
    planted = PACKAGE / planted_in
    original = planted.read_text(encoding="utf-8")
    real_read_text = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: original + source if self == planted else real_read_text(self, *a, **k)
    )
    with pytest.raises(AssertionError, match=message):
        (test_no_module_imports_from_a_floor_above_its_own if check == "upward" else test_no_import_circles)()
