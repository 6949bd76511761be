"""The training loop: phases of epochs, per-epoch validation, history and checkpoints.

``fit`` owns the loop; callbacks only observe (``on_<stage>_<start|end>`` no-ops by
default). Phases that keep the backbone frozen and do not augment train the head on
features computed once, so their epochs cost milliseconds instead of a backbone pass.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config import TrainConfig
from transferlab.data.store import ImageSet, iterate_batches
from transferlab.data.transforms import Preprocessing, eval_batch, train_batch
from transferlab.finetune import Phase, apply_phase, classifier, param_groups
from transferlab.metrics import confusion_matrix, precision_recall_f1


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


HISTORY_FIELDS = [f.name for f in fields(EpochRecord)]


class Callback:
    """Observes training. Every hook is a no-op unless overridden."""

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Backbone output right before the classifier (timm's ``pre_logits``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)  # type: ignore[operator]


@torch.inference_mode()
def _batched_outputs(
    fn: Callable[[torch.Tensor], torch.Tensor],
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    outs = []
    for x, _ in iterate_batches(data, batch_size, shuffle=False):
        with autocast(device, precision):
            outs.append(fn(eval_batch(x.to(device), prep)).float().cpu())
    return torch.cat(outs)


def predict_logits(
    model: nn.Module,
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int = 64,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    model.eval()
    return _batched_outputs(model, data, prep, batch_size, device or torch.device("cpu"), precision)


def extract_features(
    model: nn.Module,
    data: ImageSet,
    prep: Preprocessing,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    model.eval()
    return _batched_outputs(
        lambda x: pooled_features(model, x), data, prep, batch_size, device, precision
    )


def _cosine_with_warmup(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _val_metrics(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
    loss = float(F.cross_entropy(logits, targets))
    cm = confusion_matrix(targets.numpy(), logits.argmax(1).numpy(), logits.shape[1])
    f1 = float(precision_recall_f1(cm)[2].mean())
    return loss, float(cm.trace() / max(1, cm.sum())), f1


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write with ``torch.save`` to a temp file, fsync, then rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_history(path: Path, record: EpochRecord) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(
            {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(record).items()}
        )
        fh.flush()


class _Trainer:
    """One ``fit`` call's state; split out so each step stays short."""

    def __init__(
        self,
        model: nn.Module,
        train: ImageSet,
        val: ImageSet,
        prep: Preprocessing,
        cfg: TrainConfig,
        device: torch.device,
        callbacks: Sequence[Callback],
    ) -> None:
        self.model, self.train, self.val, self.prep, self.cfg = model, train, val, prep, cfg
        self.device, self.callbacks = device, callbacks
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.features: tuple[torch.Tensor, torch.Tensor] | None = None
        self.batch_log: Any = None  # csv writer of batches.csv, set by fit
        self.epoch = 0

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def optimizer(self, phase: Phase) -> tuple[torch.optim.Optimizer, Any]:
        apply_phase(self.model, phase)
        groups = param_groups(self.model, phase, self.cfg.weight_decay)
        opt = torch.optim.AdamW(groups)
        steps = phase.epochs * self._steps_per_epoch()
        warmup = min(steps // 10, self._steps_per_epoch()) if phase.train_backbone else 0
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(steps, max(1, warmup)))
        return opt, sched

    def _steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    def _cached_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.features is None:
            args = (self.prep, self.cfg.batch_size * 2, self.device, self.cfg.precision)
            self.features = (
                extract_features(self.model, self.train, *args),
                extract_features(self.model, self.val, *args),
            )
        return self.features

    def _step(self, opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr = max(g["lr"] for g in opt.param_groups)
        sched.step()
        value = float(loss.detach())
        if self.batch_log is not None:
            self.batch_log.writerow([self.epoch, f"{value:.6f}", f"{lr:.8g}"])
        self._emit("on_batch_end", value)
        return value

    def head_epoch(self, opt: torch.optim.Optimizer, sched: Any) -> tuple[float, torch.Tensor]:
        """Train the classifier on cached features; return mean loss and val logits."""
        feats, val_feats = self._cached_features()
        head, drop = classifier(self.model), float(getattr(self.model, "drop_rate", 0.0))
        head.train()
        order = torch.randperm(len(feats), generator=self.gen)
        losses = []
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start : start + self.cfg.batch_size]
            x = F.dropout(feats[idx].to(self.device), p=drop, training=True)
            loss = self.loss_fn(head(x), self.train.targets[idx].to(self.device))
            losses.append(self._step(opt, sched, loss))
        head.eval()
        with torch.inference_mode():
            val_logits = head(val_feats.to(self.device)).float().cpu()
        return sum(losses) / len(losses), val_logits

    def full_epoch(
        self, phase: Phase, opt: torch.optim.Optimizer, sched: Any
    ) -> tuple[float, torch.Tensor]:
        self.model.train()
        losses = []
        for x, y in self._train_batches():
            x = x.to(self.device, non_blocking=True)
            x = train_batch(x, self.prep, self.gen) if phase.augment else eval_batch(x, self.prep)
            with autocast(self.device, self.cfg.precision):
                loss = self.loss_fn(self.model(x).float(), y.to(self.device))
            losses.append(self._step(opt, sched, loss))
        val_logits = predict_logits(
            self.model,
            self.val,
            self.prep,
            self.cfg.batch_size * 2,
            self.device,
            self.cfg.precision,
        )
        return sum(losses) / len(losses), val_logits

    def _train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iterate_batches(self.train, self.cfg.batch_size, shuffle=True, generator=self.gen)


def fit(
    model: nn.Module,
    phases: Sequence[Phase],
    train: ImageSet,
    val: ImageSet,
    prep: Preprocessing,
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: Sequence[Callback] = (),
    device: torch.device | None = None,
) -> FitResult:
    """Train through ``phases``; log ``history.csv`` and checkpoint after every epoch."""
    device = device or torch.device("cpu")
    model.to(device)
    trainer = _Trainer(model, train, val, prep, cfg, device, callbacks)
    history: list[EpochRecord] = []
    best_f1, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    trainer._emit("on_fit_start", phases)
    epoch = 0
    batches_file = (run_dir / "batches.csv").open("a", newline="", encoding="utf-8")
    trainer.batch_log = csv.writer(batches_file)
    if batches_file.tell() == 0:
        trainer.batch_log.writerow(["epoch", "loss", "lr"])
    for index, phase in enumerate(phases):
        opt, sched = trainer.optimizer(phase)
        for _ in range(phase.epochs):
            epoch += 1
            trainer.epoch = epoch
            trainer._emit("on_epoch_start", phase, epoch, trainer._steps_per_epoch())
            t0 = time.perf_counter()
            lr = max(g["lr"] for g in opt.param_groups)
            if phase.train_backbone:
                train_loss, logits = trainer.full_epoch(phase, opt, sched)
            else:
                train_loss, logits = trainer.head_epoch(opt, sched)
            val_loss, val_acc, val_f1 = _val_metrics(logits, val.targets)
            record = EpochRecord(
                epoch,
                phase.name,
                train_loss,
                val_loss,
                val_acc,
                val_f1,
                lr,
                time.perf_counter() - t0,
            )
            history.append(record)
            batches_file.flush()
            append_history(run_dir / "history.csv", record)
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "phase_index": index,
                "epoch": epoch,
                "generator": trainer.gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": [asdict(r) for r in history],
            }
            if val_f1 >= best_f1:
                best_f1, best_epoch = val_f1, epoch
                best_state = copy.deepcopy(model.state_dict())
                save_atomic(state, run_dir / "checkpoints" / "best.pt")
            save_atomic(state, run_dir / "checkpoints" / "last.pt")
            trainer._emit("on_epoch_end", record)
    batches_file.close()
    trainer._emit("on_fit_end")
    return FitResult(history, best_epoch, best_state, time.perf_counter() - started)
