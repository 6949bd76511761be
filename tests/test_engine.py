"""The one training loop: strict improvement, a last batch of one wherever BatchNorm trains,
the atomic batch log, and mixing drawn from the run's generator."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from transferlab.config import TrainConfig
from transferlab.data.augment import PRESETS, mix_batch
from transferlab.data.discover import discover
from transferlab.data.split import SplitSamples, stratified_split
from transferlab.data.store import ImageSet, decode_all
from transferlab.data.transforms import Preprocessing
from transferlab.engine import (
    Callback,
    FitResult,
    StopTraining,
    Trainer,
    _checkpoint,
    _Progress,
    _truncate_batches,
    _val_metrics,
    fit,
    predict_logits,
)
from transferlab.finetune import Phase, resize_schedule
from transferlab.models.heads import HeadSpec
from transferlab.models.registry import create_model, resolve_preprocessing

MLP = HeadSpec("mlp", (32,), 0.0, True)


def _split(root: Path) -> SplitSamples:
    return stratified_split(discover(root).samples, 0.15, 0.15, 0)


def _sets(root: Path, size: int = 32) -> tuple[ImageSet, ImageSet, Preprocessing]:
    """Train and val images of ``root``'s class folders, decoded for convnet1."""
    prep = resolve_preprocessing("convnet1", size)
    split = _split(root)
    images, _ = decode_all([*split.train, *split.val], split.classes, prep, 4096)
    n = len(split.train)
    return images.subset(range(n)), images.subset(range(n, len(images))), prep


def _fit(
    root: Path, out: Path, phase: Phase, head: HeadSpec | None = None, **train: object
) -> FitResult:
    train_set, val_set, prep = _sets(root)
    torch.manual_seed(0)
    model, _ = create_model("convnet1", 3, "none", 0.0, head)
    cfg = TrainConfig(**{"batch_size": 8, "scheduler": "none", **train})  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    return fit(model, [phase], train_set, val_set, prep, cfg, PRESETS["none"], out)


def test_a_repeating_val_metric_stops_after_patience_epochs(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    # At this LR the predictions never change, so macro-F1 repeats exactly every epoch:
    # a tie is no improvement, so patience runs out and the first epoch stays the best.
    phase = Phase("head", 6, "head", 1e-12, 0.0, augment=False, bn="frozen")
    result = _fit(class_folders(6), tmp_path / "run", phase, early_stopping=2)
    assert len({r.val_macro_f1 for r in result.history}) == 1
    assert [r.epoch for r in result.history] == [1, 2, 3]
    assert result.best_epoch == 1


def test_min_delta_counts_only_a_larger_improvement(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    phase = Phase("head", 5, "head", 1e-2, 0.0, augment=False, bn="frozen")
    cfg = {"early_stopping": 1, "monitor": "val_loss"}
    moving = _fit(class_folders(6), tmp_path / "a", phase, **cfg)
    assert len(moving.history) == 5  # the loss falls every epoch
    huge = _fit(class_folders(6), tmp_path / "b", phase, **cfg, min_delta=10.0)
    assert len(huge.history) == 2 and huge.best_epoch == 1


class _StopAfter(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_batch_end(self, loss: float) -> None:
        self.steps -= 1
        if self.steps == 0:
            raise StopTraining


def test_a_callback_stops_the_fit_after_the_epoch_it_asked_in(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    train_set, val_set, prep = _sets(class_folders(6))
    model, _ = create_model("convnet1", 3, "none", 0.0)
    phases = [
        Phase("head", 2, "head", 1e-3, 0.0, augment=False, bn="frozen"),
        Phase("finetune", 2, "all", 1e-3, 1e-3, augment=True),
    ]
    cfg = TrainConfig(batch_size=4, scheduler="none")
    result = fit(
        model, phases, train_set, val_set, prep, cfg, PRESETS["light"], tmp_path, [_StopAfter(4)]
    )
    # 12 train images in batches of 4: the 4th step is the first of epoch 2, which ends it.
    assert [r.epoch for r in result.history] == [1, 2]
    assert [row[0] for row in _batch_rows(tmp_path)] == ["1", "1", "1", "2"]


def _batch_rows(run: Path) -> list[list[str]]:
    with (run / "batches.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


@pytest.mark.parametrize("phase_kind", ["head", "all"])
def test_a_last_batch_of_one_joins_the_batch_before(
    class_folders: Callable[..., Path], tmp_path: Path, phase_kind: str
) -> None:
    # 3 classes x 10 photos: 18 train images; batches of 17 would leave one image alone,
    # which a training BatchNorm layer (here the MLP head's BatchNorm1d) cannot take.
    root = class_folders(10)
    assert len(_split(root).train) == 18
    phase = Phase(phase_kind, 2, phase_kind, 1e-3, 1e-3, augment=phase_kind == "all")
    result = _fit(root, tmp_path / "run", phase, MLP, batch_size=17)
    assert len(result.history) == 2
    assert [row[0] for row in _batch_rows(tmp_path / "run")] == ["1", "2"]  # one step an epoch


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transferlab", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


BATCH_OF_ONE = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "--batch-size", "17"]
MLP_ARGS = ["--head", "mlp", "--hidden-units", "32"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--strategy", "full"],
        ["--strategy", "scratch", "--model", "convnet1", "--weights", "none"],
    ],
    ids=["two-stage", "full", "scratch-convnet1"],
)
def test_train_with_an_mlp_head_and_a_last_batch_of_one(
    class_folders: Callable[..., Path], tmp_path: Path, extra: list[str]
) -> None:
    data = class_folders(10)
    out = tmp_path / "run"
    proc = _cli("train", data, "--out", out, *BATCH_OF_ONE, *MLP_ARGS, *extra, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.json").is_file()


def test_prune_finetune_with_a_last_batch_of_one(class_folders: Callable[..., Path]) -> None:
    from transferlab.compress import FinetuneConfig, finetune_pruned, prune_magnitude, sparsity

    split = _split(class_folders(10))
    torch.manual_seed(0)
    model, _ = create_model("convnet1", 3, "none", 0.0, MLP)
    prune_magnitude(model, 0.5)
    info = finetune_pruned(
        model, split, resolve_preprocessing("convnet1", 32), FinetuneConfig(2, batch_size=17)
    )
    assert info["epochs"] == 2 and info["images"] == 18
    assert sparsity(model) >= 0.5  # the pruned weights stayed zero while it trained
    # Validated on the run's val split every epoch; the best epoch's weights are kept.
    assert info["val_images"] == len(split.val) and info["best_epoch"] in (1, 2)
    assert 0.0 <= info["val_macro_f1"] <= 1.0


def test_lr_find_with_a_batch_norm_head_and_a_last_batch_of_one(
    class_folders: Callable[..., Path],
) -> None:
    from transferlab.config import from_dict
    from transferlab.lr_find import find_lr

    cfg = from_dict(
        {},
        {
            "data.path": str(class_folders(10)),
            "model.name": "convnet1",
            "model.weights": "none",
            "model.image_size": 32,
            "model.head": "mlp",
            "model.hidden_units": [32],
            "train.batch_size": 17,
            "train.device": "cpu",
        },
    )
    result, context = find_lr(cfg, 1e-5, 1.0, 6)
    assert context["train_images"] == 18 and len(result.lrs) == 6


def test_mixing_draws_from_the_run_generator_not_the_global_seed() -> None:
    spec = PRESETS["strong"]
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    mixed = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        mixed.append(mix_batch(x, y, 3, spec, torch.Generator().manual_seed(0)))
    assert torch.equal(mixed[0][0], mixed[1][0])
    assert torch.equal(mixed[0][1], mixed[1][1])


def test_truncating_the_batch_log_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "batches.csv"
    rows = [["epoch", "loss", "lr"], *[[str(e), "0.5", "0.001"] for e in (1, 1, 2, 2, 3)]]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    before = path.read_text(encoding="utf-8")
    with path.open(encoding="utf-8") as reader:  # e.g. someone tailing the log
        _truncate_batches(path, 2)
        assert reader.read() == before  # never a half-rewritten file under a reader
    with path.open(newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == rows[:5]


def test_lr_find_does_not_import_the_pipeline() -> None:
    code = "import sys, transferlab.lr_find; print('transferlab.pipeline' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    "extra",
    [
        ["--strategy", "full", "--bn", "train"],  # BatchNorm is frozen by default
        ["--strategy", "linear-probe", *MLP_ARGS],
    ],
    ids=["full", "mlp-head"],
)
def test_a_batch_of_one_where_batchnorm_trains_is_refused_before_anything_is_written(
    class_folders: Callable[..., Path], tmp_path: Path, extra: list[str]
) -> None:
    out = tmp_path / "run"
    args = ["--image-size", "32", "--epochs", "1", "--batch-size", "1", *extra]
    proc = _cli("train", class_folders(4), "--out", out, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "batch_size" in lines[0] and "BatchNorm" in lines[0], proc.stderr
    assert "unexpected" not in proc.stderr
    assert not (out / "config.yaml").exists()


def test_progressive_resizing_trains_small_first_and_validates_at_full_size(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    assert resize_schedule(16, 32, 3) == (16, 24, 32)
    assert resize_schedule(32, 32, 3) == ()
    train_set, val_set, prep = _sets(class_folders(6))
    model, _ = create_model("convnet1", 3, "none", 0.0, None)
    cfg = TrainConfig(batch_size=8, scheduler="none")
    phase = Phase("full", 3, "all", 1e-3, 1e-3, augment=True, image_sizes=(16, 24, 32))
    trainer = Trainer(model, train_set, val_set, prep, cfg, PRESETS["light"], torch.device("cpu"))
    seen = []
    for epoch in range(3):
        trainer.train_prep = replace(prep, input_size=phase.image_size(epoch, prep.input_size))
        seen.append({tuple(x.shape[-2:]) for x, _ in trainer.train_batches(phase)})
    assert seen == [{(16, 16)}, {(24, 24)}, {(32, 32)}]
    result = _fit(class_folders(6), tmp_path / "run", phase)
    assert len(result.history) == 3


def test_ema_weights_are_validated_and_kept_when_better(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    phase = Phase("full", 3, "all", 1e-2, 1e-2, augment=False)
    result = _fit(class_folders(6), tmp_path / "run", phase, ema_decay=0.9)
    assert {r.weights for r in result.history} <= {"raw", "ema"}
    best = result.history[result.best_epoch - 1]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["ema"] is not None and ckpt["ema_steps"] > 0
    for key, value in result.best_state.items():
        assert torch.equal(ckpt["model"][key], value), key
    # the kept weights are the ones the recorded val numbers belong to
    model, _ = create_model("convnet1", 3, "none", 0.0, None)
    model.load_state_dict(result.best_state)
    _, val_set, prep = _sets(class_folders(6))
    logits = predict_logits(model, val_set, prep, 16)
    assert _val_metrics(logits, val_set.targets)["val_macro_f1"] == pytest.approx(
        best.val_macro_f1, abs=1e-6
    )


def test_compiled_model_trains_through_a_wrapper_and_checkpoints_plain_keys(
    class_folders: Callable[..., Path],
) -> None:
    """--compile: the phase trains through torch.compile's wrapper, built before any DDP
    wrapping; the checkpoint and best state hold the model's own keys (no _orig_mod.)."""
    train_set, val_set, prep = _sets(class_folders(4))
    model, _ = create_model("convnet1", 3, "none", 0.0, None)
    keys = set(model.state_dict())
    cfg = TrainConfig(batch_size=8, scheduler="none", compile=True)
    trainer = Trainer(model, train_set, val_set, prep, cfg, PRESETS["light"], torch.device("cpu"))
    phase = Phase("full", 1, "all", 1e-3, 1e-3, augment=False)
    opt, sched = trainer.optimizer(phase)
    trainer.prepare(phase)
    assert isinstance(trainer.net, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.net._orig_mod is model
    assert set(_checkpoint(trainer, opt, sched, 0, 0, False, _Progress())["model"]) == keys


def test_grad_accum_steps_the_optimizer_every_k_batches(
    class_folders: Callable[..., Path],
) -> None:
    train_set, val_set, prep = _sets(class_folders(6))
    model, _ = create_model("convnet1", 3, "none", 0.0, None)
    cfg = TrainConfig(batch_size=2, scheduler="none", grad_accum=3)
    trainer = Trainer(model, train_set, val_set, prep, cfg, PRESETS["light"], torch.device("cpu"))
    phase = Phase("full", 1, "all", 1e-3, 1e-3, augment=False)
    opt, sched = trainer.optimizer(phase)
    steps = []
    stepper = trainer.stepper(phase, opt, sched)
    stepper.after_step = lambda: steps.append(1)
    losses = stepper.run(model, trainer.train_batches(phase))
    batches = trainer.batches_per_epoch(phase)
    assert len(losses) == batches
    assert len(steps) == trainer.steps_per_epoch(phase) == -(-batches // 3)


def test_shards_cover_every_item_once_after_the_padding_is_dropped() -> None:
    """The rule of sharding (each rank every world-th item, padded) and of gathering back,
    checked on the plain runtime's arithmetic for 2 and 3 ranks."""
    from transferlab.runtime import Runtime

    for world in (2, 3):
        for n in (1, 5, 6, 7):
            shards = []
            for rank in range(world):
                rt = Runtime()
                rt.rank, rt.world_size = rank, world
                shards.append(rt.shard(n))
            assert len({len(s) for s in shards}) == 1  # the same number of steps each
            stacked = torch.stack(shards).T.reshape(-1)[:n]  # gather_rows' reordering
            assert stacked.tolist() == list(range(n))


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_resume_on_another_process_count_continues_the_schedule_at_the_same_fraction(
    class_folders: Callable[..., Path],
) -> None:
    """A checkpoint of 2 processes after 2 of 4 epochs, resumed on 1 process (other steps
    per epoch): the LR continues where half the phase puts it, not at the step count."""
    from transferlab.engine import _restore_schedule

    train_set, val_set, prep = _sets(class_folders(6))
    model, _ = create_model("convnet1", 3, "none", 0.0, None)
    cfg = TrainConfig(batch_size=4, scheduler="cosine")
    trainer = Trainer(model, train_set, val_set, prep, cfg, PRESETS["light"], torch.device("cpu"))
    phase = Phase("full", 4, "all", 1e-2, 1e-2, augment=False)
    per_epoch = trainer.steps_per_epoch(phase)
    _, elsewhere = trainer.optimizer(phase)  # the 2-process run: another step count
    for _ in range(2 * per_epoch // 2 + 1):
        elsewhere.step_batch()
    resume = {"scheduler": elsewhere.state_dict(), "world_size": 2}
    opt, sched = trainer.optimizer(phase)
    _restore_schedule(trainer, phase, sched, resume, 2)
    _, reference = trainer.optimizer(phase)
    for _ in range(2 * per_epoch):
        reference.step_batch()
    assert sched.batch.last_epoch == reference.batch.last_epoch == 2 * per_epoch
    assert opt.param_groups[0]["lr"] == pytest.approx(reference.opt.param_groups[0]["lr"])
