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

Every key is a dotted config key validated by :func:`transferlab.config.from_dict`, so new
config keys work here without changes. Runs are trained one after another, each into its
own run folder under the output folder; finished runs are skipped on re-launch.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transferlab.config import RunConfig, from_dict, load_yaml
from transferlab.engine import Callback
from transferlab.errors import ConfigError, TransferlabError
from transferlab.report.speed import measure_inference

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
PLAN_FILE = "experiment.json"
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
}


@dataclass(frozen=True)
class Cell:
    """One point of the experiment: a name and the config keys it sets."""

    name: str
    settings: dict[str, Any]


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


def _sections() -> dict[str, type]:
    """Config sections and their dataclasses, read from RunConfig itself (none hard-coded)."""
    default = RunConfig()
    return {f.name: type(getattr(default, f.name)) for f in dataclasses.fields(RunConfig)}


def _field_types(section: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(section)}


def coerce(value: Any, annotation: str) -> Any:
    """Fit a YAML value to a config field's type: YAML reads ``1e-3`` as a string."""
    kinds = {k.strip() for k in annotation.split("|")}
    if isinstance(value, bool) or value is None:
        return value
    if "float" in kinds and isinstance(value, int | str):
        try:
            return float(value)
        except ValueError:
            return value
    if "int" in kinds and isinstance(value, float) and value.is_integer():
        return int(value)
    if "int" in kinds and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    if kinds == {"str"} and isinstance(value, int | float):
        return str(value)
    return value


def _check_key(key: str, where: str) -> None:
    sections = _sections()
    section, _, rest = key.partition(".")
    if section not in sections or not rest:
        raise ConfigError(
            f"{where}: '{key}' is not a config key; write section.key with a section of "
            f"{', '.join(sections)} (e.g. train.lr, model.name)"
        )
    name = rest.split(".")[0]
    known = _field_types(sections[section])
    if name not in known:
        raise ConfigError(
            f"{where}: unknown key {section}.{name}; known keys in '{section}': "
            f"{', '.join(sorted(known))}"
        )


def typed(key: str, value: Any) -> Any:
    """``value`` fitted to the config field ``key`` names; a clear error if it cannot be."""
    parts = key.split(".")
    if len(parts) != 2:
        return value
    annotation = _field_types(_sections()[parts[0]]).get(parts[1], "")
    value = coerce(value, annotation)
    kinds = {k.strip() for k in annotation.split("|")}
    numeric = kinds & {"int", "float"}
    if numeric and "str" not in kinds and isinstance(value, str):
        raise ConfigError(f"{key}: {value!r} is not a number")
    return value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(raw, "train.lr", 0.01)`` sets ``raw["train"]["lr"]``, typed like the field."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"'{key}': {part} is not a mapping, it cannot hold {parts[-1]}")
        node = child
    node[parts[-1]] = typed(key, value)


def flatten(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{train: {lr: 1}}`` and ``{train.lr: 1}`` both become ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    sections = _sections()
    for key, value in entry.items():
        if key in sections and isinstance(value, Mapping):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    for key in out:
        _check_key(key, where)
    return out


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
    for key, values in flatten(raw, f"{file}: axes").items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{file}: axes: {key} must be a non-empty YAML list of values")
        try:
            axes[key] = [typed(key, v) for v in values]
        except ConfigError as exc:
            raise ConfigError(f"{file}: axes: {exc}") from None
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
        try:
            settings = {k: typed(k, v) for k, v in flatten(entry, f"{file}: runs[{i}]").items()}
        except ConfigError as exc:
            raise ConfigError(f"{file}: runs[{i}]: {exc}") from None
        out.append((None if name is None else _slug(name), settings))
    return out


def _base(raw: Any, file: Path) -> dict[str, Any]:
    """The base sections with values typed; their structure is checked by ``from_dict``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{file}: 'base' must hold config sections ({', '.join(_sections())})")
    out: dict[str, Any] = {}
    for section, values in raw.items():
        if section in _sections() and isinstance(values, Mapping):
            try:
                values = {k: typed(f"{section}.{k}", v) for k, v in values.items()}
            except ConfigError as exc:
                raise ConfigError(f"{file}: base: {exc}") from None
        out[section] = values
    return out


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
    raw: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in settings.items():
        set_dotted(raw, key, value)
    set_dotted(raw, "data.path", str(dataset))
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: a value has the wrong type ({exc}); fix it") from None


def load_experiment(
    path: Path, repeats: int | None = None, dataset: Path | None = None
) -> Experiment:
    """Read and fully validate an experiment file (every run's config is built once)."""
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
    for cell in cells:
        build_config(base, cell.settings, data, f"{path}: run '{cell.name}'")
    n = repeats if repeats is not None else raw.get("repeats", 1)
    if not isinstance(n, int) or n < 1:
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
    """Each cell once per seed: the cell's own seed, then seed+1, ... (``--repeats``)."""
    runs = []
    for cell in exp.cells:
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
    """The first key the experiment sets that a finished run's ``config.yaml`` disagrees with.

    Only keys the experiment names are checked: the rest may be resolved at train time.
    """
    want = _flat(json.loads(json.dumps(planned.to_dict())))
    have = _flat(stored)
    for key in keys:
        if key in want and key in have and have[key] != want[key]:
            return f"{key} is {have[key]!r} there but {want[key]!r} in the experiment"
    return None


def _is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file()


def can_resume(planned: RunConfig, run_dir: Path) -> bool:
    """An interrupted run continues from ``checkpoints/last.pt`` if it was started with
    the configuration planned now (keys left unset in the plan, resolved at train time,
    match anything); anything else is trained again."""
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        return False
    try:
        stored = from_dict(load_yaml(run_dir / "config.yaml")).to_dict()
    except TransferlabError:
        return False
    keys = [k for k, v in _flat(planned.to_dict()).items() if v is not None]
    return config_mismatch(planned, keys, stored) is None


def clear_unfinished(run_dir: Path) -> None:
    """Remove an interrupted run folder (no metrics.json) so it can be trained again."""
    if not run_dir.exists():
        return
    strangers = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES)
    if strangers:
        raise ConfigError(
            f"{run_dir} is unfinished but holds {strangers[0]}, which no run writes; "
            "move it away or use a new --out folder"
        )
    logger.warning("%s did not finish; training it again", run_dir)
    shutil.rmtree(run_dir)


@dataclass
class ExperimentResult:
    out: Path
    runs: list[PlannedRun]
    trained: list[str]
    skipped: list[str]
    leaderboard: Path | None = None
    resumed: list[str] = dataclasses.field(default_factory=list)  # also in trained


CallbackFactory = Callable[[Path], Sequence[Callback]]


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
            shutil.copyfile(made, shared)
            return shared
    return None


def _write_plan(exp: Experiment, out: Path, runs: Sequence[PlannedRun]) -> None:
    from transferlab.report.leaderboard import load_baseline

    baseline = baseline_name = None
    if exp.baseline is not None:
        baseline = f"baseline{exp.baseline.suffix.lower() or '.yaml'}"
        baseline_name = load_baseline(exp.baseline).name
        if exp.baseline.resolve() != (out / baseline).resolve():
            shutil.copyfile(exp.baseline, out / baseline)
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
                "runs": [r.name for r in runs if r.cell == c.name],
            }
            for c in exp.cells
        ],
    }
    (out / PLAN_FILE).write_text(json.dumps(plan, indent=2, default=str), encoding="utf-8")
    if exp.path.resolve() != (out / "experiment.yaml").resolve():
        shutil.copyfile(exp.path, out / "experiment.yaml")


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
    from transferlab.report.leaderboard import load_baseline

    if exp.baseline is not None:
        load_baseline(exp.baseline)
    if exp.baseline_run is not None:
        names = {c.name for c in exp.cells} | {r.name for r in plan_runs(exp)}
        if exp.baseline_run not in names:
            raise ConfigError(
                f"baseline run '{exp.baseline_run}' is not one of this experiment's runs: "
                f"{', '.join(c.name for c in exp.cells)}"
            )


def _check_finished(run: PlannedRun, run_dir: Path) -> None:
    stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    why = config_mismatch(run.config, run.keys, stored)
    if why:
        raise ConfigError(
            f"{run_dir} holds a finished run that does not match the experiment ({why}); "
            "use a new --out folder or delete that run"
        )


def _check_models(runs: Sequence[PlannedRun]) -> None:
    """Fail on an unknown model name before hours of training, not in the middle."""
    from transferlab.models.registry import resolve_preprocessing

    for name, size in dict.fromkeys((r.config.model.name, r.config.model.image_size) for r in runs):
        resolve_preprocessing(name, size)


def _finish(run_dir: Path, measure: bool) -> None:
    """Time inference and write the run's report, unless done before."""
    from transferlab.report.run_report import REPORT_HTML, write_run_report

    measured = measure and not (run_dir / "inference.json").is_file()
    if measured:
        measure_inference(run_dir)
    if measured or not (run_dir / REPORT_HTML).is_file():  # the report shows the speed too
        write_run_report(run_dir)


def run_experiment(
    exp: Experiment,
    out: Path,
    callbacks: CallbackFactory | None = None,
    measure: bool = True,
) -> ExperimentResult:
    """Train every planned run not yet finished under ``out``, then write the leaderboard."""
    from transferlab.pipeline import resume_run, train_run
    from transferlab.trackers import finish_run

    check_baseline(exp)
    runs = plan_runs(exp)
    _check_models(runs)
    out.mkdir(parents=True, exist_ok=True)
    _write_plan(exp, out, runs)
    trained: list[str] = []
    skipped: list[str] = []
    resumed: list[str] = []
    for i, run in enumerate(runs, start=1):
        run_dir = out / run.name
        if _is_finished(run_dir):
            _check_finished(run, run_dir)
            logger.info("[%d/%d] %s: finished before, skipped", i, len(runs), run.name)
            skipped.append(run.name)
        else:
            split = _shared_split(exp, out, runs)
            config = _with_feature_cache(_with_split(run.config, split), out)
            cbs = list(callbacks(run_dir)) if callbacks else []
            if can_resume(config, run_dir):
                logger.info("[%d/%d] resuming %s from its last checkpoint", i, len(runs), run.name)
                result = resume_run(run_dir, cbs)
                resumed.append(run.name)
            else:
                clear_unfinished(run_dir)
                logger.info("[%d/%d] training %s", i, len(runs), run.name)
                result = train_run(config, run_dir, cbs)
            trained.append(run.name)
            _shared_split(exp, out, runs)
            _finish(run_dir, measure)
            finish_run(cbs, result.metrics)
        _finish(run_dir, measure)
    _warn_split_drift(out, runs)
    from transferlab.report.leaderboard import write_leaderboard

    board = write_leaderboard(out)
    return ExperimentResult(out, runs, trained, skipped, board, resumed)


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
    from transferlab.report.leaderboard import write_leaderboard
    from transferlab.report.run_report import write_run_report

    if baseline_file is not None and baseline_run is not None:
        raise ConfigError("give either --baseline or --baseline-run, not both")
    if not is_experiment_dir(out):
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
