"""``export``: ONNX and TorchScript files that describe themselves and match PyTorch on real
images; int8 quantisation and pruning that report what they cost in accuracy."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from helpers import copy_photos
from trained_model import CLASSES, IMAGE_SIZE, PER_CLASS, held_out_photos
from transferlab.backends import OnnxBackend, TorchBackend, load_backend
from transferlab.bundle import load_bundle
from transferlab.cli import app
from transferlab.errors import BundleError, ConfigError
from transferlab.evaluate import evaluate_model, run_split
from transferlab.export import (
    PARITY_TOLERANCE,
    ExportError,
    ExportOptions,
    ExportReport,
    _check_parity,
    export_model,
    load_torchscript,
)


@pytest.fixture(scope="module")
def onnx_export(run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, export_model(run, ExportOptions("onnx", out))


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def test_onnx_carries_class_names_and_preprocessing(onnx_export: tuple[Path, ExportReport]):
    path, _ = onnx_export
    proto = onnx.load(str(path))
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["transferlab.class_names"] == list(CLASSES)
    assert props["transferlab.preprocessing"]["input_size"] == IMAGE_SIZE
    assert set(props["transferlab.preprocessing"]) >= {"mean", "std", "crop_pct", "interpolation"}
    assert props["transferlab.architecture"] == "tf_efficientnet_lite0"
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["probabilities"]


def test_an_onnx_file_knows_its_training_images(
    run: Path,
    onnx_export: tuple[Path, ExportReport],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = run_split(run)
    assert found is not None
    raw, split = found
    # The training folder copied elsewhere: the file's digests still recognise its images.
    data = shutil.copytree(raw["data"]["path"], tmp_path / "copy")
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        metrics = evaluate_model(onnx_export[0], data)
    assert metrics["backend"] == "onnx" and metrics["evaluated"] == "all images"
    assert metrics["training_images_evaluated"] == len(split.train)
    assert f"{len(split.train)} of the {metrics['num_images']} evaluated images are training" in (
        caplog.text
    )
    held_out = tmp_path / "held-out"
    for label in CLASSES:
        copy_photos(label, held_out / label, 1, offset=PER_CLASS)
    assert evaluate_model(onnx_export[0], held_out)["training_images_evaluated"] == 0


def test_onnx_parity_is_checked_on_real_images(onnx_export: tuple[Path, ExportReport]) -> None:
    _, report = onnx_export
    assert report.parity_images >= 5  # the run's held-out split
    assert report.parity_max_abs_diff is not None
    assert report.parity_max_abs_diff <= PARITY_TOLERANCE
    assert report.evaluated == "the run's held-out val split"


def test_onnx_file_alone_predicts_like_the_bundle(
    run: Path, onnx_export: tuple[Path, ExportReport]
) -> None:
    from transferlab.predict import predict_files

    photos = [held_out_photos(label, 1)[0] for label in CLASSES]
    ort = predict_files(load_backend(onnx_export[0]), photos, k=3, tta="flip")
    pt = predict_files(load_backend(run), photos, k=3, tta="flip")
    for a, b in zip(ort, pt, strict=True):
        assert a.labels == b.labels
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)


def test_a_bundle_uses_its_kept_model_onnx(
    run: Path, onnx_export: tuple[Path, ExportReport], tmp_path: Path
) -> None:
    bundle = shutil.copytree(run / "model", tmp_path / "model")
    shutil.copy(onnx_export[0], bundle / "model.onnx")
    backend = load_backend(bundle, "onnx")
    assert isinstance(backend, OnnxBackend) and backend.source == bundle / "model.onnx"
    with pytest.raises(ConfigError, match="is an ONNX file; use --backend onnx"):
        load_backend(onnx_export[0], "torch")


def test_parity_failure_is_loud_and_leaves_no_file(
    run: Path, onnx_export: tuple[Path, ExportReport], tmp_path: Path
) -> None:
    # A real mismatch: the exported file checked against a different (re-initialised) model.
    bundle = load_bundle(run)
    torch.manual_seed(1)
    bundle.model.get_classifier().reset_parameters()
    other = TorchBackend.from_bundle(bundle, run)
    victim = shutil.copy(onnx_export[0], tmp_path / "bad.onnx")
    report = ExportReport(str(victim), "onnx", 0, 0.0)
    images = torch.randint(0, 255, (4, 3, 109, 109), dtype=torch.uint8)
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* the file was removed"):
        _check_parity(report, other, OnnxBackend(Path(victim)), images)
    assert not Path(victim).exists()


@pytest.mark.slow
def test_torchscript_export_with_metadata(run: Path, tmp_path: Path) -> None:
    report = export_model(run, ExportOptions("torchscript", tmp_path / "m.pt"))
    assert report.parity_max_abs_diff is not None
    assert report.parity_max_abs_diff <= PARITY_TOLERANCE
    module, meta = load_torchscript(tmp_path / "m.pt")
    assert meta["class_names"] == list(CLASSES)
    probs = module(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))


@pytest.mark.slow
def test_int8_is_smaller_and_reports_the_accuracy_change(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.onnx"
    code = CliRunner().invoke(
        app, ["export", str(run), "--quantize", "int8", "--out", str(out), "--json"]
    )
    assert code.exit_code == 0, code.stderr
    report = json.loads(code.stdout)
    assert report["parity_max_abs_diff"] <= PARITY_TOLERANCE  # of the float export
    assert report["quantization"]["calibration"].endswith("of the run's train split")
    assert report["accuracy_before"] is not None and report["accuracy_after"] is not None
    assert report["accuracy_change"] == pytest.approx(
        report["accuracy_after"] - report["accuracy_before"]
    )
    assert report["size_bytes"] < 0.5 * (run / "model" / "model.safetensors").stat().st_size
    backend = load_backend(out)
    assert backend.meta["quantization"]["method"].startswith("ONNX Runtime static int8")
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" in ops  # really quantised


@pytest.mark.slow
def test_pruned_bundle_has_the_asked_sparsity_and_reports_accuracy(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pruned"
    report = export_model(run, ExportOptions("bundle", out, prune=0.3, finetune_epochs=1)).to_dict()
    assert report["pruning"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert report["pruning"]["finetune"]["epochs"] == 1
    assert report["accuracy_before"] is not None and report["accuracy_after"] is not None
    pruned = load_bundle(out)
    assert pruned.meta["pruning"]["amount"] == 0.3
    weights = [m.weight for m in pruned.model.modules() if isinstance(m, torch.nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros > 0.25


def test_bad_requests_are_one_line_errors(run: Path, tmp_path: Path) -> None:
    def err(*args: object) -> str:
        result = CliRunner().invoke(app, ["export", *map(str, args)])
        assert result.exit_code == 2, result.stdout
        assert "Traceback" not in result.stderr
        return result.stderr

    assert "--quantize works with --format onnx" in err(
        run, "--format", "torchscript", "--quantize", "int8", "--out", tmp_path / "x.pt"
    )
    assert "add --prune AMOUNT" in err(run, "--format", "bundle", "--out", tmp_path / "b")
    assert "--format 'tflite' is not one of" in err(run, "--format", "tflite", "--out", "x")
    bare = shutil.copytree(run / "model", tmp_path / "bare")
    assert "pass --data DIR" in err(bare, "--out", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ConfigError, match=r"--prune 1.5 must be a share"):
        export_model(run, ExportOptions("bundle", tmp_path / "p", prune=1.5))
    with pytest.raises(BundleError, match="model not found"):
        export_model(tmp_path / "nothing", ExportOptions("onnx", tmp_path / "y.onnx"))
