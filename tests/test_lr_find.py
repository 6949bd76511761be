"""The LR range test: a suggestion that never sits at divergence, state restored, the command."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from typer.testing import CliRunner

import transferlab.models  # noqa: F401  (registers the custom nets)
from transferlab.cli import app
from transferlab.errors import ConfigError
from transferlab.lr_find import lr_range_test, lr_schedule, smooth_losses, suggest_lr

LRS = lr_schedule(1e-7, 10.0, 100)


def curve(lrs: list[float], noise: float = 0.0, seed: int = 0) -> list[float]:
    """Flat, falls from 2.3 to 0.5 around lr 1e-3, blows up past lr 0.1."""
    x = np.log10(lrs)
    fall = 0.5 + 1.8 / (1 + np.exp(3 * (x + 3)))
    blow = np.where(x > -1, np.exp(4 * (x + 1)) - 1, 0.0)
    rng = np.random.default_rng(seed)
    return list(fall + blow + noise * rng.standard_normal(len(lrs)))


def diverges_at(lrs: list[float], raw: list[float]) -> float:
    """The first LR whose raw loss exceeds 4x the best raw loss before it."""
    best = math.inf
    for lr, loss in zip(lrs, raw, strict=True):
        if loss > 4 * best:
            return lr
        best = min(best, loss)
    raise AssertionError("the curve does not diverge")


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.15])
def test_suggestion_is_well_below_divergence(noise: float) -> None:
    raw = curve(LRS, noise)
    s = suggest_lr(LRS, smooth_losses(raw))
    assert s.diverged_lr is not None and s.diverged_lr >= diverges_at(LRS, raw)
    assert s.lr <= s.min_loss_lr / 10 * (1 + 1e-9)
    assert s.lr <= diverges_at(LRS, raw) / 20  # far below the blow-up
    assert 1e-4 <= s.lr <= 1e-2  # on the falling part (centred on 1e-3), not the flat start


def test_suggestion_is_the_steepest_descent_when_far_from_the_minimum() -> None:
    # Falls around 1e-5, minimum long after (a plateau until divergence at ~1e-1).
    x = np.log10(LRS)
    raw = list(0.5 + 1.8 / (1 + np.exp(3 * (x + 5))) + np.where(x > -1, np.exp(4 * (x + 1)) - 1, 0))
    s = suggest_lr(LRS, smooth_losses(raw))
    assert s.reason.startswith("steepest") and s.steepest_lr == s.lr
    assert 1e-6 < s.lr < 1e-4


def test_a_cliff_right_before_divergence_is_clamped() -> None:
    # The loss drops sharply only just before it explodes: steepest point ~ the minimum.
    x = np.log10(LRS)
    raw = list(2.3 - 1.5 / (1 + np.exp(-8 * (x + 1.2))) + np.where(x > -0.9, 50 * (x + 0.9), 0))
    s = suggest_lr(LRS, smooth_losses(raw, beta=0.5))
    assert s.steepest_lr is not None and s.steepest_lr > s.min_loss_lr / 10
    assert s.lr == pytest.approx(s.min_loss_lr / 10) and "minimum LR / 10" in s.reason


@pytest.mark.parametrize("seed", range(20))
def test_jitter_at_the_start_is_not_the_steepest_descent(seed: int) -> None:
    # As measured on tf_efficientnet_lite0 / AdamW: a flat, noisy start (the first
    # smoothed points are barely averaged) and a gentle fall of 0.35 just before 1e-2.
    lrs = lr_schedule(1e-6, 10.0, 60)
    x = np.log10(lrs)
    fall = 2.35 - 0.35 / (1 + np.exp(-4 * (x + 2.3)))
    blow = np.where(x > -1.7, np.exp(3 * (x + 1.7)) - 1, 0.0)
    raw = fall + blow + 0.08 * np.random.default_rng(seed).standard_normal(len(lrs))
    s = suggest_lr(lrs, smooth_losses(list(raw)))
    assert 1e-3 <= s.lr <= s.min_loss_lr / 10 * (1 + 1e-9)
    assert s.diverged_lr is not None and s.lr <= s.diverged_lr / 100


def test_a_curve_that_only_rises() -> None:
    raw = [1.0 + i * 0.1 for i in range(20)]
    lrs = lr_schedule(1e-3, 1.0, 20)
    s = suggest_lr(lrs, smooth_losses(raw))
    # The first points (a fifth of a short curve) are too little averaged to count.
    assert s.min_loss_lr == lrs[4] and s.lr == pytest.approx(lrs[4] / 10)
    assert s.steepest_lr is None


def test_still_falling_at_the_end_says_so() -> None:
    lrs = lr_schedule(1e-6, 1e-2, 50)
    raw = [2.0 - 0.03 * i for i in range(50)]
    s = suggest_lr(lrs, smooth_losses(raw))
    assert s.diverged_lr is None and "--end-lr" in s.reason
    assert s.lr <= lrs[-1] / 10


def test_nan_counts_as_divergence() -> None:
    raw = [*curve(LRS)[:70], math.nan]
    lrs = LRS[:71]
    s = suggest_lr(lrs, smooth_losses(raw))
    assert s.diverged_lr == lrs[-1] and s.lr < lrs[-1] / 10
    with pytest.raises(ConfigError, match="--start-lr"):
        suggest_lr(lrs[:2], [math.nan, math.nan])


def random_batches(n_classes: int = 3, size: int = 32, seed: int = 0) -> Iterator:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, 3, 1, 1, generator=gen) * 2
    while True:
        y = torch.randint(0, n_classes, (8,), generator=gen)
        yield centers[y] + torch.randn(8, 3, size, size, generator=gen), y


def test_range_test_stops_at_divergence_and_restores_everything() -> None:
    torch.manual_seed(0)
    model = timm.create_model("convnet1", num_classes=3)
    for p in model.stem.parameters():
        p.requires_grad_(False)  # as a frozen backbone would be
    model.eval()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()  # momentum buffers exist now
    opt.zero_grad()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
    rng = torch.get_rng_state()

    result = lr_range_test(model, random_batches(), 1e-4, 1e4, 60, optimizer=opt)

    assert 5 < len(result.lrs) < 60  # stopped early
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not model.training
    assert opt.param_groups[0]["lr"] == 0.05
    torch.testing.assert_close(
        opt.state_dict()["state"][0]["momentum_buffer"], opt_before["momentum_buffer"]
    )
    assert torch.equal(torch.get_rng_state(), rng)
    assert result.suggestion.lr < result.suggestion.diverged_lr / 10  # type: ignore[operator]


def test_range_test_trains_every_parameter_by_default() -> None:
    torch.manual_seed(0)
    model = timm.create_model("convnet1", num_classes=3)
    for p in model.parameters():
        p.requires_grad_(False)
    seen: list[int] = []

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(sum(p.requires_grad for p in model.parameters()))
        return torch.nn.functional.cross_entropy(logits, y)

    lr_range_test(model, random_batches(), 1e-5, 1e-3, 6, loss_fn=loss_fn)
    assert seen == [len(list(model.parameters()))] * 6
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_command_end_to_end(
    tmp_path: Path, class_folders: Callable[..., Path], restore_transferlab_logging: None
) -> None:
    data, out = class_folders(per_class=8), tmp_path / "lr"
    args = ["lr-find", str(data), "--model", "convnet1", "--weights", "none"]
    args += ["--image-size", "32", "--batch-size", "4", "--steps", "40", "--optimizer", "sgd"]
    args += ["--start-lr", "1e-5", "--end-lr", "1000", "--out", str(out), "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"\d+ sgd steps on \d+ training images", result.output), result.output
    found = re.search(r"suggested lr: (\S+)", result.output)
    assert found, result.output
    suggested = float(found.group(1))
    with (out / "lr_find.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert 5 <= len(rows) <= 40 and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    smoothed = [float(r["smoothed_loss"]) for r in rows]
    lrs = [float(r["lr"]) for r in rows]
    lr_at_min = lrs[int(np.nanargmin(smoothed))]
    assert suggested <= lr_at_min / 10 * 1.01
    assert suggested < lrs[-1] / 10
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_has_examples() -> None:
    result = CliRunner().invoke(app, ["lr-find", "--help"])
    assert result.exit_code == 0 and "Examples" in result.output and "--end-lr" in result.output


def test_bad_range_names_the_option(tmp_path: Path, restore_transferlab_logging: None) -> None:
    args = ["lr-find", str(tmp_path), "--start-lr", "1e-2", "--end-lr", "1e-3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--end-lr" in result.output
