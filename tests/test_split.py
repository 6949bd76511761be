"""Stratified splits: per-class counts, determinism, disjointness, and ``split.csv`` round trips."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from helpers import AWKWARD_NAME
from transferlab.data.discover import Sample
from transferlab.data.split import (
    SplitSamples,
    read_split_csv,
    stratified_split,
    write_split_csv,
)
from transferlab.errors import DatasetError


def make_samples(root: Path, counts: dict[str, int], split: str | None = None) -> list[Sample]:
    """``counts[label]`` empty files under ``root/label`` (splitting never decodes them)."""
    samples = []
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / label / f"{split or 'img'}_{i:03d}.jpg"
            path.touch()
            samples.append(Sample(path, label, split))
    return samples


def counts(split: SplitSamples) -> dict[str, tuple[int, int, int]]:
    """``{label: (train, val, test)}``."""
    c = split.counts()
    return {label: (n["train"], n["val"], n["test"]) for label, n in c.items()}


def paths(samples: list[Sample]) -> list[Path]:
    return [s.path for s in samples]


@pytest.mark.parametrize(
    ("n", "val", "test", "expected"),
    [
        # (train, val, test); each split gets round(n * fraction), halves to even, >= 1.
        (20, 0.15, 0.15, (14, 3, 3)),  # 3.0 -> 3
        (7, 0.15, 0.15, (5, 1, 1)),  # 1.05 -> 1
        (10, 0.15, 0.15, (6, 2, 2)),  # 1.5 -> 2 (even)
        (30, 0.15, 0.15, (22, 4, 4)),  # 4.5 -> 4 (even)
        (14, 0.25, 0.25, (6, 4, 4)),  # 3.5 -> 4 (even)
        (3, 0.15, 0.15, (1, 1, 1)),  # 0.45 -> 0, raised to the minimum of 1
        (10, 0.25, 0.0, (8, 2, 0)),  # 2.5 -> 2 (even); no test split asked for
    ],
)
def test_per_class_counts_follow_the_fractions(
    tmp_path: Path, n: int, val: float, test: float, expected: tuple[int, int, int]
) -> None:
    samples = make_samples(tmp_path, {"a": n, "b": n})
    split = stratified_split(samples, val, test, seed=0)
    assert counts(split) == {"a": expected, "b": expected}


def test_classes_of_different_sizes_are_split_separately(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, {"big": 40, "small": 7})
    split = stratified_split(samples, 0.15, 0.15, seed=3)
    assert counts(split) == {"big": (28, 6, 6), "small": (5, 1, 1)}  # 40 x 0.15 = 6


def test_splits_are_disjoint_and_cover_every_sample(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, {"a": 13, "b": 9, "c": 21})
    split = stratified_split(samples, 0.2, 0.1, seed=5)
    all_paths = paths(split.train) + paths(split.val) + paths(split.test)
    assert len(all_paths) == len(set(all_paths)) == len(samples)
    assert set(all_paths) == {s.path for s in samples}
    assert all(s.split == name for name, group in split.items() for s in group)


def test_deterministic_by_seed(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, {"a": 20, "b": 20})
    first = stratified_split(samples, 0.15, 0.15, seed=7)
    # Input order does not matter either: only the seed does.
    again = stratified_split(list(reversed(samples)), 0.15, 0.15, seed=7)
    other = stratified_split(samples, 0.15, 0.15, seed=8)
    assert first == again
    assert set(paths(first.val)) != set(paths(other.val))
    assert counts(first) == counts(other)


def test_given_splits_are_kept(tmp_path: Path) -> None:
    # train/ + val/ folders: nothing is moved, and no test split is invented.
    train = make_samples(tmp_path, {"a": 5, "b": 5}, split="train")
    val = make_samples(tmp_path, {"a": 2, "b": 2}, split="val")
    split = stratified_split(train + val, 0.15, 0.15, seed=0)
    assert split.train == train
    assert split.val == val
    assert split.test == []


def test_unassigned_samples_fill_only_the_missing_splits(tmp_path: Path) -> None:
    # A CSV whose split column names val for some rows and is blank for the rest.
    val = make_samples(tmp_path / "v", {"a": 2, "b": 2}, split="val")
    free = make_samples(tmp_path / "f", {"a": 10, "b": 10})
    split = stratified_split(val + free, 0.15, 0.2, seed=0)
    assert split.val == val
    assert counts(split) == {"a": (8, 2, 2), "b": (8, 2, 2)}  # test: 10 x 0.2 = 2


def test_too_few_images_for_the_split(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, {"apse": 10, "vault": 2})
    with pytest.raises(DatasetError) as exc:
        stratified_split(samples, 0.15, 0.15, seed=0)
    message = str(exc.value)
    assert "\n" not in message
    assert "class 'vault' has 2 image(s)" in message
    assert "add images or lower --val-fraction / --test-fraction" in message


def test_no_validation_split_is_an_error(tmp_path: Path) -> None:
    samples = make_samples(tmp_path, {"a": 5, "b": 5})
    with pytest.raises(DatasetError, match="val split is empty; use --val-fraction > 0"):
        stratified_split(samples, 0.0, 0.2, seed=0)


def test_write_read_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "data"
    samples = make_samples(root, {"Kölner Dom": 6, "apse, 'east' (1)": 6})
    awkward = samples[0].path.rename(samples[0].path.with_name(AWKWARD_NAME))
    samples[0] = Sample(awkward, samples[0].label)
    split = stratified_split(samples, 0.2, 0.2, seed=1)
    write_split_csv(split, tmp_path / "split.csv", root)

    with (tmp_path / "split.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert Counter(r["split"] for r in rows) == {"train": 8, "val": 2, "test": 2}
    assert not any(Path(r["path"]).is_absolute() for r in rows)  # portable with the data
    assert f"Kölner Dom/{AWKWARD_NAME}" in {r["path"] for r in rows}

    assert read_split_csv(tmp_path / "split.csv", root) == split


def test_split_file_follows_the_data_folder(tmp_path: Path) -> None:
    samples = make_samples(tmp_path / "old", {"a": 6, "b": 6})
    split = stratified_split(samples, 0.2, 0.2, seed=1)
    write_split_csv(split, tmp_path / "split.csv", tmp_path / "old")
    (tmp_path / "old").rename(tmp_path / "new")
    moved = read_split_csv(tmp_path / "split.csv", tmp_path / "new")
    for name, group in split.items():
        assert [s.path.relative_to(tmp_path / "old") for s in group] == [
            s.path.relative_to(tmp_path / "new") for s in getattr(moved, name)
        ]


def test_read_split_csv_errors(tmp_path: Path) -> None:
    samples = make_samples(tmp_path / "data", {"a": 6, "b": 6})
    split = stratified_split(samples, 0.2, 0.2, seed=1)
    good = tmp_path / "split.csv"
    write_split_csv(split, good, tmp_path / "data")

    with pytest.raises(DatasetError, match="split file not found"):
        read_split_csv(tmp_path / "nope.csv", tmp_path / "data")

    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("file,class\na/x.jpg,a\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="must have the header path,label,split"):
        read_split_csv(bad_header, tmp_path / "data")

    with pytest.raises(DatasetError, match=r"12 file.*pass the same DATA folder"):
        read_split_csv(good, tmp_path)  # the wrong root: nothing is found


def test_no_val_among_given_splits_does_not_blame_the_fraction(tmp_path: Path) -> None:
    given = make_samples(tmp_path, {"a": 5, "b": 5}, split="train")
    with pytest.raises(DatasetError) as info:
        stratified_split(given, 0.15, 0.15, seed=0)
    message = str(info.value)
    assert "none is val" in message and "--val-fraction > 0" not in message
