"""``load_image``: every common format and mode comes back as 8-bit RGB, upright; bad files
raise ``ImageReadError`` with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import AWKWARD_NAME, bad_files, example_photos, make_image
from transferlab.data.images import ImageReadError, load_image, load_image_bytes

RED = (200, 30, 30)


def assert_rgb(img: Image.Image, size: tuple[int, int]) -> None:
    assert img.mode == "RGB"
    assert img.size == size
    assert np.asarray(img).dtype == np.uint8


def assert_close(pixel: object, expected: tuple[int, int, int], tol: int = 6) -> None:
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True)), pixel


@pytest.mark.parametrize("suffix", [".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jpg"])
def test_formats_decode_to_rgb(tmp_path: Path, suffix: str) -> None:
    # WebP is written lossless so the colour survives exactly enough to compare.
    path = make_image(tmp_path / f"img{suffix}", size=(24, 16), color=RED, lossless=True)
    img = load_image(path)
    assert_rgb(img, (24, 16))
    assert_close(img.getpixel((12, 8)), RED, tol=8)  # JPEG and GIF quantise a little


def test_gif_gives_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    img = load_image(path)
    assert_rgb(img, (10, 10))
    assert_close(img.getpixel((5, 5)), (255, 0, 0))


def test_grayscale_l(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.new("L", (12, 8), 100).save(path)
    img = load_image(path)
    assert_rgb(img, (12, 8))
    assert img.getpixel((3, 3)) == (100, 100, 100)


def test_palette_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (8, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, index 1 red
    img.paste(1, (4, 0, 8, 4))  # right half red
    path = tmp_path / "palette.png"
    img.save(path, transparency=0)  # index 0 (the left half) is transparent
    out = load_image(path)
    assert_rgb(out, (8, 4))
    assert out.getpixel((1, 1)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((6, 1)) == (255, 0, 0)


def test_rgba_transparent_area_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (8, 4), (0, 0, 0, 0))
    img.paste((0, 0, 255, 255), (4, 0, 8, 4))
    path = tmp_path / "alpha.png"
    img.save(path)
    out = load_image(path)
    assert_rgb(out, (8, 4))
    assert out.getpixel((1, 1)) == (255, 255, 255)
    assert out.getpixel((6, 1)) == (0, 0, 255)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = make_image(tmp_path / "cmyk.jpg", color=RED, mode="CMYK", quality=95)
    assert Image.open(path).mode == "CMYK"
    img = load_image(path)
    assert_rgb(img, (24, 16))
    assert_close(img.getpixel((12, 8)), RED, tol=10)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_rescaled_to_8_bits(tmp_path: Path, suffix: str) -> None:
    ramp = np.linspace(1000, 60000, 20 * 12).reshape(12, 20).astype(np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    img = load_image(path)
    assert_rgb(img, (20, 12))
    arr = np.asarray(img)
    # The real range maps onto 0..255, darkest at the start of the ramp.
    assert arr.min() == 0 and arr.max() == 255
    assert tuple(arr[0, 0]) == (0, 0, 0) and tuple(arr[-1, -1]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high, left half red; Orientation=6 means "rotate 90° clockwise
    # to display", so the upright image is 20 x 40 with the red half on top.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert_rgb(out, (20, 40))
    assert_close(out.getpixel((10, 5)), (255, 0, 0))
    assert_close(out.getpixel((10, 35)), (0, 0, 255))


def test_awkward_file_name(tmp_path: Path) -> None:
    path = tmp_path / AWKWARD_NAME
    path.write_bytes(example_photos("apse", 1)[0].read_bytes())
    assert_rgb(load_image(path), Image.open(example_photos("apse", 1)[0]).size)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("truncated", "corrupt or truncated"), ("empty", "empty file"), ("text", "not an image")],
)
def test_unreadable_files_say_why(tmp_path: Path, kind: str, reason: str) -> None:
    path = bad_files(tmp_path)[kind]
    with pytest.raises(ImageReadError, match=reason):
        load_image(path)


@pytest.mark.parametrize("suffix", [".png", ".gif", ".webp", ".bmp", ".tif", ".jpg"])
def test_truncated_files_of_every_format(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    path = tmp_path / f"whole{suffix}"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    with pytest.raises(ImageReadError, match="corrupt or truncated"):
        load_image(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_bytes_in_memory(tmp_path: Path) -> None:
    data = example_photos("altar", 1)[0].read_bytes()
    assert load_image_bytes(data).mode == "RGB"
    with pytest.raises(ImageReadError, match="empty"):
        load_image_bytes(b"")


def test_decompression_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow warns above its pixel limit and refuses above twice the limit; both are refused.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for size in [(12, 12), (24, 16)]:  # 144 and 384 pixels
        with pytest.raises(ImageReadError, match="image is larger than"):
            load_image(make_image(tmp_path / f"{size[0]}.png", size=size))


# --- header sizes and JPEG draft decoding (issue 10) --------------------------------------


def test_shorter_side_reads_only_the_header(tmp_path: Path) -> None:
    from transferlab.data.images import shorter_side

    assert shorter_side(make_image(tmp_path / "a.jpg", (120, 80))) == 80
    assert shorter_side(make_image(tmp_path / "b.png", (30, 50))) == 30
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    assert shorter_side(tmp_path / "c.jpg") is None


def _photo(path: Path, size: tuple[int, int]) -> Path:
    """A real photo enlarged to ``size``: detail at every scale, unlike a flat colour."""
    img = Image.open(example_photos("apse", 1)[0]).convert("RGB")
    img.resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
    return path


def test_draft_decodes_a_large_jpeg_at_a_reduced_scale(tmp_path: Path) -> None:
    big = _photo(tmp_path / "big.jpg", (800, 600))
    assert load_image(big, draft=128).size == (200, 150)  # 1/4: the smallest scale >= 128
    assert load_image(big, draft=300).size == (400, 300)
    assert load_image(big, draft=301).size == (800, 600)  # 1/2 would go below 301 px
    assert load_image(big).size == (800, 600)
    png = _photo(tmp_path / "big.png", (800, 600))
    assert load_image(png, draft=128).size == (800, 600)  # only JPEG decoders have drafts


def test_draft_changes_the_stored_square_only_within_resampling(tmp_path: Path) -> None:
    from transferlab.data.transforms import Preprocessing, to_base

    prep = Preprocessing(112, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # base 128
    big = _photo(tmp_path / "big.jpg", (800, 600))
    full = to_base(load_image(big), prep).astype(float)
    draft = to_base(load_image(big, draft=128), prep).astype(float)
    assert draft.shape == full.shape == (3, 128, 128)
    assert abs(draft - full).mean() < 2.0  # of 255 levels


def test_draft_keeps_exif_orientation(tmp_path: Path) -> None:
    img = Image.open(example_photos("apse", 1)[0]).convert("RGB").resize((800, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=92)
    assert load_image(tmp_path / "rotated.jpg", draft=100).size == (100, 200)
