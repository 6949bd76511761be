"""Progress bars and epoch lines, as engine callbacks. The CLI attaches the rich ones; the
Python API (:mod:`transferlab.api`) attaches :class:`NotebookProgress`, which draws with
``tqdm.auto``: a widget in Jupyter when ipywidgets is installed, text elsewhere."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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

from transferlab.engine import Callback, EpochRecord
from transferlab.finetune import Phase

if TYPE_CHECKING:
    from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class EpochLogger(Callback):
    """One log line per epoch (always on; quiet hides INFO)."""

    def __init__(self) -> None:
        self.total = 0

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.total = sum(p.epochs for p in phases)

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


class ProgressBar(Callback):
    """A rich progress bar over the batches of each epoch (terminals only)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: TaskID | None = None

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.progress.start()

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch} [{phase.name}]", total=steps, loss=0.0)

    def on_batch_end(self, loss: float) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=1, loss=loss)

    def on_fit_end(self) -> None:
        self.progress.stop()


class NotebookProgress(Callback):
    """One ``tqdm.auto`` bar per epoch over its batches; at its end the bar shows the
    epoch's validation numbers, so a notebook keeps one line per epoch."""

    def __init__(self) -> None:
        self.total = 0
        self.bar: tqdm | None = None

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.total = sum(p.epochs for p in phases)

    def on_epoch_start(self, phase: Phase, epoch: int, steps: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.total} [{phase.name}]", leave=True)

    def on_batch_end(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch_end(self, r: EpochRecord) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                train_loss=f"{r.train_loss:.4f}",
                val_acc=f"{r.val_accuracy:.4f}",
                val_macro_f1=f"{r.val_macro_f1:.4f}",
            )
            self.bar.close()
            self.bar = None

    def on_fit_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
