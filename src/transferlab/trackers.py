"""Optional experiment trackers (``--logger tensorboard|mlflow|csv``) as engine callbacks.

CSV is always on: the engine itself writes ``history.csv`` and ``batches.csv`` into every
run, so ``csv`` adds nothing. TensorBoard writes to ``RUN/tensorboard/``; MLflow logs to a
local SQLite store next to the run (``RUN/../mlflow.db``, so the runs of one folder or one
experiment land side by side) unless ``MLFLOW_TRACKING_URI`` says otherwise. Their libraries
are extras (``pip install 'transferlab[trackers]'``), imported only when asked for.

Trackers also have ``on_run_end(metrics)``, for the final (test) metrics that exist only
after ``fit``: call :func:`finish_run` once ``metrics.json`` is written.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transferlab.engine import Callback, EpochRecord
from transferlab.errors import ConfigError, TransferlabError
from transferlab.finetune import Phase

logger = logging.getLogger(__name__)

TRACKERS = ("csv", "tensorboard", "mlflow")
INSTALL_HINT = "pip install 'transferlab[trackers]'"


def _require(module: str, tracker: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TransferlabError(
            f"--logger {tracker} needs the {tracker} package, which is not installed; "
            f"run: {INSTALL_HINT}"
        ) from None


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (phase names and the like are left out)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Headline and per-class metrics of ``metrics.json`` as flat ``name: value`` pairs."""
    split = metrics.get("split", "eval")
    out = {f"{split}/{k}": v for k, v in _numbers(metrics).items() if k != "skipped_files"}
    for cls, stats in (metrics.get("per_class") or {}).items():
        safe = "".join(c if c.isalnum() or c in "._-/ " else "_" for c in cls)
        out[f"{split}/f1/{safe}"] = float(stats["f1"])
    return out


def _flat_config(raw: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


def logged_batches(run_dir: Path) -> int:
    """Batches already in the run's ``batches.csv`` (a resumed run's, trimmed to its
    checkpoint by the engine before ``on_fit_start``); 0 for a new run."""
    path = run_dir / "batches.csv"
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


def _run_config(run_dir: Path) -> dict[str, str]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    return _flat_config(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


class Tracker(Callback):
    """A callback that also hears about the final metrics of the run."""

    def on_run_end(self, metrics: Mapping[str, Any]) -> None: ...


class TensorBoardLogger(Tracker):
    """Scalars per batch (``batch/loss``) and epoch (``epoch/<field>``) in ``RUN/tensorboard``.

    A resumed run continues the batch steps after those its ``batches.csv`` kept; events a
    killed run logged beyond them (the epochs it redoes) are purged, TensorBoard's own
    ``purge_step``.
    """

    def __init__(self, run_dir: Path) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run_dir / "tensorboard"
        self.writer_cls = SummaryWriter
        self.writer: Any = None  # opened by on_fit_start, once a resume has trimmed the log
        self.run_dir = run_dir
        self.step = 0
        self.epoch = 0

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.step = logged_batches(self.run_dir)
        self.writer = self.writer_cls(
            log_dir=str(self.log_dir), purge_step=self.step + 1 if self.step else None
        )
        config = _run_config(self.run_dir)
        if config:
            table = "\n".join(f"| {k} | {v} |" for k, v in config.items())
            self.writer.add_text("config", "| key | value |\n|---|---|\n" + table)
        plan = [p.to_dict() if hasattr(p, "to_dict") else str(p) for p in phases]
        self.writer.add_text("phases", json.dumps(plan, indent=1, default=str))

    def on_batch_end(self, loss: float) -> None:
        self.step += 1
        self.writer.add_scalar("batch/loss", loss, self.step)

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.epoch = record.epoch
        for key, value in _numbers(dataclasses.asdict(record)).items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, record.epoch)
        self.writer.flush()

    def on_fit_end(self) -> None:
        self.writer.close()

    def on_run_end(self, metrics: Mapping[str, Any]) -> None:
        writer = self.writer_cls(log_dir=str(self.log_dir))
        for key, value in final_metrics(metrics).items():
            writer.add_scalar(key, value, self.epoch)
        writer.close()


def default_mlflow_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file beside the run folder."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(run_dir.resolve().parent / 'mlflow.db').as_posix()}"


class MLflowLogger(Tracker):
    """Params from ``config.yaml``, metrics per epoch (and batch), artifacts at the end."""

    def __init__(self, run_dir: Path, tracking_uri: str | None = None) -> None:
        _require("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        self.uri = tracking_uri or default_mlflow_uri(run_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "transferlab"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            artifacts = (run_dir.resolve().parent / "mlartifacts").as_uri()
            experiment_id = self.client.create_experiment(name, artifact_location=artifacts)
        self.run_id: str = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        self.step = 0
        self.losses: list[float] = []
        self.epoch = 0

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        from mlflow.entities import Param

        self.step = logged_batches(self.run_dir)  # a resumed run continues its batch steps

        params = [Param(k, v) for k, v in _run_config(self.run_dir).items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def on_batch_end(self, loss: float) -> None:
        self.step += 1
        self.losses.append(loss)  # logged with the epoch: one write per epoch, not per batch

    def on_epoch_end(self, record: EpochRecord) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        first = self.step - len(self.losses) + 1
        metrics = [Metric("batch_loss", v, now, first + i) for i, v in enumerate(self.losses)]
        metrics += [
            Metric(k, v, now, record.epoch)
            for k, v in _numbers(dataclasses.asdict(record)).items()
            if k != "epoch"
        ]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])
        self.losses = []
        self.epoch = record.epoch

    def on_fit_end(self) -> None:
        for name in ("config.yaml", "history.csv"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_run_end(self, metrics: Mapping[str, Any]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(k, v, now, self.epoch) for k, v in final_metrics(metrics).items()]
        self.client.log_batch(self.run_id, metrics=final)
        for name in ("metrics.json", "report.html"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))


def check_loggers(names: Sequence[str]) -> list[str]:
    """Validate ``--logger`` values (comma lists allowed) and that their libraries import;
    returns the distinct names. Creates nothing, so it can run before any training."""
    wanted: list[str] = []
    for name in names:
        for part in str(name).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part not in TRACKERS:
                raise ConfigError(f"unknown --logger '{part}'; choose from {', '.join(TRACKERS)}")
            if part not in wanted:
                wanted.append(part)
    for name in wanted:
        if name != "csv":
            _require(name, name)
    return wanted


def make_loggers(names: Sequence[str], run_dir: Path) -> list[Callback]:
    """Callbacks for ``--logger`` values (``csv``, ``tensorboard``, ``mlflow``; comma lists
    allowed). Fails with one line if a name is unknown or its library is not installed."""
    wanted = check_loggers(names)
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers: list[Callback] = []
    for name in wanted:
        if name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir))
        elif name == "mlflow":
            loggers.append(MLflowLogger(run_dir))
    return loggers


def finish_run(callbacks: Sequence[Callback], metrics: Mapping[str, Any]) -> None:
    """Give trackers the run's final metrics (after ``metrics.json`` is written)."""
    for cb in callbacks:
        if isinstance(cb, Tracker):
            cb.on_run_end(metrics)
