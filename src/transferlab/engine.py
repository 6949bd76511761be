"""The training loop: phases of epochs, per-epoch validation, history and checkpoints.

``fit`` owns the loop; callbacks observe (``on_<stage>_<start|end>`` no-ops by default)
and may end it by raising :class:`StopTraining` from ``on_batch_end``. Phases that keep the
backbone frozen and do not augment train the head on features computed once, so their
epochs cost milliseconds instead of a backbone pass.

Every optimizer step in transferlab is :meth:`Stepper.step`, and every batch comes from
:meth:`Trainer.train_batches` or :func:`join_last_single`: ``fit``, the prune fine-tune
(``compress``, through ``fit``) and the LR range test (``lr_find``, a callback that raises
the LR each step) all run on them, so what the loop learns (devices, precision, gathering
across processes) reaches each of them. A last batch of one image joins the batch before
it: BatchNorm cannot train on a single value per channel.

Devices and processes go through a :class:`~transferlab.runtime.Runtime`: with several
processes every rank draws the same permutation of the training set per epoch (the order
generator) and takes its shard of it, padded to the same number of steps; augmentation
draws from a second generator seeded per rank and epoch, so the order never drifts apart.
Validation is sharded and gathered back with the padding dropped. The model is wrapped for
data parallelism per phase (DDP's reducer must see which parameters train after a freeze
or an unfreeze); head epochs on cached features run the same computation on every rank and
take the main process's head afterwards. Only the main process writes files.

A checkpoint is written atomically after every epoch with everything needed to continue
exactly: weights, optimizer, schedule, phase and epoch, RNG states, history, best metric
and early-stopping counter. ``fit(..., resume=checkpoint)`` rebuilds the phase's optimizer
(parameter groups change at an unfreeze) before loading its state.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import itertools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn

from transferlab.allocator import tune_for_training
from transferlab.config import TrainConfig
from transferlab.data.augment import AugmentSpec, augment_batch, mix_batch
from transferlab.data.store import ImageSet, iterate_batches
from transferlab.data.transforms import Preprocessing, eval_batch
from transferlab.feature_cache import FeatureCache, backbone_digest, cache_key, images_digest
from transferlab.files import replace_when_done
from transferlab.finetune import (
    Phase,
    apply_phase,
    classifier,
    param_groups,
    set_train_mode,
    trainable_count,
)
from transferlab.metrics import confusion_matrix, precision_recall_f1
from transferlab.models.layout import is_channels_last, memory_format
from transferlab.optim import Schedule, build_optimizer, is_improvement
from transferlab.runtime import Runtime

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    phase: str
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float
    seconds: float
    # Which weights the val numbers are of: "raw", or "ema" when the moving average of the
    # weights (train.ema_decay) validated better this epoch (and is what "best" keeps).
    weights: str = "raw"


HISTORY_FIELDS = [f.name for f in fields(EpochRecord)]


class StopTraining(Exception):
    """Raised by a callback's ``on_batch_end`` to end training after that step."""


class Callback:
    """Observes training. Every hook is a no-op unless overridden.

    ``on_epoch_start``'s ``steps`` is the number of batches of this process's epoch, each
    followed by one ``on_batch_end`` (with ``grad_accum`` K, K batches per optimizer step).
    """

    def on_fit_start(self, phases: Sequence[Phase]) -> None: ...
    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None: ...
    def on_batch_end(self, loss: float) -> None: ...
    def on_epoch_end(self, record: EpochRecord) -> None: ...
    def on_fit_end(self) -> None: ...


@dataclass
class FitResult:
    history: list[EpochRecord]
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    seconds: float
    phases: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone output right before the classifier (timm's ``pre_logits``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]


@torch.inference_mode()
def _batched_outputs(
    fn: Callable[[torch.Tensor], torch.Tensor],
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int,
    runtime: Runtime,
    precision: str,
    channels_last: bool,
) -> torch.Tensor:
    """``fn`` of every image of ``data``; with several processes each computes its shard
    and every process gets all rows back (each image exactly once)."""
    shard = data.subset(runtime.shard(len(data)).tolist()) if runtime.distributed else data
    outs = []
    fmt = memory_format(channels_last)
    for x, _ in iterate_batches(shard, batch_size, shuffle=False):
        with runtime.autocast(precision):
            x = eval_batch(x.to(runtime.device), prep).contiguous(memory_format=fmt)
            outs.append(fn(x).float().cpu())
    return runtime.gather_rows(torch.cat(outs), len(data))


def predict_logits(
    model: nn.Module,
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int = 64,
    device: torch.device | None = None,
    precision: str = "fp32",
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Logits of every image of ``data`` (gathered from every process of ``runtime``)."""
    model.eval()
    runtime = runtime or Runtime(device)
    return _batched_outputs(
        model, data, prep, batch_size, runtime, precision, is_channels_last(model)
    )


def extract_features(
    model: nn.Module,
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int,
    device: torch.device,
    precision: str,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    model.eval()
    return _batched_outputs(
        lambda x: pooled_features(model, x),
        data,
        prep,
        batch_size,
        runtime or Runtime(device),
        precision,
        is_channels_last(model),
    )


def _val_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    cm = confusion_matrix(targets.numpy(), logits.argmax(1).numpy(), logits.shape[1])
    return {
        "val_loss": float(F.cross_entropy(logits, targets)),
        "val_accuracy": float(cm.trace() / max(1, cm.sum())),
        "val_macro_f1": float(precision_recall_f1(cm)[2].mean()),
    }


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write with ``torch.save`` to a temp file, fsync, then rename: never a half file."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())

    replace_when_done(path, write)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with the tensors-only unpickler (no arbitrary code)."""
    return dict(torch.load(path, map_location="cpu", weights_only=True))


def write_history(path: Path, records: Sequence[EpochRecord]) -> None:
    """Rewrite ``history.csv`` atomically: a crash leaves the previous complete file."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            for r in records:
                row = {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(r).items()}
                writer.writerow(row)

    replace_when_done(path, write)


def _truncate_batches(path: Path, last_epoch: int) -> None:
    """Drop batch rows of epochs after the checkpoint (a resumed run redoes them).

    Rewritten atomically: a crash or a reader mid-way sees the old log or the new one. A
    row cut short by the kill (fewer than three fields) is dropped too.
    """
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    kept = [
        rows[0],
        *[r for r in rows[1:] if len(r) == 3 and r[0].isdigit() and int(r[0]) <= last_epoch],
    ]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(kept)

    replace_when_done(path, write)


def steps_in(n: int, batch_size: int) -> int:
    """Optimizer steps over ``n`` images in batches of ``batch_size`` (see
    :func:`join_last_single`)."""
    steps = math.ceil(n / batch_size)
    return steps - 1 if batch_size > 1 and n > batch_size and n % batch_size == 1 else steps


def join_last_single(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """``batches`` with a last batch of one image joined onto the batch before it.

    A training BatchNorm layer cannot normalise a single value per channel (the MLP head's
    BatchNorm1d, or any BatchNorm2d on a 1x1 map), and one image is the noisiest step there
    is; joining keeps every image, unlike ``drop_last``. Only the last batch can be short,
    so a batch of one (with ``batch_size > 1``) is always the last.
    """
    held: Batch | None = None
    for batch in batches:
        if held is not None and batch_size > 1 and len(batch[1]) == 1:
            batch = (torch.cat([held[0], batch[0]]), torch.cat([held[1], batch[1]]))
        elif held is not None:
            yield held
        held = batch
    if held is not None:
        yield held


def _with_last(items: Iterable[Batch]) -> Iterator[tuple[Batch, bool]]:
    """``items``, each with whether it is the last one."""
    it = iter(items)
    held = next(it, None)
    while held is not None:
        following = next(it, None)
        yield held, following is None
        held = following


class Stepper:
    """The optimizer step every training loop here runs on: the forward pass and loss under
    the precision's autocast, backward, optimizer and schedule step, then the callbacks.

    With ``accum`` K > 1 the optimizer steps every K batches (and after an epoch's last),
    the gradients of the batches between summed without the all-reduce across processes;
    each batch's loss counts 1/K, so a last group shorter than K steps with less weight
    (as Accelerate's ``accumulate`` does). Our batches are not a DataLoader Accelerate
    prepared, so its ``accumulate()`` could not see the end of an epoch: the runtime's
    ``no_sync`` is used directly.

    ``log(loss, lr)`` (``fit``: a row of ``batches.csv``) sees every batch; a callback ends
    :meth:`run` by raising :class:`StopTraining`, after which ``stopped`` is True (on every
    process: the decision is shared).
    """

    def __init__(
        self,
        opt: torch.optim.Optimizer,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        runtime: Runtime,
        precision: str = "fp32",
        sched: Schedule | None = None,
        callbacks: Sequence[Callback] = (),
        log: Callable[[float, float], None] | None = None,
        after_step: Callable[[], None] | None = None,
        accum: int = 1,
    ) -> None:
        self.opt, self.loss_fn, self.runtime, self.precision = opt, loss_fn, runtime, precision
        self.sched, self.callbacks, self.log = sched, callbacks, log
        self.after_step = after_step  # e.g. the EMA update, right after the weights change
        self.accum = accum
        self.stopped = False

    def step(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        sync: bool = True,
    ) -> float:
        """Forward and backward of a batch, then (``sync``) the optimizer step; returns
        the batch's loss."""
        device = self.runtime.device
        x, target = x.to(device), target.to(device)
        net = forward if isinstance(forward, nn.Module) else None
        quiet = self.runtime.no_sync(net) if net is not None and not sync else None
        with quiet or contextlib.nullcontext():
            with self.runtime.autocast(self.precision):
                loss = self.loss_fn(forward(x).float(), target)
            self.runtime.backward(loss / self.accum if self.accum > 1 else loss)
        lr = max(g["lr"] for g in self.opt.param_groups)
        if sync:
            self._optimizer_step()
        value = float(loss.detach())
        if self.log is not None:
            self.log(value, lr)
        return value

    def _optimizer_step(self) -> None:
        self.runtime.step(self.opt)
        self.opt.zero_grad(set_to_none=True)
        if self.after_step is not None:
            self.after_step()
        if self.sched is not None:
            self.sched.step_batch()

    def _notify(self, loss: float) -> None:
        """Every callback hears of the step, even when an earlier one asks to stop; a stop
        asked for on one process (callbacks run on the main one) stops every process."""
        for cb in self.callbacks:
            try:
                cb.on_batch_end(loss)
            except StopTraining:
                self.stopped = True
        if self.runtime.distributed:
            self.stopped = self.runtime.any(self.stopped)

    def run(
        self, forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[Batch]
    ) -> list[float]:
        """Step through ``batches`` (until a callback stops it); returns the losses."""
        losses: list[float] = []
        self.opt.zero_grad(set_to_none=True)
        for (x, target), last in _with_last(batches):
            sync = last or (len(losses) + 1) % self.accum == 0
            losses.append(self.step(forward, x, target, sync))
            self._notify(losses[-1])
            if self.stopped:
                break
        return losses


class Trainer:
    """One model's training on one train/val pair: batches, optimizers and epochs.

    ``fit`` drives it phase by phase; the LR range test takes its batches and optimizer.
    """

    def __init__(
        self,
        model: nn.Module,
        train: ImageSet,
        val: ImageSet,
        prep: Preprocessing,
        cfg: TrainConfig,
        augment: AugmentSpec,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        runtime: Runtime | None = None,
    ) -> None:
        self.model, self.train, self.val, self.prep, self.cfg = model, train, val, prep, cfg
        self.runtime = runtime or Runtime(device)
        self.augment, self.device, self.callbacks = augment, self.runtime.device, callbacks
        if self.device.type == "cpu":
            tune_for_training()  # the C allocator's thresholds, once a process
        if cfg.sync_bn and self.runtime.distributed:
            # in place: the modules keep their names, so checkpoints and the bundle load
            # into a plain model
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device).to(memory_format=memory_format(cfg.channels_last))
        self.num_classes = int(getattr(model, "num_classes", int(train.targets.max()) + 1))
        # The order of the training set: the same generator (and draws) on every process.
        self.gen = torch.Generator().manual_seed(cfg.seed)
        # Augmentation and mixing: a process's own stream, seeded per epoch (aug_seed), so
        # it never moves the order generator and resumes exactly at any epoch.
        self.aug_gen = torch.Generator()
        # Each process's share of a global batch of cfg.batch_size images.
        self.batch_size = max(1, cfg.batch_size // self.runtime.world_size)
        self.net: nn.Module = model  # what the phase trains through (compiled / DDP)
        self.loss_fn = nn.CrossEntropyLoss(
            weight=self._class_weights(), label_smoothing=cfg.label_smoothing
        ).to(self.device)
        self.features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.batch_log: Any = None  # csv writer of batches.csv, set by fit
        self.epoch = 0
        self.train_prep = prep  # the epoch's training size (progressive resizing)
        # The moving average of the weights of a phase that trains the backbone
        # (train.ema_decay), and which weights the last validation preferred.
        self.ema: ModelEmaV3 | None = None
        self.ema_steps = 0
        self.kept: nn.Module = model

    def _class_weights(self) -> torch.Tensor | None:
        if self.cfg.class_weights != "auto":
            return None
        counts = torch.bincount(self.train.targets, minlength=int(self.train.targets.max()) + 1)
        counts = counts.float().clamp(min=1)
        return counts.sum() / (len(counts) * counts)

    def emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def batches_per_epoch(self, phase: Phase | None = None) -> int:
        """Batches a process runs per epoch: of its shard, or (head on cached features,
        the same computation everywhere) of the whole training set."""
        if phase is not None and self.cached(phase):
            return steps_in(len(self.train), self.cfg.batch_size)
        shard = -(-len(self.train) // self.runtime.world_size)
        return steps_in(shard, self.batch_size)

    def steps_per_epoch(self, phase: Phase | None = None) -> int:
        """Optimizer steps per epoch (every ``grad_accum`` batches, and the last)."""
        return -(-self.batches_per_epoch(phase) // self.cfg.grad_accum)

    def optimizer(self, phase: Phase) -> tuple[torch.optim.Optimizer, Schedule]:
        apply_phase(self.model, phase)
        layer_decay = self.cfg.layer_decay if phase.train_backbone else None
        groups = param_groups(self.model, phase, self.cfg.weight_decay, layer_decay)
        opt = build_optimizer(self.cfg, groups)
        return opt, Schedule(self.cfg, opt, phase.epochs, self.steps_per_epoch(phase))

    def prepare(self, phase: Phase) -> None:
        """Wrap the model for ``phase`` (after its trainable parameters are set): compiled
        and DDP-wrapped anew each phase, since DDP's reducer only knows the parameters that
        trained when it was built. Head epochs on cached features need no wrapping."""
        if not self.cached(phase):
            self.net = self.runtime.prepare(self.model, self.cfg.compile)

    def cached(self, phase: Phase) -> bool:
        """Whether ``phase`` trains the head on features computed once."""
        return phase.trainable == "head" and not phase.augment and self.cfg.feature_cache

    def stepper(self, phase: Phase, opt: torch.optim.Optimizer, sched: Schedule) -> Stepper:
        # The head on cached fp32 features has always trained in fp32.
        precision = "fp32" if self.cached(phase) else self.cfg.precision
        after = self._update_ema if self.ema is not None else None
        accum = 1 if self.cached(phase) else self.cfg.grad_accum
        return Stepper(
            opt,
            self.loss_fn,
            self.runtime,
            precision,
            sched,
            self.callbacks,
            self._log_batch,
            after,
            accum,
        )

    def start_ema(self, phase: Phase, state: dict[str, Any] | None = None) -> None:
        """A fresh moving average for ``phase`` (or the checkpoint's): phases that train
        the backbone only, when ``train.ema_decay`` is set. timm's warm-up lets the average
        follow the weights closely over the first steps (decay ``1 - (1 + t)^-2/3`` up to
        ``ema_decay``), so a short phase is not averaged with its starting point."""
        self.ema, self.ema_steps, self.kept = None, 0, self.model
        if self.cfg.ema_decay is None or not phase.train_backbone:
            return
        self.ema = ModelEmaV3(self.model, decay=self.cfg.ema_decay, use_warmup=True)
        if state is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema_steps = int(state["ema_steps"])

    def _update_ema(self) -> None:
        assert self.ema is not None
        self.ema_steps += 1
        self.ema.update(self.model, step=self.ema_steps)

    def _log_batch(self, loss: float, lr: float) -> None:
        if self.batch_log is not None:
            self.batch_log.writerow([self.epoch, f"{loss:.6f}", f"{lr:.8g}"])

    def _order(self) -> torch.Tensor:
        n = len(self.train)
        if self.cfg.sampler == "balanced":
            counts = torch.bincount(self.train.targets).float()
            weights = (1.0 / counts)[self.train.targets]
            return torch.multinomial(weights, n, replacement=True, generator=self.gen)
        return torch.randperm(n, generator=self.gen)

    def _cached_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.features is None:
            digest = backbone_digest(self.model) if self.cfg.feature_cache_dir else ""
            self.features = (
                self._features_of(self.train, digest),
                self._features_of(self.val, digest),
            )
        return self.features

    def _features_of(self, data: ImageSet, backbone: str) -> torch.Tensor:
        """The frozen backbone's features of ``data``: from the disk cache if one is set
        and holds them, else extracted (sharded over the processes and gathered) and
        stored there. Only the main process reads and writes the cache; the others get
        its features (no shared disk needed across machines)."""
        args = (self.prep, self.batch_size * 2, self.device, self.cfg.precision, self.runtime)
        if not self.cfg.feature_cache_dir:
            return extract_features(self.model, data, *args)
        store = FeatureCache(Path(self.cfg.feature_cache_dir))
        key = cache_key(backbone, self.prep, self.cfg.precision, images_digest(data))
        found = store.load(key, len(data)) if self.runtime.is_main else None
        if self.runtime.broadcast(found is not None):
            logger.info("features of %d images from the cache %s", len(data), store.path(key))
            return self.runtime.broadcast(found)  # type: ignore[return-value]
        features = extract_features(self.model, data, *args)
        if self.runtime.is_main:
            store.save(key, features)
        return features

    def _head_batches(self, feats: torch.Tensor) -> Iterator[Batch]:
        drop = float(getattr(self.model, "drop_rate", 0.0))
        for idx in self._order().split(self.cfg.batch_size):
            x = F.dropout(feats[idx].to(self.device), p=drop, training=True)
            yield x, self.train.targets[idx].to(self.device)

    def head_epoch(self, stepper: Stepper) -> tuple[float, torch.Tensor]:
        """Train the classifier on cached features; return mean loss and val logits."""
        feats, val_feats = self._cached_features()
        head = classifier(self.model)
        head.train()
        batches = join_last_single(self._head_batches(feats), self.cfg.batch_size)
        losses = stepper.run(head, batches)
        head.eval()
        # Every process ran the same steps on the same features; the main one's head and
        # logits are shared so that no rounding difference can split the ranks' decisions.
        self.runtime.broadcast_module(head)
        with torch.inference_mode():
            val_logits = head(val_feats.to(self.device)).float().cpu()
        return sum(losses) / max(1, len(losses)), self.runtime.broadcast(val_logits)

    def train_batches(self, phase: Phase) -> Iterator[Batch]:
        """One epoch of ready training batches: on the device, augmented (and mixed) as
        ``phase`` says, in the memory format of the model, a last single image joined."""
        mixing = phase.augment and (self.augment.mixup > 0 or self.augment.cutmix > 0)
        order = self._order()
        if self.runtime.distributed:
            order = order[self.runtime.shard(len(order))]
        self.aug_gen.manual_seed(aug_seed(self.cfg.seed, self.epoch, self.runtime.rank))
        # iterate_batches steps over len(train) on an in-memory set, so an order shorter
        # than the set (a shard) ends in empty batches: they are dropped.
        raw = (
            b for b in iterate_batches(self.train, self.batch_size, order=order) if len(b[1]) > 0
        )
        for x, y in join_last_single(raw, self.batch_size):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device)
            x = (
                augment_batch(x, self.train_prep, self.augment, self.aug_gen)
                if phase.augment
                else eval_batch(x, self.train_prep)
            )
            if self.cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target: torch.Tensor = y
            if mixing:
                x, target = mix_batch(x, y, self.num_classes, self.augment, self.aug_gen)
                target = target.to(self.device)
            yield x, target

    def endless_batches(self, phase: Phase) -> Iterator[Batch]:
        """:meth:`train_batches`, epoch after epoch (reshuffled, augmented anew each time)."""

        def epochs() -> Iterator[Iterator[Batch]]:
            while True:
                self.epoch += 1
                yield self.train_batches(phase)

        return itertools.chain.from_iterable(epochs())

    def full_epoch(self, phase: Phase, stepper: Stepper) -> tuple[float, torch.Tensor]:
        set_train_mode(self.model, phase)
        self.features = None  # the backbone may change now
        losses = stepper.run(self.net, self.train_batches(phase))
        # the epoch's loss over every process's shard (equal numbers of batches each)
        train_loss = self.runtime.mean(sum(losses) / max(1, len(losses)))
        val_logits = self._val_logits(self.model)
        self.kept = self.model
        if self.ema is not None:
            ema_logits = self._val_logits(self.ema.module)
            monitor = self.cfg.monitor
            raw = _val_metrics(val_logits, self.val.targets)[monitor]
            averaged = _val_metrics(ema_logits, self.val.targets)[monitor]
            if is_improvement(monitor, averaged, raw, 0.0):
                val_logits, self.kept = ema_logits, self.ema.module
        return train_loss, val_logits

    def _val_logits(self, model: nn.Module) -> torch.Tensor:
        args = (self.batch_size * 2, self.device, self.cfg.precision, self.runtime)
        return predict_logits(model, self.val, self.prep, *args)

    def run_epoch(self, phase: Phase, stepper: Stepper) -> tuple[float, torch.Tensor]:
        if self.cached(phase):
            return self.head_epoch(stepper)
        return self.full_epoch(phase, stepper)


def aug_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentation seed of a process in an epoch: distinct per rank and epoch."""
    return ((seed * 1_000_003 + epoch) * 1_009 + rank + 1) % 2**63


@dataclass
class _Progress:
    """What a checkpoint restores besides weights and optimizer."""

    history: list[EpochRecord] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0  # epochs without improvement in the current phase
    phases: list[dict[str, Any]] = field(default_factory=list)


def _checkpoint(
    trainer: Trainer,
    opt: torch.optim.Optimizer,
    sched: Schedule,
    index: int,
    in_phase: int,
    done: bool,
    p: _Progress,
) -> dict[str, Any]:
    return {
        "model": trainer.model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "phase_index": index,
        "epoch": trainer.epoch,
        "epoch_in_phase": in_phase,
        "phase_done": done,
        "generator": trainer.gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [asdict(r) for r in p.history],
        "best": p.best,
        "best_epoch": p.best_epoch,
        "stale": p.stale,
        "phases": p.phases,
        "ema": trainer.ema.module.state_dict() if trainer.ema is not None else None,
        "ema_steps": trainer.ema_steps,
        "world_size": trainer.runtime.world_size,
    }


def _restore(trainer: Trainer, ckpt: dict[str, Any], run_dir: Path) -> _Progress:
    trainer.model.load_state_dict(ckpt["model"])
    trainer.gen.set_state(ckpt["generator"])
    torch.set_rng_state(ckpt["torch_rng"])
    trainer.epoch = int(ckpt["epoch"])
    history = [EpochRecord(**r) for r in ckpt["history"]]
    started_on = int(ckpt.get("world_size", 1))
    if started_on != trainer.runtime.world_size and trainer.runtime.is_main:
        logger.warning(
            "resuming a run of %d process(es) on %d: the schedule continues at the same "
            "fraction of the phase, but results are bit-identical to an uninterrupted run "
            "only on the same number of processes",
            started_on,
            trainer.runtime.world_size,
        )
    if trainer.runtime.is_main:
        write_history(run_dir / "history.csv", history)
        _truncate_batches(run_dir / "batches.csv", trainer.epoch)
    return _Progress(
        history, ckpt["best"], int(ckpt["best_epoch"]), int(ckpt["stale"]), list(ckpt["phases"])
    )


def _start_phase(
    trainer: Trainer,
    phase: Phase,
    index: int,
    resume: dict[str, Any] | None,
    progress: _Progress,
) -> tuple[torch.optim.Optimizer, Schedule, int]:
    """The phase's optimizer and schedule, and the epoch within the phase to start at
    (restored from ``resume`` when it stopped inside this phase)."""
    opt, sched = trainer.optimizer(phase)
    trainer.prepare(phase)
    if resume and index == resume["phase_index"]:
        opt.load_state_dict(resume["optimizer"])
        in_phase = phase.epochs if resume["phase_done"] else int(resume["epoch_in_phase"])
        _restore_schedule(trainer, phase, sched, resume, in_phase)
        trainer.start_ema(phase, resume)
        return opt, sched, in_phase
    trainer.start_ema(phase)
    progress.stale = 0
    progress.phases.append(
        {**phase.to_dict(), "trainable_parameters": trainable_count(trainer.model)}
    )
    return opt, sched, 0


def _restore_schedule(
    trainer: Trainer, phase: Phase, sched: Schedule, resume: dict[str, Any], in_phase: int
) -> None:
    """The checkpoint's schedule; on another number of processes (other steps per epoch)
    the same fraction of the phase: a fresh schedule stepped through ``in_phase`` epochs
    of this run's steps, with the checkpoint's plateau state."""
    state = resume["scheduler"]
    if int(resume.get("world_size", 1)) == trainer.runtime.world_size:
        sched.load_state_dict(state)
        return
    sched.load_state_dict({**state, "batch": sched.batch.state_dict()})
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(in_phase * trainer.steps_per_epoch(phase)):
            sched.step_batch()


def _epoch(
    trainer: Trainer, phase: Phase, in_phase: int, stepper: Stepper, sched: Schedule
) -> EpochRecord:
    """Train one epoch, validate, step the epoch schedule; the epoch's history row."""
    trainer.epoch += 1
    size = phase.image_size(in_phase, trainer.prep.input_size)
    trainer.train_prep = replace(trainer.prep, input_size=size)
    trainer.emit("on_epoch_start", phase, trainer.epoch, trainer.batches_per_epoch(phase))
    t0 = time.perf_counter()
    lr = max(g["lr"] for g in stepper.opt.param_groups)
    train_loss, logits = trainer.run_epoch(phase, stepper)
    vm = _val_metrics(logits, trainer.val.targets)
    sched.step_epoch(vm[trainer.cfg.monitor])
    return EpochRecord(
        trainer.epoch,
        phase.name,
        train_loss,
        vm["val_loss"],
        vm["val_accuracy"],
        vm["val_macro_f1"],
        lr,
        time.perf_counter() - t0,
        "ema" if trainer.kept is not trainer.model else "raw",
    )


def _judge(progress: _Progress, record: EpochRecord, cfg: TrainConfig) -> bool:
    """Add ``record`` to the history; whether it improved on the best (strictly, by more
    than ``min_delta``) or counts towards early stopping."""
    progress.history.append(record)
    value = float(getattr(record, cfg.monitor))
    if not is_improvement(cfg.monitor, value, progress.best, cfg.min_delta):
        progress.stale += 1
        return False
    progress.best, progress.best_epoch, progress.stale = value, record.epoch, 0
    return True


@contextlib.contextmanager
def _batch_log(run_dir: Path, is_main: bool) -> Iterator[Any]:
    """``batches.csv`` open for appending (its header on a new file); None off the main
    process, which writes nothing."""
    if not is_main:
        yield None
        return
    with (run_dir / "batches.csv").open("a", newline="", encoding="utf-8") as fh:
        if fh.tell() == 0:
            csv.writer(fh).writerow(["epoch", "loss", "lr"])
        yield fh


def fit(
    model: nn.Module,
    phases: Sequence[Phase],
    train: ImageSet,
    val: ImageSet,
    prep: Preprocessing,
    cfg: TrainConfig,
    augment: AugmentSpec,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    device: torch.device | None = None,
    resume: dict[str, Any] | None = None,
    runtime: Runtime | None = None,
) -> FitResult:
    """Train through ``phases``; log ``history.csv`` and checkpoint after every epoch.

    A phase ends early after ``cfg.early_stopping`` epochs without improvement; a callback
    raising :class:`StopTraining` ends the whole fit after the current epoch. With a
    ``runtime`` of several processes, every process calls ``fit``; only the main one
    writes (and should be given the callbacks).
    """
    runtime = runtime or Runtime(device or torch.device("cpu"))
    trainer = Trainer(model, train, val, prep, cfg, augment, runtime.device, callbacks, runtime)
    progress = _restore(trainer, resume, run_dir) if resume else _Progress()
    best_path = run_dir / "checkpoints" / "best.pt"
    best_state = (
        load_checkpoint(best_path)["model"]
        if resume and best_path.exists()
        else copy.deepcopy(model.state_dict())
    )
    started = time.perf_counter()
    trainer.emit("on_fit_start", phases)
    with _batch_log(run_dir, runtime.is_main) as batches:
        trainer.batch_log = csv.writer(batches) if batches is not None else None
        for index, phase in enumerate(phases):
            if resume and index < resume["phase_index"]:
                continue
            opt, sched, start_in_phase = _start_phase(trainer, phase, index, resume, progress)
            stepper = trainer.stepper(phase, opt, sched)
            for in_phase in range(start_in_phase, phase.epochs):
                record = _epoch(trainer, phase, in_phase, stepper, sched)
                improved = _judge(progress, record, cfg)
                if improved:
                    best_state = copy.deepcopy(trainer.kept.state_dict())
                patience_out = cfg.early_stopping is not None and (
                    progress.stale >= cfg.early_stopping
                )
                stop = stepper.stopped or patience_out
                done = stop or in_phase + 1 == phase.epochs
                if runtime.is_main:
                    state = _checkpoint(trainer, opt, sched, index, in_phase + 1, done, progress)
                    if improved:  # best.pt holds the weights that validated best
                        save_atomic({**state, "model": best_state}, best_path)
                    save_atomic(state, run_dir / "checkpoints" / "last.pt")
                    assert batches is not None
                    batches.flush()
                    write_history(run_dir / "history.csv", progress.history)
                trainer.emit("on_epoch_end", record)
                if stop:
                    break
            if stepper.stopped:
                break
    trainer.emit("on_fit_end")
    return FitResult(
        progress.history,
        progress.best_epoch,
        best_state,
        time.perf_counter() - started,
        progress.phases,
    )
