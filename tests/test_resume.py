"""A run killed with SIGKILL and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ARGS = [
    "--image-size",
    "64",
    "--batch-size",
    "4",
    "--head-epochs",
    "2",
    "--epochs",
    "3",
    "--seed",
    "3",
    "--quiet",
]


def _train(data: Path, out: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "transferlab",
        "train",
        str(data),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _epochs_done(run: Path) -> int:
    history = run / "history.csv"
    if not history.exists():
        return 0
    with history.open() as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _kill_after(proc: subprocess.Popen[bytes], run: Path, epochs: int) -> int:
    deadline = time.monotonic() + 240
    while _epochs_done(run) < epochs:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "training too slow to reach the kill point"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return _epochs_done(run)


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_after", "extra"),
    [
        (1, []),
        (
            3,
            [
                "--optimizer",
                "sgd",
                "--scheduler",
                "multistep",
                "--milestones",
                "1",
                "--augment",
                "strong",
                "--layer-decay",
                "0.8",
            ],
        ),
    ],
    ids=["in-head-warmup", "after-unfreeze-sgd-strong-aug-layer-decay"],
)
def test_killed_and_resumed_run_matches_uninterrupted(
    class_folders: Callable[..., Path], tmp_path: Path, kill_after: int, extra: list[str]
) -> None:
    data = class_folders(10)
    reference = _train(data, tmp_path / "ref", extra)
    assert reference.wait() == 0, reference.stderr.read().decode() if reference.stderr else ""

    killed = tmp_path / "killed"
    done = _kill_after(_train(data, killed, extra), killed, kill_after)
    assert not (killed / "metrics.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "transferlab", "train", "--resume", str(killed), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert done >= kill_after

    ref = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    got = load_file(str(killed / "model" / "model.safetensors"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), "weights differ after resume"
    assert _history(killed) == _history(tmp_path / "ref")


def test_resume_refuses_a_finished_run_and_a_non_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    (tmp_path / "run" / "metrics.json").write_text("{}")
    for target, message in ((tmp_path / "run", "already finished"), (tmp_path, "not a run")):
        proc = subprocess.run(
            [sys.executable, "-m", "transferlab", "train", "--resume", str(target)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr
