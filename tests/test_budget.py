"""The time budget (issue 12): durations, the probe and plan, stopping in time."""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from pathlib import Path

import pytest
import torch

import transferlab as tl
from helpers import invoke
from transferlab import budget_plan
from transferlab.budget import parse_duration
from transferlab.budget_plan import (
    EPOCHS_CAP,
    FILL,
    Budget,
    BudgetStop,
    Counts,
    _Planner,
    choose_plan,
    planned_sizes,
    resumed_budget,
)
from transferlab.config import from_dict
from transferlab.data.augment import resolve_augment
from transferlab.engine import Callback, EpochRecord, steps_in
from transferlab.errors import ConfigError
from transferlab.finetune import Phase
from transferlab.progress import RunClock
from transferlab.setup import resolve_config, setup_run
from transferlab.speed_probe import Speeds, probe_speeds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2h", 7200), ("45", 45), ("2m30s", 150)],
)
def test_parse_duration_accepts_the_documented_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "0", "-5", "1x", "1m1h", "h", "nan"])
def test_parse_duration_refuses_anything_else_naming_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--time-budget .*use seconds \(45, 90s\)") as err:
        parse_duration(text)
    assert "\n" not in str(err.value) and "1h30m" in str(err.value)


# ---------------------------------------------------------------- the plan (no training)

N = Counts(train=2000, val=400, test=400, batch_size=32)
# Seconds per image as a 2-core CPU measures them for tf_efficientnet_lite0 at 128/64 px.
SPEEDS = Speeds(
    train=((128, 0.02), (64, 0.006)), forward=0.006, head=3e-4, save=0.1, figure=0.2, probe_s=6
)


def _planner(strategy: str = "two-stage", epochs: int = 4) -> _Planner:
    overrides = {"data.path": "photos", "train.strategy": strategy, "train.epochs": epochs}
    return _Planner(from_dict({}, overrides), True, 128, N, SPEEDS, spent=10.0)


@pytest.mark.parametrize("budget", [90, 150, 300, 600, 900, 1800, 3600])
def test_the_plan_never_predicts_more_than_the_budget_and_fills_it(budget: float) -> None:
    planner = _planner()
    plan = planner.choose(budget * FILL)
    assert plan is not None
    assert plan.predicted_s <= budget
    capped = plan.epochs == EPOCHS_CAP * 4 and plan.resize_from is None
    if plan.epochs >= 2 and not capped:  # within 10% of the budget: resizing fills it
        assert plan.predicted_s >= 0.9 * budget, plan.table(budget)


def test_a_larger_backbone_s_plan_fills_its_budget_with_a_finer_resize_step() -> None:
    """tf_efficientnet_lite2 on all of AHE-64 in 10 minutes, with what its probe measured
    (benchmarks/README.md, "The backbone inside a budget"): 9 epochs at 80 px fit only
    resized, and resizing from 64 px (the 8-px step below 72, which does not fit) left 10%
    of the budget unused; 68 px fills it closer."""
    speeds = Speeds(
        train=((64, 0.005996), (128, 0.01736), (260, 0.095292)),
        forward=0.023267,
        head=0.000526,
        save=0.0298,
        figure=0.066,
        probe_s=20.91,
        new_size=0.067,
        forward_sizes=((64, 0.001129),),
    )
    cfg = from_dict({}, {"data.path": "photos", "model.name": "tf_efficientnet_lite2"})
    n = Counts(train=7090, val=1520, test=1520, batch_size=32)
    plan, _ = choose_plan(cfg, True, planned_sizes(260, True), n, speeds, 33.4, 600 * FILL)
    assert plan is not None and (plan.image_size, plan.epochs) == (80, 9)
    assert plan.resize_from == 68 and 0.92 * 600 <= plan.predicted_s <= 600 * FILL


def test_a_plan_trains_at_the_model_size_last_and_resizes_only_early_epochs() -> None:
    plan = _planner().choose(300 * FILL)
    assert plan is not None and plan.image_size == 128
    assert plan.resize_from is None or 32 <= plan.resize_from < 128


def test_when_no_fine_tuning_epoch_fits_the_head_epochs_alone_are_planned() -> None:
    planner = _planner()
    head_only = planner.plan(0)
    plan = planner.choose(head_only.predicted_s + 1)
    assert plan is not None and plan.epochs == 0 and plan.head_epochs == 5
    assert planner.choose(head_only.predicted_s - 1) is None
    assert planner.smallest() == head_only


def test_planned_sizes_are_the_model_s_and_multiples_of_16_down_to_64_unless_set() -> None:
    assert planned_sizes(224, free=True) == [224, *range(208, 63, -16)]
    assert planned_sizes(100, free=True) == [100, 96, 80, 64]
    assert planned_sizes(224, free=False) == [224]
    assert planned_sizes(48, free=True) == [48]


def test_train_image_goes_through_the_two_nearest_timed_sizes() -> None:
    speeds = Speeds(train=((224, 0.04), (112, 0.012), (64, 0.0045)), forward=0.01, head=0,
                    save=0, figure=0, probe_s=0)  # fmt: skip
    for size, t in ((224, 0.04), (112, 0.012), (64, 0.0045)):
        assert speeds.train_image(size) == pytest.approx(t)
    assert 0.0045 < speeds.train_image(96) < 0.012 and 0.012 < speeds.train_image(160) < 0.04
    assert speeds.forward_at(224) == pytest.approx(0.01)
    assert speeds.forward_at(112) == pytest.approx(0.01 * 0.012 / 0.04)
    timed = Speeds(train=speeds.train, forward=0.01, head=0, save=0, figure=0, probe_s=0,
                   forward_sizes=((64, 0.001),))  # fmt: skip
    assert timed.forward_at(64) == pytest.approx(0.001)  # its own timing, not scaled
    assert 0.001 < timed.forward_at(112) < 0.01


@pytest.mark.parametrize("budget", [120, 300, 600, 900, 3600])
def test_a_free_size_is_the_largest_fitting_twice_the_recipe_s_epochs(budget: float) -> None:
    """Smaller sizes only when the model's does not fit 2x the recipe's 4 epochs; the
    chosen size trains them at least, or is the lowest size."""
    cfg = from_dict({}, {"data.path": "photos", "train.epochs": 4})
    sizes = planned_sizes(224, free=True)
    speeds = Speeds(train=((224, 0.04), (112, 0.012), (64, 0.0045)), forward=0.01, head=3e-4,
                    save=0.1, figure=0.2, probe_s=6)  # fmt: skip
    plan, planner = choose_plan(cfg, True, sizes, N, speeds, 10.0, budget * FILL)
    assert plan is not None and plan.predicted_s <= budget * FILL
    assert planner.size == plan.image_size
    larger = [s for s in sizes if s > plan.image_size]
    for s in larger:  # every larger size fits fewer than 8 epochs
        assert _Planner(cfg, True, s, N, speeds, 10.0).plan(8).predicted_s > budget * FILL
    assert plan.epochs >= 8 or plan.image_size == 64
    if budget == 3600:
        assert plan.image_size == 224  # an hour: the model's own size
    fixed, _ = choose_plan(cfg, True, [224], N, speeds, 10.0, budget * FILL)
    assert fixed is None or fixed.image_size == 224


# ---------------------------------------------------------------- real runs

TINY = {"model.name": "convnet1", "model.weights": "none", "model.image_size": 64}


def test_cli_refuses_an_unparsable_duration_in_one_line(
    class_folders, tmp_path: Path, restore_transferlab_logging: None
) -> None:
    data = class_folders(per_class=2)
    code, _, err = invoke("train", data, "--out", tmp_path / "run", "--time-budget", "soon")
    assert code == 2
    assert err.strip().count("\n") == 0 and "'soon' is not a duration" in err
    assert "90s" in err and "15m" in err and "1h30m" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_budget_too_small_naming_the_smallest_that_works(
    class_folders, tmp_path: Path, restore_transferlab_logging: None
) -> None:
    data = class_folders(per_class=3)
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    code, _, err = invoke("train", data, "--out", tmp_path / "run", "--time-budget", "1s", *sets)
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert re.search(r"--time-budget 1s is too small .* give at least --time-budget \d+s", line)
    assert "Traceback" not in err and "unexpected" not in err
    assert not (tmp_path / "run").exists()


def test_the_probe_leaves_the_model_and_the_rng_streams_as_they_were(class_folders) -> None:
    data = class_folders(per_class=4)
    cfg = resolve_config(from_dict({}, {"data.path": str(data), **TINY}))
    setup = setup_run(cfg)
    model = setup.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    augment = resolve_augment(cfg.augment, "light")
    speeds = probe_speeds(
        model, setup.sets["train"], setup.sets["val"], setup.prep, cfg, augment, torch.device("cpu")
    )
    assert speeds.forward > 0 and speeds.head > 0 and speeds.save > 0 and speeds.figure > 0
    assert [s for s, _ in speeds.train] == [64, 32] and all(t > 0 for _, t in speeds.train)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


class _SlowerMachine(Callback):
    """Every step 2.5 s slower than the probe saw: the plan runs late (by more than the
    whole budget), so only BudgetStop can keep the run inside its budget."""

    def on_batch_end(self, loss: float) -> None:
        time.sleep(2.5)


def test_a_tiny_budget_stops_in_time_with_a_complete_run_folder(
    class_folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image size is left to the plan. convnet1 on 12 photos fits any number of epochs
    at its own 128 px, so the epochs a size must fit are raised past what fits in 40 s:
    the plan then takes the lowest size, 64 px, and the run must train at it."""
    monkeypatch.setattr(budget_plan, "SIZE_EPOCHS", 100_000)
    data = class_folders(per_class=6)
    out = tmp_path / "run"
    started = time.monotonic()
    run = tl.train(
        data,
        out,
        strategy="full",
        time_budget="40s",
        progress=False,
        callbacks=[_SlowerMachine()],
        batch_size=4,
        **{k: v for k, v in TINY.items() if k != "model.image_size"},
    )
    wall = time.monotonic() - started
    tb = run.metrics["time_budget"]
    assert tb["budget_s"] == 40 and tb["predicted_s"] <= 40
    assert tb["ended_by_budget"] is True
    # in time: the budget plus 10% and a few seconds of slack for a busy 2-core machine
    assert tb["actual_s"] <= 40 * 1.1 + 5 and wall <= 40 * 1.1 + 8
    for name in ("metrics.json", "history.csv", "report.html", "budget.json", "split.csv"):
        assert (out / name).is_file(), name
    assert (out / "model").is_dir() and (out / "checkpoints" / "best.pt").is_file()
    epochs_run = run.metrics["training"]["epochs"]
    assert len(run.history) == epochs_run and epochs_run <= tb["plan"]["epochs"]
    # stopped before the plan's end: fewer steps in batches.csv than the plan's
    with (out / "batches.csv").open(newline="") as fh:
        steps_run = sum(1 for _ in csv.DictReader(fh))
    per_epoch = steps_in(run.metrics["training"]["images"]["train"], 4)
    assert steps_run < tb["plan"]["epochs"] * per_epoch
    on_disk = json.loads((out / "metrics.json").read_text())["time_budget"]
    assert on_disk == tb  # rewritten once the report was written, with its time in it
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Time budget" in report and "The budget ended training in epoch" in report
    # trained, bundled and scored at the planned size; config.yaml keeps the size as asked
    assert tb["plan"]["image_size"] == 64
    bundle = json.loads((out / "model" / "config.json").read_text())
    assert bundle["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert "image_size: 128" in (out / "config.yaml").read_text()


# ---------------------------------------------------------------- without a budget


def test_train_prints_its_estimated_duration_and_the_bar_the_run_s_time_left(
    class_folders, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    data = class_folders(per_class=4)
    with caplog.at_level(logging.INFO, logger="transferlab"):
        tl.train(
            data,
            tmp_path / "run",
            strategy="two-stage",
            head_epochs=1,
            epochs=2,
            batch_size=4,
            **TINY,
        )
    lines = [r.getMessage() for r in caplog.records if "for the whole run" in r.getMessage()]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"about \d+ (s|min) for the whole run \(from its first \d+ \w+\)", lines[0])
    bars = capsys.readouterr().err
    assert re.search(r"run_left=(\d+s|\d+m\d\ds)", bars), bars[-500:]


def test_the_run_clock_knows_the_time_left_once_each_kind_of_step_is_timed() -> None:
    head = Phase("head", 2, "head", 1e-3, 0.0, False, "frozen")
    full = Phase("finetune", 3, "all", 1e-3, 1e-4, True, image_sizes=(32, 48, 64))
    clock = RunClock(log_estimate=False)
    clock.on_fit_start([head, full])
    clock.on_epoch_start(head, 1, 4)
    for _ in range(4):
        clock.on_batch_end(1.0)
    assert clock.remaining() is None  # no full step timed yet: unknown, not a guess
    clock.on_epoch_end(EpochRecord(1, "head", 1.0, 1.0, 0.5, 0.5, 1e-3, 0.01))
    clock.on_epoch_start(head, 2, 4)
    clock.on_epoch_end(EpochRecord(2, "head", 1.0, 1.0, 0.5, 0.5, 1e-3, 0.01))
    clock.on_epoch_start(full, 3, 4)
    for _ in range(3):
        time.sleep(0.01)
        clock.on_batch_end(1.0)
    left = clock.remaining()
    assert left is not None and left > 0
    # the 48 and 64 px epochs to come cost (48/32)^2 + (64/32)^2 = 6.25 times the 32 px one
    per_step = clock.step_s[True] * (32 / 64) ** 2
    assert left == pytest.approx(per_step * (1 + 4 * 6.25), rel=1e-6)


def test_a_resumed_budgeted_run_keeps_its_plan_and_gets_the_rest_of_its_budget(
    tmp_path: Path,
) -> None:
    """budget.json (written when the run started) holds the plan and the time spent before
    training; history.csv the epochs' seconds: the resumed run ends by the same deadline."""
    cfg = from_dict({}, {"data.path": "photos", "train.time_budget": 600})
    plan = _planner().plan(7, 64)
    stop = BudgetStop(time.monotonic() + 600, reserve_s=12.0)
    Budget(600, time.monotonic() - 30, plan, stop, SPEEDS.to_dict()).write(tmp_path)
    rows = ["epoch,phase,seconds", "1,head,10.0", "2,finetune,100.0"]
    (tmp_path / "history.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    resumed, budget = resumed_budget(cfg, tmp_path)
    assert budget is not None
    assert (resumed.train.epochs, resumed.train.resize_from) == (7, 64)
    assert resumed.model.image_size == plan.image_size == 128  # the size the plan chose
    assert resumed.train.head_epochs == plan.head_epochs
    left = budget.stop.deadline - time.monotonic()
    assert 600 - 30 - 110 - 5 < left <= 600 - 30 - 110 + 0.5  # 30 s set-up, 110 s epochs
    assert budget.stop.reserve_s == 12.0 and budget.plan.to_dict() == plan.to_dict()
    (tmp_path / "budget.json").unlink()
    assert resumed_budget(cfg, tmp_path) == (cfg, None)  # a run without a budget


def test_a_linear_probe_is_planned_by_its_epochs_alone() -> None:
    planner = _planner("linear-probe", epochs=10)
    one = planner.plan(1).predicted_s
    plan = planner.choose(one + 5 * (planner.plan(2).predicted_s - one))
    assert plan is not None and plan.resize_from is None and 5 <= plan.epochs <= 10
