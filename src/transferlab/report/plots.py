"""Figures of a run's report, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Each function takes plain data (already computed by :mod:`transferlab.report.stats`) and
touches no files and no global pyplot state, so reports can be built from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from transferlab.report.stats import Calibration, RollingStats

BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"
PHASE_COLOURS = ["#dbe9f6", "#fde6d2", "#dff0d8", "#eadcf2"]
DPI = 110


def _figure(width: float = 5.6, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _shade_phases(ax: object, epochs: Sequence[int], phases: Sequence[str]) -> None:
    """Shade each phase's span of epochs and name it, so curves read against the recipe."""
    if not epochs:
        return
    order: list[str] = []
    for p in phases:
        if p not in order:
            order.append(p)
    for i, name in enumerate(order):
        span = [e for e, p in zip(epochs, phases, strict=True) if p == name]
        colour = PHASE_COLOURS[i % len(PHASE_COLOURS)]
        ax.axvspan(min(span) - 0.5, max(span) + 0.5, color=colour, alpha=0.6, lw=0)  # type: ignore[attr-defined]
        ax.text(  # type: ignore[attr-defined]
            (min(span) + max(span)) / 2,
            0.02,
            name,
            transform=ax.get_xaxis_transform(),  # type: ignore[attr-defined]
            ha="center",
            va="bottom",
            fontsize=8,
            color=GREY,
        )


def _epoch_axes(epochs: Sequence[int], phases: Sequence[str]) -> tuple[Figure, Any]:
    fig = _figure()
    ax = fig.add_subplot()
    _shade_phases(ax, epochs, phases)
    ax.set_xticks(list(epochs))
    return fig, ax


def loss_curves(
    epochs: Sequence[int],
    phases: Sequence[str],
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    best_epoch: int | None = None,
) -> bytes:
    fig, ax = _epoch_axes(epochs, phases)
    ax.plot(epochs, train_loss, "o-", color=BLUE, label="train loss")
    ax.plot(epochs, val_loss, "o-", color=ORANGE, label="val loss")
    if best_epoch:
        ax.axvline(best_epoch, color=GREEN, ls="--", lw=1, label=f"best epoch ({best_epoch})")
    ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss per epoch")
    ax.legend(loc="best", fontsize=8)
    return to_png(fig)


def quality_curves(
    epochs: Sequence[int],
    phases: Sequence[str],
    accuracy: Sequence[float],
    macro_f1: Sequence[float],
) -> bytes:
    fig, ax = _epoch_axes(epochs, phases)
    ax.plot(epochs, accuracy, "o-", color=BLUE, label="val accuracy")
    ax.plot(epochs, macro_f1, "s-", color=GREEN, label="val macro-F1")
    ax.set(xlabel="epoch", ylabel="score", title="Validation accuracy and macro-F1", ylim=(0, 1.05))
    ax.legend(loc="best", fontsize=8)
    return to_png(fig)


def epoch_seconds(epochs: Sequence[int], phases: Sequence[str], seconds: Sequence[float]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    names = list(dict.fromkeys(phases))
    palette = [BLUE, ORANGE, GREEN, RED]
    ax.bar(epochs, seconds, color=[palette[names.index(p) % 4] for p in phases])
    handles = [Patch(color=palette[i % 4], label=name) for i, name in enumerate(names)]
    ax.legend(handles=handles, fontsize=8)
    ax.set(xlabel="epoch", ylabel="seconds", title="Time per epoch (training + validation)")
    ax.set_xticks(list(epochs))
    return to_png(fig)


def learning_rate(steps_x: Sequence[float], lr: Sequence[float]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(steps_x, lr, color=BLUE, lw=1.5)
    ax.set(xlabel="epoch", ylabel="learning rate (largest group)", title="Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    return to_png(fig)


def batch_loss(steps_x: Sequence[float], loss: Sequence[float], stats: RollingStats) -> bytes:
    fig = _figure(9.0, 3.6)
    ax = fig.add_subplot()
    x = np.asarray(steps_x)
    mean, std = np.asarray(stats.mean), np.asarray(stats.std)
    ax.plot(x, loss, color=GREY, alpha=0.35, lw=0.8, label="batch loss")
    ax.fill_between(x, mean - std, mean + std, color=BLUE, alpha=0.2, lw=0, label="± 1 std")
    ax.plot(x, mean, color=BLUE, lw=1.8, label=f"rolling mean ({stats.window} batches)")
    ax.set(xlabel="epoch", ylabel="training loss", title="Loss of every optimizer step")
    ax.legend(loc="upper right", fontsize=8)
    return to_png(fig)


def gap_plot(
    epochs: Sequence[int],
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    gap: Sequence[float],
) -> bytes:
    """Left: train and val loss with the area between; right: the gap (val - train) per epoch."""
    fig = _figure(9.0, 3.4)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    left.plot(epochs, train_loss, "o-", color=BLUE, label="train loss")
    left.plot(epochs, val_loss, "o-", color=ORANGE, label="val loss")
    left.fill_between(epochs, train_loss, val_loss, color=GREY, alpha=0.15, lw=0)
    left.set(xlabel="epoch", ylabel="loss", title="Train vs validation loss")
    left.set_xticks(list(epochs))
    left.legend(fontsize=8)
    colours = [RED if g > 0 else GREEN for g in gap]
    right.bar(epochs, gap, color=colours, alpha=0.8)
    right.axhline(0, color=GREY, lw=0.8)
    right.set(xlabel="epoch", ylabel="val - train loss", title="Generalisation gap")
    right.set_xticks(list(epochs))
    return to_png(fig)


def confusion_heatmap(matrix: np.ndarray, class_names: Sequence[str], normalised: bool) -> bytes:
    n = len(class_names)
    size = max(4.5, 0.42 * n + 2.0)
    fig = _figure(size, size * 0.9)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalised else None)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of true class" if normalised else "images")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title("Confusion matrix (row-normalised)" if normalised else "Confusion matrix (counts)")
    top = float(matrix.max()) if matrix.size else 0.0
    for i in range(n):
        for j in range(n):
            v = matrix[i, j]
            if v == 0:
                continue
            text = f"{v:.2f}" if normalised else str(int(v))
            colour = "white" if top and v > top * 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    return to_png(fig)


def reliability_diagram(cal: Calibration) -> bytes:
    fig = _figure(5.6, 5.2)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    edges = np.asarray(cal.edges)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 1.0 / cal.bins
    acc = np.array([np.nan if a is None else a for a in cal.accuracy])
    conf = np.array([np.nan if c is None else c for c in cal.confidence])
    top.plot([0, 1], [0, 1], ls="--", color=GREY, lw=1, label="perfect calibration")
    top.bar(
        centres,
        np.nan_to_num(acc),
        width=width * 0.95,
        color="#9ecae1",
        edgecolor=BLUE,
        label="accuracy in bin",
    )
    # The gap runs from the bin's accuracy to its mean confidence (down: under-confident).
    has = ~np.isnan(acc)
    top.bar(
        centres[has],
        (conf - acc)[has],
        bottom=acc[has],
        width=width * 0.95,
        fill=False,
        edgecolor=RED,
        hatch="///",
        lw=0.8,
        label="gap to mean confidence",
    )
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    top.set_title(f"Reliability diagram (ECE {cal.ece:.3f}, {cal.bins} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, cal.counts, width=width * 0.95, color=GREY)
    bottom.set(xlabel="confidence of the predicted class", ylabel="images")
    return to_png(fig)


def _intervals(
    ax: Any, positions: Sequence[float], ci: Sequence[Sequence[float] | None], vertical: bool
) -> None:
    """Each interval as a line between its ends with caps, drawn where it lies.

    Not ``errorbar``: its bars are offsets from the point, which are negative for an
    interval that excludes its point (as plain-bootstrap CIs of old runs can), and clamping
    them would draw an interval that was not computed.
    """
    pairs = [(x, c) for x, c in zip(positions, ci, strict=True) if c]
    if not pairs:
        return
    where = [x for x, _ in pairs]
    lows, highs = [c[0] for _, c in pairs], [c[1] for _, c in pairs]
    lines, cap = (ax.vlines, "_") if vertical else (ax.hlines, "|")
    lines(where, lows, highs, color=GREY, lw=1.2)
    for ends in (lows, highs):
        xy = (where, ends) if vertical else (ends, where)
        ax.plot(*xy, ls="none", marker=cap, color=GREY, ms=6)


def per_class_f1(
    class_names: Sequence[str], f1: Sequence[float], ci: Sequence[Sequence[float] | None]
) -> bytes:
    n = len(class_names)
    fig = _figure(max(6.4, 0.5 * n + 2), 3.8)
    ax = fig.add_subplot()
    ax.bar(range(n), f1, color=BLUE)
    _intervals(ax, range(n), ci, vertical=True)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="F1", ylim=(0, 1.05), title="F1 per class with 95% bootstrap CI")
    return to_png(fig)


def data_summary(counts: dict[str, dict[str, int]]) -> bytes:
    names = list(counts)
    n = len(names)
    fig = _figure(max(6.4, 0.5 * n + 2), 3.6)
    ax = fig.add_subplot()
    bottom = np.zeros(n)
    for split, colour in (("train", BLUE), ("val", ORANGE), ("test", GREEN)):
        values = np.array([counts[c].get(split, 0) for c in names], dtype=float)
        if values.sum() == 0:
            continue
        ax.bar(range(n), values, bottom=bottom, color=colour, label=split)
        bottom += values
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="images", title="Images per class and split")
    ax.legend(fontsize=8)
    return to_png(fig)


def leaderboard_chart(
    names: Sequence[str], values: Sequence[float], ci: Sequence[Sequence[float] | None]
) -> bytes:
    """Macro-F1 of each run with its 95% CI, best on top."""
    n = len(names)
    fig = _figure(7.2, max(2.2, 0.42 * n + 1.2))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    _intervals(ax, list(y), ci, vertical=False)
    ax.plot(values, y, "o", color=BLUE)
    ax.set_yticks(y, names, fontsize=8)
    ax.set(xlabel="macro-F1 (95% bootstrap CI)", title="Runs by macro-F1")
    ax.grid(axis="x", alpha=0.3)
    return to_png(fig)
