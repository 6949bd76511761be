"""Rebuild the corpus of odd images in ``tests/data/corpus/`` (committed; a few KB each).

Run from the repository root: ``.venv/bin/python tests/data/make_corpus.py``. The files are
seeds for the fuzz test (``tests/test_fuzz.py``) and cases of their own: every one must load
as RGB or fail with ``ImageReadError``, and the server must answer each with 200 or a 4xx.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
PHOTO = HERE.parents[1] / "examples" / "ahe-mini" / "altar"


def _photo(size: tuple[int, int] = (48, 32)) -> Image.Image:
    first = sorted(PHOTO.iterdir())[0]
    return Image.open(first).convert("RGB").resize(size)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header that claims ``width`` x ``height`` pixels with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def _save(img: Image.Image, name: str, **params: object) -> None:
    buf = io.BytesIO()
    img.save(buf, **params)
    (CORPUS / name).write_bytes(buf.getvalue())


def build() -> None:
    CORPUS.mkdir(exist_ok=True)
    photo = _photo()
    _save(photo, "photo.jpg", format="JPEG", quality=80)
    _save(photo, "progressive.jpg", format="JPEG", quality=80, progressive=True)
    _save(photo.convert("CMYK"), "cmyk.jpg", format="JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    _save(photo, "exif-rotated.jpg", format="JPEG", exif=exif.tobytes())
    _save(photo, "photo.png", format="PNG")
    grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
    _save(Image.fromarray(grey), "grey16.png", format="PNG")  # mode I;16
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    _save(rgba, "alpha.png", format="PNG")
    _save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "palette.png", format="PNG")
    _save(photo, "photo.webp", format="WEBP", quality=70)
    _save(rgba, "alpha.webp", format="WEBP", lossless=True)
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    _save(frames[0], "anim.gif", format="GIF", save_all=True, append_images=frames[1:])
    _save(photo, "photo.bmp", format="BMP")
    _save(photo, "photo.tiff", format="TIFF", compression="tiff_lzw")
    jpeg = (CORPUS / "photo.jpg").read_bytes()
    (CORPUS / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (CORPUS / "empty.png").write_bytes(b"")
    (CORPUS / "text.gif").write_bytes(b"GIF89a, or so it says; then plain text\n")
    (CORPUS / "bomb.png").write_bytes(png_bomb(40_000, 40_000))  # 1.6 gigapixels in ~100 bytes
    # Between Pillow's warning (MAX_IMAGE_PIXELS) and its error (twice that): 225 megapixels.
    (CORPUS / "bomb-warning.png").write_bytes(png_bomb(15_000, 15_000))


if __name__ == "__main__":
    build()
