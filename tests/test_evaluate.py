"""``evaluate --tta`` reports the gain over plain predictions on the same images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trained_model import trained_run
from transferlab.cli import app
from transferlab.errors import DatasetError
from transferlab.evaluate import evaluate_model, run_split, select_eval_samples


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def _data(run: Path) -> Path:
    found = run_split(run)
    assert found is not None
    return Path(found[0]["data"]["path"])


def test_tta_metrics_compare_with_and_without_on_the_same_images(run: Path) -> None:
    plain = evaluate_model(run, _data(run))
    with_tta = evaluate_model(run, _data(run), tta="five-crop")
    tta = with_tta["tta"]
    assert with_tta["num_images"] == plain["num_images"]
    assert tta["mode"] == "five-crop"
    assert tta["accuracy_without"] == pytest.approx(plain["accuracy"])
    assert tta["accuracy"] == pytest.approx(with_tta["accuracy"])
    assert tta["accuracy_gain"] == pytest.approx(tta["accuracy"] - tta["accuracy_without"])
    assert "tta" not in plain


def test_cli_prints_the_tta_line(run: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--data", str(_data(run)), "--tta", "flip", "-q"]
    )
    assert result.exit_code == 0, result.stderr
    assert "TTA flip: accuracy" in result.stdout and "points" in result.stdout
    as_json = CliRunner().invoke(
        app, ["evaluate", str(run / "model"), "--data", str(_data(run)), "--json"]
    )
    assert json.loads(as_json.stdout)["backend"] == "torch"


def test_the_bundle_folder_of_a_run_still_finds_its_held_out_split(run: Path) -> None:
    samples, described = select_eval_samples(run / "model", None, "auto")
    assert described == "the run's held-out val split" and samples


def test_without_data_a_bare_bundle_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="pass --data with labelled images"):
        select_eval_samples(tmp_path, None, "auto")
