"""Layer groups: every parameter once, input to output, head last; top-N picks the top."""

from __future__ import annotations

import itertools

import pytest
import timm
from torch import nn

import transferlab.models  # noqa: F401  (registers the custom nets)
from transferlab.errors import ConfigError
from transferlab.models.groups import (
    body_groups,
    head_parameter_names,
    layer_groups,
    trainable_for_top_n,
)
from transferlab.models.tv import create_tv_model


def build(name: str) -> nn.Module:
    if name.startswith("tv/"):
        return create_tv_model(name, 3)
    return timm.create_model(name, pretrained=False, num_classes=3)


# name -> (first parameter of the first group, prefixes of the body groups in order, head)
EXPECTED = {
    "resnet18": (
        "conv1.weight",
        ["conv1", "layer1", "layer2", "layer3", "layer4"],
        ["fc.weight", "fc.bias"],
    ),
    "tf_efficientnet_lite0": (
        "conv_stem.weight",
        ["conv_stem", *[f"blocks.{i}." for i in range(7)]],
        ["classifier.weight", "classifier.bias"],
    ),
    "alexnet": (
        "stem.conv.conv.weight",
        ["stem", "stages.0", "stages.1", "pre_logits"],
        ["classifier.weight", "classifier.bias"],
    ),
    "flat_alexnet": (
        "stem.conv.conv.weight",
        ["stem", "stages.0", "stages.1", "pre_logits"],
        ["classifier.weight", "classifier.bias"],
    ),
    "convnet3": (
        "stem.conv.conv.weight",
        ["stem", "blocks.0", "blocks.1", "blocks.2"],
        ["classifier.weight", "classifier.bias"],
    ),
    "tv/resnet18": (
        "features.conv1.weight",
        ["features.conv1", *[f"features.layer{i}" for i in range(1, 5)]],
        ["classifier.weight", "classifier.bias"],
    ),
    "tv/densenet121": (
        "features.conv0.weight",
        ["features.conv0", *[f"features.denseblock{i}" for i in range(1, 5)]],
        ["classifier.weight", "classifier.bias"],
    ),
    "tv/vgg11_bn": (
        "features.0.weight",
        ["features.0.", "features.4.", "features.8.", "features.15.", "features.22.", "pre_logits"],
        ["classifier.weight", "classifier.bias"],
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_groups_cover_every_parameter_once_in_order(name: str) -> None:
    model = build(name)
    groups = layer_groups(model)
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    first, prefixes, head = EXPECTED[name]
    assert groups[0][0] == first
    assert groups[-1] == head == head_parameter_names(model)
    body = groups[:-1]
    assert [g[0].startswith(p) for g, p in zip(body, prefixes, strict=True)] == [True] * len(body)
    # Input to output: a group's parameters come after every earlier group's in the model.
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    assert all(
        max(order[n] for n in a) < min(order[n] for n in b) for a, b in itertools.pairwise(body)
    )


def test_unmatched_neck_goes_right_before_the_head() -> None:
    # efficientnet's conv_head/bn2 belong to the last block group in timm's metadata.
    groups = layer_groups(timm.create_model("tf_efficientnet_lite0", num_classes=3))
    assert "conv_head.weight" in groups[-2] and "blocks.6.0.conv_pw.weight" in groups[-2]


@pytest.mark.parametrize("name", ["resnet18", "alexnet", "tv/densenet121"])
def test_top_n(name: str) -> None:
    model = build(name)
    body, head = body_groups(model), set(head_parameter_names(model))
    assert trainable_for_top_n(model, 0) == head
    top2 = trainable_for_top_n(model, 2)
    assert top2 == head | set(body[-1]) | set(body[-2])
    assert not top2 & set(body[0])
    everything = trainable_for_top_n(model, len(body))
    assert everything == {n for n, _ in model.named_parameters()}


def test_top_n_out_of_range_names_the_option() -> None:
    model = timm.create_model("resnet18", num_classes=3)
    with pytest.raises(ConfigError, match=r"--trainable-groups 6 .* use 1\.\.5"):
        trainable_for_top_n(model, 6)
    with pytest.raises(ConfigError, match="--trainable-groups"):
        trainable_for_top_n(model, -1)


def test_a_replaced_head_is_still_the_last_group() -> None:
    model = timm.create_model("convnet2", num_classes=3)
    model.classifier = nn.Sequential(nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 3))
    groups = layer_groups(model)
    assert groups[-1] == [
        "classifier.0.weight",
        "classifier.0.bias",
        "classifier.2.weight",
        "classifier.2.bias",
    ]


def test_models_without_metadata_group_by_child() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)
            self.head = nn.Linear(2, 2)

        def get_classifier(self) -> nn.Module:
            return self.head

    assert layer_groups(Plain()) == [
        ["a.weight", "a.bias"],
        ["b.weight", "b.bias"],
        ["head.weight", "head.bias"],
    ]
