"""Pretrained weights: the packaged ImageNet weights really recognise a dome; weights of the
wrong shape and hub-only weights without a network fail with a clear ``WeightsError``."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from helpers import SAMPLES
from transferlab.data.images import load_image
from transferlab.data.transforms import eval_batch, to_base
from transferlab.errors import WeightsError
from transferlab.models.registry import create_model, resolve_preprocessing
from transferlab.models.weights import has_offline_weights, load_packaged, remap_by_position

LITE0 = "tf_efficientnet_lite0"
DOME = 538  # ImageNet class 'dome'


@pytest.fixture(scope="module")
def imagenet_probs() -> dict[str, torch.Tensor]:
    """ImageNet class probabilities of the two sample photos, with the model's own
    preprocessing."""
    model, _ = create_model(LITE0, 1000, weights="none")
    load_packaged(LITE0, model)
    model.eval()
    prep = resolve_preprocessing(LITE0)
    names = ["capitol-dome.jpg", "pantheon-dome-interior.jpg"]
    batch = np.stack([to_base(load_image(SAMPLES / n), prep) for n in names])
    with torch.inference_mode():
        probs = model(eval_batch(torch.from_numpy(batch), prep)).softmax(dim=1)
    return dict(zip(names, probs, strict=True))


def test_lite0_weights_are_installed() -> None:
    assert has_offline_weights(LITE0)


def test_packaged_weights_see_the_capitol_dome(imagenet_probs: dict[str, torch.Tensor]) -> None:
    probs = imagenet_probs["capitol-dome.jpg"]
    assert int(probs.argmax()) == DOME
    assert float(probs[DOME]) > 0.5


def test_packaged_weights_see_the_pantheon_dome(imagenet_probs: dict[str, torch.Tensor]) -> None:
    assert DOME in imagenet_probs["pantheon-dome-interior.jpg"].topk(3).indices.tolist()


def test_imagenet_weights_come_with_a_fresh_head() -> None:
    model, source = create_model(LITE0, 3, weights="imagenet")
    assert source.startswith("package:")
    with torch.inference_mode():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_remap_by_position_checks_every_shape() -> None:
    target = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2, 4)}
    good = {"x": torch.ones(4, 3), "y": torch.ones(2, 4)}
    remapped = remap_by_position(good, target, "pkg.pth")
    assert list(remapped) == ["a.weight", "b.weight"]
    assert remapped["b.weight"] is good["y"]

    wrong_shape = {"x": torch.ones(4, 3), "y": torch.ones(2, 5)}
    with pytest.raises(WeightsError, match=r"pkg\.pth: tensor y has shape \(2, 5\) but b\.weight"):
        remap_by_position(wrong_shape, target, "pkg.pth")
    with pytest.raises(WeightsError, match="has 1 tensors but the model expects 2"):
        remap_by_position({"x": torch.ones(4, 3)}, target, "pkg.pth")


def test_hub_only_weights_fail_fast_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An empty Hugging Face cache, so a developer's cached download cannot hide the error.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(WeightsError) as exc:
        create_model("resnet18", 3, weights="imagenet")
    assert time.perf_counter() - started < 10
    message = str(exc.value)
    assert "cannot download ImageNet weights for 'resnet18'" in message
    assert LITE0 in message  # lists the models that work offline
    assert "--weights none" in message
