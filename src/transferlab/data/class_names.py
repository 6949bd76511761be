"""Display names for class folders: folder names stay the keys, people read the names.

Two files the seed datasets ship are understood:

- Tiny ImageNet's ``words.txt``: ``wnid<TAB>name, synonym, ...`` lines (82,115 of them, most
  for classes the data does not have). Used automatically when the data is in the Tiny
  ImageNet layout and the file sits at its root.
- The flowers data set's ``cat_to_name.json``: ``{"21": "fire lily", ...}``, folder name ->
  display name.

Any JSON object of strings, or any text file of ``key<TAB or space>name`` lines, works the
same way (``--class-names FILE``). The files are only read: nothing is written into the
data folder.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from transferlab.data.discover import is_tiny_imagenet
from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)

WORDS_FILE = "words.txt"  # Tiny ImageNet's wnid -> name list, at the data root
OPTION = "--class-names (data.class_names)"


def _read_json(path: Path, text: str) -> dict[str, str]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{OPTION} {path}: not valid JSON (line {exc.lineno}: {exc.msg}); give a JSON object "
            'of folder name -> display name, e.g. {"21": "fire lily"}'
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{OPTION} {path}: the JSON is a {type(raw).__name__}, not an object of "
            "folder name -> display name"
        )
    bad = next((k for k, v in raw.items() if not isinstance(v, str) or not v.strip()), None)
    if bad is not None:
        raise ConfigError(
            f"{OPTION} {path}: the name of {bad!r} is {raw[bad]!r}; every display name must be "
            "a non-empty string"
        )
    return {str(k).strip(): v.strip() for k, v in raw.items()}


def _read_lines(path: Path, text: str) -> dict[str, str]:
    """``key<TAB>name`` (words.txt) or ``key name`` lines; of ``name, synonym, ...`` the
    first synonym, since a display name is a label, not a dictionary entry."""
    names: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t", 1) if "\t" in line else line.strip().split(None, 1)
        if len(parts) < 2 or not parts[1].split(",")[0].strip():
            raise ConfigError(
                f"{OPTION} {path} line {n}: {line.strip()!r} is not 'folder<TAB>name'; "
                "give one folder name and its display name per line, or a JSON object"
            )
        names[parts[0].strip()] = parts[1].split(",")[0].strip()
    return names


def read_class_names(path: Path | str) -> dict[str, str]:
    """Folder name -> display name from a JSON object or a ``key<TAB>name`` text file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{OPTION} {path}: file not found; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{OPTION} {path}: cannot read it ({exc})") from exc
    if not text.strip():
        raise ConfigError(f"{OPTION} {path}: the file is empty; it names no classes")
    as_json = path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "[")
    names = _read_json(path, text) if as_json else _read_lines(path, text)
    if not names:
        raise ConfigError(f"{OPTION} {path}: the file names no classes")
    return names


def display_names(
    classes: Sequence[str], names: Mapping[str, str], source: Path | str
) -> list[str]:
    """Each class's display name in ``classes`` order (the folder name where the file has
    none); a name two classes share gets its folder name added, so none is ambiguous."""
    known = [c for c in classes if c in names]
    if not known:
        raise ConfigError(
            f"{OPTION} {source} names none of the {len(classes)} classes "
            f"(e.g. {classes[0]!r}); give the file that belongs to this data"
        )
    if len(known) < len(classes):
        missing = [c for c in classes if c not in names]
        logger.warning(
            "%s has no name for %d class(es) (%s); they keep their folder names",
            source,
            len(missing),
            ", ".join(missing[:5]),
        )
    shown = [names.get(c, c) for c in classes]
    counts = Counter(shown)
    return [
        f"{s} ({c})" if counts[s] > 1 and s != c else s for s, c in zip(shown, classes, strict=True)
    ]


def resolve_display_names(
    classes: Sequence[str], data_root: Path, class_names_file: str | None
) -> list[str] | None:
    """Display names for a run's classes: from ``class_names_file``, else from Tiny
    ImageNet's ``words.txt`` when the data is in that layout; None: the folder names."""
    if class_names_file:
        source = Path(class_names_file).expanduser()
    elif is_tiny_imagenet(data_root) and (data_root / WORDS_FILE).is_file():
        source = data_root / WORDS_FILE
        logger.info("class display names from %s", source)
    else:
        return None
    return display_names(classes, read_class_names(source), source)
