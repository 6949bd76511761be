"""The custom CNNs: timm-registered, any input >= 32 px, tunable, trainable from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

import transferlab.models  # noqa: F401  (registers the custom nets)
from helpers import example_photos
from transferlab.data.images import load_image
from transferlab.data.transforms import Preprocessing, eval_batch, to_base
from transferlab.errors import ConfigError, WeightsError
from transferlab.models.custom import AlexNet, ConvNet
from transferlab.models.registry import create_model, resolve_preprocessing

NAMES = ["alexnet", "flat_alexnet", "narrow_alexnet", "convnet1", "convnet2", "convnet3"]


def convs(model: nn.Module) -> list[nn.Conv2d]:
    """The main-path convs (1x1 residual shortcuts left out)."""
    return [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n]


@pytest.mark.parametrize("name", NAMES)
def test_any_input_size_gives_one_logit_per_class(name: str) -> None:
    model = timm.create_model(name, num_classes=7, drop_rate=0.1).eval()
    with torch.no_grad():
        for size in (32, 64, 150):
            assert model(torch.randn(2, 3, size, size)).shape == (2, 7), size


@pytest.mark.parametrize("name", NAMES)
def test_timm_interface(name: str) -> None:
    assert timm.is_model(name)
    model = timm.create_model(name, num_classes=5, drop_rate=0.3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        torch.testing.assert_close(logits, model(x))
    assert feats.ndim == 4 and feats.shape[1] == model.num_features
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 5
    # The engine trains the classifier on pre-logits features; the widths must agree.
    assert pre.shape == (2, model.head_hidden_size) == (2, head.in_features)
    assert model.num_classes == 5 and model.drop_rate == 0.3
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 128, 128)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 0.875
    assert cfg["classifier"] == "classifier"
    assert not cfg.get("url") and not cfg.get("hf_hub_id")
    assert set(model.group_matcher(coarse=True)) >= {"stem", "blocks"}


@pytest.mark.parametrize("name", ["alexnet", "convnet2"])
def test_registry_builds_them_and_refuses_imagenet_weights(name: str) -> None:
    model, source = create_model(name, 4, weights="none")
    assert source == "random" and model.num_classes == 4
    assert resolve_preprocessing(name).input_size == 128
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        create_model(name, 4, weights="imagenet")


def test_stride_changes_the_feature_map() -> None:
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        s4 = timm.create_model("alexnet", num_classes=2, stride=4).forward_features(x)
        s2 = timm.create_model("alexnet", num_classes=2, stride=2).forward_features(x)
    assert s4.shape[-1] == 4 and s2.shape[-1] == 8  # 128/4/2/2/2 vs 128/2/2/2/2


def test_kernel_size_changes_the_first_filter() -> None:
    k11 = timm.create_model("alexnet", num_classes=2)
    k7 = timm.create_model("alexnet", num_classes=2, kernel_size=7)
    assert convs(k11)[0].kernel_size == (11, 11) and convs(k7)[0].kernel_size == (7, 7)
    saved = sum(p.numel() for p in k11.parameters()) - sum(p.numel() for p in k7.parameters())
    assert saved == 3 * 96 * (11 * 11 - 7 * 7)


@pytest.mark.parametrize("name", ["alexnet", "convnet3"])
def test_width_scales_every_conv(name: str) -> None:
    full = timm.create_model(name, num_classes=2)
    half = timm.create_model(name, num_classes=2, width=0.5)
    assert [c.out_channels // 2 for c in convs(full)] == [c.out_channels for c in convs(half)]
    assert half.num_features == full.num_features // 2
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())


def test_the_alexnet_variants() -> None:
    classic = timm.create_model("alexnet", num_classes=10)
    flat = timm.create_model("flat_alexnet", num_classes=10)
    narrow = timm.create_model("narrow_alexnet", num_classes=10)
    assert [c.out_channels for c in convs(classic)] == [96, 256, 384, 384, 256]
    assert [c.kernel_size[0] for c in convs(classic)] == [11, 5, 3, 3, 3]
    assert convs(classic)[0].stride == (4, 4)
    assert sum(isinstance(m, nn.Linear) for m in classic.modules()) == 3  # 3 FC layers
    assert len(convs(flat)) == len(convs(classic)) - 2
    assert len(convs(narrow)) == len(convs(classic))
    assert all(
        n.out_channels < c.out_channels for n, c in zip(convs(narrow), convs(classic), strict=True)
    )
    assert isinstance(classic, AlexNet) and narrow.num_features < classic.num_features


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_convnet_blocks(depth: int) -> None:
    model = timm.create_model(f"convnet{depth}", num_classes=2)
    assert isinstance(model, ConvNet) and len(model.blocks) == depth
    assert len(convs(model)) == 1 + 2 * depth  # stem + two 3x3 convs per block
    assert all(c.kernel_size == (3, 3) for c in convs(model))
    assert model.num_features == 32 * 2**depth


def test_bad_constructor_values_say_which() -> None:
    with pytest.raises(ValueError, match="width"):
        timm.create_model("alexnet", width=0)
    with pytest.raises(ValueError, match="stride"):
        timm.create_model("convnet1", stride=0)


def _photo_batch(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    prep = Preprocessing(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")
    images, labels = [], []
    for label, cls in enumerate(("altar", "dome(inner)")):
        for path in example_photos(cls, 4):
            images.append(to_base(load_image(path), prep))
            labels.append(label)
    x = eval_batch(torch.from_numpy(np.stack(images)), prep)
    return x, torch.tensor(labels)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_sgd_steps_reduce_the_loss_from_scratch(name: str) -> None:
    torch.manual_seed(0)
    x, y = _photo_batch()
    model = timm.create_model(name, num_classes=2, drop_rate=0.0)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        final = float(nn.functional.cross_entropy(model(x), y))
    assert np.isfinite(losses).all()
    assert min(losses[-3:]) < losses[0] * 0.7
    assert final < losses[0]


# --- model.kwargs and weights errors name what to change ---------------------------------


def test_model_kwargs_reach_the_architecture() -> None:
    model, _ = create_model("alexnet", 3, "none", kwargs={"stride": 2, "width": 0.5})
    assert convs(model)[0].stride == (2, 2) and convs(model)[0].out_channels == 48


@pytest.mark.parametrize(
    ("name", "weights", "kwargs", "names"),
    [
        ("alexnet", "none", {"stride": 0}, ["model.kwargs", "stride", "alexnet"]),
        ("convnet1", "none", {"bogus": 3}, ["model.kwargs.bogus", "convnet1"]),
        # Offline packaged ImageNet weights: the same check.
        ("tf_efficientnet_lite0", "imagenet", {"bogus": 3}, ["model.kwargs.bogus"]),
        ("tv/resnet18", "none", {"stride": 2}, ["model.kwargs", "tv/resnet18"]),
    ],
)
def test_bad_model_kwargs_are_config_errors(
    name: str, weights: str, kwargs: dict[str, int], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        create_model(name, 3, weights, kwargs=kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert all(n in message for n in names), message


def test_a_custom_cnn_with_imagenet_weights_says_to_train_from_scratch() -> None:
    with pytest.raises(WeightsError) as info:
        create_model("convnet1", 3, "imagenet")
    message = str(info.value)
    assert "--weights none" in message and "--strategy scratch" in message
    assert "timm has no" not in message
