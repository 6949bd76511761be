"""``discover``: every supported layout, awkward file names, and each layout error as one
actionable line."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import AWKWARD_NAME, CLASSES, copy_photos, make_image
from transferlab.data.discover import Discovery, discover
from transferlab.errors import DatasetError


def by_split(found: Discovery) -> Counter[tuple[str | None, str]]:
    return Counter((s.split, s.label) for s in found.samples)


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_class_folders(class_folders: Callable[..., Path]) -> None:
    root = class_folders(per_class=3)
    found = discover(root)
    assert found.layout == "class-folders"
    assert found.classes == sorted(CLASSES)
    assert by_split(found) == {(None, c): 3 for c in CLASSES}
    assert all(s.path.is_file() and s.path.parent.name == s.label for s in found.samples)
    assert found.skipped == []


def test_class_folders_accepts_a_str_and_ignores_hidden_files(
    class_folders: Callable[..., Path],
) -> None:
    root = class_folders(per_class=2)
    make_image(root / "apse" / ".thumb.jpg")
    (root / ".cache").mkdir()
    make_image(root / ".cache" / "x.jpg")
    found = discover(str(root))
    assert found.classes == sorted(CLASSES)
    assert len(found.samples) == 6


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_split_folders(tmp_path: Path, val_name: str) -> None:
    for label in CLASSES[:2]:
        copy_photos(label, tmp_path / "train" / label, 3)
        copy_photos(label, tmp_path / val_name / label, 1, offset=3)
        copy_photos(label, tmp_path / "test" / label, 1, offset=4)
    found = discover(tmp_path)
    assert found.layout == "split-folders"
    assert by_split(found) == {
        (split, label): n
        for label in CLASSES[:2]
        for split, n in (("train", 3), ("val", 1), ("test", 1))
    }


def test_split_folders_without_test(tmp_path: Path) -> None:
    for label in CLASSES[:2]:
        copy_photos(label, tmp_path / "train" / label, 2)
        copy_photos(label, tmp_path / "valid" / label, 1, offset=2)
    found = discover(tmp_path)
    assert {s.split for s in found.samples} == {"train", "val"}


def test_csv_with_header_and_split_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = copy_photos("apse", tmp_path / "labels" / "img", 2) + copy_photos(
        "altar", tmp_path / "labels" / "img", 2
    )
    rows = [["label", "path", "split"]]  # columns found by name, in any order
    rows += [["apse", f"img/{images[0].name}", "train"], ["apse", f"img/{images[1].name}", "valid"]]
    rows += [["altar", f"img/{images[2].name}", "Train"], ["altar", f"img/{images[3].name}", ""]]
    csv_path = write_csv(tmp_path / "labels" / "labels.csv", rows)
    monkeypatch.chdir(tmp_path)  # paths are relative to the CSV, not to the working directory
    found = discover(csv_path)
    assert found.layout == "csv"
    assert [(s.path, s.label, s.split) for s in found.samples] == [
        (images[0], "apse", "train"),
        (images[1], "apse", "val"),
        (images[2], "altar", "train"),
        (images[3], "altar", None),
    ]


def test_csv_without_header(tmp_path: Path) -> None:
    images = copy_photos("apse", tmp_path / "a", 2) + copy_photos("altar", tmp_path / "b", 2)
    rows = [[f"{p.parent.name}/{p.name}", label] for p, label in zip(images, "xxyy", strict=True)]
    found = discover(write_csv(tmp_path / "list.csv", rows))
    assert [(s.path, s.label, s.split) for s in found.samples] == [
        (p, label, None) for p, label in zip(images, "xxyy", strict=True)
    ]


@pytest.mark.parametrize("name", ["labels.tsv", "labels.txt"])
def test_tab_separated_labels(tmp_path: Path, name: str) -> None:
    images = copy_photos("apse", tmp_path, 2) + copy_photos("altar", tmp_path, 2)
    lines = ["path\tlabel", *[f"{p.name}\t{c}" for p, c in zip(images, "aabb", strict=True)]]
    # With a byte-order mark, as spreadsheet programs export it.
    (tmp_path / name).write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    found = discover(tmp_path / name)
    assert [(s.path, s.label) for s in found.samples] == list(zip(images, "aabb", strict=True))


def test_csv_missing_file_is_skipped_with_reason(tmp_path: Path) -> None:
    images = copy_photos("apse", tmp_path, 2) + copy_photos("altar", tmp_path, 2)
    rows = [["path", "label"], *[[p.name, label] for p, label in zip(images, "aabb", strict=True)]]
    found = discover(write_csv(tmp_path / "labels.csv", [*rows, ["gone.jpg", "b"]]))
    assert len(found.samples) == 4
    assert found.skipped == [(tmp_path / "gone.jpg", "listed in the CSV but not found")]


def test_csv_with_bad_split_value(tmp_path: Path) -> None:
    images = copy_photos("apse", tmp_path, 2)
    rows = [
        ["path", "label", "split"],
        [images[0].name, "a", "train"],
        [images[1].name, "b", "dev"],
    ]
    with pytest.raises(DatasetError, match=r"line 3: split 'dev' is not train, val or test"):
        discover(write_csv(tmp_path / "labels.csv", rows))


WNIDS = ["n01443537", "n01629819"]


def tiny_imagenet(root: Path) -> Path:
    """Tiny-ImageNet's layout: 3 training and 1 validation image per wnid, an unlabelled test."""
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n", encoding="utf-8")
    for i, wnid in enumerate(WNIDS):
        for k in range(3):
            make_image(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(
            f"{wnid}_0.JPEG\t0\t0\t10\t10\n", encoding="utf-8"
        )
        make_image(root / "val" / "images" / f"val_{i}.JPEG")
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10\n" for i, w in enumerate(WNIDS)),
        encoding="utf-8",
    )
    make_image(root / "test" / "images" / "test_0.JPEG")
    return root


def test_tiny_imagenet(tmp_path: Path) -> None:
    found = discover(tiny_imagenet(tmp_path))
    assert found.layout == "tiny-imagenet"
    assert found.classes == WNIDS
    assert by_split(found) == {
        ("train", WNIDS[0]): 3,
        ("train", WNIDS[1]): 3,
        ("val", WNIDS[0]): 1,
        ("val", WNIDS[1]): 1,
    }
    val = {s.path.name: s.label for s in found.samples if s.split == "val"}
    assert val == {"val_0.JPEG": WNIDS[0], "val_1.JPEG": WNIDS[1]}
    assert found.skipped == []


def test_tiny_imagenet_reports_non_images_and_missing_val_files(tmp_path: Path) -> None:
    root = tiny_imagenet(tmp_path)
    readme = root / "train" / WNIDS[0] / "images" / "README.txt"
    readme.write_text("crops of ImageNet", encoding="utf-8")
    (root / "val" / "images" / "val_1.JPEG").unlink()
    found = discover(root)
    assert found.skipped == [
        (readme, "not an image file (unknown extension)"),
        (root / "val" / "images" / "val_1.JPEG", "listed in val_annotations.txt but not found"),
    ]


def test_tiny_imagenet_class_without_images(tmp_path: Path) -> None:
    root = tiny_imagenet(tmp_path)
    (root / "train" / "n09999999").mkdir()
    with pytest.raises(DatasetError) as exc:
        discover(root)
    assert_one_line_error(exc, "n09999999", "has no images", "add images or remove")


def test_awkward_names_in_folders_and_csv(tmp_path: Path) -> None:
    # Class folders and files with spaces, quotes, parentheses, commas and non-ASCII.
    classes = ["Kölner Dom", "apse (outer), 'east'"]
    paths = []
    for label in classes:
        photo = copy_photos("apse", tmp_path / "folders" / label, 1)[0]
        paths.append(photo.rename(photo.with_name(AWKWARD_NAME)))
        copy_photos("altar", tmp_path / "folders" / label, 1)
    found = discover(tmp_path / "folders")
    assert found.classes == sorted(classes)
    assert {s.path for s in found.samples} >= set(paths)

    rows = [
        ["path", "label"],
        *[[str(s.path.relative_to(tmp_path)), s.label] for s in found.samples],
    ]
    from_csv = discover(write_csv(tmp_path / "labels.csv", rows))
    assert [(s.path, s.label) for s in from_csv.samples] == [
        (s.path, s.label) for s in found.samples
    ]


def test_non_image_file_is_skipped_and_reported(class_folders: Callable[..., Path]) -> None:
    root = class_folders(per_class=2)
    notes = root / "apse" / "notes.txt"
    notes.write_text("shot on a rainy day", encoding="utf-8")
    found = discover(root)
    assert notes not in {s.path for s in found.samples}
    assert found.skipped == [(notes, "not an image file (unknown extension)")]


def assert_one_line_error(exc: pytest.ExceptionInfo[DatasetError], *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_empty_class_folder(class_folders: Callable[..., Path]) -> None:
    root = class_folders(per_class=2)
    (root / "vault").mkdir()
    with pytest.raises(DatasetError) as exc:
        discover(root)
    assert_one_line_error(exc, "vault", "has no images", "add images or remove the folder")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as exc:
        discover(tmp_path / "nowhere")
    assert_one_line_error(exc, "not found", "nowhere", "check the path")


def test_no_class_folders(tmp_path: Path) -> None:
    copy_photos("apse", tmp_path, 3)
    with pytest.raises(DatasetError) as exc:
        discover(tmp_path)
    assert_one_line_error(exc, "no class folders", "3 loose images", "sub-folder named after")


def test_single_class(class_folders: Callable[..., Path]) -> None:
    root = class_folders(per_class=3, classes=("apse",))
    with pytest.raises(DatasetError) as exc:
        discover(root)
    assert_one_line_error(exc, "only one class", "'apse'", "at least two")


def test_a_plain_file_is_not_a_dataset(tmp_path: Path) -> None:
    photo = copy_photos("apse", tmp_path, 1)[0]
    with pytest.raises(DatasetError) as exc:
        discover(photo)
    assert_one_line_error(exc, "is a file", "path,label CSV")


@pytest.mark.parametrize("header", [["file", "class"], ["filename", "label", "split"]])
def test_csv_header_with_other_column_names_says_which_are_expected(
    tmp_path: Path, header: list[str]
) -> None:
    images = copy_photos("apse", tmp_path, 2) + copy_photos("altar", tmp_path, 2)
    body = [[p.name, c, "train"][: len(header)] for p, c in zip(images, "aabb", strict=True)]
    rows = [header, *body]
    with pytest.raises(DatasetError) as info:
        discover(write_csv(tmp_path / "labels.csv", rows))
    message = str(info.value)
    assert "\n" not in message
    assert "labels.csv" in message and repr(header[0]) in message
    assert "path" in message and "label" in message


def test_csv_split_column_without_val_rows_says_how_to_add_them(tmp_path: Path) -> None:
    from transferlab.data.split import stratified_split

    images = copy_photos("apse", tmp_path, 4) + copy_photos("altar", tmp_path, 4)
    rows = [["path", "label", "split"]]
    rows += [
        [p.name, c, "test" if i % 4 == 0 else "train"]
        for i, (p, c) in enumerate(zip(images, "aaaabbbb", strict=True))
    ]
    found = discover(write_csv(tmp_path / "labels.csv", rows))  # evaluation may use it as is
    with pytest.raises(DatasetError) as info:
        stratified_split(found.samples, 0.15, 0.15, seed=0)
    message = str(info.value)
    assert "labels.csv" in message and "split column" in message
    assert "val/ folder" not in message and "--val-fraction > 0" not in message


def test_split_folders_without_val_say_to_add_a_val_folder(tmp_path: Path) -> None:
    from transferlab.data.split import stratified_split

    for label in CLASSES[:2]:
        copy_photos(label, tmp_path / "train" / label, 3)
        copy_photos(label, tmp_path / "test" / label, 1, offset=3)
    with pytest.raises(DatasetError, match=r"add a val/ folder"):
        stratified_split(discover(tmp_path).samples, 0.15, 0.15, seed=0)
