"""Pure computations behind a run's report: numbers in, plain data out (no files, no plots)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RollingStats:
    """Rolling mean and standard deviation of a series (window ends at each point)."""

    mean: list[float]
    std: list[float]
    window: int


def rolling_stats(values: Sequence[float], window: int) -> RollingStats:
    """Trailing mean/std over ``window`` points; the first points use what there is so far."""
    if window < 1:
        raise ValueError("window must be at least 1")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return RollingStats([], [], window)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    ends = np.arange(1, x.size + 1)
    starts = np.maximum(0, ends - window)
    n = ends - starts
    mean = (c1[ends] - c1[starts]) / n
    var = np.maximum(0.0, (c2[ends] - c2[starts]) / n - mean * mean)
    return RollingStats(mean.round(6).tolist(), np.sqrt(var).round(6).tolist(), window)


def generalisation_gap(train_loss: Sequence[float], val_loss: Sequence[float]) -> list[float]:
    """``val - train`` loss per epoch: growing means the model fits training images better than
    it generalises (note: train loss includes dropout, augmentation and label smoothing)."""
    return [round(float(v) - float(t), 6) for t, v in zip(train_loss, val_loss, strict=True)]


@dataclass(frozen=True)
class ConfusedPair:
    true: str
    predicted: str
    count: int
    share: float  # of the true class's images

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def confused_pairs(
    cm: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str], top: int = 10
) -> list[ConfusedPair]:
    """The largest off-diagonal cells of a confusion matrix, most images first."""
    m = np.asarray(cm, dtype=np.int64)
    support = m.sum(axis=1)
    cells = [
        (int(m[i, j]), i, j)
        for i in range(m.shape[0])
        for j in range(m.shape[1])
        if i != j and m[i, j] > 0
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [
        ConfusedPair(class_names[i], class_names[j], n, round(float(n / support[i]), 4))
        for n, i, j in cells[:top]
    ]


def row_normalise(cm: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall on the diagonal); empty rows stay zero."""
    m = np.asarray(cm, dtype=np.float64)
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


@dataclass(frozen=True)
class Calibration:
    """Reliability bins and the expected calibration error (ECE) of top-1 confidences."""

    ece: float
    max_gap: float  # the largest |accuracy - confidence| of a non-empty bin (MCE)
    bins: int
    edges: list[float]
    counts: list[int]
    confidence: list[float | None]  # mean confidence per bin, None when empty
    accuracy: list[float | None]  # accuracy per bin, None when empty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 15
) -> Calibration:
    """Equal-width bins over (0, 1]; ECE = sum over bins of share * |accuracy - confidence|."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 goes to the first bin.
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sum_conf = np.bincount(which, weights=conf, minlength=bins)
    sum_hit = np.bincount(which, weights=hit, minlength=bins)
    mean_conf = [float(s / n) if n else None for s, n in zip(sum_conf, counts, strict=True)]
    acc = [float(s / n) if n else None for s, n in zip(sum_hit, counts, strict=True)]
    gaps = [
        abs(a - c) for a, c in zip(acc, mean_conf, strict=True) if a is not None and c is not None
    ]
    weights = [n / max(1, conf.size) for n in counts if n]
    ece = float(sum(w * g for w, g in zip(weights, gaps, strict=True)))
    return Calibration(
        ece=round(ece, 6),
        max_gap=round(max(gaps, default=0.0), 6),
        bins=bins,
        edges=[round(float(e), 6) for e in edges],
        counts=[int(n) for n in counts],
        confidence=[None if v is None else round(v, 6) for v in mean_conf],
        accuracy=[None if v is None else round(v, 6) for v in acc],
    )


@dataclass(frozen=True)
class Loss:
    """One evaluated image and how wrong the model was about it."""

    path: str
    label: str
    predicted: str
    confidence: float  # probability of the predicted class
    p_true: float  # probability given to the true class
    loss: float  # -log p_true

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_losses(rows: Sequence[dict[str, str]], k: int = 12) -> list[Loss]:
    """The ``k`` images with the highest cross-entropy, from ``predictions.csv`` rows."""
    out = []
    for row in rows:
        p_true = float(row.get(f"p_{row['label']}", 0.0) or 0.0)
        out.append(
            Loss(
                path=row["path"],
                label=row["label"],
                predicted=row["predicted"],
                confidence=float(row["confidence"]),
                p_true=p_true,
                loss=round(-math.log(max(p_true, 1e-12)), 6),
            )
        )
    out.sort(key=lambda r: (-r.loss, r.path))
    return out[:k]
