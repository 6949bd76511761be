"""compare --parallel N (real worker processes) and compare --time-budget (one budget
shared by the runs), on tiny experiments of real photos and tiny real models."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from helpers import invoke
from transferlab.compare import BudgetSplit, load_experiment, run_experiment
from transferlab.engine import Callback
from transferlab.errors import ConfigError, RunsFailed
from transferlab.parallel import cpu_count

BASE = (
    "base:\n"
    "  model: {name: convnet1, weights: none, image_size: 64}\n"
    "  train: {strategy: full, epochs: 1, batch_size: 4, device: cpu}\n"
)


def _experiment(tmp_path: Path, data: Path, runs: str, base: str = BASE) -> Path:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"dataset: {json.dumps(str(data))}\n{base}runs:\n{runs}", encoding="utf-8")
    return exp


def _rows(out: Path) -> dict[str, dict[str, str]]:
    text = (out / "leaderboard.csv").read_text(encoding="utf-8")
    return {r["run"]: r for r in csv.DictReader(io.StringIO(text)) if r["run"]}


def _config(run_dir: Path) -> dict[str, object]:
    return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]


# ---------------------------------------------------------------- the budget split, by hand


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_at_a_time_the_runs_still_to_do_share_what_is_left() -> None:
    clock = Clock()
    split = BudgetSplit(600, slots=1, clock=clock)
    assert split.share("a", waiting=3) == 200.0
    clock.now = 50.0  # a used 50 s of its 200: the other two share the 550 left
    split.finished("a")
    assert split.share("b", waiting=2) == 275.0
    clock.now = 325.0
    split.finished("b")
    assert split.share("c", waiting=1) == 275.0  # 325 + 275 = the 600 s budget
    clock.now = 600.0
    split.finished("c")
    assert split.share("d", waiting=1) == 0.0  # spent


def test_with_two_slots_two_runs_share_the_wall_clock() -> None:
    clock = Clock()
    split = BudgetSplit(600, slots=2, clock=clock)
    # Four runs on two slots: two after one another on each, 300 s each.
    assert split.share("a", waiting=4) == 300.0
    assert split.share("b", waiting=3) == 300.0
    clock.now = 100.0  # a ended early: c and d share the slot time b does not hold
    split.finished("a")
    assert split.share("c", waiting=2) == 400.0  # (2 x 500 left - 200 held by b) / 2
    clock.now = 300.0
    split.finished("b")
    assert split.share("d", waiting=1) == 300.0  # never past the end of the budget
    for run, start, share in [("a", 0, 300), ("b", 0, 300), ("c", 100, 400), ("d", 300, 300)]:
        assert start + share <= 600, run


def test_a_share_is_rounded_down() -> None:
    assert BudgetSplit(100, slots=1, clock=Clock()).share("a", waiting=3) == 33.3


# ---------------------------------------------------------------- bad requests, one line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--parallel", "0"], "--parallel 0 is out of range; it must be >= 1"),
        (["--parallel", "-2"], "--parallel -2 is out of range"),
        (["--parallel", str(cpu_count() + 1)], f"than the {cpu_count()} CPU core(s) here"),
        (["--time-budget", "soon"], "--time-budget 'soon' is not a duration; use seconds"),
        (["--time-budget", "0"], "--time-budget 0 is not a duration above 0"),
    ],
)
def test_bad_parallel_and_budget_requests_are_one_line(
    tmp_path: Path,
    class_folders: Callable[..., Path],
    extra: list[str],
    message: str,
    restore_transferlab_logging: None,
) -> None:
    exp = _experiment(tmp_path, class_folders(per_class=2), "  - {name: a}\n")
    code, _, err = invoke("compare", exp, "--out", tmp_path / "out", *extra)
    assert code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_one_budget_at_a_time(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    exp = _experiment(
        tmp_path, class_folders(per_class=2), "  - {name: a, train.time_budget: 60}\n"
    )
    code, _, err = invoke("compare", exp, "--out", tmp_path / "out", "--time-budget", "5m")
    assert code == 2 and "run 'a' sets train.time_budget itself" in err
    assert len(err.strip().splitlines()) == 1


def test_parallel_runs_are_one_process_each(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    exp = load_experiment(
        _experiment(tmp_path, class_folders(per_class=2), "  - {name: a, train.devices: '2'}\n")
    )
    with pytest.raises(ConfigError, match=r"train\.devices 2; use one of the two"):
        run_experiment(exp, tmp_path / "out", parallel=2)


def test_a_spent_budget_fails_the_runs_it_cannot_start(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    exp = _experiment(tmp_path, class_folders(per_class=2), "  - {name: a}\n  - {name: b}\n")
    out = tmp_path / "out"
    code, _, err = invoke("compare", exp, "--out", out, "--time-budget", "1s")
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 runs failed (a, b); a: --time-budget 1s was spent")
    assert not (out / "a" / "config.yaml").exists()  # nothing trained
    assert _rows(out)["b"]["status"] == "failed"


# ---------------------------------------------------------------- real runs in parallel


class Die(Callback):
    """The worker process is killed from outside, as the out-of-memory killer would."""

    def on_fit_start(self, phases: Sequence[object]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Crash(Callback):
    def on_fit_start(self, phases: Sequence[object]) -> None:
        raise RuntimeError("out of memory, say")


class Only:
    """Picklable callbacks: ``callback`` for the run folder named ``name``."""

    def __init__(self, name: str, callback: type[Callback]) -> None:
        self.name, self.callback = name, callback

    def __call__(self, run_dir: Path) -> list[Callback]:
        return [self.callback()] if run_dir.name == self.name else []


SCORES = ("accuracy", "macro_f1", "f1_altar", "f1_apse", "f1_dome(inner)")


@pytest.mark.slow
def test_parallel_compare_matches_a_serial_one(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    # Two seeds of two cells: in a serial compare the first run's split is every run's
    # (the seeds differ), so the parallel one starts the others once that split exists.
    data = class_folders(per_class=4)
    runs = "  - {name: a}\n  - {name: b, train.lr: 3.0e-4}\nrepeats: 2\n"
    exp = _experiment(tmp_path, data, runs)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    code, _, err = invoke("compare", exp, "--out", serial, "-q")
    assert code == 0, err
    code, _, err = invoke("compare", exp, "--out", parallel, "--parallel", "2", "-q")
    assert code == 0, err
    assert "4 trained (0 resumed), 0 already finished, 0 failed" in err
    names = ["a", "a-seed1", "b", "b-seed1"]
    assert (parallel / "split.csv").read_bytes() == (serial / "split.csv").read_bytes()
    want, got = _rows(serial), _rows(parallel)
    assert sorted(got) == sorted(want) == sorted(names)
    for name in names:
        # A worker trains with cores // 2 threads, the serial compare with all cores: the
        # same numbers up to float summation order, far inside 1e-6 on these scores.
        for key in SCORES:
            assert float(got[name][key]) == pytest.approx(float(want[name][key]), abs=1e-6)
        assert (parallel / name / "split.csv").read_bytes() == (serial / "split.csv").read_bytes()
        assert (parallel / name / "report.html").is_file()
        assert (parallel / name / "inference.json").is_file()


@pytest.mark.slow
def test_a_budget_is_shared_by_the_runs_still_to_do(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    exp = _experiment(tmp_path, class_folders(per_class=4), "  - {name: a}\n  - {name: b}\n")
    out = tmp_path / "out"
    code, _, err = invoke("compare", exp, "--out", out, "--time-budget", "2m", "-q")
    assert code == 0, err
    share = {name: _config(out / name)["time_budget"] for name in ("a", "b")}
    assert isinstance(share["a"], float) and isinstance(share["b"], float)
    assert 55 <= share["a"] <= 60  # half of the two minutes (less the set-up before it)
    metrics = json.loads((out / "a" / "metrics.json").read_text(encoding="utf-8"))
    used = metrics["time_budget"]["actual_s"]
    assert used <= share["a"]
    # b had what a left: the two minutes less the time a took, never more.
    assert share["b"] > share["a"] and used + share["b"] <= 120
    rows = _rows(out)
    assert float(rows["a"]["time_budget"]) == share["a"]
    assert float(rows["a"]["run_seconds"]) == pytest.approx(used, abs=0.01)
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert f"budget {share['a']:.0f} s)" in md


@pytest.mark.slow
def test_a_killed_worker_is_a_failed_row_and_the_others_go_on(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    data = class_folders(per_class=4)
    runs = "  - {name: a}\n  - {name: b}\n  - {name: c}\n"
    exp = load_experiment(_experiment(tmp_path, data, runs))
    out = tmp_path / "out"
    result = run_experiment(exp, out, Only("b", Die), measure=False, parallel=2)
    assert result.trained == ["a", "c"]
    assert [(f.run, f.exit_code) for f in result.failed] == [("b", 1)]
    assert result.failed[0].error.startswith("its worker process was killed by signal 9")
    assert _rows(out)["b"]["status"] == "failed" and _rows(out)["c"]["status"] == "finished"
    assert "| – | b | convnet1 | full | FAILED |" in (out / "leaderboard.md").read_text(
        encoding="utf-8"
    )

    # --fail-fast: the first failure stops the experiment; nothing after it starts.
    fast = tmp_path / "fast"
    with pytest.raises(RunsFailed, match="a: unexpected RuntimeError: out of memory, say"):
        run_experiment(exp, fast, Only("a", Crash), measure=False, fail_fast=True, parallel=2)
    assert not (fast / "b").exists() and not (fast / "c").exists()
    assert (fast / "a" / "failed.json").is_file()
