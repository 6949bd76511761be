"""Decode any common image file into an 8-bit RGB PIL image, or say why not."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".ppm", ".pgm"}
)

# A decompression-bomb guard: refuse images above this many pixels (about 16k x 10k).
MAX_PIXELS = 178_956_970
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageReadError(Exception):
    """The file is not a readable image; the message says why."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float greyscale: rescale the real range to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite on white so transparent areas do not turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _draft(opened: Image.Image, side: int | None) -> None:
    """Let a JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding (DCT scaling: far less
    work for large photos) when the result keeps at least ``side`` pixels on both sides,
    so the square cut from it is still resized down to ``side``, never up."""
    if side and opened.format == "JPEG" and min(opened.size) // side >= 2:
        opened.draft(None, (side, side))


def _decode(source: Path | io.BytesIO, draft: int | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                opened.seek(0)  # first frame of GIFs and multi-page TIFFs
                _draft(opened, draft)
                opened.load()
                img: Image.Image = ImageOps.exif_transpose(opened) or opened
                return _to_rgb(img)
    except FileNotFoundError as exc:
        raise ImageReadError("file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError("not an image file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"image is larger than {MAX_PIXELS} pixels") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"corrupt or truncated image ({exc})") from exc


def load_image(path: Path | str, draft: int | None = None) -> Image.Image:
    """Open ``path`` fully decoded, EXIF orientation applied, as 8-bit RGB.

    ``draft``: the shorter side the caller will resize to; a large JPEG is then decoded at
    the smallest 1/2, 1/4 or 1/8 scale that keeps both sides at least that long.
    Raises :class:`ImageReadError` for missing, empty, truncated, corrupt,
    oversized or non-image files.
    """
    path = Path(path)
    try:
        empty = path.stat().st_size == 0
    except OSError as exc:
        raise ImageReadError("file not found") from exc
    if empty:
        raise ImageReadError("empty file (0 bytes)")
    return _decode(path, draft)


def shorter_side(path: Path) -> int | None:
    """The shorter side of the image at ``path`` from its header alone (it is the same
    upright or not); None when the header cannot be read (decoding will say why)."""
    try:
        with warnings.catch_warnings():
            # The decode refuses such an image, with the reason; no second warning here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                return min(opened.size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def load_image_bytes(data: bytes) -> Image.Image:
    """Like :func:`load_image` for bytes in memory (uploads)."""
    if not data:
        raise ImageReadError("empty payload (0 bytes)")
    return _decode(io.BytesIO(data))


def thumbnail_bytes(img: Image.Image, size: int, fmt: str = "PNG", **save: Any) -> bytes:
    """``img`` shrunk to fit ``size`` x ``size`` (aspect kept; ``img`` itself untouched),
    encoded as RGB ``fmt`` with the encoder options ``save``."""
    copy = img.copy()
    copy.thumbnail((size, size))
    buf = io.BytesIO()
    copy.convert("RGB").save(buf, format=fmt, **save)
    return buf.getvalue()
