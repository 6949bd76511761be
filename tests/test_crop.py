"""``transferlab crop``: box choice, a real (randomly initialised) detector, saliency boxes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from helpers import copy_photos, invoke, truncated_jpeg
from trained_model import trained_run
from transferlab import crop
from transferlab.crop import Box, largest_box, saliency_box, with_margin
from transferlab.data.images import load_image
from transferlab.models import tv

DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / crop.BOXES_FILE).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    copy_photos("altar", root / "altar", 1)
    copy_photos("apse", root / "apse" / "nested", 1)  # the tree is mirrored at any depth
    return root


@pytest.fixture(scope="module")
def car_detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision Faster R-CNN with random weights whose classifier calls every region a
    car (one bias raised): a real detector with a known answer, saved like torchvision's."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(DETECTOR, weights=None, weights_backbone=None)
    car = crop.coco_categories(DETECTOR).index("car")
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias.zero_()
        model.roi_heads.box_predictor.cls_score.bias[car] = 10.0
    path = tmp_path_factory.mktemp("detector") / f"{DETECTOR}-random.pth"
    torch.save(model.state_dict(), path)
    return path


def b(x0: float, y0: float, x1: float, y1: float, label: str = "car", score: float = 0.9) -> Box:
    return Box(x0, y0, x1, y1, label, score)


def test_largest_box_of_the_wanted_classes_above_the_score_wins() -> None:
    boxes = [
        b(0, 0, 10, 10),
        b(0, 0, 50, 50, label="person"),  # largest, but not wanted
        b(0, 0, 40, 40, score=0.3),  # too unsure
        b(5, 5, 25, 25, label="truck"),
    ]
    assert largest_box(boxes, {"car", "truck"}, 0.5) == boxes[3]
    assert largest_box(boxes, None, 0.5) == boxes[1]
    assert largest_box(boxes, {"car"}, 0.2) == boxes[2]
    assert largest_box(boxes, {"bus"}, 0.0) is None  # the caller keeps the whole image
    assert largest_box([b(5, 5, 5, 9)], None, 0.0) is None  # an empty box is no box


def test_margin_grows_the_box_and_stays_inside_the_image() -> None:
    assert with_margin(b(10, 20, 30, 60), 0.1, 100, 100) == (8, 16, 32, 64)
    assert with_margin(b(2, 2, 98, 48), 0.5, 100, 50) == (0, 0, 100, 50)
    assert with_margin(b(10.4, 10.4, 10.6, 10.6), 0.0, 100, 100) == (10, 10, 11, 11)


def test_saliency_box_surrounds_the_peak_region_scaled_to_the_image() -> None:
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[2:4, 5:7] = 1.0  # the peak region
    heat[6, 0] = 0.9  # a separate hot spot, not connected to the peak
    box = saliency_box(heat, 80, 40)
    assert box is not None
    assert (box.x0, box.y0, box.x1, box.y1) == (50, 10, 70, 20)
    assert saliency_box(np.zeros((8, 8), dtype=np.float32), 80, 40) is None


def test_detector_crops_to_the_wanted_class_and_writes_the_boxes(
    data: Path, tmp_path: Path, car_detector: Path
) -> None:
    out = tmp_path / "cropped"
    code, stdout, _ = invoke(
        "crop", data, "--out", out, "--detector", car_detector, "--classes", "car"
    )
    assert code == 0, stdout
    rows = read_rows(out)
    originals = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    assert [r["path"] for r in rows] == originals
    detector = crop.load_detector(str(car_detector))
    for r in rows:
        photo = load_image(data / r["path"])
        best = largest_box(detector.boxes(photo), {"car"}, 0.5)
        assert best is not None
        region = with_margin(best, 0.1, *photo.size)
        assert (r["source"], r["label"]) == (f"detector:{DETECTOR}", "car")
        assert float(r["score"]) >= 0.5
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        with Image.open(out / r["path"]) as img:
            assert img.size == (x1 - x0, y1 - y0)
        assert (x0, y0, x1, y1) == region  # the largest car box, with its margin


def test_no_wanted_box_keeps_the_whole_image(
    data: Path, tmp_path: Path, car_detector: Path
) -> None:
    out = tmp_path / "cropped"
    code, _, _ = invoke(
        "crop", data, "--out", out, "--detector", car_detector, "--classes", "truck"
    )
    assert code == 0
    for r in read_rows(out):
        assert (r["source"], r["label"], r["score"]) == ("whole", "", "")
        assert (out / r["path"]).read_bytes() == (data / r["path"]).read_bytes()


def test_saliency_boxes_the_trained_models_own_map(
    data: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = trained_run(tmp_path_factory)
    truncated_jpeg(data / "altar" / "broken.jpg")
    out = tmp_path / "cropped"
    code, stdout, _ = invoke("crop", data, "--out", out, "--saliency", run, "--margin", "0")
    assert code == 3, stdout  # the broken photo is listed and left out
    rows = {r["path"]: r for r in read_rows(out)}
    assert rows.pop("altar/broken.jpg")["source"] == "unreadable"
    assert not (out / "altar" / "broken.jpg").exists()
    class_names = {"altar", "dome(outer)", "stained_glass"}
    for path, r in rows.items():
        assert r["source"] == "saliency"
        assert r["label"] in class_names
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= int(r["width"]) and 0 <= y0 < y1 <= int(r["height"])
        with Image.open(out / path) as img:
            assert img.size == (x1 - x0, y1 - y0)


def test_offline_without_weights_says_so_and_offers_saliency(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(tv, "_download_reachable", lambda: False)
    code, _, err = invoke("crop", data, "--out", tmp_path / "out", "--detector", DETECTOR)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "offline" in err and "--saliency" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "carr"], "did you mean car"),
        (["--classes", ","], "--classes names no class"),
        (["--margin", "1.5"], "--margin 1.5 is out of range"),
        (["--min-score", "-0.1"], "--min-score -0.1 is out of range"),
        (["--detector", "resnet50"], "--detector 'resnet50' is neither"),
        (["--saliency", "run", "--classes", "car"], "--classes belong to the detector"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    data: Path, tmp_path: Path, car_detector: Path, args: list[str], message: str
) -> None:
    detector = [] if "--detector" in args or "--saliency" in args else ["--detector", car_detector]
    code, _, err = invoke("crop", data, "--out", tmp_path / "out", *detector, *args)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0


def test_out_inside_the_data_folder_is_refused(data: Path) -> None:
    code, _, err = invoke("crop", data, "--out", data / "cropped", "--saliency", "run")
    assert code == 2
    assert "inside the data folder" in err
