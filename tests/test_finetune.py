"""Strategies do what they say: frozen tensors stay bit-identical, only named groups train."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from transferlab.config import from_dict
from transferlab.finetune import Phase, apply_phase, plan_phases, set_train_mode
from transferlab.models.groups import layer_groups, trainable_for_top_n
from transferlab.models.registry import create_model
from transferlab.pipeline import train_run

FAST = {"model.image_size": 64, "train.batch_size": 8}


def _run(data: Path, out: Path, **overrides: object) -> dict[str, torch.Tensor]:
    cfg = from_dict({}, {"data.path": str(data), **FAST, **overrides})
    train_run(cfg, out)
    return load_file(str(out / "model" / "model.safetensors"))


def _initial(num_classes: int) -> dict[str, torch.Tensor]:
    model, _ = create_model("tf_efficientnet_lite0", num_classes, "imagenet", 0.2)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.slow
def test_linear_probe_leaves_backbone_and_bn_stats_bit_identical(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    after = _run(
        class_folders(8), tmp_path / "run", **{"train.strategy": "linear-probe", "train.epochs": 2}
    )
    changed = _changed(_initial(3), after)
    assert changed == {"classifier.weight", "classifier.bias"}


@pytest.mark.slow
def test_top_n_changes_only_the_named_groups(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    after = _run(
        class_folders(8),
        tmp_path / "run",
        **{"train.strategy": "top-n", "train.trainable_groups": 2, "train.epochs": 1},
    )
    model, _ = create_model("tf_efficientnet_lite0", 3, "imagenet", 0.2)
    allowed_params = trainable_for_top_n(model, 2)
    # BN running statistics belong to their module: allowed where its weight trains.
    allowed = {k for k in after if k.rsplit(".", 1)[0] + ".weight" in allowed_params}
    changed = _changed(_initial(3), after)
    assert changed, "nothing trained"
    assert changed <= allowed | allowed_params
    top_groups = layer_groups(model)[-3:-1]  # the two groups below the head
    assert all(any(n in changed for n in group) for group in top_groups)


@pytest.mark.slow
def test_bn_frozen_keeps_statistics_and_affine_while_convs_train(
    class_folders: Callable[..., Path], tmp_path: Path
) -> None:
    after = _run(
        class_folders(8),
        tmp_path / "run",
        **{"train.strategy": "full", "train.bn": "frozen", "train.epochs": 1},
    )
    changed = _changed(_initial(3), after)
    bn_keys = {k for k in after if ".bn" in k or k.startswith("bn")}
    assert not changed & bn_keys
    assert any(k.endswith("conv_pw.weight") for k in changed)


def test_two_stage_plans_a_frozen_cached_head_then_an_unfreeze() -> None:
    cfg = from_dict(
        {},
        {
            "data.path": "x",
            "train.head_epochs": 3,
            "train.epochs": 2,
            "train.lr": 1e-3,
            "train.backbone_lr_mult": 0.1,
        },
    )
    head, finetune = plan_phases(cfg.train, augment=True)
    assert (head.trainable, head.augment, head.epochs) == ("head", False, 3)
    assert (finetune.trainable, finetune.epochs) == ("all", 2)
    assert finetune.backbone_lr == pytest.approx(1e-4)


def test_default_unfreeze_keeps_backbone_batchnorm_in_inference_mode() -> None:
    """The unfreeze shock (issue 12): BatchNorm re-estimating its statistics on the new
    data at the unfreeze undid the head's epochs; the default keeps it in inference mode."""
    cfg = from_dict({}, {"data.path": "x"})
    _, finetune = plan_phases(cfg.train, augment=True)
    model, _ = create_model("tf_efficientnet_lite0", 3, "none")
    apply_phase(model, finetune)
    set_train_mode(model, finetune)
    head = set(model.get_classifier().modules())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m not in head]
    assert norms and not any(m.training for m in norms)
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    assert any(p.requires_grad for n, p in model.named_parameters() if "conv" in n)


@pytest.mark.parametrize(("given", "expected"), [({}, "train"), ({"train.bn": "frozen"}, "frozen")])
def test_scratch_trains_batchnorm_unless_told_otherwise(
    given: dict[str, str], expected: str
) -> None:
    cfg = from_dict({}, {"data.path": "x", "train.strategy": "scratch", **given})
    (phase,) = plan_phases(cfg.train, augment=True)
    assert phase.bn == cfg.train.bn == expected


def test_bn_layers_of_frozen_parts_stay_in_eval_mode() -> None:
    model, _ = create_model("tf_efficientnet_lite0", 3, "none")
    phase = Phase("head", 1, "head", 1e-3, 0.0, augment=True, bn="train")
    apply_phase(model, phase)
    set_train_mode(model, phase)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.get_classifier().training


@pytest.mark.parametrize("name", ["alexnet", "convnet1", "tv/alexnet", "resnet18"])
def test_mlp_head_replaces_the_classifier_whatever_sits_before_it(name: str) -> None:
    from transferlab.models.heads import HeadSpec

    model, _ = create_model(name, 3, "none", 0.0, HeadSpec("mlp", (32, 16), 0.5, True))
    head = model.get_classifier()
    assert isinstance(head, torch.nn.Sequential)
    widths = [m.out_features for m in head if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 16, 3]
    model.eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
