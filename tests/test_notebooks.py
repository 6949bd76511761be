"""The example notebooks run from a clean kernel (what CI checks), and are committed without
outputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import EXAMPLES

NOTEBOOKS = EXAMPLES / "notebooks"
KERNEL = "transferlab-tests"


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter (the venv's python), in a folder of its own: works
    on a fresh machine, and a user's own "python3" kernel cannot be picked instead."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    doc = {"argv": argv, "display_name": "transferlab tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(doc), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return KERNEL


def _workdir(tmp_path: Path) -> Path:
    """``tmp/notebooks`` beside links to the example data, so the notebook's relative paths
    hold and what it writes (runs/) stays out of the repository."""
    for name in ("ahe-mini", "samples"):
        os.symlink(EXAMPLES / name, tmp_path / name)
    work = tmp_path / "notebooks"
    work.mkdir()
    return work


@pytest.mark.slow
def test_quickstart_runs_from_a_clean_kernel(tmp_path: Path, kernel: str) -> None:
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    work = _workdir(tmp_path)
    client = NotebookClient(
        nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    html = [
        out["data"]["text/html"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {})
    ]
    text = "".join(html)
    # the run, the history frame, the predictions and the leaderboard display as HTML
    assert "transferlab run:" in text and "Per-class results" in text
    assert "capitol-dome.jpg" in text and "Leaderboard" in text
    assert len(list((work / "runs").iterdir())) == 2  # the run and the experiment


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path.name
