"""Augmentation presets and batched transforms on real photos."""

from __future__ import annotations

import numpy as np
import torch

from helpers import example_photos
from transferlab.config import AugmentConfig
from transferlab.data.augment import augment_batch, mix_batch, resolve_augment
from transferlab.data.images import load_image
from transferlab.data.transforms import Preprocessing, eval_batch, to_base

PREP = Preprocessing(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _batch() -> torch.Tensor:
    arrays = [to_base(load_image(p), PREP) for p in example_photos("altar", 6)]
    return torch.from_numpy(np.stack(arrays))


def test_presets_fill_every_knob_and_hand_set_knobs_win() -> None:
    strong = resolve_augment(AugmentConfig(preset="strong", rotation=5.0), "light")
    assert strong.rotation == 5.0 and strong.mixup > 0 and strong.randaugment > 0
    assert resolve_augment(AugmentConfig(), "none").enabled is False
    assert resolve_augment(AugmentConfig(), "light").hflip == 0.5


def test_no_augmentation_is_exactly_the_eval_transform() -> None:
    x = _batch()
    spec = resolve_augment(AugmentConfig(preset="none"), "none")
    assert torch.equal(augment_batch(x, PREP, spec, torch.Generator()), eval_batch(x, PREP))


def test_strong_augmentation_is_seeded_and_changes_images() -> None:
    x = _batch()
    spec = resolve_augment(AugmentConfig(preset="strong"), "light")
    torch.manual_seed(0)
    a = augment_batch(x, PREP, spec, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    b = augment_batch(x, PREP, spec, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 64, 64) and torch.equal(a, b)
    assert not torch.allclose(a, eval_batch(x, PREP))


def test_mixup_and_cutmix_give_soft_targets_that_sum_to_one() -> None:
    x = eval_batch(_batch(), PREP)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        spec = resolve_augment(AugmentConfig(preset="light", mixup=mixup, cutmix=cutmix), "light")
        mixed, targets = mix_batch(x, y, 3, spec, torch.Generator().manual_seed(0))
        assert mixed.shape == x.shape and targets.shape == (6, 3)
        assert torch.allclose(targets.sum(1), torch.ones(6))
        assert (targets.max(1).values < 1).any()
