"""``train_run`` / ``resume_run``: everything is checked before a file is written, a run that
never finished an epoch can start again, ``metrics.json`` is whole or absent, and
``data.num_workers`` reaches the decoding of every epoch."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import bad_files
from transferlab.cli import app
from transferlab.config import RunConfig, from_dict
from transferlab.data import store
from transferlab.data.transforms import Preprocessing
from transferlab.engine import Callback
from transferlab.errors import ConfigError
from transferlab.models.registry import resolve_preprocessing
from transferlab.pipeline import resume_run, train_run
from transferlab.setup import resolve_config

FAST = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8"]
CPU = ["--device", "cpu", "--seed", "0"]


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stderr


def config(data: Path, **train: Any) -> RunConfig:
    return from_dict(
        {
            "data": {"path": str(data)},
            "model": {"image_size": 64},
            "train": {"epochs": 1, "head_epochs": 1, "batch_size": 8, "device": "cpu", **train},
        }
    )


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_class_without_one_readable_image_stops_before_anything_is_written(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    data = class_folders(per_class=4, classes=("altar", "dome(inner)"))
    bad_files(data / "apse")  # a class folder of three unreadable files, sorted in between
    code, err = invoke("train", data, "--out", tmp_path / "run", *FAST, *CPU)
    assert code == 2, err
    assert err.startswith("error: class 'apse' has no readable image: all 3 of its files")
    assert "remove the class" in err and len(err.strip().splitlines()) == 1
    assert files_in(tmp_path / "run") == []


def test_a_failed_start_leaves_nothing_and_the_corrected_command_runs(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    data, out = class_folders(per_class=4), tmp_path / "run"
    top = ["--strategy", "top-n", "--trainable-groups"]
    code, err = invoke("train", data, "--out", out, *top, "99", *FAST, *CPU)
    assert code == 2 and "--trainable-groups 99 is out of range" in err, err
    assert files_in(out) == []  # no config.yaml, split.csv or batches.csv
    code, err = invoke("train", data, "--out", out, *top, "1", *FAST, *CPU)
    assert code == 0, err
    assert (out / "metrics.json").is_file()


class StopInFirstEpoch(Callback):
    """Ctrl-C after the first batch: the run stops before its first checkpoint."""

    def on_batch_end(self, loss: float) -> None:
        raise KeyboardInterrupt


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_a_run_stopped_in_its_first_epoch_is_started_again(
    class_folders: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, out = class_folders(per_class=4), tmp_path / "run"
    cfg = config(data, strategy="full", batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, out, [StopInFirstEpoch()])
    assert {"config.yaml", "split.csv", "batches.csv"} <= set(files_in(out))
    assert not (out / "checkpoints" / "last.pt").exists()
    with pytest.raises(ConfigError, match="start it again with the same train command"):
        resume_run(out)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        result = train_run(cfg, out)
    assert "never finished an epoch; starting it again" in caplog.text
    assert result.metrics["training"]["epochs"] == 1
    # The stopped attempt's batch is gone: 6 training images in batches of 2, one epoch.
    assert len(_rows(out / "batches.csv")) == 3
    with pytest.raises(ConfigError, match=r"already holds a run \(finished\)"):
        train_run(cfg, out)


def test_a_crash_while_writing_metrics_json_leaves_a_run_to_resume(
    class_folders: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, out = class_folders(per_class=4), tmp_path / "run"
    real = Path.write_text

    def disk_full(path: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if path.name.startswith((".metrics.", "metrics.")):  # metrics.json or its temporary
            real(path, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", disk_full)
        with pytest.raises(OSError, match="No space left"):
            train_run(config(data, strategy="linear-probe"), out)
    assert not any("metrics" in name for name in files_in(out))  # no half file
    resumed = resume_run(out)
    assert json.loads((out / "metrics.json").read_text("utf-8")) == resumed.metrics


def test_resolved_config_is_what_the_run_saves(
    class_folders: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = class_folders(per_class=4)
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(
        {
            "data": {"path": "data"},
            "model": {"name": "convnet1"},
            "train": {"strategy": "scratch", "feature_cache_dir": "cache", "epochs": 1},
        }
    )
    resolved = resolve_config(cfg)
    assert resolved.data.path == str(data.resolve())
    assert resolved.train.feature_cache_dir == str((tmp_path / "cache").resolve())
    assert resolved.model.image_size == resolve_preprocessing("convnet1").input_size
    assert (resolved.model.weights, resolved.augment.preset) == ("none", "light")
    assert resolve_config(resolved) == resolved


def _decoding_processes(monkeypatch: pytest.MonkeyPatch, log: Path) -> Callable[[], list[int]]:
    """From now on, every decode notes its process id in ``log`` (worker processes are
    forked, so they decode with the noting function too)."""
    real = store._decode

    def decode(path: Path, prep: Preprocessing, side: int | None = None) -> Any:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{os.getpid()}\n")
        return real(path, prep, side)

    monkeypatch.setattr(store, "_decode", decode)
    return lambda: [int(v) for v in log.read_text(encoding="utf-8").split()]


@pytest.mark.parametrize("workers", [0, 2])
def test_num_workers_decode_a_run_over_memory_cache_mb_once_in_worker_processes(
    class_folders: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    data = class_folders(per_class=4)
    monkeypatch.setenv("TRANSFERLAB_IMAGE_CACHE", str(tmp_path / "cache"))
    cfg = from_dict(
        {
            "data": {"path": str(data), "num_workers": workers, "memory_cache_mb": 0},
            "model": {"image_size": 64},
            "train": {"strategy": "full", "epochs": 2, "batch_size": 4, "device": "cpu"},
        }
    )
    pids = _decoding_processes(monkeypatch, tmp_path / "pids.log")
    train_run(cfg, tmp_path / "run")
    here = [p for p in pids() if p == os.getpid()]
    elsewhere = [p for p in pids() if p != os.getpid()]
    # The 12 images are decoded once, into the disk store, whatever the epochs and the
    # evaluations that follow: by the worker processes when there are workers.
    assert (len(here), len(elsewhere)) == ((0, 12) if workers else (12, 0))
    assert len(set(elsewhere)) <= workers
