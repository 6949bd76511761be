"""Every out-of-range option of predict, evaluate, export, serve and models: one line,
exit code 2, before any work is done; never an "unexpected" crash (exit 1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trained_model import held_out_photos
from transferlab.cli import app


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port already taken: a serve row whose option slipped through fails to bind (exit 1)
    instead of serving for good."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


OUT = ["{run}", "--out", "{out}"]

# (arguments after the command; {run}, {photo}, {data}, {port} are filled in) -> the option
# the one-line error must name.
ROWS: list[tuple[str, list[str], str]] = [
    ("predict", ["{run}", "{photo}", "--top-k", "0"], "--top-k"),
    ("predict", ["{run}", "{photo}", "--top-k", "-3"], "--top-k"),
    ("predict", ["{run}", "{photo}", "--tta", "bogus"], "--tta"),
    ("predict", ["{run}", "{photo}", "--backend", "bogus"], "--backend"),
    ("evaluate", ["{run}", "--data", "{data}", "--split", "train"], "--split"),
    ("evaluate", ["{run}", "--data", "{data}", "--tta", "bogus"], "--tta"),
    ("evaluate", ["{run}", "--data", "{data}", "--backend", "bogus"], "--backend"),
    ("evaluate", ["{run}", "--data", "{data}/nowhere"], "nowhere"),
    ("export", [*OUT, "--format", "bogus"], "--format"),
    ("export", [*OUT, "--quantize", "int4"], "--quantize"),
    ("export", [*OUT, "--format", "torchscript", "--quantize", "int8"], "--quantize"),
    ("export", [*OUT, "--format", "bundle"], "--prune"),
    ("export", [*OUT, "--prune", "1.5"], "--prune"),
    ("export", [*OUT, "--prune", "-0.1"], "--prune"),
    ("export", [*OUT, "--prune", "0.3", "--finetune-epochs", "-1"], "--finetune-epochs"),
    ("export", [*OUT, "--finetune-epochs", "2"], "--prune"),
    ("serve", ["{run}", "--port", "70000"], "--port"),
    ("serve", ["{run}", "--port", "-1"], "--port"),
    ("serve", ["{run}", "--port", "{port}", "--max-batch", "0"], "--max-batch"),
    ("serve", ["{run}", "--port", "{port}", "--batch-window-ms", "-1"], "--batch-window-ms"),
    ("serve", ["{run}", "--port", "{port}", "--top-k", "0"], "--top-k"),
    ("serve", ["{run}", "--port", "{port}", "--max-upload-mb", "0"], "--max-upload-mb"),
    ("serve", ["{run}", "--port", "{port}", "--max-pixels", "-2"], "--max-pixels"),
    ("serve", ["{run}", "--port", "{port}", "--threads", "0"], "--threads"),
    ("serve", ["{run}", "--port", "{port}", "--threads", "-4"], "--threads"),
    ("serve", ["{run}", "--port", "{port}", "--tta", "bogus"], "--tta"),
    ("serve", ["{run}", "--port", "{port}", "--backend", "bogus"], "--backend"),
    ("models", ["--filter", "[unclosed"], "--filter"),
    ("models", ["--offline", "--filter", "no-such-model*"], "--filter"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "args", "option"),
    ROWS,
    ids=[f"{c} {' '.join(a for a in args if a not in OUT)}" for c, args, _ in ROWS],
)
def test_an_out_of_range_option_is_one_line_and_exit_2(
    run: Path, tmp_path: Path, busy_port: int, command: str, args: list[str], option: str
) -> None:
    values = {
        "run": run,
        "photo": held_out_photos("altar", 1)[0],
        "data": run.parent / "trained-run-data",
        "out": tmp_path / "export.onnx",
        "port": busy_port,
    }
    result = CliRunner().invoke(app, [command, *(a.format(**values) for a in args)])
    err = result.stderr.strip()
    assert result.exit_code == 2, f"exit {result.exit_code}: {err or result.stdout}"
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "unexpected" not in err, err
    assert option in err, err
    assert not (tmp_path / "export.onnx").exists()
