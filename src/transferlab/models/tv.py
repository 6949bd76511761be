"""torchvision architectures by name (``tv/resnet18``, ``tv/densenet169``), shaped like timm's.

``create_tv_model("tv/resnet18", num_classes, pretrained, drop_rate)`` builds torchvision's
network and splits it into ``features`` (the conv trunk), ``global_pool``, ``pre_logits``
(the hidden layers of the original classifier, e.g. AlexNet's and VGG's FC layers) and a new
``classifier`` (the final linear layer), so the rest of transferlab sees the timm interface:
``forward_features``, ``forward_head(x, pre_logits)``, ``get_classifier``,
``reset_classifier``, ``num_features``, ``drop_rate``, ``pretrained_cfg`` and
``group_matcher``.

``drop_rate`` is a dropout right before the final linear layer; a dropout torchvision put
there is replaced by it, dropouts between hidden layers keep torchvision's rate.

ImageNet weights are downloaded by torchvision into ``torch.hub.get_dir()/checkpoints``.
Offline, a model whose file is not there fails at once with a :class:`WeightsError`.
The module layout depends only on the name, so a saved state dict loads back into
``create_tv_model(name, n, pretrained=False)``.
"""

from __future__ import annotations

import difflib
import logging
import socket
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from transferlab.errors import ModelError, WeightsError
from transferlab.models.custom import TimmStyleClassifier

logger = logging.getLogger(__name__)

PREFIX = "tv/"
DOWNLOAD_HOST = ("download.pytorch.org", 443)
# timm's group-matcher suffix meaning "belongs to the group before" (timm MATCH_PREV_GROUP).
_MERGE_PREV = (99999,)

# torchvision families this module can split into trunk / hidden layers / final linear.
SUPPORTED_FAMILIES = (
    "alexnet",
    "vgg",
    "resnet",
    "resnext",
    "wide_resnet",
    "densenet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet",
    "convnext",
    "regnet",
    "shufflenet_v2",
)


def _bare(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def is_tv_model(name: str) -> bool:
    """Whether ``name`` is a supported torchvision architecture (``tv/<name>``)."""
    return name.startswith(PREFIX) and name in list_tv_models()


def list_tv_models(pattern: str = "*") -> list[str]:
    """Supported torchvision classification architectures, as ``tv/<name>``."""
    import fnmatch

    names = torchvision.models.list_models(module=torchvision.models)
    out = [PREFIX + n for n in names if n.startswith(SUPPORTED_FAMILIES)]
    return [
        n
        for n in out
        if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, PREFIX + pattern)
    ]


def _check_name(name: str) -> str:
    bare = _bare(name)
    known = torchvision.models.list_models(module=torchvision.models)
    if bare not in known:
        close = difflib.get_close_matches(PREFIX + bare, list_tv_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(
            f"unknown torchvision model '{PREFIX}{bare}'{hint} "
            "(run 'transferlab models --filter \"tv/*\"' for the list)"
        )
    if not bare.startswith(SUPPORTED_FAMILIES):
        raise ModelError(
            f"'{PREFIX}{bare}' is a torchvision model transferlab cannot split into backbone and "
            f"head; use one of the families {', '.join(SUPPORTED_FAMILIES)} or a timm model"
        )
    return bare


def _default_weights(bare: str) -> WeightsEnum | None:
    try:
        enum = torchvision.models.get_model_weights(bare)
    except (ValueError, KeyError):
        return None
    default: WeightsEnum | None = getattr(enum, "DEFAULT", None)
    return default


def hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub`` keeps the checkpoint downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def tv_weights_file(name: str) -> Path | None:
    """Where torchvision keeps ``name``'s ImageNet weights once downloaded (None: no weights)."""
    weights = _default_weights(_check_name(name))
    if weights is None:
        return None
    return hub_checkpoint(weights.url)


def tv_weights_available(name: str) -> bool:
    """Whether ``name``'s ImageNet weights are in the torch hub cache (usable offline)."""
    path = tv_weights_file(name)
    return path is not None and path.is_file()


def _download_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def tv_pretrained_cfg(name: str) -> dict[str, Any]:
    """timm-style preprocessing of ``name``'s ImageNet weights (torchvision's own transforms)."""
    bare = _check_name(name)
    weights = _default_weights(bare)
    cfg: dict[str, Any] = {
        "architecture": PREFIX + bare,
        "input_size": (3, 224, 224),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "num_classes": 1000,
        "classifier": "classifier",
        "first_conv": None,
    }
    if weights is None:
        return cfg
    tf = weights.transforms()
    crop, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    cfg.update(
        input_size=(3, crop, crop),
        interpolation=str(tf.interpolation.value),
        crop_pct=crop / resize,
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
        tv_weights=str(weights),
        weights_file=weights.url.rsplit("/", 1)[-1],
    )
    min_size = weights.meta.get("min_size")
    if min_size:
        cfg["min_input_size"] = (3, int(min_size[0]), int(min_size[1]))
    return cfg


def _load_torchvision(bare: str, pretrained: bool) -> nn.Module:
    if not pretrained:
        return torchvision.models.get_model(bare, weights=None)
    weights = _default_weights(bare)
    if weights is None:
        raise WeightsError(
            f"torchvision has no ImageNet weights for '{PREFIX}{bare}'; use --weights none"
        )
    if not tv_weights_available(bare) and not _download_reachable():
        raise WeightsError(
            f"cannot download ImageNet weights for '{PREFIX}{bare}': no network and "
            f"{tv_weights_file(bare)} is not in the torch hub cache; copy it there, or use "
            "--weights none / a weights PATH"
        )
    try:
        return torchvision.models.get_model(bare, weights=weights)
    except Exception as exc:  # network, hash and file errors come in many types
        raise WeightsError(
            f"loading ImageNet weights for '{PREFIX}{bare}' failed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); use --weights none or PATH"
        ) from exc


def _split_head(layers: list[nn.Module]) -> tuple[nn.Sequential, nn.Linear]:
    """torchvision's classifier layers -> (hidden layers incl. flatten, final linear)."""
    final = layers[-1]
    if not isinstance(final, nn.Linear):
        raise ModelError(f"unexpected torchvision classifier ending in {type(final).__name__}")
    hidden = layers[:-1]
    if hidden and isinstance(hidden[-1], nn.Dropout):
        hidden = hidden[:-1]  # replaced by the wrapper's drop_rate
    if not any(isinstance(m, nn.Flatten) for m in hidden):
        hidden = [nn.Flatten(1), *hidden]
    return nn.Sequential(*hidden), final


def _head_layers(m: nn.Module, attr: str) -> list[nn.Module]:
    head = getattr(m, attr)
    return list(head) if isinstance(head, nn.Sequential) else [head]


def _children(m: nn.Module, names: list[str]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((n, getattr(m, n)) for n in names))


def _sequential_groups(features: nn.Module, family: str) -> list[list[int]]:
    """Coarse groups of ``features`` child indices for Sequential trunks; the first is the stem."""
    with_params = [
        int(i) for i, c in features.named_children() if any(True for _ in c.parameters())
    ]
    if family in ("alexnet", "vgg"):
        groups: list[list[int]] = [[]]
        for key, child in features.named_children():
            if isinstance(child, nn.MaxPool2d):
                groups.append([])
            elif int(key) in with_params:
                groups[-1].append(int(key))
        return [g for g in groups if g]
    if family == "convnext":
        # A down-sampling layer (even index) opens the group of the stage that follows it.
        groups = [[with_params[0]]]
        for i in with_params[1:]:
            if i % 2 == 0 or i == 1:
                groups.append([i])
            else:
                groups[-1].append(i)
        return groups
    # MobileNet / EfficientNet: stem, one group per block or stage, last 1x1 conv with the last.
    groups = [[i] for i in with_params[:-1]]
    groups[-1].append(with_params[-1])
    return groups


Matcher = Callable[[bool], dict[str, Any]]


def _matcher(stem: str, coarse_blocks: Any, fine_blocks: Any) -> Matcher:
    """A timm-style ``group_matcher``: stem, blocks (coarse or fine), then hidden head layers."""

    def match(coarse: bool) -> dict[str, Any]:
        blocks = coarse_blocks if coarse else fine_blocks
        return {"stem": stem, "blocks": blocks, "hidden": r"^pre_logits\."}

    return match


def _index_matcher(groups: list[list[int]]) -> Matcher:
    """Matcher for a Sequential trunk from groups of child indices (the first: the stem)."""

    def rx(indices: list[int]) -> str:
        return r"^features\.(?:" + "|".join(str(i) for i in indices) + r")\."

    coarse = [(rx(g), (k,)) for k, g in enumerate(groups[1:])]
    fine = [(rx([i]), (k,)) for k, i in enumerate(i for g in groups[1:] for i in g)]
    return _matcher(rx(groups[0]), coarse, fine)


def _trunk(m: nn.Module, bare: str) -> nn.Sequential:
    trunk = getattr(m, "features", None)
    if not isinstance(trunk, nn.Sequential):
        raise ModelError(f"'{PREFIX}{bare}' has no sequential 'features' trunk to split")
    return trunk


_Split = tuple[nn.Module, nn.Module, list[nn.Module], Matcher]
_RESNET_TRUNK = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


def _split(bare: str, m: nn.Module) -> _Split:
    """(features, post-features activation, head layers, group matcher) of a torchvision net."""
    family = next(f for f in SUPPORTED_FAMILIES if bare.startswith(f))
    if family in ("resnet", "resnext", "wide_resnet"):
        stages = r"^features\.layer(\d+)\."
        matcher = _matcher(r"^features\.(?:conv1|bn1)\.", stages, stages + r"(\d+)\.")
        return _children(m, _RESNET_TRUNK), nn.Identity(), _head_layers(m, "fc"), matcher
    if family == "densenet":
        norm5 = (r"^features\.norm5\.", _MERGE_PREV)
        coarse = [norm5, (r"^features\.(?:denseblock|transition)(\d+)\.", None)]
        fine = [
            norm5,
            (r"^features\.denseblock(\d+)\.denselayer(\d+)\.", None),
            (r"^features\.transition(\d+)\.", _MERGE_PREV),
        ]
        matcher = _matcher(r"^features\.(?:conv0|norm0)\.", coarse, fine)
        return _trunk(m, bare), nn.ReLU(), _head_layers(m, "classifier"), matcher
    if family == "regnet":
        stages = r"^features\.trunk_output\.block(\d+)\."
        matcher = _matcher(r"^features\.stem\.", stages, stages + r"block\d+-(\d+)\.")
        trunk = _children(m, ["stem", "trunk_output"])
        return trunk, nn.Identity(), _head_layers(m, "fc"), matcher
    if family == "shufflenet_v2":
        conv5 = (r"^features\.conv5\.", _MERGE_PREV)
        stages = r"^features\.stage(\d+)\."
        coarse, fine = [conv5, (stages, None)], [conv5, (stages + r"(\d+)\.", None)]
        matcher = _matcher(r"^features\.conv1\.", coarse, fine)
        trunk = _children(m, ["conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"])
        return trunk, nn.Identity(), _head_layers(m, "fc"), matcher
    trunk = _trunk(m, bare)
    matcher = _index_matcher(_sequential_groups(trunk, family))
    return trunk, nn.Identity(), _head_layers(m, "classifier"), matcher


def _pool_area(pool: nn.Module) -> int:
    size = getattr(pool, "output_size", 1)
    h, w = (size, size) if isinstance(size, int) else size
    return int(h or 1) * int(w or 1)


class TorchvisionModel(TimmStyleClassifier):
    """A torchvision classifier split like a timm model; see the module docstring."""

    def __init__(self, name: str, num_classes: int, pretrained: bool, drop_rate: float) -> None:
        super().__init__()
        bare = _check_name(name)
        net = _load_torchvision(bare, pretrained)
        features, post, head_layers, matcher = _split(bare, net)
        pool = getattr(net, "avgpool", None)
        self.architecture = PREFIX + bare
        self.features = features
        self.features_act = post
        self.global_pool = pool if isinstance(pool, nn.Module) else nn.AdaptiveAvgPool2d(1)
        self.pre_logits, final = _split_head(head_layers)
        self.head_hidden_size = final.in_features
        first = next((m for m in self.pre_logits if isinstance(m, nn.Linear)), None)
        self.num_features = (
            first.in_features // _pool_area(self.global_pool) if first else final.in_features
        )
        self.drop_rate = drop_rate
        self.num_classes = num_classes
        self.classifier = nn.Identity()
        self.reset_classifier(num_classes)
        self._matcher = matcher
        self.pretrained_cfg = {**tv_pretrained_cfg(bare), "num_classes": num_classes}
        self.default_cfg = self.pretrained_cfg

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return self._matcher(coarse)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_act(self.features(x))


def create_tv_model(
    name: str, num_classes: int, pretrained: bool = False, drop_rate: float = 0.0
) -> TorchvisionModel:
    """torchvision's ``name`` (``tv/`` prefix optional) with a new ``num_classes`` head.

    ``pretrained`` loads torchvision's default ImageNet weights: from the torch hub cache,
    else downloaded; offline without a cached file it raises :class:`WeightsError` at once.
    """
    return TorchvisionModel(name, num_classes, pretrained, drop_rate)
