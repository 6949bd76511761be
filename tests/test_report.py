"""A run's report: the pure computations, the files written, and the page in real Chromium."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import copy_photos
from transferlab.cli import app
from transferlab.errors import TransferlabError
from transferlab.report import plots, write_run_report
from transferlab.report.run_report import batch_positions
from transferlab.report.stats import (
    calibration,
    confused_pairs,
    generalisation_gap,
    rolling_stats,
    row_normalise,
    top_losses,
)

SECTIONS = (
    "summary",
    "curves",
    "batch-loss",
    "gap",
    "confusion",
    "confused-pairs",
    "top-losses",
    "calibration",
    "per-class",
    "data",
)

# ---------------------------------------------------------------- pure computations


def test_rolling_stats_trailing_window() -> None:
    r = rolling_stats([1.0, 3.0, 5.0, 7.0], window=2)
    assert r.mean == [1.0, 2.0, 4.0, 6.0]
    assert r.std == [0.0, 1.0, 1.0, 1.0]
    assert rolling_stats([], 5).mean == []
    with pytest.raises(ValueError):
        rolling_stats([1.0], 0)


def test_calibration_ece_by_hand() -> None:
    # Two images at 0.9 (one right) and two at 0.6 (both right): each bin is off by 0.4.
    cal = calibration([0.9, 0.9, 0.6, 0.6], [True, False, True, True], bins=10)
    assert cal.ece == pytest.approx(0.4)
    assert cal.max_gap == pytest.approx(0.4)
    assert cal.counts[8] == 2 and cal.counts[5] == 2  # (0.8, 0.9] and (0.5, 0.6]
    assert cal.accuracy[8] == 0.5 and cal.accuracy[5] == 1.0
    assert cal.accuracy[0] is None  # empty bins stay empty, not zero
    perfect = calibration([1.0, 1.0, 0.5, 0.5], [True, True, True, False], bins=4)
    assert perfect.ece == 0.0


def test_confused_pairs_most_images_first() -> None:
    cm = [[5, 2, 0], [0, 4, 3], [1, 0, 6]]
    pairs = confused_pairs(cm, ["a", "b", "c"], top=2)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("b", "c", 3), ("a", "b", 2)]
    assert pairs[0].share == pytest.approx(3 / 7, abs=1e-4)
    assert confused_pairs([[3, 0], [0, 2]], ["a", "b"]) == []


def test_row_normalise_keeps_empty_rows_zero() -> None:
    m = row_normalise([[2, 2], [0, 0]])
    assert m.tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_top_losses_orders_by_cross_entropy() -> None:
    rows = [
        {"path": "a.jpg", "label": "x", "predicted": "x", "confidence": "0.9", "p_x": "0.9"},
        {"path": "b.jpg", "label": "x", "predicted": "y", "confidence": "0.8", "p_x": "0.2"},
        {"path": "c.jpg", "label": "y", "predicted": "x", "confidence": "0.6", "p_y": "0.4"},
    ]
    worst = top_losses(rows, k=2)
    assert [w.path for w in worst] == ["b.jpg", "c.jpg"]
    assert worst[0].loss == pytest.approx(-math.log(0.2), abs=1e-6)
    assert worst[0].p_true == 0.2 and worst[0].confidence == 0.8


def test_gap_and_batch_positions() -> None:
    assert generalisation_gap([1.0, 0.5], [1.2, 0.9]) == [pytest.approx(0.2), pytest.approx(0.4)]
    assert batch_positions([1, 1, 2, 2, 2, 2]) == [0.5, 1.0, 1.25, 1.5, 1.75, 2.0]


def test_charts_draw_an_interval_that_excludes_its_point() -> None:
    # metrics.json files written before the stratified bootstrap can hold a macro-F1 above
    # its own interval (0.650 in 0.233-0.600): compare crashed on it with "'xerr' must not
    # contain negative values". The chart draws the interval as it is.
    png = plots.leaderboard_chart(["old run", "new run"], [0.65, 0.5], [[0.233, 0.6], None])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    png = plots.per_class_f1(["a", "b"], [0.9, 0.4], [[0.5, 0.8], [0.45, 0.7]])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- a run folder made by hand

CLASSES = ["altar", "apse", "dome(inner)"]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def fake_run(root: Path) -> Path:
    """A finished run folder as ``train`` leaves it (no model), on 3 classes x 3 real photos;
    one predicted image is missing from disk."""
    data = root / "data"
    photos = {c: copy_photos(c, data / c, 3) for c in CLASSES}
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        f"data:\n  path: {json.dumps(str(data))}\nmodel:\n  name: tf_efficientnet_lite0\n"
        "  image_size: 64\ntrain:\n  strategy: two-stage\n  seed: 0\n",
        encoding="utf-8",
    )
    history = [
        [1, "head", 1.2, 1.0, 0.5, 0.45, 0.003, 2.0],
        [2, "head", 0.9, 0.8, 0.6, 0.55, 0.002, 0.1],
        [3, "finetune", 0.8, 0.7, 0.7, 0.66, 0.001, 5.0],
    ]
    _write_csv(
        run / "history.csv",
        [
            "epoch",
            "phase",
            "train_loss",
            "val_loss",
            "val_accuracy",
            "val_macro_f1",
            "lr",
            "seconds",
        ],
        history,
    )
    batches = [[e, 1.5 - 0.05 * i, 0.001] for i, e in enumerate([1] * 4 + [2] * 4 + [3] * 4)]
    _write_csv(run / "batches.csv", ["epoch", "loss", "lr"], batches)
    preds = []
    for i, c in enumerate(CLASSES):
        for j, photo in enumerate(photos[c]):
            wrong = j == 0
            predicted = CLASSES[(i + 1) % 3] if wrong else c
            p = [0.1, 0.1, 0.1]
            p[CLASSES.index(predicted)] = 0.8
            preds.append([f"{c}/{photo.name}", c, predicted, 0.8, *p])
    preds.append(["apse/gone.jpg", "apse", "altar", 0.9, 0.9, 0.05, 0.05])  # deleted photo
    _write_csv(
        run / "predictions.csv",
        ["path", "label", "predicted", "confidence", *[f"p_{c}" for c in CLASSES]],
        preds,
    )
    per_class = {
        c: {
            "precision": 0.67,
            "recall": 0.67,
            "f1": 0.67,
            "support": 3,
            "ci95": {"precision": [0.2, 1.0], "recall": [0.2, 1.0], "f1": [0.3, 1.0]},
        }
        for c in CLASSES
    }
    metrics = {
        "num_images": 10,
        "accuracy": 0.6,
        "macro_precision": 0.67,
        "macro_recall": 0.67,
        "macro_f1": 0.67,
        "per_class": per_class,
        "class_names": CLASSES,
        "confusion_matrix": [[2, 1, 0], [1, 2, 1], [1, 0, 2]],
        "ci95": {"accuracy": [0.3, 0.9], "macro_f1": [0.3, 0.9]},
        "split": "test",
        "skipped_files": 1,
        "skipped": [{"path": str(data / "apse" / "broken.jpg"), "reason": "not an image file"}],
        "training": {"best_epoch": 3, "epochs": 3, "train_seconds": 7.1, "parameters": 3_400_000},
        "data_summary": {c: {"train": 5, "val": 2, "test": 3} for c in CLASSES},
    }
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run


def test_write_run_report_files(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    page = write_run_report(run, window=3, top_k=4, bins=5)
    assert page == run / "report.html"
    html = page.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    assert "image not found" in html  # the deleted photo is shown as missing, not an error
    assert "http://" not in html and "https://" not in html  # works offline
    assert "<script" not in html
    out = run / "report"
    for name in (
        "loss",
        "val_accuracy_f1",
        "epoch_seconds",
        "learning_rate",
        "batch_loss",
        "generalisation_gap",
        "confusion_counts",
        "confusion_normalised",
        "reliability",
        "per_class_f1",
        "data_summary",
    ):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["batch_loss"]["window"] == 3
    assert len(data["batch_loss"]["rolling_mean"]) == 12
    assert data["calibration"]["bins"] == 5
    assert data["confused_pairs"][0]["count"] == 1
    losses = data["top_losses"]
    assert len(losses) == 4 and losses[0]["path"] == "apse/gone.jpg"
    assert losses[0]["thumbnail"] is None
    assert all((out / t["thumbnail"]).is_file() for t in losses[1:])
    assert data["data_summary"]["skipped_files"] == 1


def test_the_page_names_the_interval_method_the_metrics_were_computed_with(
    tmp_path: Path,
) -> None:
    run = fake_run(tmp_path)
    old = write_run_report(run).read_text(encoding="utf-8")
    assert "95% intervals: percentile bootstrap over the evaluated images" in old
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    metrics.update(
        ci_method="stratified percentile bootstrap (1000 resamples within each class)",
        macro_classes=CLASSES[:2],
        absent_classes=CLASSES[2:],
    )
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    new = write_run_report(run).read_text(encoding="utf-8")
    assert (
        "95% intervals: stratified percentile bootstrap (1000 resamples within each class); "
        "macro averages over the 2 classes with images (dome(inner) had none)."
    ) in new


def test_report_without_optional_files(tmp_path: Path) -> None:
    run = fake_run(tmp_path)
    for name in ("history.csv", "batches.csv", "predictions.csv"):
        (run / name).unlink()
    html = write_run_report(run).read_text(encoding="utf-8")
    assert "no history.csv in this run" in html
    assert "no predictions.csv in this run" in html


def test_unfinished_run_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("data: {}\n", encoding="utf-8")
    with pytest.raises(TransferlabError, match=r"no metrics\.json"):
        write_run_report(tmp_path)


def test_report_cli_on_a_run(tmp_path: Path, restore_transferlab_logging: None) -> None:
    run = fake_run(tmp_path)
    result = CliRunner().invoke(app, ["report", str(run), "--window", "5", "-q"])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    assert "95% CI 0.300–0.900" in html  # the accuracy card shows metrics.json's interval
    data = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
    assert data["batch_loss"]["window"] == 5  # --window reached the report
    assert set(data["per_class"]) == set(CLASSES)
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2
    assert "error:" in bad.output and len(bad.output.strip().splitlines()) == 1


# ---------------------------------------------------------------- the page in real Chromium

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]

# Appended to a copy of the page: records, once everything has loaded, whether each image
# decoded and which sections are there, into an attribute that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  const ids = [...document.querySelectorAll('section')].map(s => s.id);
  document.documentElement.setAttribute('data-probe', JSON.stringify({imgs, ids}));
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; scripts/system-deps.sh installs it")
        pytest.skip("Debian chromium not installed (run scripts/system-deps.sh)")
    return found


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    page = write_run_report(fake_run(tmp_path))
    shot = tmp_path / "report.png"
    done = _browse(
        chromium,
        tmp_path / "profile-shot",
        "--window-size=1400,5000",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert shot.is_file() and shot.stat().st_size > 50_000, done.stderr[-2000:]
    probe_page = page.with_name("probe.html")
    probe_page.write_text(
        page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = _browse(
        chromium,
        tmp_path / "profile-dom",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe_page.as_uri(),
    )
    match = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert probe["ids"] == list(SECTIONS)
    assert len(probe["imgs"]) >= 11 + 8  # figures + thumbnails of the photos still on disk
    assert all(probe["imgs"]), f"images that did not load: {probe['imgs']}"
