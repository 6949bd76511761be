"""Classification metrics as pure functions over integer labels (numpy in, plain data out)."""

from __future__ import annotations

from collections.abc import Sequence
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


def macro_f1(cm: np.ndarray) -> float:
    return float(precision_recall_f1(cm)[2].mean())


def bootstrap_ci(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile bootstrap CIs over images for accuracy, macro-F1 and per-class P/R/F1."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(n_boot, len(t)))
    flat = t[idx] * num_classes + p[idx]  # (n_boot, n)
    offsets = (np.arange(n_boot) * num_classes**2)[:, None]
    cms = np.bincount((flat + offsets).ravel(), minlength=n_boot * num_classes**2)
    cms = cms.reshape(n_boot, num_classes, num_classes).astype(np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    prec = _safe_div(tp, cms.sum(axis=1))
    rec = _safe_div(tp, cms.sum(axis=2))
    f1 = _safe_div(2 * prec * rec, prec + rec)
    acc = tp.sum(axis=1) / len(t)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(values: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(values, [lo, hi], axis=0).round(6)]

    def per_class(values: np.ndarray) -> list[list[float]]:
        low, high = np.percentile(values, [lo, hi], axis=0)
        return [[float(a), float(b)] for a, b in zip(low.round(6), high.round(6), strict=True)]

    return {
        "level": level,
        "n_boot": n_boot,
        "accuracy": interval(acc),
        "macro_f1": interval(f1.mean(axis=1)),
        "precision": per_class(prec),
        "recall": per_class(rec),
        "f1": per_class(f1),
    }


def classification_report(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    class_names: Sequence[str],
    ci: bool = True,
) -> dict[str, Any]:
    """Everything ``metrics.json`` holds about predictions, keyed by class name."""
    n = len(class_names)
    cm = confusion_matrix(y_true, y_pred, n)
    precision, recall, f1, support = precision_recall_f1(cm)
    weights = support / support.sum() if support.sum() else np.zeros(n)
    report: dict[str, Any] = {
        "num_images": int(cm.sum()),
        "accuracy": accuracy(cm),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
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
        for i, name in enumerate(class_names):
            report["per_class"][name]["ci95"] = {
                k: boot[k][i] for k in ("precision", "recall", "f1")
            }
    return report
