"""Progress bars and epoch lines, as engine callbacks. The CLI attaches the rich ones; the
Python API (:mod:`transferlab.api`) attaches :class:`NotebookProgress`, which draws with
``tqdm.auto``: a widget in Jupyter when ipywidgets is installed, text elsewhere."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from transferlab.budget import format_duration
from transferlab.engine import Callback, EpochRecord
from transferlab.finetune import Phase

if TYPE_CHECKING:
    from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Epoch:
    """One planned epoch: whether it trains the backbone (else: the head on cached
    features) and its training image size relative to the phase's last (cost ~ pixels)."""

    full: bool
    scale: float


def _epochs(phases: Sequence[Phase]) -> list[_Epoch]:
    planned = []
    for phase in phases:
        last = phase.image_sizes[-1] if phase.image_sizes else 1
        for i in range(phase.epochs):
            size = phase.image_sizes[i] if i < len(phase.image_sizes) else last
            full = phase.train_backbone or phase.augment
            planned.append(_Epoch(full, (size / last) ** 2))
    return planned


# Steps of the first full epoch to time before the whole run's estimate is logged.
ESTIMATE_AFTER_STEPS = 5


class RunClock(Callback):
    """The time left for the whole run, from the steps timed so far: every planned epoch's
    steps at the measured time per step of its kind (head on cached features, or full; a
    full step scaled by its image size's pixels under progressive resizing), and the
    validation and checkpoint time each epoch took besides its steps. Known once a step of
    each kind still to come has been timed (:meth:`remaining` is None until then).

    Written here rather than taken from rich/tqdm: their ETA assumes every step of the run
    costs the same, and a head step on cached features costs a thousandth of a full one.
    """

    def __init__(self, log_estimate: bool = True) -> None:
        self.log_estimate = log_estimate  # the estimate line; one clock per run logs it
        self.plan: list[_Epoch] = []
        self.index = -1  # the epoch under way, into ``plan``
        self.steps, self.done = 0, 0
        self.epoch_over = False  # the epoch under way has been validated
        self.step_s: dict[bool, float] = {}  # full? -> seconds per step at scale 1
        self.extra_s: dict[bool, float] = {}  # full? -> seconds per epoch besides its steps
        self.started = self.epoch_started = self.first_step = time.monotonic()
        self.estimated: float | None = None  # the whole run's seconds, once estimated

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.plan, self.started = _epochs(phases), time.monotonic()

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        self.index = min(epoch, len(self.plan)) - 1  # epochs count from 1, resumed ones too
        self.steps, self.done, self.epoch_over = steps, 0, False
        self.epoch_started = time.monotonic()

    def on_batch_end(self, loss: float) -> None:
        now = time.monotonic()
        self.done += 1
        if self.done == 1:  # the first step holds the epoch's set-up (features, kernels)
            self.first_step = now
            return
        epoch = self.plan[self.index]
        per_step = (now - self.first_step) / (self.done - 1)
        self.step_s[epoch.full] = per_step / max(epoch.scale, 1e-6)
        if epoch.full and self.done > min(ESTIMATE_AFTER_STEPS, self.steps - 1):
            self._estimate(now, f"its first {self.done} steps")

    def _estimate(self, now: float, source: str) -> None:
        """Log the whole run's estimated time, once."""
        left = self.remaining()
        if self.estimated is not None or left is None:
            return
        self.estimated = now - self.started + left
        if self.log_estimate:
            logger.info("about %s for the whole run (from %s)", _minutes(self.estimated), source)

    def on_epoch_end(self, record: EpochRecord) -> None:
        if not 0 <= self.index < len(self.plan):
            return
        epoch = self.plan[self.index]
        if epoch.full not in self.step_s:  # too few steps to time them apart from the epoch
            self.step_s[epoch.full] = record.seconds / max(1, self.steps) / epoch.scale
        steps_s = self.step_s[epoch.full] * epoch.scale * self.steps
        self.extra_s[epoch.full] = max(0.0, record.seconds - steps_s)
        self.epoch_over = True
        if epoch.full or not any(e.full for e in self.plan):  # a head-only run: its first
            self._estimate(time.monotonic(), "its first epoch")

    def remaining(self) -> float | None:
        """Seconds until the last planned epoch ends; None while a kind still to come has
        no timed step."""
        if not 0 <= self.index < len(self.plan):
            return None
        first = self.index + 1 if self.epoch_over else self.index
        todo = self.plan[first:]
        if any(e.full not in self.step_s for e in todo):
            return None
        steps_left = [self.steps] * len(todo)
        if todo and not self.epoch_over:
            steps_left[0] -= self.done
        return sum(
            n * self.step_s[e.full] * e.scale + self.extra_s.get(e.full, 0.0)
            for n, e in zip(steps_left, todo, strict=True)
        )

    def eta_text(self) -> str:
        """The whole run's time left, as the bars show it ("?" until it is known)."""
        left = self.remaining()
        return "?" if left is None else format_duration(left)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class EpochLogger(Callback):
    """One log line per epoch (always on; quiet hides INFO), and the whole run's estimated
    time after the first steps of the first full epoch (:class:`RunClock`)."""

    def __init__(self) -> None:
        self.total = 0
        self.clock = RunClock()

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.total = sum(p.epochs for p in phases)
        self.clock.on_fit_start(phases)

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        self.clock.on_epoch_start(phase, epoch, steps)

    def on_batch_end(self, loss: float) -> None:
        self.clock.on_batch_end(loss)

    def on_epoch_end(self, r: EpochRecord) -> None:
        logger.info(
            "epoch %d/%d [%s] train_loss %.4f  val_loss %.4f  val_acc %.4f  val_macro_f1 %.4f"
            "  (%.1fs)",
            r.epoch,
            self.total,
            r.phase,
            r.train_loss,
            r.val_loss,
            r.val_accuracy,
            r.val_macro_f1,
            r.seconds,
        )
        self.clock.on_epoch_end(r)


class ProgressBar(Callback):
    """A rich progress bar over the batches of each epoch (terminals only), with the
    epoch's time left and the whole run's (:class:`RunClock`)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            TextColumn("run ETA {task.fields[run_eta]}"),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.clock = RunClock(log_estimate=False)  # EpochLogger's clock logs it

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.clock.on_fit_start(phases)
        self.progress.start()

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        self.clock.on_epoch_start(phase, epoch, steps)
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch} [{phase.name}]", total=steps, loss=0.0, run_eta=self.clock.eta_text()
        )

    def on_batch_end(self, loss: float) -> None:
        self.clock.on_batch_end(loss)
        if self.task is not None:
            self.progress.update(self.task, advance=1, loss=loss, run_eta=self.clock.eta_text())

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.clock.on_epoch_end(record)

    def on_fit_end(self) -> None:
        self.progress.stop()


class NotebookProgress(Callback):
    """One ``tqdm.auto`` bar per epoch over its batches, with the whole run's time left
    (:class:`RunClock`, which also logs the run's estimated time once); at its end the bar
    shows the epoch's validation numbers, so a notebook keeps one line per epoch."""

    def __init__(self) -> None:
        self.total = 0
        self.bar: tqdm | None = None
        self.clock = RunClock()

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.total = sum(p.epochs for p in phases)
        self.clock.on_fit_start(phases)

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        from tqdm.auto import tqdm

        self.clock.on_epoch_start(phase, epoch, steps)
        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.total} [{phase.name}]", leave=True)

    def on_batch_end(self, loss: float) -> None:
        self.clock.on_batch_end(loss)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", run_left=self.clock.eta_text(), refresh=False)

    def on_epoch_end(self, r: EpochRecord) -> None:
        self.clock.on_epoch_end(r)
        if self.bar is not None:
            self.bar.set_postfix(
                train_loss=f"{r.train_loss:.4f}",
                val_acc=f"{r.val_accuracy:.4f}",
                val_macro_f1=f"{r.val_macro_f1:.4f}",
                run_left=self.clock.eta_text(),
            )
            self.bar.close()
            self.bar = None

    def on_fit_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
