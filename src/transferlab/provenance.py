"""Which images a model was trained on, carried with an export so that ``evaluate`` can say
when it scores training images.

A run folder knows its training images from ``split.csv``; an exported file is on its own,
so it carries a short content digest of every training image (8 bytes of SHA-256 of the
file's bytes, base64 in the metadata: a copy of the training folder elsewhere is still
recognised). 8 bytes keep 10 000 images at ~110 kB, with a chance of a false match of
about 1 in 10^10 per image.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DIGEST_BYTES = 8
META_KEY = "training_images"
METHOD = f"sha256 of the file bytes, first {DIGEST_BYTES} bytes, concatenated, base64"
PHASH_KEY = "training_phashes"
PHASH_METHOD = "imagehash phash (64 bits, big-endian), concatenated, base64"


def file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.digest()[:DIGEST_BYTES]


def bytes_digest(data: bytes) -> bytes:
    """:func:`file_digest` of a file's bytes already in memory."""
    return hashlib.sha256(data).digest()[:DIGEST_BYTES]


def encode_training_images(paths: Iterable[Path]) -> dict[str, Any]:
    """The metadata entry for a model trained on ``paths``."""
    return encode_digests(file_digest(p) for p in paths)


def encode_digests(found: Iterable[bytes]) -> dict[str, Any]:
    """The metadata entry for training images of these content digests."""
    digests = sorted(set(found))
    return {
        "method": METHOD,
        "count": len(digests),
        "digests": base64.b64encode(b"".join(digests)).decode("ascii"),
    }


def _unpacked(entry: Any, method: str, field: str) -> bytes | None:
    """The base64 ``field`` of a metadata entry of ``method``; None when there is none,
    it is of another method or damaged."""
    if not isinstance(entry, dict) or entry.get("method") != method:
        return None
    try:
        return base64.b64decode(str(entry.get(field, "")), validate=True)
    except ValueError:
        return None


def decode_training_images(entry: Any) -> set[bytes] | None:
    """The digests of a metadata entry; None when there is none or it is not one of ours."""
    raw = _unpacked(entry, METHOD, "digests")
    if raw is None:
        return None
    return {raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES)}


def encode_phashes(hashes: Iterable[int]) -> dict[str, Any]:
    """The metadata entry of the training images' 64-bit perceptual hashes, so that
    ``evaluate`` also recognises resized or re-encoded copies of them."""
    unique = sorted(set(hashes))
    raw = b"".join(h.to_bytes(8, "big") for h in unique)
    return {
        "method": PHASH_METHOD,
        "count": len(unique),
        "hashes": base64.b64encode(raw).decode("ascii"),
    }


def decode_phashes(entry: Any) -> list[int] | None:
    """The hashes of an :func:`encode_phashes` entry; None when there is none."""
    raw = _unpacked(entry, PHASH_METHOD, "hashes")
    if raw is None:
        return None
    return [int.from_bytes(raw[i : i + 8], "big") for i in range(0, len(raw) - 7, 8)]


def count_known(paths: Iterable[Path], digests: set[bytes]) -> int:
    """How many of ``paths`` have one of ``digests`` (unreadable files count as unknown)."""
    known = 0
    for p in paths:
        try:
            known += file_digest(p) in digests
        except OSError:
            continue
    return known
