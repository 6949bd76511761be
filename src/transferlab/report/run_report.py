"""A finished run's report: ``RUN/report.html`` (self-contained) plus ``RUN/report/`` with every
figure as PNG and every number as JSON, built only from the files the run left behind."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from transferlab.budget import format_duration
from transferlab.data.images import ImageReadError, load_image, thumbnail_bytes
from transferlab.errors import TransferlabError
from transferlab.report import html, plots, stats

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_HTML = "report.html"
THUMB_PX = 160
HEAT_MAPS = 4  # Grad-CAM maps for the first top losses only: a report stays quick to build


@dataclass
class RunFiles:
    """What a run folder holds, read once; missing optional files are empty."""

    run_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)
    batches: list[dict[str, str]] = field(default_factory=list)
    predictions: list[dict[str, str]] = field(default_factory=list)
    inference: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def data_root(self) -> Path | None:
        path = (self.config.get("data") or {}).get("path")
        if not path:
            return None
        root = Path(path).expanduser()
        return root.parent if root.is_file() else root


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise TransferlabError(f"{path} is damaged ({exc}); re-run the training") from exc
    return data if isinstance(data, dict) else None


def read_run(run_dir: Path) -> RunFiles:
    """Read a finished run folder; a run without ``metrics.json`` has not finished."""
    if not run_dir.is_dir():
        raise TransferlabError(f"run folder not found: {run_dir}")
    metrics = _read_json(run_dir / "metrics.json")
    if metrics is None:
        raise TransferlabError(
            f"{run_dir} has no metrics.json: the run did not finish; train it again "
            "(or give a folder made by 'transferlab train')"
        )
    config: dict[str, Any] = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    return RunFiles(
        run_dir=run_dir,
        metrics=metrics,
        config=config,
        history=_read_csv(run_dir / "history.csv"),
        batches=_read_csv(run_dir / "batches.csv"),
        predictions=_read_csv(run_dir / "predictions.csv"),
        inference=_read_json(run_dir / "inference.json"),
    )


def batch_positions(epochs: list[int]) -> list[float]:
    """x positions in epochs for batch rows: batch j of n in epoch e sits at e - 1 + (j+1)/n."""
    counts: dict[int, int] = {}
    for e in epochs:
        counts[e] = counts.get(e, 0) + 1
    seen: dict[int, int] = {}
    out = []
    for e in epochs:
        seen[e] = seen.get(e, 0) + 1
        out.append(e - 1 + seen[e] / counts[e])
    return out


def thumbnail(path: Path, size: int = THUMB_PX) -> bytes | None:
    """A PNG thumbnail, or None when the image is gone or unreadable."""
    try:
        return thumbnail_bytes(load_image(path), size)
    except ImageReadError:
        return None


@dataclass
class Built:
    """A report in memory: named PNG figures, thumbnails, the JSON and the HTML sections."""

    figures: dict[str, bytes] = field(default_factory=dict)
    thumbs: dict[str, bytes] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sections: list[html.Section] = field(default_factory=list)


def _fig(built: Built, name: str, png: bytes, alt: str) -> str:
    built.figures[name] = png
    return html.img(png, alt)


def _f(value: Any, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def _ci_text(ci: Any) -> str:
    return f"95% CI {ci[0]:.3f}–{ci[1]:.3f}" if ci else ""


# What metrics.json files written before ``ci_method`` was recorded were computed with.
OLD_CI_METHOD = "percentile bootstrap over the evaluated images (1000 resamples)"


def ci_note(metrics: dict[str, Any]) -> str:
    """How the intervals were computed, as the run's metrics.json says, and how to read them."""
    method = metrics.get("ci_method") or OLD_CI_METHOD
    macro = metrics.get("macro_classes")
    over = f"; macro averages over the {len(macro)} classes with images" if macro else ""
    absent = metrics.get("absent_classes") or []
    missing = f" ({', '.join(absent)} had none)" if absent else ""
    return escape(
        f"95% intervals: {method}{over}{missing}. With few images per class they are wide: "
        "read differences inside them as noise."
    )


def summary_section(run: RunFiles, built: Built, cal: stats.Calibration | None) -> None:
    m, t = run.metrics, run.metrics.get("training", {})
    model, train = run.config.get("model") or {}, run.config.get("train") or {}
    # a time budget may have planned the size (config.yaml keeps the size as asked)
    planned = ((m.get("time_budget") or {}).get("plan") or {}).get("image_size")
    ci = m.get("ci95", {})
    items = [
        ("accuracy", _f(m.get("accuracy")), _ci_text(ci.get("accuracy"))),
        ("macro-F1", _f(m.get("macro_f1")), _ci_text(ci.get("macro_f1"))),
        ("evaluated on", f"{m.get('num_images', '?')} images", f"{m.get('split', '?')} split"),
        ("training time", f"{t.get('train_seconds', 0):.0f} s", f"{t.get('epochs', '?')} epochs"),
        ("parameters", f"{t.get('parameters', 0) / 1e6:.2f} M", str(model.get("name", ""))),
    ]
    if cal is not None:
        items.append(("ECE", _f(cal.ece), f"{cal.bins} bins"))
    if run.inference:
        items.append(
            (
                "inference",
                f"{run.inference['images_per_s']:.0f} img/s",
                f"{run.inference.get('device', '')}, batch {run.inference.get('batch_size', '')}",
            )
        )
    recipe = [
        f"model <b>{escape(str(model.get('name', '?')))}</b>",
        f"weights {escape(str(t.get('weights_source', model.get('weights', '?'))))}",
        f"{planned or model.get('image_size', '?')} px",
        f"strategy {escape(str(train.get('strategy', '?')))}",
        f"best epoch {t.get('best_epoch', '?')} of {t.get('epochs', '?')}",
        f"seed {train.get('seed', '?')}",
    ]
    body = html.cards(items) + html.note(" · ".join(recipe))
    built.data["summary"] = {
        "run": run.name,
        "accuracy": m.get("accuracy"),
        "macro_f1": m.get("macro_f1"),
        "ci95": ci,
        "split": m.get("split"),
        "num_images": m.get("num_images"),
        "training": t,
        "inference": run.inference,
    }
    built.sections.append(html.Section("summary", "Summary", body))


def budget_section(run: RunFiles, built: Built) -> None:
    """What a time budget (``train --time-budget``) planned and did; nothing without one."""
    tb = run.metrics.get("time_budget")
    if not tb:
        return
    budget, predicted, actual = tb["budget_s"], tb["predicted_s"], tb["actual_s"]
    plan = tb.get("plan", {})
    items = [
        ("budget", format_duration(budget), f"{budget:.0f} s"),
        ("predicted", format_duration(predicted), f"{predicted / budget:.0%} of the budget"),
        ("actual", format_duration(actual), f"{actual / budget:.0%}, before this report"),
    ]
    t = run.metrics.get("training", {})
    if tb.get("ended_by_budget"):
        how = (
            f"The budget ended training in epoch {t.get('epochs', '?')}: that epoch was "
            f"validated and checkpointed, and the best epoch ({t.get('best_epoch', '?')}) kept."
        )
    else:
        how = "The run finished its plan inside the budget."
    resize = plan.get("resize_from")
    sizes = f"{resize}→{plan.get('image_size')} px" if resize else f"{plan.get('image_size')} px"
    two_stage = (run.config.get("train") or {}).get("strategy") == "two-stage"
    head = f"{plan.get('head_epochs', 0)} head epochs and " if two_stage else ""
    planned = f"Planned: {head}{plan.get('epochs', 0)} fine-tuning epochs at {sizes}."
    rows = [[part, f"{sec:.1f}"] for part, sec in (plan.get("parts_s") or {}).items()]
    body = html.cards(items) + html.note(escape(f"{how} {planned}"))
    if rows:
        body += html.table(["part (predicted)", "seconds"], rows)
    built.data["time_budget"] = tb
    built.sections.append(html.Section("time-budget", "Time budget", body))


def curves_section(run: RunFiles, built: Built) -> None:
    h = run.history
    if not h:
        built.sections.append(
            html.Section("curves", "Training curves", html.note("no history.csv in this run"))
        )
        return
    epochs = [int(r["epoch"]) for r in h]
    phases = [r.get("phase", "") for r in h]
    # text columns: the phase, and which weights (raw or their moving average) were validated
    col = {k: [float(r[k]) for r in h] for k in h[0] if k not in ("epoch", "phase", "weights")}
    best = run.metrics.get("training", {}).get("best_epoch")
    tags = [
        _fig(
            built,
            "loss",
            plots.loss_curves(epochs, phases, col["train_loss"], col["val_loss"], best),
            "train and val loss per epoch",
        ),
        _fig(
            built,
            "val_accuracy_f1",
            plots.quality_curves(epochs, phases, col["val_accuracy"], col["val_macro_f1"]),
            "val accuracy and macro-F1 per epoch",
        ),
        _fig(
            built,
            "epoch_seconds",
            plots.epoch_seconds(epochs, phases, col["seconds"]),
            "seconds per epoch",
        ),
    ]
    if run.batches:
        x = batch_positions([int(r["epoch"]) for r in run.batches])
        lr = [float(r["lr"]) for r in run.batches]
        tags.append(_fig(built, "learning_rate", plots.learning_rate(x, lr), "learning rate"))
    else:
        tags.append(
            _fig(built, "learning_rate", plots.learning_rate(epochs, col["lr"]), "learning rate")
        )
    built.data["history"] = [
        {
            "epoch": e,
            "phase": p,
            "weights": h[i].get("weights", "raw"),
            **{k: v[i] for k, v in col.items()},
        }
        for i, (e, p) in enumerate(zip(epochs, phases, strict=True))
    ]
    note = html.note(
        "Shaded spans are the training phases; the dashed line marks the epoch whose weights "
        "were kept (best validation macro-F1)."
    )
    built.sections.append(html.Section("curves", "Training curves", note + html.figures(*tags)))


def batch_section(run: RunFiles, built: Built, window: int) -> None:
    if not run.batches:
        body = html.note("no batches.csv in this run")
        built.sections.append(html.Section("batch-loss", "Batch loss", body))
        return
    loss = [float(r["loss"]) for r in run.batches]
    x = batch_positions([int(r["epoch"]) for r in run.batches])
    roll = stats.rolling_stats(loss, window)
    tag = _fig(built, "batch_loss", plots.batch_loss(x, loss, roll), "loss of every batch")
    built.data["batch_loss"] = {
        "window": window,
        "x_epoch": [round(v, 4) for v in x],
        "loss": loss,
        "rolling_mean": roll.mean,
        "rolling_std": roll.std,
    }
    note = html.note(
        f"{len(loss)} optimizer steps; the line is the mean of the last {window} batches and the "
        "band ± one standard deviation (set with --window)."
    )
    built.sections.append(html.Section("batch-loss", "Batch loss", note + html.figures(tag)))


def gap_section(run: RunFiles, built: Built) -> None:
    h = run.history
    if not h:
        return
    epochs = [int(r["epoch"]) for r in h]
    train = [float(r["train_loss"]) for r in h]
    val = [float(r["val_loss"]) for r in h]
    gap = stats.generalisation_gap(train, val)
    tag = _fig(built, "generalisation_gap", plots.gap_plot(epochs, train, val, gap), "gap")
    built.data["generalisation_gap"] = [
        {"epoch": e, "gap": g} for e, g in zip(epochs, gap, strict=True)
    ]
    note = html.note(
        "Validation minus training loss per epoch. Training loss is measured with dropout, "
        "augmentation and label smoothing on, so a small negative gap is normal; a gap that "
        "keeps growing means the model memorises the training images."
    )
    built.sections.append(html.Section("gap", "Generalisation gap", note + html.figures(tag)))


def shown_names(metrics: dict[str, Any]) -> dict[str, str]:
    """Folder name -> display name (``display_names`` in metrics.json, in class order);
    runs from before display names show their folder names."""
    names = [str(c) for c in metrics.get("class_names") or metrics.get("per_class") or []]
    display = metrics.get("display_names")
    if isinstance(display, list) and len(display) == len(names):
        return {c: str(d) for c, d in zip(names, display, strict=True)}
    return {c: c for c in names}


def confusion_section(run: RunFiles, built: Built) -> None:
    names = list(run.metrics.get("class_names", []))
    cm = np.asarray(run.metrics.get("confusion_matrix", []), dtype=np.int64)
    if cm.size == 0:
        return
    norm = stats.row_normalise(cm)
    show = shown_names(run.metrics)
    labels = [show.get(c, c) for c in names]
    tags = [
        _fig(built, "confusion_counts", plots.confusion_heatmap(cm, labels, False), "counts"),
        _fig(
            built,
            "confusion_normalised",
            plots.confusion_heatmap(norm, labels, True),
            "normalised",
        ),
    ]
    pairs = stats.confused_pairs(cm, names)
    built.data["confusion"] = {
        "class_names": names,
        "counts": cm.tolist(),
        "row_normalised": norm.round(4).tolist(),
    }
    built.data["confused_pairs"] = [p.to_dict() for p in pairs]
    split = run.metrics.get("split", "evaluation")
    built.sections.append(
        html.Section(
            "confusion",
            "Confusion matrix",
            html.note(f"On the {escape(str(split))} split; rows are true classes.")
            + html.figures(*tags),
        )
    )
    rows = [
        [*(show.get(c, c) for c in (p.true, p.predicted)), str(p.count), f"{p.share:.0%}"]
        for p in pairs
    ]
    body = (
        html.table(["true class", "predicted as", "images", "share of true class"], rows)
        if rows
        else html.note("no confusions: every image was classified correctly")
    )
    built.sections.append(html.Section("confused-pairs", "Most-confused classes", body))


def _loss_heat_maps(run: RunFiles, worst: list[Any], root: Path | None) -> list[bytes | None]:
    """Grad-CAM overlays of the predicted class for the first top losses; none (a warning,
    never a failed report) when the run has no usable bundle or the model has no maps."""
    if not worst or not (run.run_dir / "model").is_dir():
        return []
    from transferlab.explain import heat_map_pngs

    items = [
        (Path(w.path) if Path(w.path).is_absolute() or root is None else root / w.path, w.predicted)
        for w in worst[:HEAT_MAPS]
    ]
    try:
        return heat_map_pngs(run.run_dir / "model", items)
    except Exception as exc:  # an explanation is an extra: any failure leaves it out
        logger.warning("report: no Grad-CAM maps for the top losses (%s)", exc)
        return []


def losses_section(run: RunFiles, built: Built, top_k: int) -> None:
    if not run.predictions:
        body = html.note("no predictions.csv in this run")
        built.sections.append(html.Section("top-losses", "Top losses", body))
        return
    worst = stats.top_losses(run.predictions, top_k)
    root = run.data_root
    show = shown_names(run.metrics)
    heats = _loss_heat_maps(run, worst, root)
    cards, entries = [], []
    for i, loss in enumerate(worst):
        path = Path(loss.path)
        full = path if path.is_absolute() or root is None else root / path
        png = thumbnail(full)
        name = f"top_losses/{i:02d}.png" if png else None
        if png and name:
            built.thumbs[name] = png
            picture = html.img(
                png,
                f"{show.get(loss.label, loss.label)} predicted as "
                f"{show.get(loss.predicted, loss.predicted)}",
            )
        else:
            picture = '<div class="missing">image not found</div>'
        heat = heats[i] if i < len(heats) else None
        heat_name = f"top_losses/{i:02d}.gradcam.png" if heat else None
        if heat and heat_name:
            built.thumbs[heat_name] = heat
            picture += html.img(heat, f"Grad-CAM: where the model saw {loss.predicted}")
        verdict = "" if loss.label == loss.predicted else ' class="bad"'
        cards.append(
            f'<div class="thumb">{picture}<div>true '
            f"<b>{escape(show.get(loss.label, loss.label))}</b></div><div{verdict}>predicted "
            f"{escape(show.get(loss.predicted, loss.predicted))} ({loss.confidence:.2f})</div>"
            f"<div>p(true) {loss.p_true:.3f} · loss {loss.loss:.2f}</div>"
            f'<div class="path">{escape(loss.path)}</div></div>'
        )
        entries.append({**loss.to_dict(), "thumbnail": name, "gradcam": heat_name})
    built.data["top_losses"] = entries
    note = html.note(
        f"The {len(worst)} evaluated images the model was most wrong about (highest "
        "cross-entropy): often mislabelled, ambiguous or out-of-distribution photos."
        + (
            f" Below the first {len(heats)}: a Grad-CAM heat map of where the model looked for "
            "the class it predicted (red: most)."
            if any(heats)
            else ""
        )
    )
    body = note + '<div class="gallery">' + "".join(cards) + "</div>"
    built.sections.append(html.Section("top-losses", "Top losses", body))


def calibration_of(run: RunFiles, bins: int) -> stats.Calibration | None:
    if not run.predictions:
        return None
    conf = [float(r["confidence"]) for r in run.predictions]
    correct = [r["label"] == r["predicted"] for r in run.predictions]
    return stats.calibration(conf, correct, bins)


def temperature_parts(scaling: dict[str, Any] | None, built: Built) -> tuple[str, list[str]]:
    """A sentence on temperature scaling and the reliability diagram from before it
    (``calibration`` in metrics.json); nothing for runs from before temperature scaling."""
    if not scaling or "before" not in scaling:
        return "", []
    built.data["temperature_scaling"] = scaling
    if not scaling.get("fitted", True):
        return html.note(
            f"Temperature scaling: none of the {scaling['fitted_images']} val images was "
            "classified wrong, so the temperature stayed at 1 (they cannot say how sure the "
            "model should be)."
        ), []
    before = stats.Calibration(**scaling["before"])
    tag = _fig(built, "reliability_before", plots.reliability_diagram(before), "before scaling")
    text = html.note(
        f"Temperature scaling: T = <b>{scaling['temperature']:.3f}</b>, fitted on "
        f"{scaling['fitted_images']} val images; on the {escape(str(scaling['measured_on']))} "
        f"split ECE <b>{scaling['ece_before']:.3f}</b> before (left) and "
        f"<b>{scaling['ece_after']:.3f}</b> after (right, the probabilities the model gives)."
    )
    return text, [tag]


def calibration_section(
    cal: stats.Calibration | None, built: Built, scaling: dict[str, Any] | None = None
) -> None:
    if cal is None:
        return
    tag = _fig(built, "reliability", plots.reliability_diagram(cal), "reliability diagram")
    built.data["calibration"] = cal.to_dict()
    note = html.note(
        f"Expected calibration error <b>{cal.ece:.3f}</b> (largest bin gap {cal.max_gap:.3f}): "
        "the average distance between how confident the model is and how often it is right. "
        "Bars below the diagonal mean over-confidence."
    )
    scaled, before = temperature_parts(scaling, built)
    body = note + scaled + html.figures(*before, tag)
    built.sections.append(html.Section("calibration", "Calibration", body))


def per_class_section(run: RunFiles, built: Built) -> None:
    per_class = run.metrics.get("per_class", {})
    if not per_class:
        return

    def ci(s: dict[str, Any], key: str) -> str:
        c = s.get("ci95", {}).get(key)
        return f"{c[0]:.2f}–{c[1]:.2f}" if c else ""

    show = shown_names(run.metrics)
    rows = [
        [
            show.get(name, name),
            _f(s["precision"]),
            ci(s, "precision"),
            _f(s["recall"]),
            ci(s, "recall"),
            _f(s["f1"]),
            ci(s, "f1"),
            str(s["support"]),
        ]
        for name, s in per_class.items()
    ]
    m = run.metrics
    rows.append(
        [
            "macro avg",
            _f(m.get("macro_precision")),
            "",
            _f(m.get("macro_recall")),
            "",
            _f(m.get("macro_f1")),
            ci(m, "macro_f1"),
            str(m.get("num_images", "")),
        ]
    )
    header = ["class", "precision", "95% CI", "recall", "95% CI", "F1", "95% CI", "support"]
    names = list(per_class)
    tag = _fig(
        built,
        "per_class_f1",
        plots.per_class_f1(
            [show.get(c, c) for c in names],
            [per_class[c]["f1"] for c in names],
            [per_class[c].get("ci95", {}).get("f1") for c in names],
        ),
        "F1 per class",
    )
    built.data["per_class"] = per_class
    note = html.note(ci_note(m))
    body = note + html.table(header, rows) + html.figures(tag)
    built.sections.append(html.Section("per-class", "Per-class results", body))


def data_section(run: RunFiles, built: Built) -> None:
    counts: dict[str, dict[str, int]] = run.metrics.get("data_summary", {})
    skipped = run.metrics.get("skipped", [])
    show = shown_names(run.metrics)
    parts = []
    if counts:
        rows = [
            [
                show.get(c, c),
                *[str(v.get(s, 0)) for s in ("train", "val", "test")],
                str(sum(v.values())),
            ]
            for c, v in counts.items()
        ]
        totals = [sum(v.get(s, 0) for v in counts.values()) for s in ("train", "val", "test")]
        rows.append(["total", *map(str, totals), str(sum(totals))])
        parts.append(html.table(["class", "train", "val", "test", "total"], rows))
        parts.append(
            html.figures(_fig(built, "data_summary", plots.data_summary(counts), "images"))
        )
    n_skipped = run.metrics.get("skipped_files", len(skipped))
    if n_skipped:
        shown = [[s["path"], s["reason"]] for s in skipped[:50]]
        more = f" (first {len(shown)} shown)" if n_skipped > len(shown) else ""
        parts.append(html.note(f"<b>{n_skipped}</b> unreadable file(s) skipped{more}:"))
        parts.append(html.table(["file", "reason"], shown))
    else:
        parts.append(html.note("No unreadable files were skipped."))
    built.data["data_summary"] = {"counts": counts, "skipped_files": n_skipped, "skipped": skipped}
    built.sections.append(html.Section("data", "Data", "".join(parts)))


def _copies(group: dict[str, Any]) -> str:
    members = zip(group["files"], group["labels"], group["splits"], strict=True)
    return "; ".join(f"{Path(f).name} [{label}/{split}]" for f, label, split in members)


def audit_section(run: RunFiles, built: Built) -> None:
    """The hash checks train ran before splitting: copies kept in one split, and the
    leaks and label conflicts the split could not remove."""
    audit = run.metrics.get("data_audit")
    if not isinstance(audit, dict):
        return  # data.audit off, or a run from before the checks
    groups = audit.get("problem_groups") or []
    parts = [
        html.cards(
            [
                ("duplicate groups", str(audit.get("duplicate_groups", 0)), "kept in one split"),
                ("label conflicts", str(audit.get("label_conflicts", 0)), "copies, two labels"),
                ("leaks", str(audit.get("leaks", 0)), "copies across splits"),
            ]
        ),
        html.note(
            f"Content digests and perceptual hashes of every image, {audit.get('seconds', 0)} s; "
            "copies of one image were kept in one split. Leaks are copies that given splits "
            "(folders, --split-file) put apart; 'transferlab audit DATA --html' shows all."
        ),
    ]
    rows = [[g["where"], _copies(g)] for g in groups]
    if rows:
        parts.append(html.table(["where", "copies [label/split]"], rows))
    built.data["data_audit"] = audit
    built.sections.append(html.Section("data-audit", "Data audit", "".join(parts)))


def build_report(run: RunFiles, window: int = 20, top_k: int = 12, bins: int = 15) -> Built:
    """Compute, draw and lay out a run's report in memory (no files written)."""
    built = Built()
    cal = calibration_of(run, bins)
    summary_section(run, built, cal)
    budget_section(run, built)
    curves_section(run, built)
    batch_section(run, built, window)
    gap_section(run, built)
    confusion_section(run, built)
    losses_section(run, built, top_k)
    calibration_section(cal, built, run.metrics.get("calibration"))
    per_class_section(run, built)
    data_section(run, built)
    audit_section(run, built)
    return built


def write_run_report(run_dir: Path, window: int = 20, top_k: int = 12, bins: int = 15) -> Path:
    """Write ``RUN/report.html`` and ``RUN/report/`` (PNGs + ``report.json``); return the HTML.

    ``window`` is the rolling window (in batches) of the batch-loss curve, ``top_k`` the size
    of the top-losses gallery and ``bins`` the number of calibration bins.
    """
    if window < 1 or top_k < 0 or bins < 1:
        raise TransferlabError("--window and --bins must be at least 1 and --top-k at least 0")
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    built = build_report(run, window, top_k, bins)
    out = run_dir / REPORT_DIR
    (out / "top_losses").mkdir(parents=True, exist_ok=True)
    for stale in out.glob("top_losses/*.png"):
        stale.unlink()
    for name, png in {**built.figures, **built.thumbs}.items():
        (out / (name if name.endswith(".png") else f"{name}.png")).write_bytes(png)
    built.data["figures"] = sorted(f"{n}.png" for n in built.figures)
    (out / "report.json").write_text(
        json.dumps(built.data, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    model = (run.config.get("model") or {}).get("name", "")
    subtitle = escape(
        f"{run.run_dir.resolve()} · {model} · evaluated on the {run.metrics.get('split', '?')} "
        "split · figures and numbers also in report/"
    )
    page = html.page(f"transferlab run report: {run.name}", subtitle, built.sections)
    path = run_dir / REPORT_HTML
    path.write_text(page, encoding="utf-8")
    logger.info("report written to %s", path)
    return path
