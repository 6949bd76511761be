"""Optional trackers: names, the one-line error without the library, and real TensorBoard and
MLflow logs driven through the engine's callback hooks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from transferlab.config import TrainConfig
from transferlab.data.augment import PRESETS
from transferlab.data.discover import discover
from transferlab.data.split import stratified_split
from transferlab.data.store import decode_all
from transferlab.engine import Callback, EpochRecord, fit, load_checkpoint
from transferlab.errors import ConfigError, TransferlabError
from transferlab.finetune import Phase
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.trackers import (
    MLflowLogger,
    TensorBoardLogger,
    check_loggers,
    final_metrics,
    finish_run,
    make_loggers,
)

METRICS = {
    "split": "test",
    "accuracy": 0.75,
    "macro_f1": 0.7,
    "skipped_files": 0,
    "per_class": {"dome(inner)": {"f1": 0.9}, "apse": {"f1": 0.5}},
}


def _drive(callbacks: list, run_dir: Path) -> None:
    """What ``fit`` does with its callbacks, for two epochs of three batches."""
    (run_dir / "config.yaml").write_text("train:\n  lr: 0.001\nmodel:\n  name: m\n", "utf-8")
    (run_dir / "history.csv").write_text("epoch\n1\n2\n", encoding="utf-8")
    phases = [
        SimpleNamespace(name=name, to_dict=lambda name=name: {"name": name, "epochs": 1})
        for name in ("head", "finetune")
    ]
    for cb in callbacks:
        cb.on_fit_start(phases)
    for epoch, phase in ((1, phases[0]), (2, phases[-1])):
        for cb in callbacks:
            cb.on_epoch_start(phase, epoch, 3)
        for loss in (1.0, 0.9, 0.8):
            for cb in callbacks:
                cb.on_batch_end(loss / epoch)
        record = EpochRecord(epoch, phase.name, 0.9 / epoch, 1.0, 0.5, 0.4, 1e-3, 1.5)
        for cb in callbacks:
            cb.on_epoch_end(record)
    for cb in callbacks:
        cb.on_fit_end()
    (run_dir / "metrics.json").write_text("{}", encoding="utf-8")
    finish_run(callbacks, METRICS)


def test_names_and_csv(tmp_path: Path) -> None:
    assert make_loggers(["csv"], tmp_path) == []  # history.csv/batches.csv are always written
    assert check_loggers(["csv,CSV", " csv "]) == ["csv"]
    with pytest.raises(ConfigError, match="unknown --logger 'wandb'; choose from csv"):
        make_loggers(["wandb"], tmp_path)


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_missing_library_is_one_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # import now raises ImportError
    with pytest.raises(TransferlabError) as caught:
        make_loggers([name], tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"--logger {name} needs the {name} package" in message
    assert "pip install 'transferlab[trackers]'" in message


def test_final_metrics_are_flat_numbers() -> None:
    flat = final_metrics(METRICS)
    assert flat == {
        "test/accuracy": 0.75,
        "test/macro_f1": 0.7,
        "test/f1/dome_inner_": 0.9,
        "test/f1/apse": 0.5,
    }


def test_tensorboard_events(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="install the extra: pip install '.[trackers]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    loggers = make_loggers(["tensorboard"], run)
    assert isinstance(loggers[0], TensorBoardLogger)
    _drive(loggers, run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"batch/loss", "epoch/train_loss", "epoch/val_macro_f1", "epoch/lr"} <= tags
    assert {"test/accuracy", "test/f1/apse"} <= tags
    assert [e.step for e in events.Scalars("batch/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in events.Scalars("epoch/train_loss")] == pytest.approx([0.9, 0.45])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mlflow_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="install the extra: pip install '.[trackers]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working folder
    run = tmp_path / "runs" / "first"
    loggers = make_loggers(["mlflow", "csv"], run)
    assert len(loggers) == 1 and isinstance(loggers[0], MLflowLogger)
    _drive(loggers, run)
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    logged = client.get_run(loggers[0].run_id)
    assert logged.info.run_name == "first" and logged.info.status == "FINISHED"
    assert logged.data.params["train.lr"] == "0.001"
    assert logged.data.metrics["test/accuracy"] == 0.75
    assert logged.data.metrics["val_macro_f1"] == 0.4
    history = client.get_metric_history(logged.info.run_id, "batch_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"config.yaml", "history.csv", "metrics.json"} <= artifacts
    assert not (tmp_path / "mlruns").exists()


class _KillAfterEpoch(Callback):
    """Ends the process's training after an epoch's checkpoint, as a SIGKILL would."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        raise KeyboardInterrupt


def test_tensorboard_batch_steps_continue_after_a_resume(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard", reason="install the extra: pip install '.[trackers]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, run = class_folders(6), tmp_path / "run"
    prep = resolve_preprocessing("convnet1", 32)
    split = stratified_split(discover(root).samples, 0.15, 0.15, 0)
    images, _ = decode_all([*split.train, *split.val], split.classes, prep, 4096)
    train, val = images.subset(range(12)), images.subset(range(12, len(images)))
    cfg = TrainConfig(batch_size=4, scheduler="none")
    phases = [Phase("head", 2, "head", 1e-3, 0.0, augment=False, bn="frozen")]

    def train_with(resume: dict | None, *extra: Callback) -> None:
        torch.manual_seed(0)
        model, _ = create_model("convnet1", 3, "none", 0.0)
        loggers = make_loggers(["tensorboard"], run)
        fit(
            model,
            phases,
            train,
            val,
            prep,
            cfg,
            PRESETS["none"],
            run,
            [*loggers, *extra],
            resume=resume,
        )

    with pytest.raises(KeyboardInterrupt):
        train_with(None, _KillAfterEpoch())
    train_with(load_checkpoint(run / "checkpoints" / "last.pt"))

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("batch/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2]
