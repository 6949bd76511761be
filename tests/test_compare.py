"""Experiments: the comparison-table logic on hand-made numbers, the experiment file, and a
real two-by-two compare end to end (with re-launch)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import REPO
from trained_model import trained_run
from transferlab.cli import app
from transferlab.compare import (
    clear_unfinished,
    config_mismatch,
    load_experiment,
    plan_runs,
    run_experiment,
)
from transferlab.engine import Callback
from transferlab.errors import ConfigError
from transferlab.metrics import bootstrap_ci
from transferlab.report.comparison import (
    beats,
    bootstrap_mean_ci,
    f1_table,
    format_beaten,
    match_classes,
    mean_std,
    spread,
    wins_losses,
)
from transferlab.report.leaderboard import (
    LEADER_HEADER,
    Baseline,
    CellSummary,
    RunData,
    build_board,
    leaderboard_rows,
    load_baseline,
    per_class_rows,
    render_csv,
    render_markdown,
    summarise_cell,
    write_leaderboard,
)

PAPER = REPO / "examples" / "baselines" / "ahe-paper-resnet.yaml"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


AHE_CLASSES = sorted(p.name for p in (REPO / "examples" / "ahe-mini").iterdir() if p.is_dir())

# ---------------------------------------------------------------- table logic, by hand


def test_wins_losses_and_the_seeds_notation() -> None:
    base = {f"c{i}": 0.5 for i in range(10)}
    run = {f"c{i}": 0.6 if i < 6 else 0.4 for i in range(10)}  # beats 6, loses 4
    assert wins_losses(run, base) == (6, 4)
    assert format_beaten(6 - 4) == "+2"
    assert format_beaten(0) == "±0"
    assert format_beaten(-2) == "-2"


def test_ties_at_shown_precision_and_missing_baseline_count_neither() -> None:
    assert beats(0.9061, 0.906) is None  # both show as 0.906
    assert beats(0.9066, 0.906) is True
    assert beats(0.8, None) is None
    assert wins_losses({"a": 0.9061, "b": 0.7}, {"a": 0.906, "b": None}) == (0, 0)


def test_spread_and_mean_std() -> None:
    assert spread([0.805, 0.99, 0.9]) == pytest.approx(0.185)
    assert mean_std([0.8]) == (0.8, 0.0)
    mean, sd = mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9) and sd == pytest.approx(0.1)


def test_f1_table_bold_flags_and_baseline_row() -> None:
    classes = ["a", "b", "c"]
    rows = f1_table(
        [("x", {"a": 0.9, "b": 0.5, "c": 0.7}), ("y", {"a": 0.8, "b": 0.8, "c": 0.8})],
        classes,
        ("paper", {"a": 0.85, "b": 0.6, "c": 0.7}),
    )
    assert rows[0].is_baseline and rows[0].name == "paper"
    x, y = rows[1], rows[2]
    assert x.better == {"a": True, "b": False, "c": None}
    assert (x.wins, x.losses, x.net) == (1, 1, 0)
    assert y.better == {"a": False, "b": True, "c": True}
    assert y.net == 1
    assert x.spread == pytest.approx(0.4) and y.spread == pytest.approx(0.0)


def test_paper_class_names_match_the_data_folders() -> None:
    baseline = load_baseline(PAPER)
    matched, unused = match_classes(baseline.f1, AHE_CLASSES)
    assert unused == [] and None not in matched.values()
    assert matched["dome(inner)"] == 0.967 and matched["flying_buttress"] == 0.805
    spelled = {"Bell tower": 0.903, "dome (outer)": 0.937, "stained-glass": 0.99}
    again, _ = match_classes(spelled, AHE_CLASSES)
    assert again["bell_tower"] == 0.903 and again["dome(outer)"] == 0.937
    assert again["stained_glass"] == 0.99 and again["altar"] is None


def test_bootstrap_mean_ci_reduces_to_metrics_bootstrap() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 60)
    y_pred = np.where(rng.random(60) < 0.7, y_true, rng.integers(0, 3, 60))
    single = bootstrap_ci(y_true, y_pred, 3)
    mine = bootstrap_mean_ci(y_true, [y_pred], 3)
    assert mine["accuracy"] == single["accuracy"]
    assert mine["macro_f1"] == pytest.approx(single["macro_f1"])
    twice = bootstrap_mean_ci(y_true, [y_pred, y_pred], 3)
    assert twice["accuracy"] == pytest.approx(single["accuracy"])
    perfect = bootstrap_mean_ci(y_true, [y_true, y_pred], 3)
    low, high = perfect["accuracy"]
    assert low <= (1 + float(np.mean(y_true == y_pred))) / 2 <= high


def _cell(name: str, f1: dict[str, float], **kw: object) -> CellSummary:
    values = {
        "runs": [name],
        "model": "m",
        "strategy": "two-stage",
        "accuracy": 0.8,
        "accuracy_std": 0.0,
        "accuracy_ci": [0.7, 0.9],
        "macro_f1": float(np.mean(list(f1.values()))),
        "macro_f1_std": 0.0,
        "macro_f1_ci": [0.65, 0.85],
        "params_total": 11_200_000,
        "params_trainable": 5_130,
        "train_seconds": 95.0,
        "images_per_s": 812.4,
        "epochs": 9.0,
        "f1": f1,
        "f1_std": dict.fromkeys(f1, 0.0),
    }
    values.update(kw)
    return CellSummary(name=name, **values)  # type: ignore[arg-type]


def test_leaderboard_markdown_and_csv_from_hand_made_rows() -> None:
    classes = ["altar", "apse", "vault"]
    cells = [
        _cell("resnet18", {"altar": 0.95, "apse": 0.90, "vault": 0.90}),
        _cell("hrnet", {"altar": 0.80, "apse": 0.70, "vault": 0.925}, accuracy=0.7),
    ]
    base = Baseline("paper", {"altar": 0.906, "apse": 0.874, "vault": 0.925})
    rows = per_class_rows(cells, classes, base)
    from transferlab.report.leaderboard import Board

    board = Board("Experiment: t", cells, classes, rows, ["dataset: d"])
    md = render_markdown(board)
    assert "| baseline: paper | 0.906 | 0.874 | 0.925 | 0.902 |  | 0.051 |" in md
    # resnet18 beats altar and apse, loses vault: +1; hrnet loses two, ties vault: -2.
    assert "| resnet18 | **0.950** | **0.900** | 0.900 | 0.917 | +1 | 0.050 |" in md
    assert "| hrnet | 0.800 | 0.700 | 0.925 | 0.808 | -2 | 0.225 |" in md
    lead = md.split("## Per-class F1")[0]
    assert lead.index("| 1 | resnet18 |") < lead.index("| 2 | hrnet |")  # by macro-F1
    assert "0.700–0.900" in lead and "11.20 M / 5.1 k" in lead and "| 812 |" in lead
    csv_text = render_csv(board).splitlines()
    header = csv_text[0].split(",")
    first = dict(zip(header, csv_text[1].split(","), strict=False))
    assert first["run"] == "resnet18" and first["classes_beaten"] == "1"
    assert first["f1_altar"] == "0.95" and first["params_trainable"] == "5130"
    assert csv_text[-1].startswith(",baseline: paper,")


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.04, "<0.1 s"), (0.4, "0.4 s"), (9.5, "9.5 s"), (95.0, "95 s"), (300.0, "5.0 min")],
)
def test_train_time_under_a_second_is_not_shown_as_zero(seconds: float, shown: str) -> None:
    (row,) = leaderboard_rows([_cell("r", {"a": 0.5}, train_seconds=seconds)])
    assert row[LEADER_HEADER.index("train time")] == shown


def test_baseline_run_instead_of_a_file() -> None:
    classes = ["a", "b"]
    cells = [_cell("one", {"a": 0.5, "b": 0.5}), _cell("two", {"a": 0.6, "b": 0.4})]
    rows = per_class_rows(cells, classes, None, baseline_run="one")
    assert [r.name for r in rows] == ["baseline: one", "two"]
    assert rows[1].net == 0
    with pytest.raises(ConfigError, match="not a run here"):
        per_class_rows(cells, classes, None, baseline_run="three")


def test_a_given_baseline_replaces_the_plans_without_reading_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # The experiment's copy of its baseline is gone: --baseline-run or --baseline still work.
    out = tmp_path / "exp"
    shutil.copytree(trained_run(tmp_path_factory), out / "r1")
    plan = {"baseline": "baseline.yaml", "cells": [{"name": "r1", "runs": ["r1"]}]}
    (out / "experiment.json").write_text(json.dumps(plan), encoding="utf-8")
    write_leaderboard(out, baseline_run="r1")
    assert "| baseline: r1 |" in (out / "leaderboard.md").read_text(encoding="utf-8")
    write_leaderboard(out, baseline_file=PAPER)
    assert "| baseline: " in (out / "leaderboard.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="baseline file not found"):
        write_leaderboard(out)  # the plan's own baseline is still required when it is used


def test_summarise_cell_over_seeds() -> None:
    def run(name: str, acc: float, f1a: float, preds: list[str]) -> RunData:
        rows = [
            {"path": f"{i}.jpg", "label": t, "predicted": p}
            for i, (t, p) in enumerate(zip(["a", "a", "b", "b"], preds, strict=True))
        ]
        metrics = {
            "accuracy": acc,
            "macro_f1": acc,
            "class_names": ["a", "b"],
            "per_class": {"a": {"f1": f1a}, "b": {"f1": 0.5}},
            "training": {
                "parameters": 100,
                "train_seconds": 10.0,
                "epochs": 3,
                "phases": [{"name": "head", "trainable": "head"}],
            },
        }
        return RunData(name, metrics, {"model": {"name": "m"}}, {"images_per_s": 50.0}, rows)

    runs = [run("s0", 0.75, 0.8, ["a", "a", "b", "a"]), run("s1", 0.5, 0.6, ["a", "b", "a", "b"])]
    cell = summarise_cell("c", runs)
    assert cell.seeds == 2 and cell.accuracy == pytest.approx(0.625)
    assert cell.accuracy_std == pytest.approx(np.std([0.75, 0.5], ddof=1))
    assert cell.f1["a"] == pytest.approx(0.7)
    assert cell.accuracy_ci is not None and cell.accuracy_ci[0] <= 0.625 <= cell.accuracy_ci[1]
    assert cell.params_trainable is None  # head-only and no head size known
    assert cell.images_per_s == 50.0


def test_baseline_files(tmp_path: Path) -> None:
    long = tmp_path / "b.csv"
    long.write_text("class,f1\naltar,0.9\napse,0.8\n", encoding="utf-8")
    assert load_baseline(long).f1 == {"altar": 0.9, "apse": 0.8}
    wide = tmp_path / "w.csv"
    wide.write_text("name,altar,apse\nhrnet,0.9,0.7\n", encoding="utf-8")
    assert load_baseline(wide) == Baseline("hrnet", {"altar": 0.9, "apse": 0.7})
    flat = tmp_path / "f.yaml"
    flat.write_text("altar: 0.9\n", encoding="utf-8")
    assert load_baseline(flat).f1 == {"altar": 0.9}
    pct = tmp_path / "p.yaml"
    pct.write_text("f1: {altar: 90.6}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"0\.906, not 90\.6"):
        load_baseline(pct)
    with pytest.raises(ConfigError, match="not found"):
        load_baseline(tmp_path / "none.yaml")


# ---------------------------------------------------------------- the experiment file


def _exp(tmp_path: Path, text: str) -> Path:
    (tmp_path / "data" / "a").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "exp.yaml"
    path.write_text("dataset: data\n" + text, encoding="utf-8")
    return path


def test_grid_crossed_with_runs_and_repeats(tmp_path: Path) -> None:
    path = _exp(
        tmp_path,
        "base: {train: {epochs: 1, seed: 3}}\n"
        "axes:\n  model.name: [resnet18, resnet50]\n  train.lr: [1e-3, 3e-4]\n"
        "runs:\n  - {name: plain}\n  - {name: smooth, train: {label_smoothing: 0.2}}\n",
    )
    exp = load_experiment(path, repeats=2)
    assert exp.dataset == (tmp_path / "data").resolve()  # relative to the file
    assert len(exp.cells) == 8
    assert exp.cells[0].name == "plain-resnet18-lr0.001"
    assert exp.cells[0].settings["train.lr"] == 0.001  # YAML's "1e-3" string became a float
    runs = plan_runs(exp)
    assert len(runs) == 16
    assert [r.name for r in runs[:2]] == ["plain-resnet18-lr0.001", "plain-resnet18-lr0.001-seed4"]
    assert [r.config.train.seed for r in runs[:2]] == [3, 4]
    assert runs[-1].config.train.label_smoothing == 0.2
    assert runs[-1].config.model.name == "resnet50"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("axes: {optim.lr: [1]}\n", "'optim.lr' is not a config key"),
        ("axes: {train.lrr: [1]}\n", "unknown config key train.lrr (did you mean train.lr?)"),
        ("axes: {train.lr: 0.1}\n", "train.lr must be a non-empty YAML list"),
        ("axes: {train.lr: [fast]}\n", "train.lr: 'fast' is not a number"),
        ("base: {train: {epochs: -1}}\n", "train.epochs: -1 is out of range; it must be >= 0"),
        ("base: {optim: {lr: 1}}\n", "section 'optim'"),
        ("axis: {train.lr: [1]}\n", "unknown key 'axis'"),
        ("runs: [{name: a}, {name: a}]\n", "both be named 'a'"),
        ("repeats: 0\n", "repeats must be a whole number"),
        ("baseline: nowhere.yaml\n", "baseline 'nowhere.yaml' not found"),
    ],
)
def test_bad_experiment_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(_exp(tmp_path, text))


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "examples" / "experiments").glob("*.yaml"))
)
def test_example_experiments_are_valid(name: str) -> None:
    exp = load_experiment(REPO / "examples" / "experiments" / name)
    assert plan_runs(exp)
    if name == "ahe-backbones.yaml":
        assert len(exp.cells) == 6 and exp.baseline == PAPER.resolve()


def test_relaunch_guards(tmp_path: Path) -> None:
    exp = load_experiment(_exp(tmp_path, "axes: {train.lr: [0.01]}\n"))
    run = plan_runs(exp)[0]
    stored = run.config.to_dict()
    assert config_mismatch(run.config, run.keys, stored) is None
    stored["train"]["lr"] = 0.02
    assert "train.lr is 0.02 there but 0.01" in str(config_mismatch(run.config, run.keys, stored))
    unfinished = tmp_path / "out" / "r"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "config.yaml").write_text("x: 1\n", encoding="utf-8")
    clear_unfinished(unfinished)
    assert not unfinished.exists()
    (unfinished / "my notes").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no run writes"):
        clear_unfinished(unfinished)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_by_two_compare_and_relaunch(
    tmp_path: Path, class_folders, restore_transferlab_logging: None
) -> None:
    data = class_folders(per_class=6)
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        f"dataset: {json.dumps(str(data))}\n"
        "base:\n"
        "  data: {val_fraction: 0.34, test_fraction: 0.34}\n"
        "  model: {image_size: 64}\n"
        "  train: {head_epochs: 1, epochs: 1, batch_size: 8, device: cpu}\n"
        "axes:\n"
        "  train.lr: [1.0e-3, 3.0e-4]\n"
        "  model.drop_rate: [0.1, 0.3]\n",
        encoding="utf-8",
    )
    baseline = tmp_path / "paper.csv"
    baseline.write_text("class,f1\naltar,0.9\napse,0.5\ndome (inner),0.7\n", encoding="utf-8")
    out = tmp_path / "exp"
    result = CliRunner().invoke(
        app, ["compare", str(exp_file), "--out", str(out), "--baseline", str(baseline), "-q"]
    )
    assert result.exit_code == 0, result.output
    names = ["lr0.001-drop_rate0.1", "lr0.001-drop_rate0.3", "lr0.0003-drop_rate0.1"]
    names.append("lr0.0003-drop_rate0.3")
    shared = (out / "split.csv").read_text(encoding="utf-8")
    for name in names:
        run = out / name
        assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
        assert (run / "split.csv").read_text(encoding="utf-8") == shared  # identical split
        speed = json.loads((run / "inference.json").read_text(encoding="utf-8"))
        assert speed["images_per_s"] > 0 and speed["images"] == 6
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    for name in names:
        assert f"| {name} | tf_efficientnet_lite0 | two-stage |" in md
    assert "| baseline: paper | 0.900 | 0.500 | 0.700 |" in md
    assert (out / "leaderboard.csv").read_text(encoding="utf-8").count("\n") == 6
    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert f'<a href="{names[0]}/report.html">' in html
    # One backbone, one split: the four warm-ups shared one extraction (train + val).
    assert len(list((out / ".feature-cache").glob("*.safetensors"))) == 2

    # Re-launch: everything finished is skipped; an interrupted run is cleared and rerun.
    stamp = (out / names[0] / "metrics.json").stat().st_mtime_ns
    exp = load_experiment(exp_file)
    again = run_experiment(exp, out)
    assert again.trained == [] and again.skipped == names
    assert (out / names[0] / "metrics.json").stat().st_mtime_ns == stamp
    # names[2] died after its last checkpoint (resumed from it, history not doubled);
    # names[3] died before its first (trained again from the start).
    history = (out / names[2] / "history.csv").read_text(encoding="utf-8")
    (out / names[2] / "metrics.json").unlink()
    (out / names[2] / "report.html").unlink()
    (out / names[3] / "metrics.json").unlink()
    shutil.rmtree(out / names[3] / "checkpoints")
    third = run_experiment(exp, out)
    assert third.trained == names[2:] and third.resumed == [names[2]]
    assert (out / names[2] / "history.csv").read_text(encoding="utf-8") == history
    assert (out / names[2] / "metrics.json").is_file()
    assert (out / names[3] / "checkpoints" / "last.pt").is_file()
    assert (out / names[2] / "split.csv").read_text(encoding="utf-8") == shared
    board = build_board(out)
    assert sorted(c.name for c in board.cells) == sorted(names)

    # The report command rebuilds it all without training.
    (out / "leaderboard.md").unlink()
    rebuilt = CliRunner().invoke(app, ["report", str(out), "--no-speed", "-q"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (out / "leaderboard.md").is_file()


# ---------------------------------------------------------------- interrupted and re-launched


def _compare(exp: Path, out: str, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    """The real CLI in a fresh interpreter, run from ``cwd`` with a relative ``--out``."""
    return subprocess.Popen(
        [sys.executable, "-m", "transferlab", "compare", str(exp), "--out", out, *extra],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _history_rows(run: Path) -> list[dict[str, str]]:
    if not (run / "history.csv").is_file():
        return []
    with (run / "history.csv").open(newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


EPOCHS = 30


@pytest.mark.slow
def test_a_sigtermed_compare_resumes_its_interrupted_run(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    data = class_folders(per_class=4)
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"dataset: {json.dumps(str(data))}\n"
        "base:\n"
        "  model: {name: convnet1, weights: none, image_size: 64}\n"
        f"  train: {{strategy: full, epochs: {EPOCHS}, batch_size: 4, device: cpu}}\n"
        "axes:\n"
        "  train.lr: [1.0e-3, 3.0e-4]\n",
        encoding="utf-8",
    )
    second = tmp_path / "out" / "lr0.0003"
    first = _compare(exp, "out", tmp_path, "-q")
    deadline = time.monotonic() + 300
    while len(_history_rows(second)) < 2:
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "training too slow to reach the kill point"
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGTERM)
    _, first_err = first.communicate()
    assert first.returncode == -signal.SIGTERM, "compare finished before it could be stopped"
    assert "did not finish" not in first_err  # nothing was unfinished on a new --out
    done = _history_rows(second)
    assert 2 <= len(done) < EPOCHS and not (second / "metrics.json").exists()

    again = _compare(exp, "out", tmp_path)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming lr0.0003 from its last checkpoint" in err
    assert "1 trained (1 resumed), 1 already finished" in err
    assert "did not finish" not in err
    history = _history_rows(second)
    assert [int(r["epoch"]) for r in history] == list(range(1, EPOCHS + 1))
    assert history[: len(done)] == done  # continued, not trained again from epoch 1


# ---------------------------------------------------------------- failed runs


def _experiment(tmp_path: Path, data: Path, runs: str) -> Path:
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"dataset: {json.dumps(str(data))}\n"
        "base:\n"
        "  model: {name: convnet1, weights: none, image_size: 64}\n"
        "  train: {strategy: full, epochs: 1, batch_size: 4, device: cpu}\n"
        f"runs:\n{runs}",
        encoding="utf-8",
    )
    return exp


@pytest.mark.slow
def test_failed_runs_are_on_the_leaderboard_and_the_others_go_on(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    exp = _experiment(
        tmp_path,
        class_folders(per_class=4),
        "  - {name: good}\n"
        "  - {name: nomodel, model.name: convnet9}\n"
        "  - {name: toodeep, train.strategy: top-n, train.trainable_groups: 99}\n"
        "  - {name: badlr, train.lr: fast}\n",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(exp), "--out", str(out)])
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 of 4 runs failed (nomodel, badlr, toodeep); nomodel: ")
    assert "unknown model 'convnet9'" in last
    assert "Traceback" not in result.stderr
    assert result.stderr.count(f"report written to {out / 'good' / 'report.html'}") == 1
    assert (out / "good" / "metrics.json").is_file()
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| 1 | good | convnet1 | full |" in md
    assert "| – | toodeep | convnet1 | top-n | FAILED | – | FAILED |" in md
    assert "| – | nomodel | convnet9 | full | FAILED |" in md
    assert "- **badlr**: " in md and "train.lr: 'fast' is not a number" in md
    assert "--trainable-groups 99 is out of range" in md
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO(read(out / "leaderboard.csv")))}
    assert rows["good"]["status"] == "finished" and rows["nomodel"]["status"] == "failed"
    assert "unknown model 'convnet9'" in rows["nomodel"]["error"]
    html = read(out / "leaderboard.html")
    assert html.count("FAILED") == 6 and "is out of range" in html

    # The report command rebuilds it, saying so once per file.
    rebuilt = CliRunner().invoke(app, ["report", str(out), "--no-speed"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.stderr.count("report written to") == 1
    assert rebuilt.stderr.count("leaderboard written to") == 1
    assert "FAILED" in read(out / "leaderboard.md")

    # Again, stopping at the first failure: nothing else is trained.
    fast = tmp_path / "fast"
    stopped = CliRunner().invoke(app, ["compare", str(exp), "--out", str(fast), "--fail-fast"])
    assert stopped.exit_code == 2
    assert stopped.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "unknown model 'convnet9'" in stopped.stderr
    assert not (fast / "good").exists()


class Crash(Callback):
    def on_fit_start(self, phases: object) -> None:
        raise RuntimeError("out of memory, say")


@pytest.mark.slow
def test_a_crashed_run_is_recorded_and_fail_fast_raises_it(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    exp = load_experiment(
        _experiment(tmp_path, class_folders(per_class=4), "  - {name: a}\n  - {name: b}\n")
    )

    def callbacks(run_dir: Path) -> list[Callback]:
        return [Crash()] if run_dir.name == "a" else []

    result = run_experiment(exp, tmp_path / "out", callbacks, measure=False)
    assert result.trained == ["b"]
    assert [(f.run, f.exit_code) for f in result.failed] == [("a", 1)]
    assert result.failed[0].error == "unexpected RuntimeError: out of memory, say"
    assert "| – | a | convnet1 | full | FAILED |" in read(tmp_path / "out" / "leaderboard.md")
    with pytest.raises(RuntimeError, match="out of memory"):
        run_experiment(exp, tmp_path / "out", callbacks, measure=False, fail_fast=True)
    again = run_experiment(exp, tmp_path / "out", measure=False)  # fixed: a trains, b is kept
    assert (again.trained, again.skipped, again.failed) == (["a"], ["b"], [])
    assert "FAILED" not in read(tmp_path / "out" / "leaderboard.md")


# ---------------------------------------------------------------- options out of range


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "{exp}", "--out", "{tmp}/o", "--repeats", "0"], "repeats must be a whole"),
        (["compare", "{exp}", "--out", "{tmp}/o", "--repeats", "-2"], "repeats must be a whole"),
        (["compare", "{exp}", "--out", "{tmp}/o", "--baseline", "{tmp}/no.yaml"], "not found"),
        (["compare", "{exp}", "--out", "{tmp}/o", "--baseline-run", "x"], "baseline run 'x'"),
        (["compare", "{exp}", "--out", "{tmp}/o", "--data", "{tmp}/nowhere"], "not found"),
        (["compare", "{exp}", "--out", "{tmp}/o", "--logger", "nope"], "--logger 'nope'"),
        (["compare", "{tmp}/none.yaml", "--out", "{tmp}/o"], "experiment file not found"),
        (["compare", "{exp}", "--out", "{exp}"], "is a file; choose a folder"),
        (["report", "{tmp}", "--window", "0"], "--window 0 is out of range"),
        (["report", "{tmp}", "--window", "-5"], "--window -5 is out of range"),
        (["report", "{tmp}", "--top-k", "-1"], "--top-k -1 is out of range"),
        (["report", "{tmp}", "--bins", "0"], "--bins 0 is out of range"),
        (["report", "{tmp}/nowhere"], "neither a run folder"),
        (["report", "{exp}"], "neither a run folder"),
    ],
)
def test_bad_options_of_compare_and_report_are_one_line(
    tmp_path: Path, args: list[str], message: str, restore_transferlab_logging: None
) -> None:
    exp = _exp(tmp_path, "axes: {train.lr: [0.01]}\n")
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path, exp=exp) for a in args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
