"""Metrics against numbers worked out by hand, zero-division cases and the bootstrap CIs."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from transferlab.metrics import (
    accuracy,
    bootstrap_ci,
    classification_report,
    confusion_matrix,
    macro_f1,
    precision_recall_f1,
)

# Ten images of three classes (support 4, 3, 3).
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
NAMES = ["apse", "dome", "vault"]


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [
        [2, 1, 1],  # apse: 2 right, 1 called dome, 1 called vault
        [1, 2, 0],
        [0, 1, 2],
    ]


def test_report_matches_hand_computed_values() -> None:
    report = classification_report(Y_TRUE, Y_PRED, NAMES, ci=False)
    # Correct per class (diagonal): 2, 2, 2. Predicted per class (column sums): 3, 4, 3.
    # precision = 2/3, 2/4, 2/3;  recall = 2/4, 2/3, 2/3
    # f1 = 2PR/(P+R): apse (2 * 2/3 * 1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7; dome the
    # same, 4/7; vault 2/3.
    per_class = {
        "apse": (2 / 3, 1 / 2, 4 / 7, 4),
        "dome": (1 / 2, 2 / 3, 4 / 7, 3),
        "vault": (2 / 3, 2 / 3, 2 / 3, 3),
    }
    for name, (p, r, f, n) in per_class.items():
        got = report["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
        assert got["support"] == n
    expected = {
        "num_images": 10,
        "accuracy": 0.6,  # 6 of 10 on the diagonal
        "macro_precision": 11 / 18,  # (2/3 + 1/2 + 2/3) / 3 = (11/6) / 3
        "macro_recall": 11 / 18,  # (1/2 + 2/3 + 2/3) / 3
        "macro_f1": 38 / 63,  # (4/7 + 4/7 + 2/3) / 3 = (24/21 + 14/21) / 3
        "weighted_precision": 37 / 60,  # (4 * 2/3 + 3 * 1/2 + 3 * 2/3) / 10 = (37/6) / 10
        "weighted_recall": 0.6,  # (4 * 1/2 + 3 * 2/3 + 3 * 2/3) / 10 = 6/10, = accuracy
        "weighted_f1": 0.6,  # (4 * 4/7 + 3 * 4/7 + 3 * 2/3) / 10 = (4 + 2) / 10
    }
    assert {k: report[k] for k in expected} == pytest.approx(expected)
    assert report["class_names"] == NAMES
    assert report["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert list(report["per_class"]) == NAMES  # keyed by name, in class-index order


def test_helpers_agree_with_the_report() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert accuracy(cm) == pytest.approx(0.6)
    assert macro_f1(cm) == pytest.approx(38 / 63)
    precision, recall, f1, support = precision_recall_f1(cm)
    assert precision.tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert recall.tolist() == pytest.approx([1 / 2, 2 / 3, 2 / 3])
    assert f1.tolist() == pytest.approx([4 / 7, 4 / 7, 2 / 3])
    assert support.tolist() == [4, 3, 3]


def test_zero_division_gives_zero_without_warnings() -> None:
    # Class 1 has images but is never predicted; class 2 has no images and no predictions.
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report(y_true, y_pred, ["a", "b", "c"])
    a, b, c = (report["per_class"][k] for k in "abc")
    # a: precision 2/4, recall 2/2, f1 = 2 * 0.5 * 1 / 1.5 = 2/3
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert (b["precision"], b["recall"], b["f1"], b["support"]) == (0.0, 0.0, 0.0, 2)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 0)
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)  # c has no images: not averaged
    assert report["absent_classes"] == ["c"]
    assert report["weighted_f1"] == pytest.approx((2 * 2 / 3 + 2 * 0) / 4)
    assert not any(np.isnan(v) for v in (report["macro_precision"], report["weighted_recall"]))


def test_no_images_at_all() -> None:
    report = classification_report([], [], ["a", "b"])
    assert report["num_images"] == 0
    assert report["accuracy"] == 0.0
    assert report["weighted_f1"] == 0.0
    assert "ci95" not in report  # nothing to resample


def noisy_predictions(n: int = 90, classes: int = 3, right: float = 0.7) -> tuple[list, list]:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, classes, n)
    wrong = rng.random(n) > right
    y_pred = np.where(wrong, (y_true + rng.integers(1, classes, n)) % classes, y_true)
    return y_true.tolist(), y_pred.tolist()


def test_bootstrap_ci_contains_the_point_estimate() -> None:
    y_true, y_pred = noisy_predictions()
    report = classification_report(y_true, y_pred, NAMES)
    for key in ("accuracy", "macro_f1"):
        lo, hi = report["ci95"][key]
        assert 0.0 <= lo < report[key] < hi <= 1.0
    for name in NAMES:
        stats = report["per_class"][name]
        for key in ("precision", "recall", "f1"):
            lo, hi = stats["ci95"][key]
            assert lo <= stats[key] <= hi


def test_bootstrap_ci_is_deterministic_by_seed() -> None:
    y_true, y_pred = noisy_predictions()
    first = bootstrap_ci(y_true, y_pred, 3, n_boot=300, seed=4)
    assert bootstrap_ci(y_true, y_pred, 3, n_boot=300, seed=4) == first
    assert bootstrap_ci(y_true, y_pred, 3, n_boot=300, seed=5) != first
    assert first["level"] == 0.95 and first["n_boot"] == 300


def test_bootstrap_ci_narrows_with_a_lower_level() -> None:
    y_true, y_pred = noisy_predictions()
    wide = bootstrap_ci(y_true, y_pred, 3, level=0.95)["accuracy"]
    narrow = bootstrap_ci(y_true, y_pred, 3, level=0.5)["accuracy"]
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_bootstrap_ci_keeps_precision_and_recall_apart() -> None:
    # Class 0: 10 of its 20 images found, never a false alarm -> precision 1, recall 0.5.
    # Class 1: all 20 found plus those 10 false alarms -> precision 20/30, recall 1.
    y_true = [0] * 20 + [1] * 20
    y_pred = [0] * 10 + [1] * 30
    boot = bootstrap_ci(y_true, y_pred, 2, n_boot=500)
    assert boot["precision"][0] == [1.0, 1.0]
    assert boot["recall"][1] == [1.0, 1.0]
    assert boot["recall"][0][0] < 0.5 < boot["recall"][0][1] < 1.0
    assert boot["precision"][1][0] < 2 / 3 < boot["precision"][1][1] < 1.0


# ---------------------------------------------------------------- honest, memory-conscious CIs


def small_imbalanced_set(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A few images of 3-11 classes with very unequal support (1-2 images each, one class
    5-29), predicted 75-100% right: where plain resampling often misses a class."""
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(3, 12))
    support = rng.integers(1, 3, classes)
    support[rng.integers(classes)] = int(rng.integers(5, 30))  # one big class
    y_true = np.repeat(np.arange(classes), support)
    right = rng.random(y_true.size) < rng.uniform(0.75, 1.0)
    wrong = (y_true + rng.integers(1, classes, y_true.size)) % classes
    return y_true, np.where(right, y_true, wrong), classes


def _inside(point: float, interval: list[float] | None, what: str) -> None:
    if interval is None:  # only for a quantity the data leaves undefined (e.g. no predictions)
        return
    low, high = interval
    assert low <= point <= high, f"{what}: {point} outside [{low}, {high}]"


@pytest.mark.parametrize("seed", range(60))
def test_every_interval_contains_its_point_estimate(seed: int) -> None:
    y_true, y_pred, classes = small_imbalanced_set(seed)
    names = [f"c{i}" for i in range(classes)]
    report = classification_report(y_true, y_pred, names)
    for key in ("accuracy", "macro_f1"):
        _inside(report[key], report["ci95"][key], key)
    for name in names:
        stats = report["per_class"][name]
        for key in ("precision", "recall", "f1"):
            _inside(stats[key], stats["ci95"][key], f"{name} {key}")


def test_a_class_missing_from_a_resample_does_not_drag_macro_f1_down() -> None:
    # The case compare crashed on: 12 classes of a single image, each predicted right. Plain
    # resampling leaves each out of ~37% of the resamples, where its F1 counted as 0.
    y_true = np.array([0] * 20 + list(range(1, 13)))
    y_pred = np.array([0] * 18 + [1, 1] + list(range(1, 13)))
    report = classification_report(y_true, y_pred, list("abcdefghijklm"))
    low, high = report["ci95"]["macro_f1"]
    assert low <= report["macro_f1"] <= high
    assert report["ci_method"].startswith("stratified")


def test_chunked_bootstrap_equals_the_unchunked_one() -> None:
    y_true, y_pred = noisy_predictions(n=120, classes=4)
    whole = bootstrap_ci(y_true, y_pred, 4, n_boot=200, max_elements=10**9)
    for chunk in (1, 120, 121, 7 * 120 + 5):
        assert bootstrap_ci(y_true, y_pred, 4, n_boot=200, max_elements=chunk) == whole


def test_bootstrap_of_200_classes_needs_little_memory() -> None:
    # 1000 resamples of 2000 images over 200 classes: a confusion matrix per resample would
    # take 1000 x 200 x 200 x 8 bytes = 320 MB (twice over, while counting).
    y_true, y_pred = noisy_predictions(n=2000, classes=200)
    tracemalloc.start()
    try:
        boot = bootstrap_ci(y_true, y_pred, 200, n_boot=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert len(boot["f1"]) == 200


def test_macro_averages_count_only_classes_with_images() -> None:
    # A 3-class model on data of 2 of its classes: the absent class has no F1 to average.
    y_true = [0] * 8 + [1] * 8
    y_pred = [0] * 8 + [1] * 7 + [2]
    report = classification_report(y_true, y_pred, ["a", "b", "c"])
    f1_a, f1_b = (report["per_class"][k]["f1"] for k in "ab")
    assert report["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert report["macro_f1"] > 0.9  # not (f1_a + f1_b + 0) / 3 = 0.64
    assert report["macro_classes"] == ["a", "b"]
    assert report["absent_classes"] == ["c"]
    assert macro_f1(confusion_matrix(y_true, y_pred, 3)) == pytest.approx(report["macro_f1"])
