"""``evaluate --tta`` reports the gain over plain predictions on the same images."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import copy_photos
from trained_model import CLASSES, PER_CLASS
from transferlab.cli import app
from transferlab.errors import DatasetError
from transferlab.evaluate import evaluate_model, run_split, select_eval_samples


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


def test_a_named_split_of_the_runs_own_data_comes_from_its_split_file(run: Path) -> None:
    # The run's data folder has no val/ or test/ folders: its split lives in split.csv.
    found = run_split(run)
    assert found is not None
    val = evaluate_model(run, _data(run), "val")
    assert val["evaluated"] == "the run's val split"
    assert val["num_images"] == len(found[1].val)
    assert "training_images_evaluated" not in val
    with pytest.raises(DatasetError, match=r"split\.csv has no test images; use --split val"):
        evaluate_model(run, _data(run), "test")
    code = CliRunner().invoke(
        app, ["evaluate", str(run), "--data", str(_data(run)), "--split", "val", "-q"]
    )
    assert code.exit_code == 0, code.stderr


def test_scoring_training_images_is_said_out_loud(
    run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found = run_split(run)
    assert found is not None
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        metrics = evaluate_model(run, _data(run), "all")
    trained_on = len(found[1].train)
    assert metrics["training_images_evaluated"] == trained_on
    assert (
        f"{trained_on} of the {metrics['num_images']} evaluated images are training" in caplog.text
    )


def test_macro_averages_are_over_the_classes_in_the_data(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A 3-class model on a folder of 2 of its classes: the third must not count as F1 0.
    present, absent = list(CLASSES[:2]), CLASSES[2]
    for label in present:
        copy_photos(label, tmp_path / "two" / label, 4, offset=PER_CLASS)
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        metrics = evaluate_model(run, tmp_path / "two", "all")
    f1 = [metrics["per_class"][c]["f1"] for c in present]
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 2)
    assert metrics["macro_classes"] == present and metrics["absent_classes"] == [absent]
    assert f"model classes with no images here: {absent}" in caplog.text
    result = CliRunner().invoke(app, ["evaluate", str(run), "--data", str(tmp_path / "two"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert f"macro averages over the 2 classes with images ({absent} has none)" in result.stdout
