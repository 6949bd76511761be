"""compare --parallel N (real worker processes) and compare --time-budget (one budget
shared by the runs), on tiny experiments of real photos and tiny real models."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from helpers import invoke
from transferlab.compare import (
    BudgetSplit,
    load_experiment,
    plan_runs,
    run_experiment,
    why_not_resume,
)
from transferlab.engine import Callback
from transferlab.errors import ConfigError, RunsFailed
from transferlab.parallel import cpu_count
from transferlab.setup import resolve_config

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


def _history(run_dir: Path) -> list[float]:
    with (run_dir / "history.csv").open(newline="", encoding="utf-8") as fh:
        return [float(r[k]) for r in csv.DictReader(fh) for k in ("train_loss", "val_loss")]


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
    plain = load_experiment(_experiment(tmp_path, tmp_path / "data", "  - {name: a}\n"))
    with pytest.raises(ConfigError, match="need callbacks that pickle"):
        run_experiment(plain, tmp_path / "out", lambda run_dir: [], parallel=2)
    assert not (tmp_path / "out").exists()


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


def test_a_run_started_before_the_shared_split_resumes_on_it(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    # The first run of a parallel compare starts with no data.split_file and makes the
    # shared split: re-launched, it is planned with that split and must still resume.
    exp = load_experiment(_experiment(tmp_path, class_folders(per_class=2), "  - {name: a}\n"))
    (run,) = plan_runs(exp)
    run_dir = tmp_path / "out" / "a"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    resolve_config(run.config).to_yaml(run_dir / "config.yaml")  # as a run saves it
    (run_dir / "split.csv").write_text("path,label,split\nx.jpg,a,train\n", encoding="utf-8")
    shared = tmp_path / "out" / "split.csv"
    shutil.copyfile(run_dir / "split.csv", shared)
    data = dataclasses.replace(run.config.data, split_file=str(shared))
    planned = dataclasses.replace(run.config, data=data)
    assert why_not_resume(planned, run_dir) is None
    shared.write_text("path,label,split\ny.jpg,a,train\n", encoding="utf-8")  # another split
    assert "data.split_file is None there" in str(why_not_resume(planned, run_dir))


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
    # Two seeds: in a serial compare the first run's split is every run's (the seeds
    # differ), so the parallel one starts the second run once that split is written.
    exp = _experiment(tmp_path, class_folders(per_class=4), "  - {name: a}\nrepeats: 2\n")
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    code, _, err = invoke("compare", exp, "--out", serial, "-q")
    assert code == 0, err
    code, _, err = invoke("compare", exp, "--out", parallel, "--parallel", "2", "-q")
    assert code == 0, err
    assert "2 trained (0 resumed), 0 already finished, 0 failed" in err
    split = (serial / "split.csv").read_bytes()
    for name in ("a", "a-seed1"):
        assert (parallel / name / "split.csv").read_bytes() == split
        assert (parallel / name / "report.html").is_file()
        assert (parallel / name / "inference.json").is_file()
        want, got = (
            json.loads((d / name / "metrics.json").read_text()) for d in (serial, parallel)
        )
        # A worker trains with cores // 2 threads, the serial compare with all cores: the
        # same numbers up to float summation order, far inside 1e-6 on these scores.
        for key in ("accuracy", "macro_f1", "weighted_f1"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), (name, key)
        want_h, got_h = (_history(d / name) for d in (serial, parallel))
        assert got_h == pytest.approx(want_h, abs=1e-5)  # losses, epoch by epoch
    want_row, got_row = _rows(serial)["a"], _rows(parallel)["a"]
    assert got_row["seeds"] == "2"
    for key in SCORES:
        assert float(got_row[key]) == pytest.approx(float(want_row[key]), abs=1e-6)


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
    # Decoding in a process pool of its own: a worker may start processes (not a daemon).
    base = BASE + "  data: {num_workers: 1}\n"
    exp = load_experiment(_experiment(tmp_path, data, runs, base))
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


# ---------------------------------------------------------------- stopped from outside

EPOCHS = 40


def _history_rows(run: Path) -> list[dict[str, str]]:
    if not (run / "history.csv").is_file():
        return []
    with (run / "history.csv").open(newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def _group_alive(pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name, fields = text[text.index("(") : text.rindex(")") + 1], text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(name)
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_sigtermed_parallel_compare_stops_its_workers_and_resumes(
    tmp_path: Path, class_folders: Callable[..., Path]
) -> None:
    base = BASE.replace("epochs: 1,", f"epochs: {EPOCHS},")
    exp = _experiment(tmp_path, class_folders(per_class=4), "  - {name: a}\n  - {name: b}\n", base)
    command = [sys.executable, "-m", "transferlab", "compare", str(exp), "--out", "out"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(
        [*command, "--parallel", "2", "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the workers are in it too
    )
    runs = [tmp_path / "out" / name for name in ("a", "b")]
    deadline = time.monotonic() + 300
    while len(_history_rows(runs[1])) < 2:  # b starts once a has written the split
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "training too slow to reach the kill point"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGTERM)  # the parent alone, not its workers
    _, first_err = first.communicate(timeout=60)
    assert first.returncode == -signal.SIGTERM, first_err
    deadline = time.monotonic() + 15  # multiprocessing's helper ends when its pipe closes
    while _group_alive(first.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(first.pid), "a worker outlived its compare"
    done = {run.name: _history_rows(run) for run in runs}
    assert 2 <= len(done["b"]) < EPOCHS and not (runs[1] / "metrics.json").exists()
    a_finished = (runs[0] / "metrics.json").exists()  # a may have finished before b got far

    again = subprocess.run(
        [*command, "--parallel", "2"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    resumed = "1 trained (1 resumed), 1" if a_finished else "2 trained (2 resumed), 0"
    assert f"{resumed} already finished" in again.stderr
    assert "resuming b from its last checkpoint" in again.stderr
    for run in runs:
        history = _history_rows(run)
        assert [int(r["epoch"]) for r in history] == list(range(1, EPOCHS + 1))
        assert history[: len(done[run.name])] == done[run.name]  # continued, not redone
