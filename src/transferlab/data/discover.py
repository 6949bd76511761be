"""Find the labelled images under a path, whatever the common layout.

Layouts, tried in this order:

- ``csv``: a CSV file with ``path,label`` columns (optional ``split``); paths relative to it.
- ``tiny-imagenet``: ``train/<wnid>/images/*`` plus ``val/images`` + ``val/val_annotations.txt``.
- ``split-folders``: ``train/``, ``val/`` (or ``valid/``, ``validation/``), optional ``test/``,
  each holding class folders.
- ``class-folders``: one folder per class.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from transferlab.data.images import is_image_file
from transferlab.errors import DatasetError

logger = logging.getLogger(__name__)

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str | None = None  # "train" | "val" | "test" when the layout says so
    # Where a layout's own split can take val images, for the error when it has none.
    add_val: str = field(default="", compare=False, repr=False)


@dataclass
class Discovery:
    root: Path
    layout: str
    samples: list[Sample]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples})


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_folder_samples(
    folder: Path, split: str | None, skipped: list[tuple[Path, str]]
) -> list[Sample]:
    samples: list[Sample] = []
    for class_dir in _visible_dirs(folder):
        found = 0
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.parts[-2:]):
                continue
            if is_image_file(path):
                samples.append(Sample(path, class_dir.name, split, _add_val_folder(folder)))
                found += 1
            else:
                skipped.append((path, "not an image file (unknown extension)"))
        if found == 0:
            raise DatasetError(
                f"class folder '{class_dir}' has no images; add images or remove the folder"
            )
    return samples


def _add_val_folder(split_dir: Path) -> str:
    return f"add a val/ folder of class folders next to {split_dir}" if split_dir.name else ""


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _visible_dirs(root):
        split = SPLIT_NAMES.get(d.name.lower())
        if split and split not in found and _visible_dirs(d):
            found[split] = d
    return found


def _discover_csv(csv_path: Path) -> Discovery:
    base = csv_path.parent
    samples: list[Sample] = []
    skipped: list[tuple[Path, str]] = []
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            # Tab-separated when the file says so (.tsv) or its first line holds a tab.
            tabs = csv_path.suffix.lower() == ".tsv" or "\t" in fh.readline()
            fh.seek(0)
            rows = list(csv.reader(fh, delimiter="\t" if tabs else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read CSV {csv_path}: {exc}") from exc
    if not rows:
        raise DatasetError(f"CSV {csv_path} is empty; it needs rows of path,label")
    columns = _header(csv_path, rows[0])
    has_header = columns is not None
    ip, il, isplit = columns or (0, 1, None)
    if has_header:
        rows = rows[1:]
    add_val = (
        f"mark some rows of {csv_path} val in its split column, or leave their split empty "
        "so --val-fraction picks them"
    )
    for n, row in enumerate(rows, start=2 if has_header else 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ip, il):
            raise DatasetError(f"{csv_path} line {n}: expected path,label; got {row!r}")
        path = Path(row[ip].strip())
        path = path if path.is_absolute() else base / path
        label = row[il].strip()
        if not label:
            raise DatasetError(f"{csv_path} line {n}: empty label for {row[ip]!r}")
        split = None
        if isplit is not None and len(row) > isplit and row[isplit].strip():
            split = SPLIT_NAMES.get(row[isplit].strip().lower())
            if split is None:
                raise DatasetError(
                    f"{csv_path} line {n}: split {row[isplit]!r} is not train, val or test"
                )
        if not path.is_file():
            skipped.append((path, "listed in the CSV but not found"))
            continue
        samples.append(Sample(path, label, split, add_val if split else ""))
    return Discovery(base, "csv", samples, skipped)


def _header(csv_path: Path, first: list[str]) -> tuple[int, int, int | None] | None:
    """Column indices of path, label and split (None: no such column); None: no header.

    A first row without path and label columns is data when its first cell names an image
    or an existing file (a CSV without a header), else a header with other names: an error.
    """
    header = [c.strip().lower() for c in first]
    if "path" in header and "label" in header:
        split = header.index("split") if "split" in header else None
        return header.index("path"), header.index("label"), split
    cell = Path(first[0].strip()) if first else Path()
    if header and not is_image_file(cell) and not (csv_path.parent / cell).is_file():
        raise DatasetError(
            f"{csv_path} line 1: columns {', '.join(repr(c) for c in first)}; the header must "
            "name the columns path and label (optional split), or leave the header out"
        )
    return None


def _discover_tiny_imagenet(root: Path) -> Discovery:
    samples: list[Sample] = []
    skipped: list[tuple[Path, str]] = []
    for wnid_dir in _visible_dirs(root / "train"):
        images = wnid_dir / "images"
        found = [p for p in sorted(images.iterdir()) if p.is_file()] if images.is_dir() else []
        samples.extend(Sample(p, wnid_dir.name, "train") for p in found if is_image_file(p))
        skipped.extend(
            (p, "not an image file (unknown extension)")
            for p in found
            if not is_image_file(p) and not p.name.startswith(".")
        )
        if not any(is_image_file(p) for p in found):
            raise DatasetError(
                f"class folder '{images}' has no images; add images or remove '{wnid_dir}'"
            )
    annotations = root / "val" / "val_annotations.txt"
    if annotations.is_file():
        for line in annotations.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                path = root / "val" / "images" / parts[0]
                if path.is_file():
                    samples.append(Sample(path, parts[1], "val"))
                else:
                    skipped.append((path, "listed in val_annotations.txt but not found"))
    return Discovery(root, "tiny-imagenet", samples, skipped)


def is_tiny_imagenet(root: Path) -> bool:
    train = root / "train"
    if not train.is_dir() or not (root / "wnids.txt").is_file():
        return False
    first = next(iter(_visible_dirs(train)), None)
    return first is not None and (first / "images").is_dir()


def discover(path: Path | str) -> Discovery:
    """Find the labelled images at ``path`` and say which layout they are in."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DatasetError(f"data path not found: {root}; check the path")
    if root.is_file():
        if root.suffix.lower() in (".csv", ".tsv", ".txt"):
            return _check(_discover_csv(root))
        raise DatasetError(f"{root} is a file; give a folder of class folders or a path,label CSV")
    if is_tiny_imagenet(root):
        return _check(_discover_tiny_imagenet(root))
    skipped: list[tuple[Path, str]] = []
    split_dirs = _find_split_dirs(root)
    if "train" in split_dirs:
        samples = [
            s
            for split, folder in sorted(split_dirs.items())
            for s in _class_folder_samples(folder, split, skipped)
        ]
        ignored = [d.name for d in _visible_dirs(root) if d not in split_dirs.values()]
        if ignored:
            logger.info("ignoring folders next to the splits: %s", ", ".join(ignored))
        return _check(Discovery(root, "split-folders", samples, skipped))
    if not _visible_dirs(root):
        loose = [p for p in root.iterdir() if is_image_file(p)]
        hint = f" ({len(loose)} loose images found)" if loose else ""
        raise DatasetError(
            f"no class folders in {root}{hint}; put each class's images in a sub-folder "
            "named after the class, or give a path,label CSV"
        )
    return _check(
        Discovery(root, "class-folders", _class_folder_samples(root, None, skipped), skipped)
    )


def _check(found: Discovery) -> Discovery:
    classes = found.classes
    if not found.samples:
        raise DatasetError(f"no images found under {found.root}; check the path and layout")
    if len(classes) < 2:
        raise DatasetError(
            f"only one class ({classes[0]!r}) under {found.root}; a classifier needs at least two"
        )
    return found
