"""Test-time augmentation: which views are cut, and that their softmax is averaged."""

from __future__ import annotations

import pytest
import torch

from transferlab.data.transforms import Preprocessing, eval_batch
from transferlab.errors import ConfigError
from transferlab.tta import NUM_VIEWS, TTA_MODES, check_mode, tta_probabilities, views

PREP = Preprocessing(input_size=7, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))


def _ramp(n: int = 2, base: int = 8) -> torch.Tensor:
    """uint8 images whose pixel value says where it is: 10 * row + column."""
    grid = (torch.arange(base)[:, None] * 10 + torch.arange(base)[None, :]).to(torch.uint8)
    return grid.expand(n, 3, base, base).clone()


@pytest.mark.parametrize("mode", TTA_MODES)
def test_each_mode_cuts_its_number_of_views_at_the_input_size(mode: str) -> None:
    cut = list(views(_ramp(), PREP, mode))
    assert len(cut) == NUM_VIEWS[mode]
    assert all(v.shape == (2, 3, 7, 7) and v.dtype == torch.float32 for v in cut)


def test_none_is_exactly_the_evaluation_transform() -> None:
    x = _ramp()
    (only,) = views(x, PREP, "none")
    assert torch.equal(only, eval_batch(x, PREP))


def test_five_crop_takes_the_four_corners_and_the_centre() -> None:
    # std = 1/255 and mean 0: the normalised value is the pixel value itself.
    top_left = [int(v[0, 0, 0, 0]) for v in views(_ramp(), PREP, "five-crop")]
    assert top_left == [0, 1, 10, 11, 0]  # (0,0) (0,1) (1,0) (1,1) then centre (0,0) of 8->7


def test_flip_views_are_mirror_images() -> None:
    plain, mirrored = views(_ramp(), PREP, "flip")
    assert torch.equal(mirrored, plain.flip(-1))
    ten = list(views(_ramp(), PREP, "ten-crop"))
    assert all(torch.equal(ten[i + 1], ten[i].flip(-1)) for i in range(0, 10, 2))


def test_probabilities_are_averaged_over_views() -> None:
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        # Probability of class 0 = the top-left value of the view / 100.
        calls.append(x)
        p0 = x[:, 0, 0, 0] / 100
        return torch.stack([p0, 1 - p0], dim=1)

    probs = tta_probabilities(forward, _ramp(), PREP, "five-crop")
    assert len(calls) == 5
    assert torch.allclose(probs[:, 0], torch.full((2,), (0 + 1 + 10 + 11 + 0) / 5 / 100))
    assert torch.allclose(probs.sum(1), torch.ones(2))


def test_unknown_mode_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="--tta 'twelve-crop' is not one of: none, flip"):
        check_mode("twelve-crop")
