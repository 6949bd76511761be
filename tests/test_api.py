"""The Python API (``import transferlab as tl``) on real tiny data: the same defaults, checks,
errors and files as the CLI, and results that display themselves in Jupyter."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import transferlab as tl
from helpers import CLASSES, copy_photos, invoke, truncated_jpeg
from trained_model import held_out_photos
from transferlab.cli import app
from transferlab.config import from_dict
from transferlab.engine import Callback, EpochRecord
from transferlab.errors import ConfigError, DatasetError
from transferlab.evaluate import evaluate_model

TINY = {"model.name": "convnet1", "model.weights": "none", "model.image_size": 64}


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def _text(html: str) -> str:
    """The visible text of an HTML fragment (tags dropped, entities decoded)."""
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_train_writes_a_run_with_the_cli_defaults(
    class_folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data = class_folders(per_class=6)
    monkeypatch.chdir(tmp_path)
    run = tl.train(data, image_size=64, epochs=1, head_epochs=1)
    # out=None: a fresh folder under ./runs named after the data
    assert run.path.parent == Path("runs") and run.path.name.startswith("data-")
    # the same config as the CLI with the same options
    flags = ["--image-size", "64", "--epochs", "1", "--head-epochs", "1", "-q"]
    cli = CliRunner().invoke(app, ["train", str(data), "--out", "cli", *flags])
    assert cli.exit_code == 0, cli.output
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved == yaml.safe_load(Path("cli/config.yaml").read_text())
    assert saved["train"]["lr"] == from_dict({}).train.lr
    # the results
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert isinstance(run.history[0]["val_loss"], float)
    assert list(run.history_frame()["phase"]) == [h["phase"] for h in run.history]
    assert set(run.per_class) == set(CLASSES)
    assert len(run.confusion) == len(CLASSES)
    assert sum(map(sum, run.confusion)) == run.metrics["num_images"]
    assert run.report_path == run.path / "report.html"
    assert run.model.class_names == sorted(CLASSES)
    # progress bars drawn with tqdm, one per epoch
    assert "epoch 2/2" in capsys.readouterr().err
    # HTML: the report's summary, curves and per-class table, with the run's numbers
    html = run._repr_html_()
    text = _text(html)
    assert f"{run.metrics['accuracy']:.3f}" in text
    assert f"{run.metrics['macro_f1']:.3f}" in text
    for name, stats in run.per_class.items():
        assert re.search(rf"{re.escape(name)}\s+{stats['precision']:.3f}", text)
    assert "Training curves" in text and html.count("<img") >= 3
    assert isinstance(tl.load(run.path), tl.Run)


def test_a_fresh_run_folder_never_clobbers(
    class_folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transferlab.api import _fresh_out

    monkeypatch.chdir(tmp_path)
    first = _fresh_out("photos")
    first.mkdir(parents=True)
    second = _fresh_out("photos")
    assert second != first and second.name.startswith(first.name)


def test_settings_by_name_or_dotted_key_and_the_cli_error_lines(
    class_folders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = class_folders(per_class=2)
    monkeypatch.chdir(tmp_path)
    cfg = tl.build_config(data, epochs=3, label_smoothing=0.05, **{"augment.mixup": 0.2})
    assert (cfg.train.epochs, cfg.train.label_smoothing, cfg.augment.mixup) == (3, 0.05, 0.2)
    with pytest.raises(ConfigError, match="unknown setting 'lr_max'"):
        tl.build_config(data, lr_max=1)
    # the same one-line message as `transferlab train --set ...`
    with pytest.raises(ConfigError) as caught:
        tl.train(data, "unused", head_lr="-1", progress=False)  # as typed
    cli = CliRunner().invoke(
        app, ["train", str(data), "--out", "unused", "--set", "train.head_lr=-1"]
    )
    assert cli.exit_code == 2
    assert " ".join(cli.output.split()) == f"error: {caught.value}"
    assert not Path("unused").exists()
    with pytest.raises(DatasetError):
        tl.train(data / "nothing-here", "unused", progress=False)


def test_a_time_budget_too_small_for_the_run_is_refused_before_anything_is_written(
    class_folders, tmp_path: Path
) -> None:
    """The budget is planned (see test_budget.py); one that cannot hold even one epoch
    stops before the run folder exists, naming the smallest budget that would work."""
    data = class_folders(per_class=4)
    with pytest.raises(ConfigError, match=r"too small .* give at least --time-budget \d"):
        tl.train(data, tmp_path / "run", strategy="scratch", time_budget=1e-3, **TINY)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="--time-budget 0 is not a duration above 0"):
        tl.train(data, tmp_path / "run2", time_budget=0, progress=False)


def test_model_predicts_paths_pil_arrays_and_tensors_alike(run: Path) -> None:
    model = tl.load(run / "model")
    assert isinstance(model, tl.Model)
    photo = held_out_photos("altar", 1)[0]
    pil = Image.open(photo).convert("RGB")
    array = np.array(pil)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    preds = model.predict([photo, pil, array, tensor], top_k=2)
    assert len(preds) == 4
    assert preds[0].path == str(photo) and preds[1].path == "<image 1>"
    for p in preds[1:]:
        assert p.labels == preds[0].labels
        assert p.probabilities == pytest.approx(preds[0].probabilities, abs=2e-3)
    html = preds._repr_html_()
    assert html.count("<img") == 4  # every image inline, files and images in memory
    assert f"{preds[0].probabilities[0]:.3f}" in _text(html)
    assert preds.to_dicts()[0]["label"] == preds[0].label
    with pytest.raises(ConfigError, match="3 x H x W"):
        model.predict(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ConfigError, match="--top-k"):
        model.predict(photo, top_k=0)


def test_model_evaluate_is_the_evaluate_command(run: Path, tmp_path: Path) -> None:
    data = run.parent / "trained-run-data"
    model = tl.load(run / "model")
    assert isinstance(model, tl.Model)
    ev = model.evaluate(data, out=tmp_path / "eval")
    expected = evaluate_model(run / "model", data)
    assert ev.accuracy == expected["accuracy"] and ev.per_class == expected["per_class"]
    assert (tmp_path / "eval" / "metrics.json").is_file()
    text = _text(ev._repr_html_())
    assert f"{ev.macro_f1:.3f}" in text and "altar" in text
    with pytest.raises(ConfigError, match="--split"):
        model.evaluate(data, split="train")


def test_model_export_to_onnx_loads_back(run: Path, tmp_path: Path) -> None:
    model = tl.load(run / "model")
    assert isinstance(model, tl.Model)
    report = model.export(tmp_path / "m.onnx")
    assert report.parity_max_abs_diff is not None and report.parity_max_abs_diff < 1e-4
    onnx = tl.load(tmp_path / "m.onnx")
    assert isinstance(onnx, tl.Model) and onnx.backend.name == "onnx"
    photo = held_out_photos("stained_glass", 1)[0]
    assert onnx.predict(photo)[0].label == model.predict(photo)[0].label


def test_compare_a_dict_experiment_and_its_leaderboard(class_folders, tmp_path: Path) -> None:
    data = class_folders(per_class=4)
    experiment = {
        "dataset": str(data),
        "base": {
            "model": {"name": "convnet1", "weights": "none", "image_size": 64},
            "train": {"strategy": "scratch", "epochs": 1},
        },
        "axes": {"train.lr": [0.001, 0.01]},
    }
    board = tl.compare(experiment, tmp_path / "exp", progress=False)
    assert len(board.rows) == 2 and not board.failed
    assert {r["name"] for r in board.per_class} >= {r["name"] for r in board.rows}
    text = _text(board._repr_html_())
    for row in board.rows:
        assert row["name"] in text and f"{row['macro_f1']:.3f}" in text
    for cls in CLASSES:
        assert cls in text
    # the same folder again: nothing to train, the same leaderboard
    again = tl.compare(experiment, tmp_path / "exp", progress=False)
    assert again.rows == board.rows
    assert board.outcome is not None and again.outcome is not None
    assert len(board.outcome.trained) == 2 and not again.outcome.trained
    assert sorted(again.outcome.skipped) == sorted(board.outcome.trained)


def test_models_and_lr_find(class_folders, tmp_path: Path) -> None:
    names = [m.name for m in tl.models(offline=True)]
    assert "tf_efficientnet_lite0" in names
    with pytest.raises(ConfigError, match="matches no model"):
        tl.models(pattern="no-such-model*")
    found = tl.lr_find(class_folders(per_class=4), tmp_path / "lr", steps=8, **TINY)
    assert found.suggested_lr > 0 and found.csv_path.is_file() and found.plot_path.is_file()
    assert f"{found.suggested_lr:.2e}" in found._repr_html_()


def test_public_names_have_docstrings_with_examples() -> None:
    for name in tl.__all__:
        obj = getattr(tl, name)
        if callable(obj) and not name.endswith("Error") and name != "ImageLike":
            assert obj.__doc__ and ">>>" in obj.__doc__, name


def test_load_a_run_folder(run: Path) -> None:
    loaded = tl.load(run)
    assert isinstance(loaded, tl.Run)
    assert loaded.metrics == json.loads((run / "metrics.json").read_text())
    assert isinstance(tl.load(run, backend="torch"), tl.Model)  # a backend asks for the model
    with pytest.raises(tl.BundleError):
        tl.load(run / "no-such-folder")


def test_functions_keep_their_names_after_their_modules_are_imported() -> None:
    import transferlab.compare
    import transferlab.lr_find
    import transferlab.models.registry  # noqa: F401
    from transferlab.compare import run_experiment

    assert callable(run_experiment)
    for name in ("compare", "models", "lr_find"):
        assert getattr(tl, name) is getattr(tl.api, name), name


def test_the_package_lazily_exports_exactly_the_api() -> None:
    from transferlab import api

    # The lazy loader's list (in __init__ and its .pyi stub) must be the API's own list.
    assert set(tl._API) == set(api.__all__)
    stub = (Path(tl.__file__).parent / "__init__.pyi").read_text(encoding="utf-8")
    assert all(name in stub for name in api.__all__)


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split())


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """Two classes of 3 photos, an altar photo copied into apse and an unreadable file."""
    root = tmp_path / "messy"
    altar = copy_photos("altar", root / "altar", 3)
    copy_photos("apse", root / "apse", 3)
    shutil.copy(altar[0], root / "apse" / "conflict.jpg")
    truncated_jpeg(root / "apse" / "broken.jpg")
    return root


def test_audit_is_the_audit_command_with_typed_findings(messy: Path, tmp_path: Path) -> None:
    found = tl.audit(messy, features=False)
    # the same findings as `transferlab audit --no-features --json`
    code, output = _cli("audit", messy, "--no-features", "--json", tmp_path / "cli.json")
    assert code == 0, output
    cli = json.loads((tmp_path / "cli.json").read_text())
    mine = found.to_dict()
    assert {k: v for k, v in mine.items() if k != "seconds"} == {
        k: v for k, v in cli.items() if k != "seconds"
    }
    assert json.loads(found.to_json(tmp_path / "api.json"))["summary"] == cli["summary"]
    assert json.loads((tmp_path / "api.json").read_text())["summary"] == cli["summary"]
    # typed findings
    assert found.images == 8 and found.class_counts == {"altar": 3, "apse": 5}
    [conflict] = found.conflicts
    assert sorted(conflict.labels) == ["altar", "apse"] and found.duplicates == [conflict]
    assert not found.leaks and not found.suspects and not found.tiny
    assert [Path(f).name for f, _ in found.unreadable] == ["broken.jpg"]
    assert found.summary["label_conflicts"] == 1
    # HTML: the audit page's own sections and thumbnails, scoped to the cell
    html = found._repr_html_()
    assert "<html" not in html and html.startswith("<div class='tl-display'>")
    text = _text(html)
    assert "Duplicate groups" in text and "across classes" in text and "conflict.jpg" in text
    assert html.count("<img") == len(conflict.files)
    assert found.to_html(tmp_path / "audit.html").read_text().startswith("<!DOCTYPE html>")
    # the CLI's one-line errors
    with pytest.raises(ConfigError) as caught:
        found.to_json(tmp_path)
    code, output = _cli("audit", messy, "--no-features", "--json", tmp_path)
    assert code == 2 and output == f"error: {caught.value}"
    for option, value, kwargs in (
        ("--image-size", "8", {"image_size": 8}),
        ("--similarity", "1.5", {"similarity": 1.5}),
    ):
        with pytest.raises(ConfigError) as caught:
            tl.audit(messy, **kwargs)  # type: ignore[arg-type]
        code, output = _cli("audit", messy, option, value)
        assert code == 2 and output == f"error: {caught.value}"
    with pytest.raises(DatasetError):
        tl.audit(tmp_path / "nothing-here", features=False)


def test_audit_with_features_finds_the_same_as_the_cli(messy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    found = tl.audit(messy, image_size=32, feature_cache_dir=cache, similarity=0.99)
    assert found.to_dict()["features"].startswith("tf_efficientnet_lite0")
    assert list(cache.glob("*.safetensors")), "the features are kept in the cache"
    code, output = _cli(
        "audit", messy, "--image-size", "32", "--feature-cache-dir", cache,
        "--similarity", "0.99", "--json", tmp_path / "cli.json",
    )  # fmt: skip
    assert code == 0, output
    cli = json.loads((tmp_path / "cli.json").read_text())
    for key in ("summary", "duplicate_groups", "label_suspects"):
        assert found.to_dict()[key] == cli[key], key


def test_model_explain_writes_the_heat_maps_of_predict_explain(run: Path, tmp_path: Path) -> None:
    model = tl.load(run / "model")
    assert isinstance(model, tl.Model)
    photos = tmp_path / "photos"
    copy_photos("altar", photos, 2)
    truncated_jpeg(photos / "broken.jpg")
    heat = model.explain([photos], tmp_path / "heat")
    readable = sorted(p for p in photos.iterdir() if p.name != "broken.jpg")
    assert sorted(heat) == readable  # the unreadable photo gets none (and a warning)
    code, output = _cli("predict", run, photos, "--explain", tmp_path / "cli-heat")
    assert code == 3, output  # the broken photo
    for image, png in heat.items():
        assert png == tmp_path / "heat" / f"{image.stem}.gradcam.png"
        cli_png = tmp_path / "cli-heat" / png.name
        assert np.array_equal(np.array(Image.open(png)), np.array(Image.open(cli_png)))
    with pytest.raises(ConfigError, match="image files or folders"):
        model.explain(Image.open(readable[0]), tmp_path / "x")
    # ONNX: the one-line error of `predict --explain`
    with pytest.raises(ConfigError) as caught:
        tl.Model(tmp_path / "m.onnx").explain(photos, tmp_path / "x")
    code, output = _cli("predict", tmp_path / "m.onnx", photos, "--explain", tmp_path / "x")
    assert code == 2 and output == f"error: {caught.value}"
    assert not (tmp_path / "x").exists()


def test_crop_images_by_saliency_is_the_crop_command(run: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    copy_photos("altar", data / "altar", 1)
    copy_photos("apse", data / "apse" / "nested", 1)
    truncated_jpeg(data / "altar" / "broken.jpg")
    done = tl.crop_images(data, tmp_path / "api", saliency=run, margin=0)
    assert (done.boxed + done.whole, done.unreadable) == (2, 1)
    assert done.source == "saliency" and done.boxes_csv == tmp_path / "api" / "crop-boxes.csv"
    code, output = _cli("crop", data, "--out", tmp_path / "cli", "--saliency", run, "--margin", 0)
    assert code == 3, output
    cli_csv = (tmp_path / "cli" / "crop-boxes.csv").read_text()
    assert done.boxes_csv.read_text() == cli_csv
    rows = {r["path"]: r for r in done.rows}
    assert rows["altar/broken.jpg"]["source"] == "unreadable"
    for rel, row in rows.items():
        if row["source"] == "saliency":  # cut to the box the CSV names
            x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
            with Image.open(tmp_path / "api" / rel) as img:
                assert img.size == (x1 - x0, y1 - y0)
    # the CLI's one-line errors: detector options with saliency, a bad margin, a used --out
    for kwargs, flags in (
        ({"saliency": run, "classes": ["car"]}, ["--saliency", run, "--classes", "car"]),
        ({"saliency": run, "margin": 2.0}, ["--saliency", run, "--margin", "2.0"]),
        ({"saliency": run}, ["--saliency", run]),
    ):
        out = tmp_path / "api"  # not empty: refused
        with pytest.raises(ConfigError) as caught:
            tl.crop_images(data, out, **kwargs)  # type: ignore[arg-type]
        code, output = _cli("crop", data, "--out", out, *flags)
        assert code == 2 and output == f"error: {caught.value}"


def test_set_reject_below_is_the_reject_below_command(run: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(run / "model", tmp_path / "model")
    model = tl.Model.open(bundle)
    photo = held_out_photos("altar", 1)[0]
    answer = model.predict(photo)[0]
    assert model.set_reject_below(1.0) == bundle / "model.json"
    assert json.loads((bundle / "model.json").read_text())["reject_below"] == 1.0
    unsure = model.predict(photo)[0]  # the new default applies at once
    assert unsure.rejected and unsure.label == "unknown" and unsure.labels == answer.labels
    code, output = _cli("predict", bundle, photo)
    assert code == 0 and output.split()[1] == "unknown"
    model.set_reject_below(None)
    assert model.predict(photo)[0].label == answer.label
    assert json.loads((bundle / "model.json").read_text())["reject_below"] is None
    # the CLI's one-line errors
    with pytest.raises(ConfigError) as caught:
        model.set_reject_below(1.5)
    code, output = _cli("reject-below", bundle, "1.5")
    assert code == 2 and output == f"error: {caught.value}"
    with pytest.raises(ConfigError) as caught:
        tl.Model(tmp_path / "m.onnx").set_reject_below(0.5)
    code, output = _cli("reject-below", tmp_path / "m.onnx", "0.5")
    assert code == 2 and output == f"error: {caught.value}"


# ---------------------------------------------------------------- issues 10 and 12 in the API


def _two_run_experiment(data: Path, **train: object) -> dict[str, object]:
    return {
        "dataset": str(data),
        "base": {
            "model": {"name": "convnet1", "weights": "none", "image_size": 64},
            "train": {"strategy": "scratch", "epochs": 1, "device": "cpu", **train},
        },
        "axes": {"train.lr": [0.001, 0.01]},
    }


def test_compare_refuses_bad_parallel_and_budget_requests_in_one_line(
    class_folders, tmp_path: Path
) -> None:
    """The same one-line messages as ``compare --parallel/--time-budget``, before training."""
    experiment = _two_run_experiment(class_folders(per_class=2))
    with pytest.raises(ConfigError, match="runs in parallel need callbacks that pickle"):
        tl.compare(experiment, tmp_path / "a", parallel=2, callbacks=lambda run_dir: [])
    with pytest.raises(ConfigError, match="--time-budget 'soon' is not a duration"):
        tl.compare(experiment, tmp_path / "b", time_budget="soon")
    with pytest.raises(ConfigError, match="--parallel 0 is out of range"):
        tl.compare(experiment, tmp_path / "c", parallel=0)
    own = _two_run_experiment(class_folders(per_class=2), time_budget=60)
    with pytest.raises(ConfigError, match=r"sets train\.time_budget itself"):
        tl.compare(own, tmp_path / "d", time_budget=120)
    assert not any((tmp_path / name / "leaderboard.json").exists() for name in "abcd")


@pytest.mark.slow
def test_compare_in_parallel_shares_one_time_budget(class_folders, tmp_path: Path) -> None:
    """Two runs at once in worker processes (the callbacks pickled to them), one budget
    given as a duration and split between them."""
    experiment = _two_run_experiment(class_folders(per_class=4))
    board = tl.compare(experiment, tmp_path / "exp", parallel=2, time_budget="10m")
    assert board.outcome is not None and not board.failed
    assert sorted(board.outcome.trained) == sorted(r["name"] for r in board.rows)
    for row in board.rows:
        saved = yaml.safe_load((tmp_path / "exp" / row["name"] / "config.yaml").read_text())
        assert 0 < saved["train"]["time_budget"] <= 600


class _StopAfterEpoch(Callback):
    """Ends training after the first epoch's checkpoint, as a kill would."""

    def on_epoch_end(self, record: EpochRecord) -> None:
        raise KeyboardInterrupt


def test_resume_on_a_given_process_count(class_folders, tmp_path: Path) -> None:
    """``tl.resume(devices=...)`` and ``train --resume --devices``: a bad count is one line
    that leaves the run as it was; ``devices="1"`` continues it on one process."""
    data, out = class_folders(per_class=4), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        tl.train(
            data,
            out,
            strategy="scratch",
            epochs=2,
            progress=False,
            callbacks=[_StopAfterEpoch()],
            **TINY,
        )
    assert (out / "checkpoints" / "last.pt").is_file()
    with pytest.raises(ConfigError, match=r"--devices must be a whole number"):
        tl.resume(out, devices="two", progress=False)
    code, _, err = invoke("train", "--resume", out, "--devices", "two")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --devices must be a whole number"), err
    code, _, err = invoke("train", "--resume", out, "--lr", "0.1")
    assert code == 2 and "--resume continues a run with its own config.yaml" in err
    assert not (out / "metrics.json").exists()
    run = tl.resume(out, devices="1", progress=False)
    assert run.metrics["training"]["processes"] == 1
    assert [h["epoch"] for h in run.history] == [1, 2]


def test_only_the_main_process_of_a_launcher_makes_trackers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun every rank runs ``tl.train``; only rank 0 may make the trackers (and
    with them their files). Real launcher variables, real TensorBoard trackers."""
    from transferlab.api import _callbacks
    from transferlab.trackers import TensorBoardLogger

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _callbacks(False, [], ["tensorboard"], tmp_path / "rank1") == []
    assert not (tmp_path / "rank1").exists()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    made = _callbacks(False, [], ["tensorboard"], tmp_path / "rank0")
    assert [type(cb) for cb in made] == [TensorBoardLogger]
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):  # no launcher: the only process
        monkeypatch.delenv(name)
    assert [type(cb) for cb in _callbacks(False, [], ["tensorboard"], tmp_path / "one")] == [
        TensorBoardLogger
    ]
