"""How fast this data, model and device train: the probe before a time-budgeted run.

A few real batches of the run's own training set go through the run's own training step
(:class:`~transferlab.engine.Trainer` and :class:`~transferlab.engine.Stepper`: augmentation,
forward, backward, optimizer step, the EMA update when it is on) at the model's size, at
half of it and at the lowest size the plan may choose, then a feature extraction (eval
forward, at the model's size and at that lowest size), a few head steps on those features
and one checkpoint write. The model's weights, BatchNorm statistics, trainable flags and
train/eval modes and every RNG stream are put back afterwards, so the run that follows
trains exactly as it would have without the probe.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferlab.config import RunConfig
from transferlab.data.augment import AugmentSpec
from transferlab.data.store import ImageSet
from transferlab.data.transforms import Preprocessing
from transferlab.engine import Batch, Trainer, extract_features, save_atomic
from transferlab.finetune import Phase, classifier, plan_phases, set_train_mode

logger = logging.getLogger(__name__)

# Each measurement runs one untimed batch (allocations, kernel choice), then timed batches
# until this many seconds or MAX_TIMED batches (at least two): a few seconds in all on a
# CPU. The median batch counts. The fastest did once (a slow moment of a shared machine
# leaves the budget unused), but it is the fastest of a whole epoch's batches too: on
# all of AHE-64 the epochs then took 1.3x the plan (BudgetStop cut the last one short).
TIMED_SECONDS = 2.0
MAX_TIMED = 5
# The probe steps with the run's batch size, at most this many images on a CPU (on a GPU:
# the run's). A CPU step per image is about the same from 32 images up, but not below:
# at 8, lite0 at 96 px took 1.7x the time per image of a batch of 32 (the planned epochs
# then came out 25% short of the budget).
CPU_PROBE_BATCH = 32


@dataclass(frozen=True)
class Speeds:
    """What the probe measured, in seconds."""

    train: tuple[tuple[int, float], ...]  # (image size, one training step per image)
    forward: float  # eval forward per image at the model's size (features, validation, test)
    head: float  # a head step on cached features (the run's batch size)
    save: float  # one checkpoint write
    figure: float  # one report figure drawn to PNG (the report's libraries imported first)
    probe_s: float  # how long the probe took
    new_size: float = 0.0  # a training step's extra time at an image size new to the model

    # eval forward per image at smaller sizes: (image size, seconds), the lowest planned
    forward_sizes: tuple[tuple[int, float], ...] = ()

    def train_image(self, size: int) -> float:
        """One training step per image at ``size``, through the timed sizes
        (:func:`through`)."""
        if not self.train:
            return self.forward * 3  # backward is about twice the forward
        return through(self.train, size)

    def forward_at(self, size: int) -> float:
        """An eval forward per image at ``size``: through the sizes it was timed at, or,
        timed at one size only, scaled from it as a training step scales."""
        if not self.train:
            return self.forward
        top = max(s for s, _ in self.train)  # the model's size, where forward was timed
        if self.forward_sizes:
            return through(((top, self.forward), *self.forward_sizes), size)
        return self.forward * self.train_image(size) / self.train_image(top)

    def to_dict(self) -> dict[str, object]:
        return {
            "train_s_per_image": {str(s): round(t, 6) for s, t in self.train},
            "forward_s_per_image": round(self.forward, 6),
            **(
                {"forward_s_per_image_at": {str(z): round(t, 6) for z, t in self.forward_sizes}}
                if self.forward_sizes
                else {}
            ),
            "head_s_per_step": round(self.head, 6),
            "checkpoint_s": round(self.save, 4),
            "figure_s": round(self.figure, 4),
            "probe_s": round(self.probe_s, 2),
            "new_size_s": round(self.new_size, 3),
        }


def through(timed: tuple[tuple[int, float], ...], size: int) -> float:
    """Seconds per image at ``size`` from (size, seconds) timings: ``t(s) = t(a) * (s / a)
    ** p`` through the two timed sizes ``a < b`` nearest to it (the lowest two below
    them, the highest two above), with ``p`` held to [1, 2]: a convolution's work grows
    with the pixels (p = 2) and what does not (head, optimizer step, Python) pulls p
    down, but never below 1. Held, because two timings on a busy machine can say anything
    (a 64 px step measured as slow as a 128 px one)."""
    ordered = sorted(timed)
    if len(ordered) == 1:
        (s1, t1), (s2, t2) = ordered[0], ordered[0]
    else:
        i = min(max(1, sum(1 for s, _ in ordered if s < size)), len(ordered) - 1)
        (s1, t1), (s2, t2) = ordered[i - 1], ordered[i]
    p = math.log(t2 / t1) / math.log(s2 / s1) if s2 > s1 and t1 > 0 and t2 > 0 else 2.0
    return t1 * (size / s1) ** min(2.0, max(1.0, p))


def low_size(size: int) -> int:
    """The middle probe size, between the model's and the lowest the plan may choose:
    half the model's, a multiple of 8, at least 32 (below that the backbone's deepest maps
    vanish)."""
    return min(size, max(32, size // 2 // 8 * 8))


def probe_speeds(
    model: nn.Module,
    train: ImageSet,
    val: ImageSet,
    prep: Preprocessing,
    cfg: RunConfig,
    augment: AugmentSpec,
    device: torch.device,
    lowest: int | None = None,
) -> Speeds:
    """Time the run's own steps on its own data; see the module docstring. ``lowest``:
    the lowest image size the plan may train at, timed too when below half the model's."""
    started = time.perf_counter()
    small = device.type == "cpu" and cfg.train.batch_size > CPU_PROBE_BATCH
    probe_cfg = replace(cfg.train, batch_size=CPU_PROBE_BATCH) if small else cfg.train
    with _kept(model):
        trainer = Trainer(model, train, val, prep, probe_cfg, augment, device)
        full = _backbone_phase(cfg, augment.enabled, prep.input_size)
        wanted = {prep.input_size, low_size(prep.input_size), *([lowest] if lowest else [])}
        sizes = sorted(wanted, reverse=True)
        timed = [(s, _train_step(trainer, full, s, device)) for s in sizes] if full else []
        train_s = tuple((s, per_image) for s, (per_image, _) in timed)
        # the sizes timed after the first were new to the model, as each resized epoch's is
        new_size = max((first for _, (_, first) in timed[1:]), default=0.0)
        feats, forward = _forward(model, train, prep, probe_cfg.batch_size * 2, cfg, device)
        # the eval forward at the lowest planned size too: scaled from the model's size as
        # a training step scales, it came out twice the time it took at 112 px
        forward_sizes: tuple[tuple[int, float], ...] = ()
        if lowest and lowest < prep.input_size:
            low_prep = replace(prep, input_size=lowest)
            _, low = _forward(model, train, low_prep, probe_cfg.batch_size * 2, cfg, device)
            forward_sizes = ((lowest, low),)
        head = _head_step(trainer, cfg, feats, device)
        save = _save(model)
    figure = _figure()
    probe_s = time.perf_counter() - started
    speeds = Speeds(train_s, forward, head, save, figure, probe_s, new_size, forward_sizes)
    logger.debug("probe: %s", speeds.to_dict())
    return speeds


def _backbone_phase(cfg: RunConfig, augment: bool, size: int) -> Phase | None:
    """The phase that trains the backbone, as the run would have it (with one epoch at
    least, so that a plan that starts from zero fine-tuning epochs can be timed too)."""
    train = replace(cfg.train, epochs=max(1, cfg.train.epochs), resize_from=None)
    return next((p for p in plan_phases(train, augment, size) if p.train_backbone), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], int], device: torch.device) -> float:
    """Seconds per image of ``step`` (which returns how many images it did): one untimed
    call, then timed calls until TIMED_SECONDS or MAX_TIMED calls."""
    return _timed_first(step, device)[0]


def _timed_first(step: Callable[[], int], device: torch.device) -> tuple[float, float]:
    """:func:`_timed`, and how much longer than the others the first call took (a new
    input shape: memory, kernel choice)."""
    t_first = time.perf_counter()
    first_images = step()
    _sync(device)
    first = time.perf_counter() - t_first
    started, times = time.perf_counter(), []
    for _ in range(MAX_TIMED):
        t0 = time.perf_counter()
        images = step()
        _sync(device)
        times.append((time.perf_counter() - t0) / max(1, images))
        if len(times) >= 2 and time.perf_counter() - started >= TIMED_SECONDS:
            break
    per_image = statistics.median(times)
    return per_image, max(0.0, first - per_image * first_images)


def _train_step(
    trainer: Trainer, phase: Phase, size: int, device: torch.device
) -> tuple[float, float]:
    """A full training step per image at ``size``, through the run's own Stepper, and the
    first step's extra time at that size."""
    opt, sched = trainer.optimizer(phase)
    trainer.start_ema(phase)
    stepper = trainer.stepper(phase, opt, sched)
    trainer.train_prep = replace(trainer.prep, input_size=size)
    set_train_mode(trainer.model, phase)
    batches: Iterator[Batch] = trainer.endless_batches(phase)

    def step() -> int:
        x, y = next(batches)
        stepper.step(trainer.model, x, y)
        return len(x)

    return _timed_first(step, device)


def _forward(
    model: nn.Module,
    train: ImageSet,
    prep: Preprocessing,
    batch: int,
    cfg: RunConfig,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    """Eval forward (feature extraction) per image, and the features of a few images."""
    n = min(len(train), batch)
    part = train.subset(range(n))
    found: list[torch.Tensor] = []

    def step() -> int:
        found.append(extract_features(model, part, prep, n, device, cfg.train.precision))
        return n

    seconds = _timed(step, device)
    return found[-1].clone(), seconds  # out of inference mode: the head steps train on them


def _head_step(
    trainer: Trainer, cfg: RunConfig, feats: torch.Tensor, device: torch.device
) -> float:
    """A head step on cached features (the head-only epochs), at the run's batch size:
    a step of a small layer costs about the same whatever its batch, so per step."""
    head_phase = Phase("head", 1, "head", cfg.train.head_lr, 0.0, False, "frozen")
    opt, sched = trainer.optimizer(head_phase)
    stepper = trainer.stepper(head_phase, opt, sched)
    head = classifier(trainer.model)
    head.train()
    repeat = -(-cfg.train.batch_size // len(feats))  # the few features, to a whole batch
    x = feats.repeat(repeat, 1)[: cfg.train.batch_size]
    y = trainer.train.targets[: len(feats)].repeat(repeat)[: cfg.train.batch_size]

    def step() -> int:
        stepper.step(head, x, y)
        return 1

    return _timed(step, device)


def _save(model: nn.Module) -> float:
    """One checkpoint write (weights and an optimizer's two moments, fsynced)."""
    state = model.state_dict()
    payload = {"model": state, "optimizer": {k: (v, v) for k, v in state.items()}}
    with tempfile.TemporaryDirectory(prefix="transferlab-probe-") as tmp:
        t0 = time.perf_counter()
        save_atomic(payload, Path(tmp) / "probe.pt")
        return time.perf_counter() - t0


def _figure() -> float:
    """One figure of the report drawn to PNG. The report's heavy imports (matplotlib,
    grad-cam) happen here, so that the probe's time holds them and the report's does not."""
    import importlib

    from matplotlib.figure import Figure

    from transferlab.report.plots import to_png

    with contextlib.suppress(ImportError):  # an optional dependency: no heat maps without it
        importlib.import_module("pytorch_grad_cam")

    def draw() -> int:
        fig = Figure(figsize=(5.6, 3.4))
        ax = fig.add_subplot()
        ax.plot(np.arange(200), np.sin(np.arange(200) / 10))
        ax.imshow(np.eye(12), extent=(0, 200, -1, 1), aspect="auto", alpha=0.3)
        to_png(fig)
        return 1

    return _timed(draw, torch.device("cpu"))


@contextlib.contextmanager
def _kept(model: nn.Module) -> Iterator[None]:
    """Put back the model (weights, buffers, trainable flags, modes, no gradients) and
    every RNG stream the probe may draw from."""
    state = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    rng = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    py, npy = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        model.load_state_dict(state)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
        for module, training in modes:
            module.training = training
        torch.set_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)
        np.random.set_state(npy)
