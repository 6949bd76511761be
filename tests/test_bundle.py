"""Bundles: a save/load round trip predicts identically, loading never unpickles, and a
damaged bundle is a ``BundleError`` that says which file and what to do."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.data import resolve_data_config

import trained_model
from helpers import CLASSES, example_photos
from transferlab.bundle import (
    CONFIG_FILE,
    META_FILE,
    WEIGHTS_FILE,
    load_bundle,
    read_meta,
    save_bundle,
)
from transferlab.data.images import load_image
from transferlab.data.transforms import Preprocessing, eval_batch, to_base
from transferlab.errors import BundleError
from transferlab.models.heads import HeadSpec, install_head
from transferlab.models.registry import create_model, resolve_preprocessing

ARCH = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def prep() -> Preprocessing:
    return resolve_preprocessing(ARCH, 64)


@pytest.fixture(scope="module")
def photos(prep: Preprocessing) -> torch.Tensor:
    """A normalised batch of real photos, one per class."""
    base = [to_base(load_image(example_photos(c, 1)[0]), prep) for c in CLASSES]
    return eval_batch(torch.from_numpy(np.stack(base)), prep)


@pytest.fixture(scope="module")
def trained(photos: torch.Tensor) -> torch.nn.Module:
    """A model whose BatchNorm statistics moved away from their defaults, in eval mode."""
    torch.manual_seed(0)
    model, _ = create_model(ARCH, len(CLASSES), weights="none")
    model.train()
    with torch.no_grad():
        model(photos)
    return model.eval()


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, trained: torch.nn.Module, prep: Preprocessing
) -> Path:
    directory = tmp_path_factory.mktemp("bundle") / "model"
    return save_bundle(directory, trained, ARCH, list(CLASSES), prep, extra={"note": "Köln"})


@pytest.fixture
def damaged(saved: Path, tmp_path: Path) -> Path:
    """A copy of the saved bundle that a test may break."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_round_trip_gives_identical_logits(
    saved: Path, trained: torch.nn.Module, photos: torch.Tensor, prep: Preprocessing
) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_FILE, META_FILE, WEIGHTS_FILE]
    bundle = load_bundle(saved)
    assert not bundle.model.training
    assert bundle.architecture == ARCH
    assert bundle.class_names == list(CLASSES)
    assert bundle.num_classes == 3
    assert bundle.preprocessing == prep
    assert bundle.meta["note"] == "Köln"
    with torch.inference_mode():
        assert torch.equal(bundle.model(photos), trained(photos))


def test_a_run_folder_is_accepted(saved: Path) -> None:
    # A run folder holds the bundle in model/; `saved` is exactly such a model/ folder.
    assert load_bundle(saved.parent).class_names == list(CLASSES)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_bundle unpickled something")

    for owner, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(owner, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert load_bundle(saved).class_names == list(CLASSES)


def test_a_trained_bundle_loads_as_a_timm_model(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run = trained_model.trained_run(tmp_path_factory)
    ours = load_bundle(run)
    theirs = timm.create_model(f"local-dir:{run / 'model'}", pretrained=True).eval()
    assert theirs.pretrained_cfg["label_names"] == list(trained_model.CLASSES)
    prep = ours.preprocessing
    data = resolve_data_config({}, model=theirs)
    assert data["input_size"] == (3, prep.input_size, prep.input_size)
    assert tuple(data["mean"]) == pytest.approx(prep.mean)
    assert tuple(data["std"]) == pytest.approx(prep.std)
    assert (data["interpolation"], data["crop_pct"]) == (prep.interpolation, prep.crop_pct)
    photos = [trained_model.held_out_photos(c, 1)[0] for c in trained_model.CLASSES]
    x = eval_batch(torch.from_numpy(np.stack([to_base(load_image(p), prep) for p in photos])), prep)
    with torch.inference_mode():
        assert torch.allclose(theirs(x), ours.model(x), atol=1e-5)
        assert theirs(x).argmax(1).tolist() == [0, 1, 2]


def test_a_head_timm_cannot_rebuild_gets_no_timm_config(
    tmp_path: Path, prep: Preprocessing
) -> None:
    # An MLP head is transferlab's own: timm.create_model would build a linear head that the
    # weights do not fit, so the bundle does not pretend it can (torchvision models neither).
    model, _ = create_model(ARCH, len(CLASSES), weights="none")
    head = HeadSpec("mlp", (16,))
    install_head(model, head, len(CLASSES))
    extra = {"head": head.to_dict()}
    bundle = save_bundle(tmp_path / "mlp", model, ARCH, list(CLASSES), prep, extra)
    assert not (bundle / CONFIG_FILE).exists()
    assert load_bundle(bundle).meta["head"]["kind"] == "mlp"


def edit_meta(bundle: Path, **changes: object) -> None:
    meta = json.loads((bundle / META_FILE).read_text(encoding="utf-8"))
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    (bundle / META_FILE).write_text(json.dumps(meta), encoding="utf-8")


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# How to break a bundle folder, and what the error must say.
BREAKAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "meta not json": (
        lambda b: (b / META_FILE).write_text("{architecture: lite0", encoding="utf-8"),
        r"model\.json is damaged .*; re-export or retrain",
    ),
    "meta truncated": (lambda b: truncate(b / META_FILE, 40), r"model\.json is damaged"),
    "meta not an object": (
        lambda b: (b / META_FILE).write_text("42", encoding="utf-8"),
        r"model\.json is damaged \(not a JSON object\)",
    ),
    "meta missing": (lambda b: (b / META_FILE).unlink(), r"has no model\.json; give a run folder"),
    "no architecture": (
        lambda b: edit_meta(b, architecture=None),
        r"model\.json lacks 'architecture'",
    ),
    "unknown architecture": (
        lambda b: edit_meta(b, architecture="resnet_9000"),
        r"unknown model 'resnet_9000'",
    ),
    "bad preprocessing": (
        lambda b: edit_meta(b, preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3}),
        r"model\.json has damaged preprocessing \(KeyError\('input_size'\)\)",
    ),
    "extra class": (
        lambda b: edit_meta(b, class_names=[*CLASSES, "vault"]),
        r"model\.safetensors does not match tf_efficientnet_lite0 with 4 classes",
    ),
    "weights missing": (
        lambda b: (b / WEIGHTS_FILE).unlink(),
        r"model\.safetensors is missing; the bundle is incomplete",
    ),
    "weights garbage": (
        lambda b: (b / WEIGHTS_FILE).write_bytes(b"\x00" * 64),
        r"model\.safetensors is damaged .*; retrain or re-export",
    ),
    "weights truncated": (
        lambda b: truncate(b / WEIGHTS_FILE, 1000),
        r"model\.safetensors is damaged",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_damaged_bundle(damaged: Path, breakage: str) -> None:
    breaks, message = BREAKAGES[breakage]
    breaks(damaged)
    with pytest.raises(BundleError, match=message) as exc:
        load_bundle(damaged)
    assert "\n" not in str(exc.value)


def test_missing_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"model not found: .*give a run folder"):
        load_bundle(tmp_path / "nothing")


def test_read_meta_without_loading_weights(damaged: Path) -> None:
    (damaged / WEIGHTS_FILE).unlink()
    meta = read_meta(damaged)
    assert meta["class_names"] == list(CLASSES)
    assert meta["preprocessing"]["input_size"] == 64
