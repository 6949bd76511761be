"""torchvision architectures by ``tv/`` name: timm's interface, offline rules, rebuildable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from timm.models import group_parameters
from torch import nn

from transferlab.data.transforms import Preprocessing
from transferlab.errors import ModelError, WeightsError
from transferlab.models import tv
from transferlab.models.tv import (
    create_tv_model,
    is_tv_model,
    list_tv_models,
    tv_pretrained_cfg,
    tv_weights_available,
    tv_weights_file,
)

# One per supported family, the small ones.
FAMILIES = [
    "tv/alexnet",
    "tv/vgg11_bn",
    "tv/resnet18",
    "tv/densenet121",
    "tv/mobilenet_v2",
    "tv/mobilenet_v3_small",
    "tv/efficientnet_b0",
    "tv/convnext_tiny",
    "tv/regnet_x_400mf",
    "tv/shufflenet_v2_x0_5",
]


@pytest.fixture
def empty_hub(tmp_path: Path) -> Iterator[Path]:
    """A torch hub dir with no weights in it; restored afterwards."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tv, "_download_reachable", lambda timeout=3.0: False)


def test_list_has_the_tutorial_models() -> None:
    names = list_tv_models()
    for name in (
        "tv/alexnet",
        "tv/resnet18",
        "tv/densenet169",
        "tv/vgg16",
        "tv/mobilenet_v3_small",
    ):
        assert name in names and is_tv_model(name)
    assert "tv/vit_b_16" not in names and not is_tv_model("tv/vit_b_16")
    assert list_tv_models("resnet*") == [n for n in names if n.startswith("tv/resnet")]


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_interface(name: str) -> None:
    model = create_tv_model(name, 3, pretrained=False, drop_rate=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model(x)
        torch.testing.assert_close(model.forward_head(feats), logits)
    assert logits.shape == (2, 3) and model.num_classes == 3 and model.drop_rate == 0.25
    assert feats.ndim == 4 and feats.shape[1] == model.num_features
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 3
    assert pre.shape == (2, model.head_hidden_size) == (2, head.in_features)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert model.pretrained_cfg["input_size"][0] == 3
    n_params = len(list(model.parameters()))
    for coarse in (True, False):
        groups = group_parameters(model, model.group_matcher(coarse))
        assert sum(len(g) for g in groups.values()) == n_params and len(groups) > 3


def test_alexnet_keeps_its_hidden_fc_layers() -> None:
    model = create_tv_model("tv/alexnet", 4)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (9216, 4096),
        (4096, 4096),
        (4096, 4),
    ]
    assert model.num_features == 256 and model.head_hidden_size == 4096


def test_preprocessing_comes_from_the_weights_transforms() -> None:
    r18 = tv_pretrained_cfg("tv/resnet18")
    assert r18["input_size"] == (3, 224, 224) and r18["crop_pct"] == pytest.approx(224 / 256)
    assert r18["interpolation"] == "bilinear" and r18["mean"] == (0.485, 0.456, 0.406)
    assert tv_pretrained_cfg("tv/efficientnet_b0")["interpolation"] == "bicubic"
    mnv2 = tv_pretrained_cfg("tv/mobilenet_v2")  # IMAGENET1K_V2: resize 232, crop 224
    assert mnv2["crop_pct"] == pytest.approx(224 / 232)
    b4 = tv_pretrained_cfg("tv/efficientnet_b4")
    assert b4["input_size"] == (3, 380, 380)
    prep = Preprocessing(224, r18["mean"], r18["std"], r18["interpolation"], r18["crop_pct"])
    assert prep.base_size == 256


@pytest.mark.parametrize("name", ["tv/resnet18", "tv/densenet121", "tv/vgg11_bn"])
def test_state_dict_loads_into_a_model_rebuilt_from_the_name(name: str) -> None:
    torch.manual_seed(0)
    trained = create_tv_model(name, 3).eval()
    rebuilt = create_tv_model(name, 3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(trained(x), rebuilt(x))
        rebuilt.load_state_dict(trained.state_dict())
        torch.testing.assert_close(trained(x), rebuilt(x))


def test_bundle_round_trip(tmp_path: Path) -> None:
    from transferlab.bundle import load_bundle, save_bundle

    model = create_tv_model("tv/resnet18", 2).eval()
    prep = Preprocessing(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    save_bundle(tmp_path / "model", model, "tv/resnet18", ["a", "b"], prep)
    bundle = load_bundle(tmp_path / "model")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), model(x))


def test_offline_without_cached_weights_fails_fast(empty_hub: Path, offline: None) -> None:
    assert not tv_weights_available("tv/resnet18")
    started = time.perf_counter()
    with pytest.raises(WeightsError, match=r"no network.*resnet18-f37072fd\.pth"):
        create_tv_model("tv/resnet18", 3, pretrained=True)
    assert time.perf_counter() - started < 5


def test_cached_weights_load_without_network(
    empty_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(timeout: float = 3.0) -> bool:
        raise AssertionError("must not touch the network when the file is cached")

    monkeypatch.setattr(tv, "_download_reachable", no_network)
    source = torchvision.models.resnet18()
    path = tv_weights_file("tv/resnet18")
    assert path is not None and path.parent == empty_hub / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    assert tv_weights_available("tv/resnet18")
    model = create_tv_model("tv/resnet18", 3, pretrained=True)
    torch.testing.assert_close(model.features.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(model.features.layer4[1].bn2.bias, source.layer4[1].bn2.bias)
    assert model.classifier.out_features == 3  # new head, not ImageNet's


def test_unknown_and_unsupported_names() -> None:
    with pytest.raises(ModelError, match="did you mean tv/resnet18"):
        create_tv_model("tv/resnet19", 3)
    with pytest.raises(ModelError, match="cannot split"):
        create_tv_model("tv/vit_b_16", 3)
