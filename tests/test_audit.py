"""``transferlab audit`` and leak-free splits on real tiny photos made by each test: an exact
copy, a resized re-encoded copy (perceptual hash), a cropped copy (backbone features), a
copy under another label (conflict), a copy across train/test (leakage) and a mislabelled
photo among clearly separable classes (cleanlab)."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import copy_photos, example_photos
from transferlab.data.discover import Sample
from transferlab.data.split import stratified_split

runner = CliRunner()


def _resized_png(src: Path, dest: Path, scale: float = 0.6) -> Path:
    """The photo smaller and re-encoded as PNG: other bytes, the same picture."""
    img = Image.open(src).convert("RGB")
    img.resize((int(img.width * scale), int(img.height * scale))).save(dest)
    return dest


def _cropped(src: Path, dest: Path, keep: float = 0.85) -> Path:
    """The centre ``keep`` of the photo, re-encoded: a copy hashes miss."""
    img = Image.open(src).convert("RGB")
    w, h = img.size
    box = (
        int(w * (1 - keep) / 2),
        int(h * (1 - keep) / 2),
        int(w * (1 + keep) / 2),
        int(h * (1 + keep) / 2),
    )
    img.crop(box).save(dest, quality=90)
    return dest


# --- leak-free splits ------------------------------------------------------------------------


def _grouped_samples(root: Path) -> tuple[list[Sample], list[list[Path]]]:
    """Two classes of 20 empty files each; per class, groups of 4, 3 and 2 copies."""
    samples, groups = [], []
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        paths = [root / label / f"{i:02d}.jpg" for i in range(20)]
        for p in paths:
            p.touch()
        samples += [Sample(p, label) for p in paths]
        groups += [paths[0:4], paths[7:10], paths[13:15]]
    return samples, groups


@pytest.mark.parametrize("seed", range(8))
def test_copies_never_straddle_splits_and_classes_stay_stratified(
    tmp_path: Path, seed: int
) -> None:
    samples, groups = _grouped_samples(tmp_path)
    split = stratified_split(samples, 0.2, 0.2, seed, groups=groups)
    where = {s.path: name for name, ss in split.items() for s in ss}
    for group in groups:
        assert len({where[p] for p in group}) == 1, f"group split across {group}"
    for label in ("a", "b"):
        n = Counter(where[s.path] for s in samples if s.label == label)
        # round(20 * 0.2) = 4 per held-out split; a group of up to 4 may shift one or two.
        assert sum(n.values()) == 20
        assert 2 <= n["val"] <= 4 and 2 <= n["test"] <= 4, n


def test_without_copies_the_split_is_what_it_was(tmp_path: Path) -> None:
    samples, _ = _grouped_samples(tmp_path)
    plain = stratified_split(samples, 0.2, 0.2, 3)
    singletons = stratified_split(samples, 0.2, 0.2, 3, groups=[[s.path] for s in samples])
    assert plain == singletons


def test_a_copy_of_a_given_val_image_joins_it_in_val(tmp_path: Path) -> None:
    samples, _ = _grouped_samples(tmp_path)
    given = Sample(samples[0].path, "a", "val")
    free = [given, *samples[1:]]
    split = stratified_split(free, 0.0, 0.2, 1, groups=[[samples[0].path, samples[5].path]])
    assert samples[5].path in {s.path for s in split.val}
