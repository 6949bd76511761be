"""Augmentation presets and batched transforms on real photos."""

from __future__ import annotations

import numpy as np
import pytest
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


# --- every knob's valid range (config.LIMITS) is what the transforms take ---------------


def test_every_preset_is_within_the_config_ranges() -> None:
    from transferlab.config import coerce_value
    from transferlab.data.augment import PRESETS

    for spec in PRESETS.values():
        for name, value in vars(spec).items():
            if name != "preset":
                assert coerce_value(f"augment.{name}", value) == value, (spec.preset, name)


def test_the_edges_of_every_range_run_on_real_photos() -> None:
    from transferlab.config import LIMITS

    def hi(knob: str) -> float:
        limit = LIMITS[f"augment.{knob}"].hi
        assert limit is not None
        return limit

    edges = AugmentConfig(
        preset="none",
        hflip=hi("hflip"),
        scale_min=0.01,  # the range is (0, 1]
        rotation=hi("rotation"),
        color_jitter=hi("color_jitter"),
        randaugment=2,
        randaugment_magnitude=int(hi("randaugment_magnitude")),
    )
    x = _batch()
    out = augment_batch(x, PREP, resolve_augment(edges, "none"), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 64, 64) and torch.isfinite(out).all()


def test_randaugment_magnitude_limit_is_torchvisions() -> None:
    from torchvision.transforms import v2

    from transferlab.config import LIMITS

    top = int(LIMITS["augment.randaugment_magnitude"].hi or 0)
    image = _batch()[0]
    assert v2.RandAugment(num_ops=2, magnitude=top)(image).shape == image.shape
    with pytest.raises(IndexError):  # what magnitude 99 gave before the config checked it
        torch.manual_seed(0)
        for _ in range(20):  # an op with magnitudes must be drawn
            v2.RandAugment(num_ops=2, magnitude=top + 1)(image)


# --- a store kept below the base side (issue 10) -----------------------------------------

PREP224 = Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")  # base 256


def _stored(side: int, prep: Preprocessing = PREP224) -> torch.Tensor:
    arrays = [to_base(load_image(p), prep, side=side) for p in example_photos("apse", 4)]
    return torch.from_numpy(np.stack(arrays))


def test_eval_of_a_store_at_the_base_side_is_exactly_the_centre_crop() -> None:
    x = _stored(256)
    assert torch.equal(eval_batch(x, PREP224), (x[..., 16:240, 16:240].float() - 127.5) / 127.5)


def _levels(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Largest and mean difference of two batches normalised with std 0.5, in 8-bit levels."""
    diff = (a - b).abs() * 127.5
    return float(diff.max()), float(diff.mean())


def test_eval_of_a_smaller_store_gives_the_pixels_of_the_base_side() -> None:
    """64x64 photos stored at 64 instead of upsampled to 256 by Pillow: resized on the fly
    to 256 with Pillow's kernel, the model sees the same centre crop, pixel for pixel (up
    to a level of rounding)."""
    upsampled = eval_batch(_stored(256), PREP224)
    small = eval_batch(_stored(64), PREP224)
    assert small.shape == upsampled.shape == (4, 3, 224, 224)
    worst, mean = _levels(small, upsampled)
    assert worst < 1.01 and mean < 0.01


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_shrinks_a_larger_store_like_pils_antialiased_resize(interpolation: str) -> None:
    """A square above the base side (a smaller ``train_prep`` of progressive resizing):
    shrunk to the base side as Pillow's ``to_base`` would have, then centre-cropped."""
    small = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), interpolation)  # base 36
    out = eval_batch(_stored(64, small), small)
    assert out.shape == (4, 3, 32, 32)
    worst, _ = _levels(out, eval_batch(_stored(36, small), small))
    assert worst < 1.01


def test_training_crops_of_a_smaller_store_cover_the_same_view() -> None:
    gen = torch.Generator()
    spec = resolve_augment(AugmentConfig(preset="light", hflip=0.0), "light")
    a = augment_batch(_stored(256), PREP224, spec, gen.manual_seed(3))
    b = augment_batch(_stored(64), PREP224, spec, gen.manual_seed(3))
    assert a.shape == b.shape == (4, 3, 224, 224)
    assert float((a - b).abs().mean()) * 127.5 < 3.0


def test_every_tta_view_of_a_smaller_store_is_the_view_of_the_base_side() -> None:
    from transferlab.tta import views

    full = list(views(_stored(256), PREP224, "ten-crop"))
    small = list(views(_stored(64), PREP224, "ten-crop"))
    assert len(small) == 10 and all(v.shape == (4, 3, 224, 224) for v in small)
    for a, b in zip(full, small, strict=True):
        assert _levels(a, b)[0] < 1.01
