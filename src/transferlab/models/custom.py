"""Small CNNs trained from scratch, registered in timm's registry like any timm model.

- ``alexnet``: the classic 5 conv / 3 FC network (Krizhevsky et al. 2012: 96, 256, 384, 384,
  256 feature maps, 11x11 stride-4 first filter, two 4096-unit hidden FC layers), with
  BatchNorm after every conv in place of the original local response normalisation.
- ``flat_alexnet``: the same with two conv layers fewer (conv3 and conv4 left out).
- ``narrow_alexnet``: the same layers with half the feature maps and 2048-unit FC layers.
- ``convnet1`` .. ``convnet3``: a 3x3 conv stem and 1, 2 or 3 residual blocks of two 3x3
  convs, each block halving the resolution and doubling the feature maps.

Every builder takes ``stride`` and ``kernel_size`` (of the first conv, the filter the seeds
tune) and ``width`` (a multiplier on every conv's feature maps), e.g.
``timm.create_model("alexnet", num_classes=10, stride=2, kernel_size=7, width=0.5)``.

Any input of 32 px or more works: max pools are padded and the head pools adaptively.
The default input size is 128 px (``pretrained_cfg``), small enough to train on a CPU;
``--image-size`` changes it. There are no ImageNet weights: use ``--weights none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["CUSTOM_MODELS", "AlexNet", "ConvNet", "TimmStyleClassifier"]

DEFAULT_INPUT_SIZE = 128
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (feature maps, kernel size) per conv after the first; None closes a stage with a max pool.
ALEXNET_CONVS: tuple[tuple[int, int] | None, ...] = ((256, 5), None, (384, 3), (384, 3), (256, 3))
FLAT_ALEXNET_CONVS: tuple[tuple[int, int] | None, ...] = ((256, 5), None, (256, 3))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # No url / hf_hub_id: these nets have no pretrained weights, only preprocessing.
    return {
        "num_classes": 1000,
        "input_size": (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE),
        "pool_size": None,
        "min_input_size": (3, 32, 32),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "stem.conv.conv",
        "classifier": "classifier",
        "license": "apache-2.0",
        **kwargs,
    }


def _channels(base: int, width: float) -> int:
    return max(8, round(base * width))


def _check_args(stride: int, kernel_size: int, width: float) -> None:
    # timm passes these straight from the caller; say which one is wrong.
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")


class ConvBnAct(nn.Sequential):
    """Conv, BatchNorm, ReLU; 'same' padding so small inputs keep a spatial extent."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)


def _pool() -> nn.MaxPool2d:
    # Padded 3x3/2 pooling never shrinks a map below 1x1, so 32 px inputs still work.
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class TimmStyleClassifier(nn.Module):
    """timm's classifier interface over ``global_pool`` -> ``pre_logits`` -> dropout -> linear.

    Subclasses set those modules, ``head_hidden_size`` (the classifier's input width) and
    ``forward_features``; torchvision wrappers (:mod:`transferlab.models.tv`) use it too.
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    drop_rate: float
    global_pool: nn.Module
    pre_logits: nn.Module
    classifier: nn.Module
    pretrained_cfg: dict[str, Any]
    default_cfg: dict[str, Any]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            raise NotImplementedError("gradient checkpointing is not supported by this model")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.global_pool(x))
        # The same dropout the engine applies to cached pre-logits features.
        x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class AlexNet(TimmStyleClassifier):
    """AlexNet-style CNN: ``stem`` (first conv + pool), conv ``stages``, two hidden FC layers.

    ``num_features`` is the channel count of ``forward_features``; ``head_hidden_size`` the
    width of the hidden FC layers, which ``forward_head(pre_logits=True)`` returns.
    """

    def __init__(
        self,
        convs: Sequence[tuple[int, int] | None] = ALEXNET_CONVS,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        stride: int = 4,
        kernel_size: int = 11,
        width: float = 1.0,
        stem_chs: int = 96,
        hidden_size: int = 4096,
        pool_size: int = 6,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_args(stride, kernel_size, width)
        self.num_classes, self.drop_rate = num_classes, drop_rate
        chs = _channels(stem_chs, width)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBnAct(in_chans, chs, kernel_size, stride))
        self.stem.add_module("pool", _pool())
        stages: list[nn.Sequential] = []
        current = nn.Sequential()
        for spec in (*convs, None):
            if spec is None:
                current.add_module("pool", _pool())
                stages.append(current)
                current = nn.Sequential()
                continue
            out, k = _channels(spec[0], width), spec[1]
            current.add_module(str(len(current)), ConvBnAct(chs, out, k))
            chs = out
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        self.head_hidden_size = hidden_size
        self.global_pool = nn.AdaptiveAvgPool2d(pool_size)
        self.pre_logits = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(chs * pool_size * pool_size, hidden_size),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^stem",
            "blocks": r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)",
            "hidden": r"^pre_logits",
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a projection shortcut; the first conv halves the resolution."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(cin, cout, 3, stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.conv1(x)))
        return self.act(out + self.shortcut(x))


class ConvNet(TimmStyleClassifier):
    """A conv stem and ``depth`` residual blocks, then global average pooling and a linear head."""

    def __init__(
        self,
        depth: int = 1,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        stride: int = 2,
        kernel_size: int = 3,
        width: float = 1.0,
        stem_chs: int = 32,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_args(stride, kernel_size, width)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.num_classes, self.drop_rate = num_classes, drop_rate
        chs = _channels(stem_chs, width)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBnAct(in_chans, chs, kernel_size, stride))
        blocks = []
        for _ in range(depth):
            blocks.append(BasicBlock(chs, chs * 2))
            chs *= 2
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = chs
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.pre_logits = nn.Flatten(1)
        self.classifier = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^stem", "blocks": r"^blocks\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


CUSTOM_MODELS = ("alexnet", "flat_alexnet", "narrow_alexnet", "convnet1", "convnet2", "convnet3")
default_cfgs = generate_default_cfgs({name: _cfg() for name in CUSTOM_MODELS})


def _create(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> Any:
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


@register_model
def alexnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """The classic 5 conv / 3 FC AlexNet (with BatchNorm), for training from scratch."""
    model: AlexNet = _create(AlexNet, "alexnet", pretrained, **kwargs)
    return model


@register_model
def flat_alexnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """AlexNet with two conv layers fewer: conv1, conv2, conv5."""
    kwargs.setdefault("convs", FLAT_ALEXNET_CONVS)
    model: AlexNet = _create(AlexNet, "flat_alexnet", pretrained, **kwargs)
    return model


@register_model
def narrow_alexnet(pretrained: bool = False, **kwargs: Any) -> AlexNet:
    """AlexNet with half the feature maps (``width`` 0.5) and 2048-unit hidden FC layers."""
    kwargs.setdefault("width", 0.5)
    kwargs.setdefault("hidden_size", 2048)
    model: AlexNet = _create(AlexNet, "narrow_alexnet", pretrained, **kwargs)
    return model


@register_model
def convnet1(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """A conv stem and one residual block of two 3x3 convs."""
    model: ConvNet = _create(ConvNet, "convnet1", pretrained, depth=1, **kwargs)
    return model


@register_model
def convnet2(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """A conv stem and two residual blocks of two 3x3 convs."""
    model: ConvNet = _create(ConvNet, "convnet2", pretrained, depth=2, **kwargs)
    return model


@register_model
def convnet3(pretrained: bool = False, **kwargs: Any) -> ConvNet:
    """A conv stem and three residual blocks of two 3x3 convs."""
    model: ConvNet = _create(ConvNet, "convnet3", pretrained, depth=3, **kwargs)
    return model
