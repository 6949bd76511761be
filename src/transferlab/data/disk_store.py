"""Decoded images on disk: one raw uint8 file per set of images, memory-mapped for reading.

A set whose decoded pixels do not fit ``data.memory_cache_mb`` is decoded once into a file
under the image cache folder and read back through a memory map (the kernel's page cache
holds what fits; the process itself holds one batch). Decoding dominates training on small
images (FFCV's finding), so doing it once matters more than the layout.

The file name is a content key (:func:`store_key`): the format, the stored side, the
interpolation and the SHA-256 of every image file in order. A changed, added or removed
image gives a new key and a new store; the same images give the same key in every run and
every process of a machine, so ranks share one store. Building happens under an exclusive
``fcntl`` lock on ``<key>.lock``, into temporary names renamed into place
(:func:`transferlab.files.replace_when_done`), pixels first and ``<key>.json`` last: a
store with its ``.json`` is complete, and a second process waits for the first one's build
instead of building it again.

Old stores are not deleted; the folder is a cache and may be removed at any time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from transferlab.data.transforms import Preprocessing
from transferlab.files import replace_when_done

logger = logging.getLogger(__name__)

FORMAT = "transferlab-image-store-1"
# Where stores live: this variable's folder, else <user cache dir>/transferlab/images.
CACHE_ENV = "TRANSFERLAB_IMAGE_CACHE"


def cache_root() -> Path:
    """The image cache folder: ``$TRANSFERLAB_IMAGE_CACHE``, else under ``$XDG_CACHE_HOME``
    (default ``~/.cache``): shared by every process of the user on this machine."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "transferlab" / "images"


def _file_digest(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:  # unreadable: the decode skips it; its reason keys the store
        return f"unreadable {type(exc).__name__}"


def store_key(paths: Sequence[Path], prep: Preprocessing, side: int) -> str:
    """Content key of the decoded images: what changes a stored pixel, nothing else (the
    model's mean, std and input size apply later, to batches)."""
    h = hashlib.sha256(f"{FORMAT}\n{side}\n{prep.interpolation}\n{len(paths)}".encode())
    for path in paths:
        h.update(_file_digest(path).encode())
    return h.hexdigest()[:32]


@dataclass
class DiskStore:
    """An opened store: the images that decoded, in order, and why the others did not."""

    pixels: torch.Tensor  # (good, 3, side, side) uint8, memory-mapped read-only-in-effect
    skipped: dict[int, str]  # index into the paths -> the reason it could not be decoded
    path: Path


# ``write`` decodes every image into the open file, in order, and returns the reasons
# of the ones it skipped (by index).
Writer = Callable[[BinaryIO], dict[int, str]]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only; imported here so that the module loads anywhere

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _open(data: Path, meta_path: Path, side: int) -> DiskStore | None:
    """The store at ``data`` if it is complete, else None."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    good = int(meta.get("good", -1))
    row = 3 * side * side
    if meta.get("format") != FORMAT or not data.is_file() or data.stat().st_size != good * row:
        return None
    skipped = {int(i): str(why) for i, why in meta["skipped"].items()}
    if good == 0:
        return DiskStore(torch.empty((0, 3, side, side), dtype=torch.uint8), skipped, data)
    # Copy-on-write mapping: writable for torch (no warning), yet nothing reaches the file.
    mapped = np.memmap(data, dtype=np.uint8, mode="c", shape=(good, 3, side, side))
    return DiskStore(torch.from_numpy(mapped), skipped, data)


def _build(data: Path, meta_path: Path, count: int, side: int, write: Writer) -> None:
    skipped: dict[int, str] = {}

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            skipped.update(write(fh))

    replace_when_done(data, fill)
    meta = {"format": FORMAT, "side": side, "good": count - len(skipped), "skipped": skipped}
    replace_when_done(meta_path, lambda tmp: tmp.write_text(json.dumps(meta), encoding="utf-8"))


def open_or_build(
    paths: Sequence[Path],
    prep: Preprocessing,
    side: int,
    write: Writer,
    root: Path | None = None,
) -> DiskStore:
    """The store of ``paths`` at ``side``: opened if built already (by any process), else
    built with ``write`` while holding its lock, so that concurrent callers build it once."""
    root = root or cache_root()
    key = store_key(paths, prep, side)
    data, meta_path = root / f"{key}.u8", root / f"{key}.json"
    found = _open(data, meta_path, side)
    if found is None:
        with _locked(root / f"{key}.lock"):
            found = _open(data, meta_path, side)  # another process may have just built it
            if found is None:
                _build(data, meta_path, len(paths), side, write)
                found = _open(data, meta_path, side)
                assert found is not None  # just written, complete
                logger.info("image store: decoded %d images into %s", len(paths), data)
                return found
    logger.info("image store: %d decoded images from %s", len(found.pixels), data)
    return found
