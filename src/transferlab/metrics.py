"""Classification metrics as pure functions over integer labels (numpy in, plain data out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ArrayLike = Sequence[int] | np.ndarray


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = images of true class ``i`` predicted as ``j``."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support; 0 where undefined (no predictions/images)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support.astype(np.int64)


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def present(cm: np.ndarray) -> np.ndarray:
    """Classes with images in the data: the ones a macro average is over.

    A class without images has no recall, so counting it as 0 would lower every macro
    average for a class the data simply does not contain.
    """
    return np.asarray(cm.sum(axis=1) > 0)


def macro(values: np.ndarray, cm: np.ndarray) -> float:
    """Mean of per-class ``values`` over the classes present in ``cm`` (0 if none are)."""
    mask = present(cm)
    return float(values[mask].mean()) if mask.any() else 0.0


def macro_f1(cm: np.ndarray) -> float:
    return macro(precision_recall_f1(cm)[2], cm)


# Resamples are drawn and counted this many index entries at a time, so memory stays a few
# tens of MB whatever the number of images, resamples and classes.
CHUNK_ELEMENTS = 1 << 20
CI_METHOD = "stratified percentile bootstrap"


@dataclass(frozen=True)
class _Counts:
    """Per-class counts of one or more resamples: true positives and predictions, (B, C)."""

    tp: np.ndarray
    predicted: np.ndarray


def _counts(t: np.ndarray, p: np.ndarray, num_classes: int) -> _Counts:
    """Counts of every row of ``t``/``p`` (B, n) with one ``bincount`` each, not per row."""
    rows = np.arange(t.shape[0])[:, None] * num_classes
    size = t.shape[0] * num_classes
    tp = np.bincount((rows + t)[t == p], minlength=size).reshape(-1, num_classes)
    predicted = np.bincount((rows + p).ravel(), minlength=size).reshape(-1, num_classes)
    return _Counts(tp.astype(np.float64), predicted.astype(np.float64))


def _scores(counts: _Counts, support: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 (B,) and per-class precision, recall, F1 (B, C); NaN where the
    resample leaves a quantity undefined (no predictions of, or no images of, a class)."""
    tp, predicted = counts.tp, counts.predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / predicted
        recall = np.broadcast_to(tp / support, tp.shape)
        f1 = 2 * tp / (support + predicted)  # = 2PR / (P + R), defined when P or R is
    mask = support > 0
    macro_f1 = f1[:, mask].mean(axis=1) if mask.any() else np.zeros(len(tp))
    return {
        "accuracy": tp.sum(axis=1) / support.sum(),
        "macro_f1": macro_f1,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def _strata(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image order grouped by class, and for each position its class's first slot and size."""
    order = np.argsort(t, kind="stable")
    sizes = np.bincount(t)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts[t[order]], sizes[t[order]]


def _resampled_scores(
    t: np.ndarray, preds: list[np.ndarray], num_classes: int, n_boot: int, seed: int, chunk: int
) -> dict[str, np.ndarray]:
    """Scores of ``n_boot`` stratified resamples, averaged over the runs in ``preds``.

    Each resample draws every class's images with replacement from that class only, so
    every class keeps its support: a class is never missing from a resample (plain
    resampling scores a missing class 0 and biases macro averages low on small sets).
    Row ``r`` always uses the ``r``-th row of one stream of uniforms, so the result does not
    depend on ``chunk``.
    """
    rng = np.random.default_rng(seed)
    order, starts, sizes = _strata(t)
    support = np.bincount(t, minlength=num_classes).astype(np.float64)
    rows = max(1, chunk // t.size)
    parts: list[dict[str, np.ndarray]] = []
    for first in range(0, n_boot, rows):
        u = rng.random((min(rows, n_boot - first), t.size))
        idx = order[starts + (u * sizes).astype(np.int64)]
        del u
        runs = [_scores(_counts(t[idx], p[idx], num_classes), support) for p in preds]
        parts.append({k: np.mean([r[k] for r in runs], axis=0) for k in runs[0]})
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """Percentile interval, widened outwards to 6 decimals so rounding never shrinks it; None
    when every resample leaves the quantity undefined."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    low, high = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return [math.floor(low * 1e6) / 1e6, math.ceil(high * 1e6) / 1e6]


def bootstrap_intervals(
    y_true: ArrayLike,
    y_preds: Sequence[ArrayLike],
    num_classes: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_elements: int = CHUNK_ELEMENTS,
) -> dict[str, Any]:
    """Stratified percentile bootstrap CIs of accuracy, macro-F1 and per-class P/R/F1,
    averaged over one or several runs (seeds) scored on the same images.

    Each resample draws images once (within their class) and scores every run on them.
    Macro-F1 is over the classes present in ``y_true``. Written with numpy rather than
    ``scipy.stats.bootstrap`` because it needs stratified, chunked resampling of many
    statistics (one per class) from the same draws.
    """
    t = np.asarray(y_true, dtype=np.int64)
    if t.size == 0 or not len(y_preds):
        raise ValueError("a bootstrap needs images and at least one run")
    preds = [np.asarray(p, dtype=np.int64) for p in y_preds]
    boot = _resampled_scores(t, preds, num_classes, n_boot, seed, max_elements)

    def per_class(key: str) -> list[list[float] | None]:
        return [_interval(boot[key][:, k], level) for k in range(num_classes)]

    return {
        "method": CI_METHOD,
        "level": level,
        "n_boot": n_boot,
        "accuracy": _interval(boot["accuracy"], level),
        "macro_f1": _interval(boot["macro_f1"], level),
        "precision": per_class("precision"),
        "recall": per_class("recall"),
        "f1": per_class("f1"),
    }


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_elements: int = CHUNK_ELEMENTS,
) -> dict[str, Any]:
    """:func:`bootstrap_intervals` of a single run."""
    return bootstrap_intervals(y_true, [y_pred], num_classes, n_boot, level, seed, max_elements)


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_names: Sequence[str],
    ci: bool = True,
) -> dict[str, Any]:
    """Everything ``metrics.json`` holds about predictions, keyed by class name.

    Macro averages are over the classes with images in ``y_true`` (``macro_classes``);
    model classes without images are listed in ``absent_classes``.
    """
    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n)
    precision, recall, f1, support = precision_recall_f1(cm)
    weights = support / support.sum() if support.sum() else np.zeros(n)
    mask = present(cm)
    report: dict[str, Any] = {
        "num_images": int(cm.sum()),
        "accuracy": accuracy(cm),
        "macro_precision": macro(precision, cm),
        "macro_recall": macro(recall, cm),
        "macro_f1": macro(f1, cm),
        "macro_classes": [c for c, m in zip(class_names, mask, strict=True) if m],
        "absent_classes": [c for c, m in zip(class_names, mask, strict=True) if not m],
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }
    if ci and cm.sum() > 0:
        boot = bootstrap_ci(y_true, y_pred, n)
        report["ci95"] = {"accuracy": boot["accuracy"], "macro_f1": boot["macro_f1"]}
        report["ci_method"] = f"{CI_METHOD} ({boot['n_boot']} resamples within each class)"
        for i, name in enumerate(class_names):
            report["per_class"][name]["ci95"] = {
                k: boot[k][i] for k in ("precision", "recall", "f1")
            }
    return report
