"""What one read of each file tells: its content digest, its perceptual hash (the
``imagehash`` package) and the facts the audit counts (size, mode, EXIF rotation).

The content digest is :mod:`transferlab.provenance`'s, so digests stored with a run match
those an export carries.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageStat

from transferlab.data.images import ImageReadError, load_image_bytes
from transferlab.provenance import bytes_digest

EXIF_ORIENTATION = 0x0112
FLAT_STDDEV = 2.0  # grey levels
PHASH_DISTANCE = 4  # bits of 64: resized and re-encoded copies are 0-2 apart, others ~30


@dataclass(frozen=True)
class FileFacts:
    """One file as the audit sees it; ``error`` is set (and the rest empty) when unreadable."""

    digest: bytes = b""
    phash: int = 0  # 64-bit perceptual hash
    width: int = 0
    height: int = 0
    mode: str = ""  # PIL's mode of the file as stored (L, CMYK, RGBA, I;16, ...)
    rotated: bool = False  # an EXIF orientation other than "as stored"
    # Nearly one colour: every such image has about the same perceptual hash, so it is
    # matched by content digest only.
    flat: bool = False
    error: str = ""


def _phash(img: Image.Image) -> int:
    bits = imagehash.phash(img).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def file_facts(path: Path) -> FileFacts:
    """Read ``path`` once and describe it; never raises for a bad file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileFacts(error=f"cannot read ({exc.strerror or exc})")
    if not data:
        return FileFacts(error="empty file (0 bytes)")  # the loader's word is for uploads
    digest = bytes_digest(data)
    try:
        rgb = load_image_bytes(data)
        with Image.open(io.BytesIO(data)) as raw:  # header only: the stored mode and EXIF
            mode = raw.mode
            rotated = raw.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)
    except ImageReadError as exc:
        return FileFacts(digest=digest, error=str(exc))
    grey = rgb.convert("L")
    flat = ImageStat.Stat(grey).stddev[0] < FLAT_STDDEV
    return FileFacts(digest, _phash(grey), rgb.width, rgb.height, mode, rotated, flat)


def all_facts(paths: Sequence[Path], workers: int | None = None) -> list[FileFacts]:
    """:func:`file_facts` of every path, in order; threads, since PIL's decoders and the
    hashing release the GIL for most of the work."""
    n = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(n, thread_name_prefix="transferlab-audit") as pool:
        return list(pool.map(file_facts, paths))


def hamming_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 2048) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of 64-bit hashes at most ``max_distance`` bits
    apart, as an (n, 2) array. All pairs are compared, in chunks (10k hashes: 50M pairs,
    about a second): simple and exact, where a BK-tree would only pay at far larger sizes."""
    h = np.asarray(hashes, dtype=np.uint64)
    found: list[np.ndarray] = []
    for start in range(0, len(h), chunk):
        block = h[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])
        i, j = np.nonzero(dist <= max_distance)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def near_any(
    query: Sequence[int], reference: Sequence[int], max_distance: int = PHASH_DISTANCE
) -> np.ndarray:
    """For each ``query`` hash, whether a ``reference`` hash is at most ``max_distance``
    bits away."""
    q = np.asarray(query, dtype=np.uint64)
    ref = np.asarray(reference, dtype=np.uint64)
    if not len(q) or not len(ref):
        return np.zeros(len(q), dtype=bool)
    return np.array([bool((np.bitwise_count(h ^ ref) <= max_distance).any()) for h in q])
