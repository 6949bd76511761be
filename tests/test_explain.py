"""Grad-CAM: target layers per architecture, and maps that find a planted object."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import invoke, truncated_jpeg
from trained_model import CLASSES, IMAGE_SIZE, held_out_photos
from transferlab.bundle import load_bundle
from transferlab.config import from_dict
from transferlab.crop import saliency_boxer
from transferlab.errors import ModelError
from transferlab.explain import center_view, grad_cam, target_layer
from transferlab.models.registry import create_model
from transferlab.pipeline import train_run
from transferlab.report.run_report import HEAT_MAPS, write_run_report

SIZE = 64
SQUARE = 14


def _planted(rng: np.random.Generator, with_object: bool) -> tuple[Image.Image, Image.Image]:
    """Grey noise, with or without one bright square; returns (image, mask of the square)."""
    pixels = rng.integers(40, 140, size=(SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    if with_object:
        top, left = rng.integers(4, SIZE - SQUARE - 4, size=2)
        pixels[top : top + SQUARE, left : left + SQUARE] = (250, 230, 40)
        mask[top : top + SQUARE, left : left + SQUARE] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """convnet1 trained from scratch at 64 px on 'object' vs 'noise' images (seconds)."""
    base = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    for label, has in (("object", True), ("noise", False)):
        (base / "data" / label).mkdir(parents=True)
        for i in range(40):
            _planted(rng, has)[0].save(base / "data" / label / f"{i:02d}.png")
    cfg = from_dict(
        {},
        {
            "data.path": str(base / "data"),
            "data.val_fraction": 0.2,
            "data.test_fraction": 0.0,
            "model.name": "convnet1",
            "model.weights": "none",
            "model.image_size": SIZE,
            "train.strategy": "scratch",
            "train.epochs": 6,
            "train.batch_size": 16,
            "train.lr": 3e-3,
        },
    )
    train_run(cfg, base / "run")
    return base / "run"


def test_grad_cam_peak_lands_on_the_planted_object(planted_run: Path) -> None:
    bundle = load_bundle(planted_run / "model")
    model, prep = bundle.model.eval(), bundle.preprocessing
    target = bundle.class_names.index("object")
    rng = np.random.default_rng(123)  # images the model never saw
    trials = 20
    views = [
        (center_view(img, prep)[1], mask)
        for img, mask in (_planted(rng, True) for _ in range(trials))
    ]
    heats = grad_cam(model, torch.cat([x for x, _ in views]), [target] * trials)
    hits = 0
    for heat, (_, mask) in zip(heats, views, strict=True):
        mask_view = center_view(mask, prep)[0][..., 0] > 127
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        # The map is upsampled from 16x16 cells: a peak within 4 px of the square counts.
        near = np.zeros_like(mask_view)
        ys, xs = np.nonzero(mask_view)
        near[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = True
        hits += bool(near[peak])
    assert hits / trials >= 0.8, f"the peak was on the object in {hits}/{trials} images"


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("convnet1", "blocks"),
        ("flat_alexnet", "stages"),
        ("tf_efficientnet_lite0", "bn2"),
        ("resnet18", "layer4"),
        ("tv/resnet18", "features_act"),
    ],
)
def test_target_layer_comes_from_the_architecture(name: str, layer: str) -> None:
    model, _ = create_model(name, 3, weights="none")
    assert target_layer(model) is model.get_submodule(layer)
    maps = grad_cam(model.eval(), torch.randn(2, 3, 64, 64), [0, 2])
    assert maps.shape == (2, 64, 64)
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_vision_transformers_are_not_supported_yet() -> None:
    model, _ = create_model("vit_tiny_patch16_224", 3, weights="none")
    with pytest.raises(ModelError, match="not supported yet for VisionTransformer"):
        target_layer(model)


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def test_predict_explain_writes_one_named_heat_map_per_photo(run: Path, tmp_path: Path) -> None:
    photos = [held_out_photos(label, 1)[0] for label in CLASSES]
    broken = truncated_jpeg(tmp_path / "broken.jpg")
    out_dir = tmp_path / "heat"
    code, out, _ = invoke("predict", run, *photos, broken, "--explain", out_dir, "--json")
    assert code == 3  # the broken file is reported, the others explained
    predictions = json.loads(out)["predictions"]
    assert "explanation" not in predictions[-1]
    named = [Path(p["explanation"]) for p in predictions[:-1]]
    assert named == [out_dir / f"{p.stem}.gradcam.png" for p in photos]
    assert sorted(out_dir.iterdir()) == sorted(named)
    for png in named:
        with Image.open(png) as img:
            assert (img.format, img.size) == ("PNG", (IMAGE_SIZE, IMAGE_SIZE))


def test_predict_explain_names_the_map_in_the_text_output_too(run: Path, tmp_path: Path) -> None:
    photo = held_out_photos("altar", 1)[0]
    code, out, _ = invoke("predict", run, photo, "--explain", tmp_path / "maps")
    assert code == 0
    assert out.rstrip("\n").split("\t")[-1] == str(tmp_path / "maps" / f"{photo.stem}.gradcam.png")


def test_predict_explain_with_onnx_is_one_line_and_exit_2(run: Path, tmp_path: Path) -> None:
    photo = held_out_photos("altar", 1)[0]
    code, _, err = invoke("predict", run, photo, "--backend", "onnx", "--explain", tmp_path)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "--explain needs the torch backend" in err
    assert not list(tmp_path.iterdir())


def test_report_top_losses_show_grad_cam_maps(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    html = write_run_report(copy).read_text(encoding="utf-8")
    losses = json.loads((copy / "report" / "report.json").read_text(encoding="utf-8"))
    named = [e["gradcam"] for e in losses["top_losses"] if e["gradcam"]]
    assert len(named) == min(HEAT_MAPS, len(losses["top_losses"]))
    for name in named:
        with Image.open(copy / "report" / name) as img:
            assert (img.format, img.size) == ("PNG", (IMAGE_SIZE, IMAGE_SIZE))
    assert html.count('alt="Grad-CAM: where the model saw') == len(named)


def test_report_without_a_usable_model_leaves_the_maps_out_with_a_warning(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "model" / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="transferlab"):
        write_run_report(copy)
    losses = json.loads((copy / "report" / "report.json").read_text(encoding="utf-8"))
    assert losses["top_losses"]
    assert not any(e["gradcam"] for e in losses["top_losses"])
    assert "no Grad-CAM maps for the top losses" in caplog.text


def test_saliency_box_surrounds_the_planted_object(planted_run: Path) -> None:
    bundle = load_bundle(planted_run / "model")
    boxer = saliency_boxer(bundle.model.eval(), bundle.preprocessing, bundle.class_names)
    rng = np.random.default_rng(321)
    hits, trials = 0, 10
    for _ in range(trials):
        img, mask = _planted(rng, True)
        ys, xs = np.nonzero(np.asarray(mask)[..., 0])
        box = boxer(img)
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        inside = box is not None and box.x0 <= cx <= box.x1 and box.y0 <= cy <= box.y1
        # ...and is a box around it, not the whole picture.
        hits += inside and box is not None and box.area <= 0.4 * SIZE * SIZE
    assert hits / trials >= 0.8, f"the box held the object in {hits}/{trials} images"
