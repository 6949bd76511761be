"""The import graph: no cycles (imports inside functions count too), nothing in the library
imports the CLI, and no inference module imports the training pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
INFERENCE = ("backends", "bundle", "evaluate", "export", "onnx_contract", "predict", "tta")


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "transferlab").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from pkg import sub`` depends on the submodule, not on the rest of pkg.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved and resolved != name:
                out.add(resolved)
    return out


GRAPH = {name: _imports(name, path, _modules()) for name, path in _modules().items()}


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_has_no_cycle() -> None:
    cycles = sorted(m for m in GRAPH if m in _reachable(m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_nothing_in_the_library_imports_the_cli() -> None:
    importers = sorted(
        m
        for m, deps in GRAPH.items()
        if not m.startswith("transferlab.cli") and m != "transferlab.__main__"
        if any(d.startswith("transferlab.cli") for d in deps)
    )
    assert not importers


@pytest.mark.parametrize("module", INFERENCE)
def test_inference_modules_do_not_reach_the_training_pipeline(module: str) -> None:
    assert "transferlab.pipeline" not in _reachable(f"transferlab.{module}")
