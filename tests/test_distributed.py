"""Training on 2 real processes (gloo on CPU) against 1 process with the same global batch.

The runs are chosen so that 1 and 2 processes do the same arithmetic up to the order of
float sums: no augmentation, no dropout, BatchNorm frozen (in inference mode, so it does
not depend on how the batch is split), 18 training images in global batches of 6 (every
step sees the same 6 images on 1 process as on 2 together). Their histories must agree
within TOLERANCE; test and val sets of 7 images make each process's shard padded, and the
gathered evaluation must still count every image exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import CLASSES, copy_photos, invoke

# |1-process - 2-process| of a loss or metric in history.csv (float sums in another order).
TOLERANCE = 1e-4

SAME_ARITHMETIC = [
    "--image-size", "32", "--batch-size", "6", "--seed", "1", "--augment", "none",
    "--bn", "frozen", "--set", "model.drop_rate=0", "--set", "train.label_smoothing=0",
]  # fmt: skip
SCRATCH = ["--model", "convnet1", "--strategy", "scratch", "--epochs", "2", *SAME_ARITHMETIC]


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung collective fails the test in a minute, not the runtime's ten."""
    monkeypatch.setenv("TRANSFERLAB_DIST_TIMEOUT", "60")


@pytest.fixture
def splits(tmp_path: Path) -> Path:
    """train/ 6 + val/ 2-3 + test/ 2-3 photos per class: 18, 7 and 7 images."""
    root = tmp_path / "data"
    for i, label in enumerate(CLASSES):
        copy_photos(label, root / "train" / label, 6)
        copy_photos(label, root / "val" / label, 3 if i == 0 else 2, offset=6)
        copy_photos(label, root / "test" / label, 3 if i == 1 else 2, offset=9)
    return root


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def _assert_same_history(one: Path, two: Path) -> None:
    a, b = _history(one), _history(two)
    assert [r["phase"] for r in a] == [r["phase"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"):
            assert abs(float(ra[key]) - float(rb[key])) <= TOLERANCE, (key, ra, rb)


def _predicted_files(run: Path) -> list[str]:
    with (run / "predictions.csv").open(encoding="utf-8") as fh:
        return sorted(row["path"] for row in csv.DictReader(fh))


def _train(data: Path, out: Path, *args: str) -> None:
    code, _, stderr = invoke("train", data, "--out", out, "--quiet", *args)
    assert code == 0, stderr


def test_two_processes_write_one_run_that_matches_one_process(splits: Path, tmp_path: Path) -> None:
    _train(splits, tmp_path / "one", *SCRATCH)
    _train(splits, tmp_path / "two", *SCRATCH, "--devices", "2")
    one, two = tmp_path / "one", tmp_path / "two"
    # exactly one run folder's files: no second report, bundle or checkpoint per rank
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(list(two.rglob("report.html"))) == 1
    assert len(list(two.rglob("model.safetensors"))) == 1
    _assert_same_history(one, two)
    # the gathered evaluation: every one of the 7 test images once (8 were computed)
    files = _predicted_files(two)
    assert len(files) == len(set(files)) == 7
    assert files == _predicted_files(one)
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["training"]["processes"] == 2 and m1["training"]["processes"] == 1
    assert sum(c["support"] for c in m2["per_class"].values()) == 7
    assert abs(m1["accuracy"] - m2["accuracy"]) <= TOLERANCE


@pytest.mark.slow
def test_two_stage_freeze_then_unfreeze_on_two_processes(splits: Path, tmp_path: Path) -> None:
    """Head epochs on cached features (extracted sharded, gathered), then the unfreeze
    under DDP, which is wrapped again for the phase that trains the backbone."""
    args = ["--strategy", "two-stage", "--head-epochs", "1", "--epochs", "1", *SAME_ARITHMETIC]
    _train(splits, tmp_path / "one", *args)
    _train(splits, tmp_path / "two", *args, "--devices", "2")
    _assert_same_history(tmp_path / "one", tmp_path / "two")
    phases = [r["phase"] for r in _history(tmp_path / "two")]
    assert len(set(phases)) == 2, phases


@pytest.mark.slow
def test_grad_accum_on_two_processes_matches_the_bigger_batch(splits: Path, tmp_path: Path) -> None:
    """2 processes x 3 images x 2 accumulated batches = one step over 12 images; the
    optimizer steps only every other batch."""
    _train(splits, tmp_path / "big", *SCRATCH, "--batch-size", "12")
    _train(splits, tmp_path / "accum", *SCRATCH, "--devices", "2", "--grad-accum", "2")
    history = _history(tmp_path / "accum")
    assert len(history) == 2
    with (tmp_path / "accum" / "batches.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3  # batches per epoch of one process: 9 images / 3


def _epochs_done(run: Path) -> int:
    path = run / "history.csv"
    return len(_history(run)) if path.exists() else 0


def _worker_of(pid: int) -> int:
    """The spawned worker process (rank 1) among ``pid``'s children."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            return int(child)
    raise AssertionError(f"no worker among {children}")


@pytest.mark.slow
def test_a_killed_rank_stops_the_run_and_it_resumes_on_one_process(
    splits: Path, tmp_path: Path
) -> None:
    """kill -9 of rank 1 after an epoch: rank 0 stops at once (one line naming the process
    and the resume command, exit 2), and the last checkpoint continues on 1 process (with
    the warning that only the same count is bit-identical)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "transferlab", "train", str(splits), "--out", str(out)]
    args = [*SCRATCH, "--epochs", "8", "--devices", "2", "--quiet"]
    proc = subprocess.Popen([*cmd, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _epochs_done(out) < 1:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "too slow to reach the first checkpoint"
        time.sleep(0.05)
    os.kill(_worker_of(proc.pid), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "process 1" in errors[0] and "--resume" in errors[0], stderr
    assert "Traceback" not in stderr
    assert not (out / "metrics.json").exists() and _epochs_done(out) < 8

    from transferlab.pipeline import resume_run

    result = resume_run(out, devices="1")
    assert result.metrics["training"]["processes"] == 1
    assert [int(r["epoch"]) for r in _history(out)] == list(range(1, 9))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "4096"], "--devices 4096 asks for more CPU cores"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a GPU"),
        (["--devices", "2", "--batch-size", "5"], "must split evenly"),
        (["--devices", "2", "--sync-bn", "--device", "cpu"], "--sync-bn needs GPUs"),
        (["--devices", "two"], "--devices must be a whole number"),
        (["--devices", "2", "--set", "train.time_budget=60"], "--time-budget plans"),
        pytest.param(
            ["--device", "cuda"],
            "this machine has no GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
    ],
)
def test_bad_device_requests_get_one_line(
    splits: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, stderr = invoke("train", splits, "--out", tmp_path / "r", *SCRATCH, *args)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr
    assert not (tmp_path / "r").exists()


def test_a_launcher_that_disagrees_with_devices(
    splits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    code, _, stderr = invoke("train", splits, "--out", tmp_path / "r", *SCRATCH, "--devices", "2")
    assert code == 2
    assert "WORLD_SIZE=3" in stderr and "--devices is 2" in stderr


@pytest.mark.slow
def test_torchrun_processes_join_as_one_run(splits: Path, tmp_path: Path) -> None:
    """Under a launcher every process runs the command and joins (no workers started);
    the others print nothing and write nothing."""
    out = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            *(str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "transferlab"),
            *("train", str(splits), "--out", str(out), *SCRATCH, "--devices", "2"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("run saved to") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["processes"] == 2 and metrics["num_images"] == 7
