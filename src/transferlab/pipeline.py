"""The library API behind the CLI: ``train_run`` and ``resume_run``.

Data flows one way: config -> data + model (:mod:`transferlab.setup`) -> engine -> bundle
-> metrics/report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transferlab.budget_plan import Budget, plan_budget, resumed_budget
from transferlab.bundle import save_bundle
from transferlab.calibration import apply_temperature, calibration_summary
from transferlab.config import RunConfig, from_dict, load_yaml
from transferlab.data.augment import AugmentSpec, resolve_augment
from transferlab.data.class_names import resolve_display_names
from transferlab.data.predictions import write_predictions
from transferlab.data.split import write_split_csv
from transferlab.data.store import ImageSet
from transferlab.data.transforms import Preprocessing
from transferlab.engine import Callback, fit, load_checkpoint, predict_logits, resolve_device
from transferlab.errors import ConfigError
from transferlab.files import replace_when_done
from transferlab.finetune import (
    Phase,
    apply_phase,
    batchnorm_trains,
    default_augment,
    plan_phases,
)
from transferlab.launch import is_main_process, spawns, workers, world_size
from transferlab.metrics import classification_report
from transferlab.models.registry import count_parameters, resolve_preprocessing
from transferlab.provenance import META_KEY as TRAINING_IMAGES_KEY
from transferlab.provenance import PHASH_KEY, encode_digests, encode_phashes
from transferlab.runtime import Runtime, launcher_world_size, make_runtime
from transferlab.setup import RunSetup, data_root, resolve_config, setup_run

logger = logging.getLogger(__name__)

# What a run killed before its first checkpoint leaves; removed when it is started again.
UNSTARTED_FILES = (
    "config.yaml",
    "budget.json",
    "split.csv",
    "batches.csv",
    "history.csv",
    "checkpoints",
)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]


def _check_out_dir(out: Path) -> bool:
    """Whether ``out`` can take a new run; True if it holds one that never finished an
    epoch (no checkpoint, no metrics), whose files must go before it starts again."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    if not (out / "config.yaml").exists():
        return False
    if (out / "metrics.json").exists():
        raise ConfigError(
            f"{out} already holds a run (finished); choose a new --out folder or delete it"
        )
    if (out / "checkpoints" / "last.pt").exists():
        raise ConfigError(
            f"{out} already holds a run (interrupted); continue it with --resume {out}, "
            "or choose a new --out folder"
        )
    return True


def _clear_unstarted(out: Path) -> None:
    logger.info("%s holds a run that never finished an epoch; starting it again", out)
    for name in UNSTARTED_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass
class _Plan:
    """How the model trains, checked before any file is written."""

    device: torch.device
    augment: AugmentSpec
    phases: list[Phase]
    display_names: list[str]  # the classes as people read them (data.class_names)


def _device(cfg: RunConfig) -> torch.device:
    try:
        return resolve_device(cfg.train.device)
    except RuntimeError:
        raise ConfigError(
            f"train.device '{cfg.train.device}' is not a device; use auto, cpu, cuda or cuda:N"
        ) from None


def _resume_hint(out: Path) -> str:
    return f"the last finished epoch's checkpoint continues with 'transferlab train --resume {out}'"


def _train_worker(cfg: RunConfig, out: Path) -> None:
    """Rank 1.. of a run that ``--devices N`` started on this machine."""
    train_run(cfg, out, (), write_report=False)


def _resume_worker(run_dir: Path, devices: str | None) -> None:
    resume_run(run_dir, (), write_report=False, devices=devices)


def _plan(cfg: RunConfig, setup: RunSetup) -> _Plan:
    """Every phase is applied to the model once, so that a phase that cannot be set up
    (e.g. --trainable-groups beyond the model's groups) fails before the run folder exists;
    which parameters train is put back as it was."""
    device = _device(cfg)
    augment = resolve_augment(cfg.augment, default_augment(cfg.train.strategy))
    phases = plan_phases(cfg.train, augment=augment.enabled, image_size=setup.prep.input_size)
    model, classes = setup.model, setup.split.classes
    display = resolve_display_names(classes, data_root(cfg), cfg.data.class_names)
    trainable = [p.requires_grad for p in model.parameters()]
    for phase in phases:
        apply_phase(model, phase)
        if cfg.train.batch_size == 1 and batchnorm_trains(model, phase):
            raise ConfigError(
                f"train.batch_size 1 cannot train the model's BatchNorm layers (phase "
                f"'{phase.name}'); use --batch-size 2 or more"
            )
    for p, flag in zip(model.parameters(), trainable, strict=True):
        p.requires_grad_(flag)
    return _Plan(device, augment, phases, display or list(classes))


def train_run(
    cfg: RunConfig, out: Path, callbacks: Sequence[Callback] = (), write_report: bool = True
) -> RunResult:
    """Train, evaluate and save a run into ``out``; nothing is written before the data,
    the model and the training phases have been checked. ``write_report=False`` leaves
    ``report.html`` to the caller (compare writes it once the speed is measured).
    With ``train.time_budget`` the run is probed and planned to fit it (:mod:`budget_plan`);
    config.yaml keeps the config as asked, budget.json the plan."""
    started = time.monotonic()  # the time budget's clock
    restart = _check_out_dir(out) if is_main_process() else False
    world = world_size(cfg.train, _device(cfg))
    if spawns(world):  # --devices N here: this process is rank 0 of N
        with workers(world, _train_worker, (cfg, out), _resume_hint(out)):
            return train_run(cfg, out, callbacks, write_report)
    size_free = cfg.model.image_size is None  # a budget may then plan the size
    cfg = asked = resolve_config(cfg)
    setup = setup_run(cfg)
    plan = _plan(cfg, setup)
    budget = None
    if cfg.train.time_budget is not None:
        cfg, budget = plan_budget(cfg, setup, plan.augment, plan.device, started, size_free)
        if cfg.model.image_size != setup.prep.input_size:  # the stored images are resized
            prep = resolve_preprocessing(cfg.model.name, cfg.model.image_size)
            setup = dataclasses.replace(setup, prep=prep)
        plan = _plan(cfg, setup)
    if not is_main_process():  # only the main process writes
        return _fit_and_finish(cfg, setup, plan, out, (), None, False, budget)
    if restart:
        _clear_unstarted(out)
    out.mkdir(parents=True, exist_ok=True)
    replace_when_done(out / "config.yaml", asked.to_yaml)
    replace_when_done(
        out / "split.csv", lambda tmp: write_split_csv(setup.split, tmp, data_root(cfg))
    )
    if budget is not None:
        budget.write(out)
    return _fit_and_finish(cfg, setup, plan, out, callbacks, None, write_report, budget)


def resume_run(
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    write_report: bool = True,
    devices: str | None = None,
) -> RunResult:
    """Continue an interrupted run from ``checkpoints/last.pt``, on the run's own split;
    ``devices``: on another number of processes than it started with (under a launcher:
    the launcher's)."""
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml); check --resume")
    if (run_dir / "metrics.json").is_file():
        raise ConfigError(f"{run_dir} already finished; start a new run with --out")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise ConfigError(
            f"{run_dir} has no checkpoint yet (stopped in epoch 1); start it again with the "
            f"same train command and --out {run_dir}"
        )
    cfg, budget = resumed_budget(from_dict(load_yaml(run_dir / "config.yaml")), run_dir)
    devices = devices or ("auto" if launcher_world_size() else None)
    if devices is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, devices=devices))
    world = world_size(cfg.train, _device(cfg))
    if spawns(world):
        with workers(world, _resume_worker, (run_dir, devices), _resume_hint(run_dir)):
            return resume_run(run_dir, callbacks, write_report, devices)
    use = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, split_file=str(run_dir / "split.csv"))
    )
    setup = setup_run(use)
    plan = _plan(cfg, setup)
    checkpoint = load_checkpoint(last)
    logger.info("resuming %s after epoch %d", run_dir, int(checkpoint["epoch"]))
    if not is_main_process():
        callbacks, write_report = (), False
    return _fit_and_finish(cfg, setup, plan, run_dir, callbacks, checkpoint, write_report, budget)


def _fit_and_finish(
    cfg: RunConfig,
    setup: RunSetup,
    plan: _Plan,
    out: Path,
    callbacks: Sequence[Callback],
    resume: dict[str, Any] | None,
    write_report: bool,
    budget: Budget | None = None,
) -> RunResult:
    sets, prep, model, class_names = setup.sets, setup.prep, setup.model, setup.split.classes
    logger.info(
        "%d classes; train %d, val %d, test %d images; %s (%s weights), %d px, strategy %s",
        len(class_names),
        len(sets["train"]),
        len(sets["val"]),
        len(sets["test"]),
        cfg.model.name,
        setup.source,
        prep.input_size,
        cfg.train.strategy,
    )
    device = plan.device
    runtime = make_runtime(cfg.train, device)
    result = fit(
        model,
        plan.phases,
        sets["train"],
        sets["val"],
        prep,
        cfg.train,
        plan.augment,
        out,
        [*callbacks, *([budget.stop] if budget else [])],
        device,
        resume,
        runtime=runtime,
    )
    model.load_state_dict(result.best_state)
    eval_split = "test" if len(sets["test"]) else "val"
    metrics, raw = evaluate_images(model, sets[eval_split], class_names, prep, device, runtime)
    calibration = _calibrate(model, sets, eval_split, raw, prep, runtime)
    runtime.close()  # the last step every process takes together
    # the probabilities the bundle will give (predict, evaluate and serve apply T too)
    probs = apply_temperature(raw, calibration["temperature"])
    if runtime.is_main:
        replace_when_done(
            out / "predictions.csv",
            lambda tmp: write_predictions(
                tmp, sets[eval_split], probs, class_names, data_root(cfg), plan.display_names
            ),
        )
    total, _ = count_parameters(model)
    summary = {
        "weights_source": setup.source,
        "strategy": cfg.train.strategy,
        "best_epoch": result.best_epoch,
        "monitor": cfg.train.monitor,
        "epochs": len(result.history),
        "train_seconds": round(result.seconds, 2),
        "phases": result.phases,
        "parameters": total,
        "trainable_parameters": max((p["trainable_parameters"] for p in result.phases), default=0),
        "images": {k: len(v) for k, v in sets.items()},
        "evaluated_on": eval_split,
        "processes": runtime.world_size,
    }
    metrics.update(
        {
            "split": eval_split,
            "skipped_files": len(setup.skipped),
            "skipped": [{"path": str(p), "reason": why} for p, why in setup.skipped],
            "training": summary,
            "data_summary": setup.split.counts(),
            "data_audit": setup.audit.to_metrics() if setup.audit else None,
            "calibration": calibration,
            "display_names": plan.display_names,
        }
    )
    if not runtime.is_main:  # only the main process writes
        return RunResult(out, metrics)
    save_bundle(
        out / "model",
        model,
        cfg.model.name,
        class_names,
        prep,
        extra={
            "head": setup.head.to_dict(),
            **_training_images(setup),
            "display_names": plan.display_names,
            "model_kwargs": dict(cfg.model.kwargs),
            "training": summary,
            "config": cfg.to_dict(),
            "metrics": {k: metrics[k] for k in ("accuracy", "macro_f1", "split")},
            "calibration": {
                k: calibration[k] for k in ("temperature", "fitted_on", "ece_before", "ece_after")
            },
            "reject_below": None,  # set with 'transferlab reject-below RUN P'
        },
    )
    if budget is not None:
        metrics["time_budget"] = budget.summary()
    # metrics.json says "this run finished" (resume and compare go by it): written last,
    # and whole or not at all.
    _write_metrics(out, metrics)
    if write_report:
        _write_report(out)
        if budget is not None:  # the actual time with the report in it
            metrics["time_budget"]["actual_s"] = budget.summary()["actual_s"]
            _write_metrics(out, metrics)
    return RunResult(out, metrics)


def _write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    text = json.dumps(metrics, indent=2, ensure_ascii=False)
    replace_when_done(out / "metrics.json", lambda tmp: tmp.write_text(text, "utf-8"))


def _training_images(setup: RunSetup) -> dict[str, Any]:
    """Digests and perceptual hashes of the training images, for the bundle: evaluate
    recognises copies of them in any folder, resized or re-encoded ones too."""
    if setup.audit is None:
        return {}
    return {
        TRAINING_IMAGES_KEY: encode_digests(setup.audit.train_digests),
        PHASH_KEY: encode_phashes(setup.audit.train_phashes),
    }


def _write_report(out: Path) -> None:
    """The HTML report; a failure here must not lose the finished run."""
    from transferlab.report import write_run_report

    try:
        write_run_report(out)
    except Exception as exc:  # the run is saved; say so and how to retry
        logger.warning(
            "could not write the report (%s); retry with 'transferlab report %s'", exc, out
        )


def _calibrate(
    model: torch.nn.Module,
    sets: dict[str, ImageSet],
    eval_split: str,
    eval_probs: torch.Tensor,
    prep: Preprocessing,
    runtime: Runtime,
) -> dict[str, Any]:
    """Temperature scaling fitted on the val split, measured on ``eval_split``."""
    val = sets["val"]
    if eval_split == "val":  # log-probabilities are logits up to a constant per image
        val_logits = eval_probs.clamp_min(torch.finfo(torch.float32).tiny).log()
    elif len(val):
        val_logits = predict_logits(model, val, prep, 64, runtime=runtime)
    else:
        val_logits = torch.zeros(0, eval_probs.shape[1])
    summary = calibration_summary(
        val_logits, val.targets, eval_probs, sets[eval_split].targets, eval_split
    )
    if not summary["fitted"]:
        logger.info(
            "temperature left at 1: none of the %d val images was classified wrong, so they "
            "cannot say how sure the model should be",
            summary["fitted_images"],
        )
        return summary
    logger.info(
        "temperature %.3f (fitted on %d val images): ECE on %s %.4f -> %.4f",
        summary["temperature"],
        summary["fitted_images"],
        eval_split,
        summary["ece_before"],
        summary["ece_after"],
    )
    return summary


def evaluate_images(
    model: torch.nn.Module,
    data: ImageSet,
    class_names: list[str],
    prep: Preprocessing,
    device: torch.device,
    runtime: Runtime | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The metrics report and the class probabilities of every image (with several
    processes: each computes its shard, all get every image once)."""
    probs = predict_logits(model, data, prep, 64, device, runtime=runtime).softmax(dim=1)
    report = classification_report(data.targets.numpy(), probs.argmax(1).numpy(), class_names)
    return report, probs
