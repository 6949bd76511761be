"""An experiment's leaderboard (``leaderboard.md``, ``.csv``, ``.html``, ``.json``) and the
per-class F1 table against a baseline, built from finished run folders without training.
Runs that failed (``RUN/failed.json``) are listed as FAILED with their error.

Loading (files) is kept apart from summarising and rendering (pure functions over the
:class:`CellSummary` rows), so the tables can be tested on hand-made numbers.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from transferlab.errors import ConfigError, TransferlabError
from transferlab.files import replace_when_done
from transferlab.report import html, plots
from transferlab.report.comparison import (
    DECIMALS,
    F1Row,
    bootstrap_mean_ci,
    f1_table,
    format_beaten,
    match_classes,
    mean_std,
)
from transferlab.report.run_report import shown_names

logger = logging.getLogger(__name__)

PLAN_FILE = "experiment.json"
FAILED_FILE = "failed.json"  # in a run folder: the run failed, and why


@dataclass
class RunData:
    """What one finished run folder contributes to a leaderboard."""

    name: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    inference: dict[str, Any] | None = None
    predictions: list[dict[str, str]] = field(default_factory=list)


@dataclass
class CellSummary:
    """One leaderboard row: a cell of the experiment, averaged over its seeds."""

    name: str
    runs: list[str]
    model: str
    strategy: str
    accuracy: float
    accuracy_std: float
    accuracy_ci: list[float] | None
    macro_f1: float
    macro_f1_std: float
    macro_f1_ci: list[float] | None
    params_total: int | None
    params_trainable: int | None
    train_seconds: float | None
    images_per_s: float | None
    epochs: float | None
    f1: dict[str, float]
    f1_std: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    link: str | None = None  # the first run's report.html, relative to the experiment folder
    time_budget: float | None = None  # train.time_budget (compare --time-budget's share)
    run_seconds: float | None = None  # a budgeted run's whole time, against its budget

    @property
    def seeds(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class FailedRun:
    """A run that failed: a leaderboard row marked FAILED, and its one-line error."""

    name: str
    error: str
    model: str = "?"
    strategy: str = "?"
    exit_code: int = 2


def write_failure(
    run_dir: Path, error: str, exit_code: int = 2, model: str = "?", strategy: str = "?"
) -> None:
    """Record in ``run_dir`` that its run failed (the run folder is made if need be)."""
    failure = FailedRun(run_dir.name, error, model, strategy, exit_code)
    text = json.dumps(asdict(failure), indent=2, ensure_ascii=False)
    replace_when_done(run_dir / FAILED_FILE, lambda tmp: tmp.write_text(text, "utf-8"))


def read_failure(run_dir: Path) -> FailedRun | None:
    """The failure recorded in ``run_dir``; None if there is none (or it finished since)."""
    file = run_dir / FAILED_FILE
    if not file.is_file() or (run_dir / "metrics.json").is_file():
        return None
    raw = json.loads(file.read_text(encoding="utf-8"))
    return FailedRun(
        run_dir.name,
        str(raw.get("error", "?")),
        str(raw.get("model", "?")),
        str(raw.get("strategy", "?")),
        int(raw.get("exit_code", 2)),
    )


@dataclass(frozen=True)
class Baseline:
    name: str
    f1: dict[str, float]


def _mean(values: Sequence[float | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return float(np.mean(known)) if known else None


def trainable_parameters(training: Mapping[str, Any], head: int | None = None) -> int | None:
    """Trainable parameters of the run's largest phase, from what ``metrics.json`` records.

    Uses ``training.trainable_parameters`` when the pipeline wrote it; otherwise infers it
    from the phases: any phase training the backbone -> all parameters; only head phases
    -> ``head`` (when known); partial unfreezing without a record -> unknown.
    """
    if training.get("trainable_parameters") is not None:
        return int(training["trainable_parameters"])
    total = training.get("parameters")
    kinds = set()
    for phase in training.get("phases") or []:
        if "trainable" in phase:
            kinds.add(str(phase["trainable"]))
        else:  # older runs: a train_backbone flag
            kinds.add("all" if phase.get("train_backbone") else "head")
    if "all" in kinds:
        return int(total) if total is not None else None
    if kinds == {"head"}:
        return head
    return None


def _ci(run: RunData) -> tuple[list[float] | None, list[float] | None]:
    ci = run.metrics.get("ci95") or {}
    return ci.get("accuracy"), ci.get("macro_f1")


def _labels(runs: Sequence[RunData], classes: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """True and predicted class indices per run, aligned by image path (same eval images)."""
    index = {c: i for i, c in enumerate(classes)}
    by_path = [{r["path"]: r for r in run.predictions} for run in runs]
    paths = sorted(set.intersection(*(set(p) for p in by_path)))
    y_true = [index[by_path[0][p]["label"]] for p in paths]
    preds = [[index[rows[p]["predicted"]] for p in paths] for rows in by_path]
    return y_true, preds


def summarise_cell(
    name: str,
    runs: Sequence[RunData],
    settings: Mapping[str, Any] | None = None,
    link: str | None = None,
) -> CellSummary:
    """Mean ± std over the seeds of a cell; 95% CIs from the bootstrap (seed-averaged when
    there are several seeds and their predictions are at hand)."""
    if not runs:
        raise TransferlabError(f"no finished run for '{name}'")
    first = runs[0]
    classes = list(first.metrics.get("class_names") or first.metrics["per_class"])
    acc, acc_sd = mean_std([r.metrics["accuracy"] for r in runs])
    f1m, f1_sd = mean_std([r.metrics["macro_f1"] for r in runs])
    acc_ci, f1_ci = _ci(first)
    if len(runs) > 1:
        if all(r.predictions for r in runs):
            y_true, preds = _labels(runs, classes)
            boot = bootstrap_mean_ci(y_true, preds, len(classes))
            acc_ci, f1_ci = boot["accuracy"], boot["macro_f1"]
        else:
            acc_ci = f1_ci = None
    per_class = {c: mean_std([r.metrics["per_class"][c]["f1"] for r in runs]) for c in classes}
    training = [r.metrics.get("training", {}) for r in runs]
    total = training[0].get("parameters")
    model = (first.config.get("model") or {}).get("name") or first.metrics.get("model", "?")
    strategy = training[0].get("strategy") or (first.config.get("train") or {}).get("strategy")
    return CellSummary(
        name=name,
        runs=[r.name for r in runs],
        model=str(model),
        strategy=str(strategy or "?"),
        accuracy=acc,
        accuracy_std=acc_sd,
        accuracy_ci=acc_ci,
        macro_f1=f1m,
        macro_f1_std=f1_sd,
        macro_f1_ci=f1_ci,
        params_total=int(total) if total is not None else None,
        params_trainable=trainable_parameters(
            training[0], (first.inference or {}).get("head_parameters")
        ),
        train_seconds=_mean([t.get("train_seconds") for t in training]),
        images_per_s=_mean([(r.inference or {}).get("images_per_s") for r in runs]),
        epochs=_mean([t.get("epochs") for t in training]),
        f1={c: v[0] for c, v in per_class.items()},
        f1_std={c: v[1] for c, v in per_class.items()},
        settings=dict(settings or {}),
        link=link,
        time_budget=_mean([(r.config.get("train") or {}).get("time_budget") for r in runs]),
        run_seconds=_mean([(r.metrics.get("time_budget") or {}).get("actual_s") for r in runs]),
    )


# ---------------------------------------------------------------- baselines


def _check_f1(values: Mapping[str, Any], source: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for cls, value in values.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: F1 of '{cls}' is {value!r}, not a number") from None
        if not 0 <= v <= 1:
            raise ConfigError(
                f"{source}: F1 of '{cls}' is {v}; write F1 in [0, 1] (0.906, not 90.6)"
            )
        out[str(cls)] = v
    if not out:
        raise ConfigError(f"{source} holds no per-class F1 values")
    return out


def load_baseline(path: Path) -> Baseline:
    """Per-class F1 from YAML (``f1: {class: value}`` or a flat mapping) or CSV (``class,f1``
    rows, or one row with a column per class and an optional ``name`` column)."""
    if not path.is_file():
        raise ConfigError(f"baseline file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
        if {"class", "f1"} <= set(header):
            values = {r["class"].strip(): r["f1"] for r in rows if r.get("class")}
            return Baseline(path.stem, _check_f1(values, str(path)))
        if not rows:
            raise ConfigError(f"{path} is empty; write a header class,f1 and one row per class")
        row = dict(rows[0])
        name = row.pop("name", None) or path.stem
        return Baseline(str(name), _check_f1(row, str(path)))
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix it") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must map class names to F1 (or hold f1: {{class: value}})")
    if isinstance(raw.get("f1"), dict):
        return Baseline(str(raw.get("name") or path.stem), _check_f1(raw["f1"], str(path)))
    return Baseline(path.stem, _check_f1(raw, str(path)))


# ---------------------------------------------------------------- rendering (pure)


def _num(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _mean_sd(mean: float, sd: float, n: int) -> str:
    return f"{mean:.3f} ± {sd:.3f}" if n > 1 else f"{mean:.3f}"


def _ci_text(ci: Sequence[float] | None) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def _millions(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n / 1e3:.1f} k" if n >= 1000 else str(n)


def _seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 0.1:
        return "<0.1 s"
    if s < 10:
        return f"{s:.1f} s"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _train_time(c: CellSummary) -> str:
    """Training time; for a budgeted run also the whole run's time and its budget."""
    if c.time_budget is None:
        return _seconds(c.train_seconds)
    run = "" if c.run_seconds is None else f"run {_seconds(c.run_seconds)} / "
    return f"{_seconds(c.train_seconds)} ({run}budget {_seconds(c.time_budget)})"


LEADER_HEADER = [
    "rank",
    "run",
    "model",
    "strategy",
    "accuracy",
    "accuracy 95% CI",
    "macro-F1",
    "macro-F1 95% CI",
    "params total / trainable",
    "train time",
    "images/s",
    "epochs",
]


def ranked(cells: Sequence[CellSummary]) -> list[CellSummary]:
    """Best macro-F1 first (ties: accuracy, then name)."""
    return sorted(cells, key=lambda c: (-c.macro_f1, -c.accuracy, c.name))


FAILED = "FAILED"


def failed_row(run: FailedRun) -> list[str]:
    """A failed run's row: FAILED where its scores would be."""
    row = ["–", run.name, run.model, run.strategy] + ["–"] * (len(LEADER_HEADER) - 4)
    row[LEADER_HEADER.index("accuracy")] = row[LEADER_HEADER.index("macro-F1")] = FAILED
    return row


def leaderboard_rows(
    cells: Sequence[CellSummary], failed: Sequence[FailedRun] = ()
) -> list[list[str]]:
    """Ranked rows of the finished runs, then a FAILED row per failed run."""
    rows = []
    for rank, c in enumerate(ranked(cells), start=1):
        epochs = "–" if c.epochs is None else f"{c.epochs:g}"
        rows.append(
            [
                str(rank),
                c.name + (f" ({c.seeds} seeds)" if c.seeds > 1 else ""),
                c.model,
                c.strategy,
                _mean_sd(c.accuracy, c.accuracy_std, c.seeds),
                _ci_text(c.accuracy_ci),
                _mean_sd(c.macro_f1, c.macro_f1_std, c.seeds),
                _ci_text(c.macro_f1_ci),
                f"{_millions(c.params_total)} / {_millions(c.params_trainable)}",
                _train_time(c),
                "–" if c.images_per_s is None else f"{c.images_per_s:.0f}",
                epochs,
            ]
        )
    return rows + [failed_row(f) for f in failed]


def per_class_rows(
    cells: Sequence[CellSummary],
    classes: Sequence[str],
    baseline: Baseline | None,
    baseline_run: str | None = None,
) -> list[F1Row]:
    """The per-class F1 table: baseline first, then the runs in experiment order."""
    base: tuple[str, Mapping[str, float | None]] | None = None
    runs = [(c.name, c.f1) for c in cells]
    if baseline_run is not None:
        chosen = next((c for c in cells if baseline_run in (c.name, *c.runs)), None)
        if chosen is None:
            names = ", ".join(c.name for c in cells)
            raise ConfigError(f"--baseline-run '{baseline_run}' is not a run here ({names})")
        base = (f"baseline: {chosen.name}", dict(chosen.f1))
        runs = [r for r in runs if r[0] != chosen.name]
    elif baseline is not None:
        matched, unused = match_classes(baseline.f1, classes)
        if all(v is None for v in matched.values()):
            raise ConfigError(
                f"baseline '{baseline.name}' names none of the classes "
                f"({', '.join(classes)}); fix its class names"
            )
        if unused:
            logger.warning("baseline classes not in the data: %s", ", ".join(unused))
        base = (f"baseline: {baseline.name}", matched)
    stds = {c.name: c.f1_std for c in cells}
    return f1_table(runs, classes, base, stds)


def f1_cells(
    rows: Sequence[F1Row], classes: Sequence[str]
) -> tuple[list[list[str]], list[list[bool]]]:
    """Text and bold flags of the per-class table (run, classes..., classes beaten, spread)."""
    has_base = any(r.is_baseline for r in rows)
    text, bold = [], []
    for r in rows:
        beaten = "" if r.is_baseline or not has_base else format_beaten(r.net)
        cells = [r.name, *(_num(r.f1[c]) for c in classes), _num(r.mean), beaten, _num(r.spread)]
        flags = [False, *(r.better.get(c) is True for c in classes), False, False, False]
        text.append(cells)
        bold.append(flags)
    return text, bold


def f1_header(classes: Sequence[str]) -> list[str]:
    return ["run", *classes, "mean", "classes beaten", "spread"]


def _md_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    bold: Sequence[Sequence[bool]] | None = None,
) -> str:
    def cell(text: str, b: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if b and text else text

    text_cols = {"run", "model", "strategy"}
    aligns = ["---" if h in text_cols else "---:" for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    for i, row in enumerate(rows):
        flags = bold[i] if bold else [False] * len(row)
        lines.append("| " + " | ".join(cell(c, f) for c, f in zip(row, flags, strict=True)) + " |")
    return "\n".join(lines)


@dataclass
class Board:
    """Everything a leaderboard shows, ready to render."""

    title: str
    cells: list[CellSummary]
    classes: list[str]
    f1_rows: list[F1Row]
    notes: list[str] = field(default_factory=list)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    failed: list[FailedRun] = field(default_factory=list)
    display: dict[str, str] = field(default_factory=dict)  # class -> display name

    def class_header(self) -> list[str]:
        """The per-class table's header, classes by their display names."""
        return f1_header([self.display.get(c, c) for c in self.classes])


def _f1_legend(board: Board) -> str:
    has_base = any(r.is_baseline for r in board.f1_rows)
    parts = [f"F1 on the evaluated split, shown at {DECIMALS} decimals"]
    if any(c.seeds > 1 for c in board.cells):
        parts.append("mean over seeds")
    if has_base:
        parts.append(
            "**bold**: beats the baseline; classes beaten = classes won minus classes lost "
            "against the baseline (ties count as neither)"
        )
    parts.append("spread = best minus worst class F1")
    return "; ".join(parts) + "."


def render_markdown(board: Board) -> str:
    f1_text, f1_bold = f1_cells(board.f1_rows, board.classes)
    rows = leaderboard_rows(board.cells, board.failed)
    out = [f"# {board.title}", ""]
    out += [f"- {n}" for n in board.notes] + [""]
    out += ["## Leaderboard", "", _md_table(LEADER_HEADER, rows), ""]
    out += [
        "Mean ± std over seeds where a run has several; 95% CIs are stratified percentile "
        "bootstrap intervals over the evaluated images (resampled within each class). "
        "Ranked by macro-F1.",
        "",
    ]
    if board.failed:
        out += ["## Failed runs", ""]
        out += [f"- **{f.name}**: {f.error}" for f in board.failed] + [""]
    if board.cells:
        out += ["## Per-class F1", "", _md_table(board.class_header(), f1_text, f1_bold)]
        out += ["", _f1_legend(board), ""]
    return "\n".join(out)


CSV_FIELDS = [
    "rank",
    "run",
    "seeds",
    "model",
    "strategy",
    "accuracy",
    "accuracy_std",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "macro_f1",
    "macro_f1_std",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "params_total",
    "params_trainable",
    "train_seconds",
    "time_budget",
    "run_seconds",
    "images_per_s",
    "epochs",
    "wins",
    "losses",
    "classes_beaten",
    "spread",
    "status",
    "error",
]


def render_csv(board: Board) -> str:
    """One row per run with raw numbers, including ``f1_<class>`` columns; the baseline (if
    any) is a last row with only its per-class F1."""
    by_name = {r.name: r for r in board.f1_rows}
    buf = io.StringIO()
    fields = [*CSV_FIELDS, *(f"f1_{c}" for c in board.classes), "runs", "settings"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    has_base = any(r.is_baseline for r in board.f1_rows)
    for rank, c in enumerate(ranked(board.cells), start=1):
        row = by_name.get(c.name)
        lo_a, hi_a = c.accuracy_ci or (None, None)
        lo_f, hi_f = c.macro_f1_ci or (None, None)
        writer.writerow(
            {
                "rank": rank,
                "run": c.name,
                "seeds": c.seeds,
                "model": c.model,
                "strategy": c.strategy,
                "accuracy": round(c.accuracy, 6),
                "accuracy_std": round(c.accuracy_std, 6),
                "accuracy_ci_low": "" if lo_a is None else lo_a,
                "accuracy_ci_high": "" if hi_a is None else hi_a,
                "macro_f1": round(c.macro_f1, 6),
                "macro_f1_std": round(c.macro_f1_std, 6),
                "macro_f1_ci_low": "" if lo_f is None else lo_f,
                "macro_f1_ci_high": "" if hi_f is None else hi_f,
                "params_total": c.params_total if c.params_total is not None else "",
                "params_trainable": c.params_trainable if c.params_trainable is not None else "",
                "train_seconds": "" if c.train_seconds is None else round(c.train_seconds, 2),
                "time_budget": "" if c.time_budget is None else c.time_budget,
                "run_seconds": "" if c.run_seconds is None else round(c.run_seconds, 2),
                "images_per_s": "" if c.images_per_s is None else round(c.images_per_s, 2),
                "epochs": "" if c.epochs is None else c.epochs,
                "wins": row.wins if row and has_base else "",
                "losses": row.losses if row and has_base else "",
                "classes_beaten": row.net if row and has_base else "",
                "spread": round(row.spread, 6) if row else "",
                **{f"f1_{k}": round(v, 6) for k, v in c.f1.items()},
                "runs": " ".join(c.runs),
                "settings": json.dumps(c.settings, default=str) if c.settings else "",
                "status": "finished",
            }
        )
    for f in board.failed:
        writer.writerow(
            {
                "run": f.name,
                "model": f.model,
                "strategy": f.strategy,
                "status": "failed",
                "error": f.error,
                "runs": f.name,
            }
        )
    for r in board.f1_rows:
        if r.is_baseline:
            writer.writerow(
                {
                    "run": r.name,
                    "spread": round(r.spread, 6),
                    **{f"f1_{k}": "" if v is None else v for k, v in r.f1.items()},
                }
            )
    return buf.getvalue()


def render_html(board: Board, chart: bytes | None = None) -> str:
    cells = ranked(board.cells)
    rows = leaderboard_rows(board.cells, board.failed)
    links = [c.link for c in cells] + [None] * len(board.failed)
    notes = "".join(f"<li>{escape(n)}</li>" for n in board.notes)
    failed = "".join(f"<li><b>{escape(f.name)}</b>: {escape(f.error)}</li>" for f in board.failed)
    lead = (
        f"<ul class='note'>{notes}</ul>"
        + html.table(LEADER_HEADER, rows, hrefs=links, link_col=1)
        + (f"<p>Failed runs:</p><ul class='note'>{failed}</ul>" if failed else "")
        + html.note(
            "Mean ± std over seeds where a run has several; 95% CIs are stratified percentile "
            "bootstrap intervals over the evaluated images (resampled within each class). "
            "Run names link to each run's report."
        )
    )
    if chart:
        lead += html.figures(html.img(chart, "macro-F1 per run with 95% CI"))
    f1_text, f1_bold = f1_cells(board.f1_rows, board.classes)
    classes_ = ["baseline" if r.is_baseline else "" for r in board.f1_rows]
    per_class = html.table(board.class_header(), f1_text, f1_bold, classes_) + html.note(
        escape(_f1_legend(board)).replace("**bold**", "<b>bold</b>")
    )
    sections = [html.Section("leaderboard", "Leaderboard", lead)]
    if board.cells:
        sections.append(html.Section("per-class-f1", "Per-class F1", per_class))
    if board.axes:
        axis_rows = [[k, ", ".join(map(str, v))] for k, v in board.axes.items()]
        sections.append(
            html.Section("axes", "What varies", html.table(["config key", "values"], axis_rows))
        )
    return html.page(board.title, "transferlab comparison", sections)


# ---------------------------------------------------------------- files


def _read_run(run_dir: Path) -> RunData | None:
    from transferlab.report.run_report import read_run

    if not (run_dir / "metrics.json").is_file():
        return None
    files = read_run(run_dir)
    return RunData(run_dir.name, files.metrics, files.config, files.inference, files.predictions)


def _cells_on_disk(out: Path) -> tuple[list[tuple[str, list[str], dict[str, Any]]], dict[str, Any]]:
    """(cell name, run folder names, settings) from ``experiment.json``, else every finished
    or failed run folder directly under ``out`` as its own cell."""
    plan_file = out / PLAN_FILE
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
        return [(c["name"], c["runs"], c.get("settings", {})) for c in plan["cells"]], plan
    found = sorted(
        p.name
        for p in out.iterdir()
        if (p / "metrics.json").is_file() or (p / FAILED_FILE).is_file()
    )
    return [(n, [n], {}) for n in found], {}


def build_board(
    out: Path, baseline: Baseline | None = None, baseline_run: str | None = None
) -> Board:
    cells_meta, plan = _cells_on_disk(out)
    cells: list[CellSummary] = []
    missing: list[str] = []
    failed: list[FailedRun] = []
    display: dict[str, str] = {}  # the first run's display names (one dataset)
    first: Mapping[str, Any] = {}  # the first run's metrics: what every run was scored on
    for name, run_names, settings in cells_meta:
        runs = [r for r in (_read_run(out / n) for n in run_names) if r is not None]
        failures = [f for f in (read_failure(out / n) for n in run_names) if f is not None]
        failed += failures
        done = {r.name for r in runs} | {f.name for f in failures}
        missing += [n for n in run_names if n not in done]
        if runs:
            link = (
                f"{runs[0].name}/report.html"
                if (out / runs[0].name / "report.html").is_file()
                else None
            )
            first = first if cells else runs[0].metrics
            cells.append(summarise_cell(name, runs, settings, link))
            display = display or shown_names(runs[0].metrics)
    if not cells and not failed:
        raise TransferlabError(
            f"{out} holds no finished runs (no */metrics.json); run compare first"
        )
    classes = list(cells[0].f1) if cells else []
    for c in cells:
        if set(c.f1) != set(classes):
            raise TransferlabError(
                f"run '{c.name}' has other classes than '{cells[0].name}'; runs in one "
                "leaderboard must be trained on the same data"
            )
    notes = _notes(out, plan, cells, missing, failed, first)
    axes: dict[str, list[Any]] = {}
    for c in cells:
        for k, v in c.settings.items():
            axes.setdefault(k, [])
            if v not in axes[k]:
                axes[k].append(v)
    title = f"Experiment: {plan.get('name', out.resolve().name)}"
    rows = per_class_rows(cells, classes, baseline, baseline_run) if cells else []
    return Board(title, cells, classes, rows, notes, axes, failed, display)


def _notes(
    out: Path,
    plan: Mapping[str, Any],
    cells: Sequence[CellSummary],
    missing: Sequence[str],
    failed: Sequence[FailedRun],
    first: Mapping[str, Any],
) -> list[str]:
    notes = []
    if plan.get("dataset"):
        notes.append(f"dataset: {plan['dataset']}")
    if plan.get("split_file"):
        split = f"the identical split ({Path(plan['split_file']).name})"
    elif (out / "split.csv").is_file():
        split = "the identical split (split.csv)"
    else:
        split = "each run's own split"
    if cells:
        notes.append(
            f"{sum(c.seeds for c in cells)} runs in {len(cells)} configuration"
            f"{'s' if len(cells) > 1 else ''} on {split}; evaluated on the "
            f"{first.get('split', '?')} split ({first.get('num_images', '?')} images)"
        )
    if failed:
        notes.append(f"failed: {', '.join(f.name for f in failed)} (see Failed runs)")
    if missing:
        notes.append(f"not finished (left out): {', '.join(missing)}")
    return notes


def _plan_baseline(out: Path) -> tuple[Baseline | None, str | None]:
    plan_file = out / PLAN_FILE
    if not plan_file.is_file():
        return None, None
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    file = plan.get("baseline")
    baseline = None
    if file:
        path = Path(file) if Path(file).is_absolute() else out / file
        baseline = load_baseline(path)
        if plan.get("baseline_name"):
            baseline = Baseline(str(plan["baseline_name"]), baseline.f1)
    return baseline, plan.get("baseline_run")


def write_leaderboard(
    out: Path, baseline_file: Path | None = None, baseline_run: str | None = None
) -> Path:
    """Write ``leaderboard.md/.csv/.html/.json`` in an experiment folder; return the ``.md``.

    The baseline defaults to the one the experiment was run with (``experiment.json``).
    """
    if baseline_file is None and baseline_run is None:
        # The experiment's own baseline is read only when none is given instead.
        baseline, plan_run = _plan_baseline(out)
    else:
        given = load_baseline(baseline_file) if baseline_file is not None else None
        baseline, plan_run = (None, baseline_run) if baseline_run is not None else (given, None)
    board = build_board(out, baseline, plan_run)
    ordered = ranked(board.cells)
    chart = None
    if ordered:
        chart = plots.leaderboard_chart(
            [c.name for c in ordered],
            [c.macro_f1 for c in ordered],
            [c.macro_f1_ci for c in ordered],
        )
        _write_bytes(out / "leaderboard.png", chart)
    payload = {
        "title": board.title,
        "notes": board.notes,
        "classes": board.classes,
        "runs": [asdict(c) for c in ordered],
        "failed": [asdict(f) for f in board.failed],
        "per_class_f1": [
            {**asdict(r), "net": r.net, "spread": r.spread, "beaten": format_beaten(r.net)}
            for r in board.f1_rows
        ],
    }
    # Each file whole or not at all: a reader never sees half a leaderboard.
    _write_text(out / "leaderboard.md", render_markdown(board))
    _write_text(out / "leaderboard.csv", render_csv(board))
    _write_text(out / "leaderboard.html", render_html(board, chart))
    _write_text(out / "leaderboard.json", json.dumps(payload, indent=2, default=str))
    logger.info("leaderboard written to %s (.csv, .html, .json)", out / "leaderboard.md")
    return out / "leaderboard.md"


def _write_text(path: Path, text: str) -> None:
    replace_when_done(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    replace_when_done(path, lambda tmp: tmp.write_bytes(data))
