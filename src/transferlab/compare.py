"""Experiments: one YAML, many runs on the identical split, one leaderboard.

An experiment file names a dataset, a base configuration (the sections of a run's
``config.yaml``) and what varies::

    dataset: ../ahe-mini            # relative paths are relative to this file
    base:
      model: {image_size: 96}
      train: {epochs: 2}
    axes:                           # every combination (a grid) ...
      model.name: [tf_efficientnet_lite0, tf_efficientnet_lite1]
      train.lr: [0.001, 0.0003]
    runs:                           # ... crossed with explicit runs (optional)
      - {name: scratch, train.strategy: scratch}

Every key is a dotted config key typed and validated by :mod:`transferlab.config` (the
one coercion the CLI and config files use too), so new config keys work here without
changes. Runs are trained one after another, each into its own run folder under the
output folder; finished runs are skipped on re-launch and interrupted ones resume from
their last checkpoint. A run that fails (a value only its cell has, an unknown model, a
crash) is recorded as failed in its folder (``failed.json``) and in the leaderboard while
the others go on; ``fail_fast`` stops at the first failure instead.

``parallel``: that many runs at once, each in a fresh worker process (one GPU, or an
equal share of the CPU cores, each; see :mod:`transferlab.parallel`). ``time_budget``: a
wall-clock budget shared by the runs still to do, each run getting its part as
``train.time_budget`` when it starts (:class:`BudgetSplit`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import pickle
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transferlab.config import BadValue, RunConfig, coerce_value, from_dict, known_keys, load_yaml
from transferlab.engine import Callback
from transferlab.errors import ConfigError, RunsFailed, TransferlabError
from transferlab.files import is_temporary, replace_when_done
from transferlab.finetune import Phase
from transferlab.models.registry import resolve_preprocessing
from transferlab.parallel import Slot, Workers, plan_slots
from transferlab.pipeline import RunResult, resume_run, train_run
from transferlab.report.leaderboard import (
    FAILED_FILE,
    PLAN_FILE,
    load_baseline,
    write_failure,
    write_leaderboard,
)
from transferlab.report.run_report import REPORT_HTML, write_run_report
from transferlab.report.speed import measure_inference
from transferlab.setup import resolve_config
from transferlab.trackers import finish_run

logger = logging.getLogger(__name__)

EXPERIMENT_KEYS = (
    "name",
    "description",
    "dataset",
    "split_file",
    "base",
    "axes",
    "runs",
    "repeats",
    "baseline",
    "baseline_run",
)
SHARED_SPLIT = "split.csv"
FEATURE_CACHE_DIR = ".feature-cache"  # frozen-backbone features shared by the runs
# What a run folder may hold; an unfinished folder with anything else is not cleared.
RUN_FILES = {
    "config.yaml",
    "split.csv",
    "history.csv",
    "batches.csv",
    "checkpoints",
    "model",
    "predictions.csv",
    "metrics.json",
    "report",
    "report.html",
    "inference.json",
    "tensorboard",
    FAILED_FILE,
}


@dataclass(frozen=True)
class Cell:
    """One point of the experiment: a name, the config keys it sets, and why its settings
    cannot make a run (None when they can)."""

    name: str
    settings: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True)
class PlannedRun:
    cell: str
    name: str  # the run folder's name
    seed: int
    config: RunConfig
    keys: tuple[str, ...] = ()  # the config keys the experiment sets (checked on re-launch)


@dataclass(frozen=True)
class Experiment:
    path: Path
    name: str
    dataset: Path
    split_file: Path | None
    base: dict[str, Any]
    cells: list[Cell]
    repeats: int
    baseline: Path | None
    baseline_run: str | None

    @property
    def invalid(self) -> list[Cell]:
        return [c for c in self.cells if c.error is not None]


@dataclass(frozen=True)
class Failure:
    """A run that failed: its one-line error and the exit code it stands for (2: something
    the user can fix; 1: a crash)."""

    run: str
    error: str
    exit_code: int = 2


def _sections() -> list[str]:
    return list(dict.fromkeys(key.partition(".")[0] for key in known_keys()))


def _typed(key: str, value: Any, where: str) -> Any:
    """``value`` typed for config key ``key`` (YAML reads ``1e-3`` as text). An unknown key
    fails the file; a value that does not fit is kept as written, and the run of that cell
    fails alone (see :func:`load_experiment`)."""
    try:
        return coerce_value(key, value)
    except BadValue:
        return value
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _dotted(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{train: {lr: 1}}`` and ``{train.lr: 1}`` both become ``{"train.lr": 1}``; an
    unknown key fails with the config's own message (which suggests the closest key)."""
    out: dict[str, Any] = {}
    sections = _sections()
    for key, value in entry.items():
        if key in sections and isinstance(value, Mapping):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    for key in out:
        _typed(key, None, where)  # a known key takes or refuses None; an unknown one raises
    return out


def flatten(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """:func:`_dotted`, with every value typed for its key."""
    return {key: _typed(key, value, where) for key, value in _dotted(entry, where).items()}


def _slug(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-") or "x"


def cell_name(settings: Mapping[str, Any], varying: Sequence[str]) -> str:
    """A folder name from the values that vary: ``resnet18-lr0.001``."""
    parts = []
    for key in varying:
        if key not in settings:
            continue
        value = settings[key]
        last = key.split(".")[-1]
        parts.append(_slug(value) if isinstance(value, str) else f"{last}{_slug(value)}")
    return "-".join(parts) or "run"


def _resolve_path(value: Any, base_dir: Path, what: str, file: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{file}: '{what}' must be a path (a string)")
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [base_dir / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = " or ".join(dict.fromkeys(str(c) for c in candidates))
    raise ConfigError(f"{file}: {what} '{value}' not found (looked for {tried}); fix the path")


def _axes(raw: Any, file: Path) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: 'axes' must map config keys to lists of values")
    axes: dict[str, list[Any]] = {}
    for key, values in _dotted(raw, f"{file}: axes").items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{file}: axes: {key} must be a non-empty YAML list of values")
        axes[key] = [_typed(key, v, f"{file}: axes") for v in values]
    return axes


def _runs(raw: Any, file: Path) -> list[tuple[str | None, dict[str, Any]]]:
    if raw is None:
        return [(None, {})]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{file}: 'runs' must be a non-empty list of mappings of config keys")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{file}: runs[{i}] must be a mapping such as  train.lr: 0.01")
        entry = dict(entry)
        name = entry.pop("name", None)
        settings = flatten(entry, f"{file}: runs[{i}]")
        out.append((None if name is None else _slug(name), settings))
    return out


def _base(raw: Any, file: Path) -> dict[str, Any]:
    """The base sections as written; :func:`build_config` types and checks them."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: 'base' must hold config sections ({', '.join(_sections())})")
    return dict(raw)


def expand_cells(
    axes: Mapping[str, list[Any]], runs: Sequence[tuple[str | None, dict[str, Any]]]
) -> list[Cell]:
    """Every explicit run crossed with every combination of the axes, with unique names."""
    keys = list(axes)
    varying = list(dict.fromkeys(k for _, s in runs for k in s))
    cells = []
    for run_name, settings in runs:
        for combo in itertools.product(*(axes[k] for k in keys)):
            merged = {**settings, **dict(zip(keys, combo, strict=True))}
            grid_part = cell_name(merged, keys) if keys else ""
            own = run_name or (cell_name(settings, varying) if settings else "")
            name = "-".join(p for p in (own, grid_part) if p) or "run"
            cells.append(Cell(name, merged))
    names = [c.name for c in cells]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"two runs would both be named '{dupes[0]}'; give the runs distinct 'name:' values"
        )
    return cells


def build_config(
    base: Mapping[str, Any], settings: Mapping[str, Any], dataset: Path, where: str
) -> RunConfig:
    """The run's config: base sections, then the cell's dotted keys, then the dataset."""
    try:
        return from_dict(base, {**settings, "data.path": str(dataset)})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _checked(cell: Cell, base: Mapping[str, Any], data: Path, file: Path) -> Cell:
    """The cell, with the error its run would stop on before training (a bad value, an
    unknown model), found now rather than hours into the experiment."""
    try:
        cfg = build_config(base, cell.settings, data, f"{file}: run '{cell.name}'")
        resolve_preprocessing(cfg.model.name, cfg.model.image_size)
    except TransferlabError as exc:
        return dataclasses.replace(cell, error=str(exc))
    return cell


def load_experiment(
    path: Path, repeats: int | None = None, dataset: Path | None = None
) -> Experiment:
    """Read and validate an experiment file. Every run's config is built once: errors in
    the file or its base fail here; a cell whose own settings fail is kept with its error
    (its run fails, the others go on), unless every cell fails."""
    raw = load_yaml(path, "experiment file", "dataset, base and axes or runs")
    unknown = sorted(set(raw) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key '{unknown[0]}'; an experiment has: {', '.join(EXPERIMENT_KEYS)}"
        )
    here = path.resolve().parent
    if dataset is None and "dataset" not in raw:
        raise ConfigError(f"{path}: no 'dataset'; add dataset: PATH (or pass --data)")
    data = dataset.resolve() if dataset else _resolve_path(raw["dataset"], here, "dataset", path)
    if not data.exists():
        raise ConfigError(f"dataset not found: {data}")
    split = raw.get("split_file")
    split_file = _resolve_path(split, here, "split_file", path) if split else None
    base = _base(raw.get("base"), path)
    build_config(base, {}, data, f"{path}: base")
    cells = expand_cells(_axes(raw.get("axes"), path), _runs(raw.get("runs"), path))
    cells = [_checked(cell, base, data, path) for cell in cells]
    if all(c.error is not None for c in cells):
        raise ConfigError(str(cells[0].error))
    n = repeats if repeats is not None else raw.get("repeats", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{path}: repeats must be a whole number >= 1 (or use --repeats)")
    baseline = raw.get("baseline")
    return Experiment(
        path=path,
        name=str(raw.get("name") or path.stem),
        dataset=data,
        split_file=split_file,
        base=base,
        cells=cells,
        repeats=n,
        baseline=_resolve_path(baseline, here, "baseline", path) if baseline else None,
        baseline_run=raw.get("baseline_run"),
    )


def plan_runs(exp: Experiment) -> list[PlannedRun]:
    """Each valid cell once per seed: the cell's own seed, then seed+1, ... (``--repeats``)."""
    runs = []
    for cell in exp.cells:
        if cell.error is not None:
            continue
        where = f"{exp.path}: run '{cell.name}'"
        cfg = build_config(exp.base, cell.settings, exp.dataset, where)
        first = cfg.train.seed
        named = [*_flat(exp.base), *cell.settings, "train.seed"]
        keys = tuple(k for k in dict.fromkeys(named) if k not in ("data.path", "data.split_file"))
        for i in range(exp.repeats):
            seed = first + i
            name = cell.name if i == 0 else f"{cell.name}-seed{seed}"
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
            runs.append(PlannedRun(cell.name, name, seed, seeded, keys))
    return runs


def _with_split(cfg: RunConfig, split: Path | None) -> RunConfig:
    if split is None:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split_file=str(split)))


def _with_feature_cache(cfg: RunConfig, out: Path) -> RunConfig:
    """Runs of one experiment share frozen-backbone features unless the YAML says where."""
    if cfg.train.feature_cache_dir:
        return cfg
    cache = str(out / FEATURE_CACHE_DIR)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, feature_cache_dir=cache))


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def config_mismatch(
    planned: RunConfig, keys: Sequence[str], stored: Mapping[str, Any]
) -> str | None:
    """The first of ``keys`` on which a run's ``config.yaml`` disagrees with the plan.

    The plan is compared in the form a run saves it (:func:`resolve_config`: absolute
    paths, the resolved input size and augment preset), so a run started from another
    folder, or with a relative ``--out``, still matches its plan.
    """
    want = _flat(json.loads(json.dumps(resolve_config(planned).to_dict())))
    have = _flat(stored)
    for key in keys:
        if key in want and key in have and have[key] != want[key]:
            return f"{key} is {have[key]!r} there but {want[key]!r} in the experiment"
    return None


def _is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file()


def why_not_resume(planned: RunConfig, run_dir: Path) -> str | None:
    """None if the interrupted run in ``run_dir`` can continue from its last checkpoint
    under the planned configuration (every key must match); otherwise why not.

    ``data.split_file`` may differ where the run's own ``split.csv`` (which a resumed run
    trains on) is the planned split: the first run of a parallel compare starts before
    the shared split exists, and makes it."""
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        return "it has no checkpoint"
    try:
        stored = from_dict(load_yaml(run_dir / "config.yaml")).to_dict()
    except TransferlabError as exc:
        return f"its config.yaml cannot be used: {exc}"
    keys = list(_flat(planned.to_dict()))
    if _same_split(planned, run_dir):
        keys.remove("data.split_file")
    return config_mismatch(planned, keys, stored)


def _same_split(planned: RunConfig, run_dir: Path) -> bool:
    split, own = planned.data.split_file, run_dir / "split.csv"
    return (
        split is not None
        and Path(split).is_file()
        and own.is_file()
        and own.read_bytes() == Path(split).read_bytes()
    )


def clear_unfinished(run_dir: Path, why: str | None = None) -> None:
    """Remove an interrupted run folder (no metrics.json) so it can be trained again;
    ``why`` it cannot resume goes into the warning."""
    if not run_dir.exists():
        return
    names = [p.name for p in run_dir.iterdir() if not is_temporary(p.name)]
    strangers = sorted(n for n in names if n not in RUN_FILES)
    if strangers:
        raise ConfigError(
            f"{run_dir} is unfinished but holds {strangers[0]}, which no run writes; "
            "move it away or use a new --out folder"
        )
    if (run_dir / "checkpoints" / "last.pt").is_file():
        reason = f" and cannot resume ({why})" if why else ""
        logger.warning("%s did not finish%s; training it again", run_dir, reason)
    elif "config.yaml" in names:
        logger.info("%s never finished an epoch; starting it again", run_dir)
    shutil.rmtree(run_dir)


@dataclass
class ExperimentResult:
    out: Path
    runs: list[PlannedRun]
    trained: list[str]
    skipped: list[str]
    leaderboard: Path | None = None
    resumed: list[str] = dataclasses.field(default_factory=list)  # also in trained
    failed: list[Failure] = dataclasses.field(default_factory=list)


CallbackFactory = Callable[[Path], Sequence[Callback]]


def _copy(src: Path, dest: Path) -> None:
    replace_when_done(dest, lambda tmp: shutil.copyfile(src, tmp))


def _shared_split(exp: Experiment, out: Path, runs: Sequence[PlannedRun]) -> Path | None:
    """The split every run uses: the experiment's, else the one saved by the first run."""
    if exp.split_file is not None:
        return exp.split_file
    shared = out / SHARED_SPLIT
    if shared.is_file():
        return shared
    for run in runs:
        made = out / run.name / "split.csv"
        if _is_finished(out / run.name) and made.is_file():
            _copy(made, shared)  # its presence means "the split": whole or absent
            return shared
    return None


def _write_plan(exp: Experiment, out: Path, runs: Sequence[PlannedRun]) -> None:
    baseline = baseline_name = None
    if exp.baseline is not None:
        baseline = f"baseline{exp.baseline.suffix.lower() or '.yaml'}"
        baseline_name = load_baseline(exp.baseline).name
        if exp.baseline.resolve() != (out / baseline).resolve():
            _copy(exp.baseline, out / baseline)
    plan = {
        "name": exp.name,
        "experiment_file": str(exp.path.resolve()),
        "dataset": str(exp.dataset),
        "split_file": str(exp.split_file) if exp.split_file else None,
        "repeats": exp.repeats,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "baseline_run": exp.baseline_run,
        "cells": [
            {
                "name": c.name,
                "settings": c.settings,
                "runs": [r.name for r in runs if r.cell == c.name] or [c.name],
                **({"error": c.error} if c.error else {}),
            }
            for c in exp.cells
        ],
    }
    text = json.dumps(plan, indent=2, default=str)
    replace_when_done(out / PLAN_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if exp.path.resolve() != (out / "experiment.yaml").resolve():
        _copy(exp.path, out / "experiment.yaml")


def choose_baseline(
    exp: Experiment, file: Path | None = None, run: str | None = None
) -> Experiment:
    """The experiment with ``--baseline FILE`` or ``--baseline-run NAME`` instead of its own."""
    if file is not None and run is not None:
        raise ConfigError("give either --baseline or --baseline-run, not both")
    if file is not None:
        return dataclasses.replace(exp, baseline=file.resolve(), baseline_run=None)
    if run is not None:
        return dataclasses.replace(exp, baseline=None, baseline_run=run)
    return exp


def check_baseline(exp: Experiment) -> None:
    """Fail before any training if the baseline cannot be used."""
    if exp.baseline is not None:
        load_baseline(exp.baseline)
    if exp.baseline_run is not None:
        names = {c.name for c in exp.cells} | {r.name for r in plan_runs(exp)}
        if exp.baseline_run not in names:
            raise ConfigError(
                f"baseline run '{exp.baseline_run}' is not one of this experiment's runs: "
                f"{', '.join(c.name for c in exp.cells)}"
            )


def _check_finished(runs: Sequence[PlannedRun], out: Path) -> None:
    """Every finished run folder must hold what the experiment plans, checked before any
    training: otherwise the leaderboard would mix two experiments."""
    for run in runs:
        run_dir = out / run.name
        if not _is_finished(run_dir):
            continue
        stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
        why = config_mismatch(run.config, run.keys, stored)
        if why:
            raise ConfigError(
                f"{run_dir} holds a finished run that does not match the experiment ({why}); "
                "use a new --out folder or delete that run"
            )


def _finish(run_dir: Path, measure: bool) -> None:
    """Time inference and write the run's report, unless done before. A failure here
    leaves the finished run in the leaderboard; 'transferlab report' retries it."""
    try:
        measured = measure and not (run_dir / "inference.json").is_file()
        if measured:
            measure_inference(run_dir)
        if measured or not (run_dir / REPORT_HTML).is_file():  # the report shows the speed
            write_run_report(run_dir)
    except Exception as exc:  # the run itself is saved: say so and go on
        logger.warning(
            "could not time or report %s (%s); retry with 'transferlab report %s'",
            run_dir,
            exc,
            run_dir.parent,
        )


def _train(
    step: str, run: PlannedRun, config: RunConfig, run_dir: Path, callbacks: CallbackFactory | None
) -> tuple[RunResult, bool]:
    """Resume the run from its last checkpoint if its settings still match, else train it
    from the start; the result and whether it resumed."""
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # an earlier attempt's failure
    why = why_not_resume(config, run_dir)
    if why is None:
        logger.info("%s resuming %s from its last checkpoint", step, run.name)
    else:
        clear_unfinished(run_dir, why)  # before the callbacks open files in it
        logger.info("%s training %s", step, run.name)
    cbs = list(callbacks(run_dir)) if callbacks else []
    if why is None:
        result = resume_run(run_dir, cbs, write_report=False)
    else:
        result = train_run(config, run_dir, cbs, write_report=False)
    finish_run(cbs, result.metrics)
    return result, why is None


def _failure(name: str, exc: Exception) -> Failure:
    if isinstance(exc, TransferlabError):
        return Failure(name, str(exc), exc.exit_code)
    logger.debug("%s crashed", name, exc_info=exc)  # the traceback, with --debug
    return Failure(name, f"unexpected {exc.__class__.__name__}: {exc}", 1)


def _record(out: Path, failure: Failure, model: str, strategy: str, fail_fast: bool) -> None:
    write_failure(out / failure.run, failure.error, failure.exit_code, model, strategy)
    if not fail_fast:
        logger.warning("%s failed: %s; going on with the other runs", failure.run, failure.error)


def _model_and_strategy(exp: Experiment, cell: Cell) -> tuple[str, str]:
    """What an invalid cell asked for, as far as its settings and the base say."""
    base = build_config(exp.base, {}, exp.dataset, f"{exp.path}: base")
    model = cell.settings.get("model.name", base.model.name)
    return str(model), str(cell.settings.get("train.strategy", base.train.strategy))


MIN_SHARE = 1.0  # seconds; a run given less than this is not started


class BudgetSplit:
    """One wall-clock budget shared by the runs still to start, re-divided as runs end.

    A run starting now gets an equal part of the slot time left (``slots`` x the time
    left, less what the running runs still hold), and never more than the time left: so
    every run's share ends within the budget, and time a finished run did not use goes to
    the runs after it.
    """

    def __init__(
        self, seconds: float, slots: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.slots = slots
        self.clock = clock
        self.deadline = clock() + seconds
        self.ends: dict[str, float] = {}  # running run -> the end of its share

    def share(self, run: str, waiting: int) -> float:
        """Seconds for ``run``, starting now, with ``waiting`` runs (it included) not yet
        started; 0 when the budget is spent. Rounded down to 0.1 s."""
        now = self.clock()
        left = self.deadline - now
        held = sum(max(end - now, 0.0) for end in self.ends.values())
        share = max(min(left, (self.slots * left - held) / max(waiting, 1)), 0.0)
        share = math.floor(share * 10) / 10
        self.ends[run] = now + share
        return share

    def finished(self, run: str) -> None:
        self.ends.pop(run, None)


def _with_budget(cfg: RunConfig, seconds: float | None) -> RunConfig:
    if seconds is None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget=seconds))


def _budget_spent(name: str, budget: BudgetSplit) -> Failure:
    return Failure(
        name,
        f"--time-budget {budget.seconds:g}s was spent before this run could start; run the "
        "same command again with a larger budget (finished runs are kept)",
    )


def check_budget(runs: Sequence[PlannedRun], seconds: float | None) -> None:
    """One budget at a time: the experiment's own ``train.time_budget`` or a split one."""
    if seconds is None:
        return
    own = next((r for r in runs if r.config.train.time_budget is not None), None)
    if own is not None:
        raise ConfigError(
            f"run '{own.name}' sets train.time_budget itself, and --time-budget splits one "
            "budget across the runs; remove one of the two"
        )


def worker_slots(runs: Sequence[PlannedRun], parallel: int) -> list[Slot]:
    """The worker slots for ``parallel`` runs at once (none: one run at a time, here)."""
    if parallel == 1:
        return []
    for run in runs:
        train = run.config.train
        if train.devices != "1":
            raise ConfigError(
                f"--parallel runs one process per run, but run '{run.name}' sets "
                f"train.devices {train.devices}; use one of the two"
            )
        if train.device.startswith("cuda:"):
            raise ConfigError(
                f"--parallel gives each run a GPU of its own, but run '{run.name}' sets "
                f"train.device {train.device}; set it to cuda or auto"
            )
    return plan_slots(parallel, any(_on_gpu(r.config) for r in runs))


def _check_picklable(callbacks: CallbackFactory | None) -> None:
    """Parallel runs get their callbacks in a worker process, pickled."""
    try:
        pickle.dumps(callbacks)
    except Exception as exc:
        raise ConfigError(
            "runs in parallel need callbacks that pickle (a module-level function or class, "
            f"not a closure or lambda): {exc}"
        ) from None


def _on_gpu(cfg: RunConfig) -> bool:
    if cfg.train.device == "auto":
        import torch

        return torch.cuda.is_available()
    return cfg.train.device.startswith("cuda")


def run_experiment(
    exp: Experiment,
    out: Path,
    callbacks: CallbackFactory | None = None,
    measure: bool = True,
    fail_fast: bool = False,
    parallel: int = 1,
    time_budget: float | None = None,
) -> ExperimentResult:
    """Train every planned run not yet finished under ``out``, then write the leaderboard.

    A run that fails is recorded (``RUN/failed.json``, the leaderboard, ``failed`` in the
    result) and the others go on; with ``fail_fast`` its error is raised instead.
    ``parallel``: runs at once, each in its own process (``callbacks`` must then pickle:
    a module-level function or class); ``time_budget``: seconds of wall clock for all
    the runs still to do (see :class:`BudgetSplit`).
    """
    check_baseline(exp)
    runs = plan_runs(exp)
    slots = worker_slots(runs, parallel)
    if slots:
        _check_picklable(callbacks)
    check_budget(runs, time_budget)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    _check_finished(runs, out)
    _write_plan(exp, out, runs)
    result = ExperimentResult(out, runs, [], [])
    for cell in exp.invalid:
        if fail_fast:
            raise ConfigError(str(cell.error))
        result.failed.append(Failure(cell.name, str(cell.error)))
        _record(out, result.failed[-1], *_model_and_strategy(exp, cell), fail_fast)
    budget = None if time_budget is None else BudgetSplit(time_budget, max(len(slots), 1))
    if slots:
        _train_parallel(exp, out, result, callbacks, slots, fail_fast, budget)
        _in_plan_order(result)
        for run in runs:
            if _is_finished(out / run.name):
                _finish(out / run.name, measure)
    else:
        _train_serial(exp, out, result, callbacks, measure, fail_fast, budget)
    _warn_split_drift(out, runs)
    result.leaderboard = write_leaderboard(out)
    return result


def _in_plan_order(result: ExperimentResult) -> None:
    """Runs listed as a serial compare lists them, whichever finished first."""
    order = {r.name: i for i, r in enumerate(result.runs)}
    result.trained.sort(key=lambda name: order[name])
    result.resumed.sort(key=lambda name: order[name])
    result.failed.sort(key=lambda f: order.get(f.run, -1))  # invalid cells (unplanned) first


def _train_serial(
    exp: Experiment,
    out: Path,
    result: ExperimentResult,
    callbacks: CallbackFactory | None,
    measure: bool,
    fail_fast: bool,
    budget: BudgetSplit | None,
) -> None:
    """One run after another, in this process (each run's report right after it)."""
    runs = result.runs
    waiting = sum(not _is_finished(out / r.name) for r in runs)
    for i, run in enumerate(runs, start=1):
        run_dir = out / run.name
        if _is_finished(run_dir):
            logger.info("[%d/%d] %s: finished before, skipped", i, len(runs), run.name)
            result.skipped.append(run.name)
        else:
            share = budget.share(run.name, waiting) if budget else None
            waiting -= 1
            try:
                if budget is not None and share is not None and share < MIN_SHARE:
                    raise ConfigError(_budget_spent(run.name, budget).error)
                split = _shared_split(exp, out, runs)
                config = _with_budget(
                    _with_feature_cache(_with_split(run.config, split), out), share
                )
                _, resumed = _train(f"[{i}/{len(runs)}]", run, config, run_dir, callbacks)
            except Exception as exc:  # recorded; the other runs go on
                result.failed.append(_failure(run.name, exc))
                model, strategy = run.config.model.name, run.config.train.strategy
                _record(out, result.failed[-1], model, strategy, fail_fast)
                if fail_fast:
                    raise
                continue
            finally:
                if budget is not None:
                    budget.finished(run.name)
            result.trained.append(run.name)
            if resumed:
                result.resumed.append(run.name)
            _shared_split(exp, out, runs)
        _finish(run_dir, measure)


@dataclass(frozen=True)
class RunJob:
    """What a worker process needs to train one run (it travels pickled)."""

    step: str
    run: PlannedRun
    config: RunConfig
    run_dir: Path
    callbacks: CallbackFactory | None


SPLIT_WRITTEN = "split written"


class _SplitWritten(Callback):
    """Tells the parent that the run's ``split.csv`` is written (a run writes it before
    training starts), so the runs waiting for the shared split can start."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self.send = send

    def on_fit_start(self, phases: Sequence[Phase]) -> None:
        self.send(SPLIT_WRITTEN)


def train_job(job: RunJob, send: Callable[[Any], None]) -> Failure | bool:
    """A worker process's job (:mod:`transferlab.parallel`): train or resume one run;
    whether it resumed, or its failure (returned, not raised, to cross the process)."""

    def callbacks(run_dir: Path) -> list[Callback]:
        given = job.callbacks(run_dir) if job.callbacks else []
        return [*given, _SplitWritten(send)]

    try:
        _, resumed = _train(job.step, job.run, job.config, job.run_dir, callbacks)
    except Exception as exc:  # the parent records it
        return _failure(job.run.name, exc)
    return resumed


def _train_parallel(
    exp: Experiment,
    out: Path,
    result: ExperimentResult,
    callbacks: CallbackFactory | None,
    slots: list[Slot],
    fail_fast: bool,
    budget: BudgetSplit | None,
) -> None:
    """Up to one run per slot at once, each in a fresh process (see :class:`_Parallel`)."""
    runs = result.runs
    queue: list[tuple[int, PlannedRun]] = []
    for i, run in enumerate(runs, start=1):
        if _is_finished(out / run.name):
            logger.info("[%d/%d] %s: finished before, skipped", i, len(runs), run.name)
            result.skipped.append(run.name)
        else:
            queue.append((i, run))
    with Workers(slots, "transferlab.compare:train_job") as pool:
        _Parallel(exp, out, result, callbacks, fail_fast, budget, pool).run(queue)


@dataclass
class _Parallel:
    """Starts runs as slots free up and records how each ends. Until the experiment has
    its shared split, one run at a time: the first run's split becomes every run's, as in
    a serial compare. With ``fail_fast`` the first failure terminates the running runs
    (their last checkpoints stay, so a re-launch resumes them) and starts no other."""

    exp: Experiment
    out: Path
    result: ExperimentResult
    callbacks: CallbackFactory | None
    fail_fast: bool
    budget: BudgetSplit | None
    pool: Workers

    def run(self, queue: list[tuple[int, PlannedRun]]) -> None:
        split = _shared_split(self.exp, self.out, self.result.runs)
        while queue or self.pool.running:
            while queue and self.pool.free and (split is not None or not self.pool.running):
                self._start(*queue.pop(0), split, waiting=len(queue) + 1)
            if not self.pool.running:  # the starts just now failed: nothing to wait for
                continue
            for event in self.pool.wait():
                run = next(r for r in self.result.runs if r.name == event.key)
                if event.kind == "message":
                    if event.value == SPLIT_WRITTEN and split is None:
                        split = self._share_split(run)
                    continue
                self._ended(run, _outcome(run.name, event.kind, event.value))
                split = split or _shared_split(self.exp, self.out, self.result.runs)

    def _share_split(self, run: PlannedRun) -> Path:
        """The split ``run`` has just written (before training) becomes every run's."""
        shared = self.out / SHARED_SPLIT
        _copy(self.out / run.name / "split.csv", shared)
        return shared

    def _start(self, i: int, run: PlannedRun, split: Path | None, waiting: int) -> None:
        share = self.budget.share(run.name, waiting) if self.budget else None
        if self.budget is not None and share is not None and share < MIN_SHARE:
            self._ended(run, _budget_spent(run.name, self.budget))
            return
        config = _with_budget(_with_feature_cache(_with_split(run.config, split), self.out), share)
        step = f"[{i}/{len(self.result.runs)}]"
        self.pool.start(run.name, RunJob(step, run, config, self.out / run.name, self.callbacks))

    def _ended(self, run: PlannedRun, outcome: Failure | bool) -> None:
        if self.budget is not None:
            self.budget.finished(run.name)
        if isinstance(outcome, Failure):
            self.result.failed.append(outcome)
            model, strategy = run.config.model.name, run.config.train.strategy
            _record(self.out, outcome, model, strategy, self.fail_fast)
            if self.fail_fast:
                self.pool.stop()
                raise RunsFailed(f"{outcome.run}: {outcome.error}", outcome.exit_code)
            return
        self.result.trained.append(run.name)
        if outcome:
            self.result.resumed.append(run.name)


def _outcome(run: str, kind: str, value: Any) -> Failure | bool:
    """A worker's result: whether the run resumed, or why it failed."""
    if kind == "result":
        return value if isinstance(value, Failure) else bool(value)
    if isinstance(value, int) and value < 0:
        how = f"was killed by signal {-value}" + (" (out of memory?)" if value == -9 else "")
    else:
        how = f"exited with code {value} (its log above says why)"
    return Failure(
        run,
        f"its worker process {how} before the run finished; its last checkpoint is kept: "
        "run the same command again to resume it",
        1,
    )


def is_experiment_dir(path: Path) -> bool:
    return (path / PLAN_FILE).is_file() or (
        path.is_dir() and any((p / "metrics.json").is_file() for p in path.iterdir())
    )


def report_experiment(
    out: Path,
    baseline_file: Path | None = None,
    baseline_run: str | None = None,
    measure: bool = True,
    **report_options: Any,
) -> Path:
    """Rebuild every finished run's report and the leaderboard of an experiment folder,
    timing inference where a run has no ``inference.json`` yet (no training)."""
    if baseline_file is not None and baseline_run is not None:
        raise ConfigError("give either --baseline or --baseline-run, not both")
    if not out.is_dir() or not is_experiment_dir(out):
        raise TransferlabError(
            f"{out} is neither a run folder (metrics.json) nor an experiment folder "
            "(experiment.json or run folders inside)"
        )
    for run_dir in sorted(p for p in out.iterdir() if (p / "metrics.json").is_file()):
        if measure and not (run_dir / "inference.json").is_file():
            measure_inference(run_dir)
        write_run_report(run_dir, **report_options)
    return write_leaderboard(out, baseline_file, baseline_run)


def _warn_split_drift(out: Path, runs: Sequence[PlannedRun]) -> None:
    shared = out / SHARED_SPLIT
    if not shared.is_file():
        return
    reference = shared.read_bytes()
    for run in runs:
        own = out / run.name / "split.csv"
        if own.is_file() and own.read_bytes() != reference:
            logger.warning(
                "%s used a different split than %s (unreadable files dropped, or the data "
                "changed); its numbers are not strictly comparable",
                run.name,
                shared,
            )
