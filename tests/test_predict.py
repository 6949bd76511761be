"""``predict`` with test-time augmentation and either backend, on a really trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import invoke, truncated_jpeg
from trained_model import CLASSES, held_out_photos
from transferlab.backends import load_backend
from transferlab.predict import predict_files


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


@pytest.mark.parametrize("tta", ["none", "flip", "ten-crop"])
def test_held_out_photos_get_their_class_with_any_tta(run: Path, tta: str) -> None:
    backend = load_backend(run)
    photos = {label: held_out_photos(label, 1)[0] for label in CLASSES}
    results = predict_files(backend, list(photos.values()), k=3, tta=tta)
    for (label, _), r in zip(photos.items(), results, strict=True):
        assert r.error is None
        assert r.label == label
        assert r.probabilities == sorted(r.probabilities, reverse=True)
        assert sum(r.probabilities) == pytest.approx(1.0, abs=1e-5)  # k = all 3 classes


def test_tta_changes_the_probabilities_but_not_their_meaning(run: Path) -> None:
    backend = load_backend(run)
    photo = held_out_photos("altar", 1)
    plain = predict_files(backend, photo, k=3)[0]
    ten = predict_files(backend, photo, k=3, tta="ten-crop")[0]
    assert plain.probabilities != ten.probabilities  # the views really differ
    assert plain.label == ten.label


def test_cli_json_says_backend_and_tta_and_flags_unreadable_files(
    run: Path, tmp_path: Path
) -> None:
    broken = truncated_jpeg(tmp_path / "broken.jpg")
    good = held_out_photos("dome(outer)", 1)[0]
    code, out, _ = invoke("predict", run, good, broken, "--tta", "flip", "--json", "-k", "2")
    assert code == 3  # one file could not be read: not 1, which is a crash
    doc = json.loads(out)
    assert doc["backend"] == "torch" and doc["tta"] == "flip"
    first, second = doc["predictions"]
    assert first["label"] == "dome(outer)" and len(first["top_k"]) == 2
    assert "corrupt or truncated" in second["error"]


def test_help_documents_the_exit_codes() -> None:
    code, out, _ = invoke("predict", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Exit codes" in text
    assert "3: some files could not be read" in text


def test_cli_rejects_unknown_tta_and_backend_in_one_line(run: Path) -> None:
    photo = held_out_photos("altar", 1)[0]
    code, _, err = invoke("predict", run, photo, "--tta", "zoom")
    assert code == 2 and err.startswith("error: --tta 'zoom' is not one of")
    code, _, err = invoke("predict", run, photo, "--backend", "tensorrt")
    assert code == 2 and err.startswith("error: --backend 'tensorrt' is not one of: torch, onnx")
    assert "Traceback" not in err
