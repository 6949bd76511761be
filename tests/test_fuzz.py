"""Robust decoding: mutated JPEG, PNG, WebP and GIF bytes (bit flips, truncations, header
garbage, inserted and repeated bytes) never crash the image loader, the store's decode or
the server; they load as RGB, become skipped files, or get a 4xx answer.

The seeds are the odd images in ``tests/data/corpus/`` (``tests/data/make_corpus.py``
rebuilds them). Hypothesis runs a fixed, derandomised set of examples so CI is
deterministic; ``TRANSFERLAB_FUZZ_EXAMPLES=5000`` runs that many random ones to hunt for
new crashes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_serve import Server, server  # noqa: F401  (the real server process, as a fixture)
from trained_model import trained_run
from transferlab.backends import load_backend
from transferlab.data.discover import Sample
from transferlab.data.images import MAX_PIXELS, ImageReadError, load_image, load_image_bytes
from transferlab.data.store import load_images
from transferlab.data.transforms import Preprocessing
from transferlab.serve.app import create_app

CORPUS = Path(__file__).parent / "data" / "corpus"
# Readable seeds in the four formats uploads mostly come in, in their odd variants.
SEED_NAMES = (
    *("photo.jpg", "progressive.jpg", "cmyk.jpg", "exif-rotated.jpg"),
    *("photo.png", "grey16.png", "alpha.png", "palette.png"),
    *("photo.webp", "alpha.webp", "anim.gif"),
)
SEEDS = {name: (CORPUS / name).read_bytes() for name in SEED_NAMES}
# What each corpus file must give: an RGB size, or words of the ImageReadError.
EXPECTED: dict[str, tuple[int, int] | str] = {
    "alpha.png": (48, 32),
    "alpha.webp": (48, 32),
    "anim.gif": (48, 32),
    "bomb.png": "larger than",
    "bomb-warning.png": "larger than",
    "cmyk.jpg": (48, 32),
    "empty.png": "empty file",
    "exif-rotated.jpg": (32, 48),  # turned upright
    "grey16.png": (48, 32),
    "palette.png": (48, 32),
    "photo.bmp": (48, 32),
    "photo.jpg": (48, 32),
    "photo.png": (48, 32),
    "photo.tiff": (48, 32),
    "photo.webp": (48, 32),
    "progressive.jpg": (48, 32),
    "text.gif": "not an image file",
    "truncated.jpg": "corrupt or truncated",
}
SERVER_STATUS = {"bomb.png": 413, "bomb-warning.png": 413, "empty.png": 422}
SERVER_STATUS |= {"text.gif": 415, "truncated.jpg": 422}

_EXPLORE = int(os.environ.get("TRANSFERLAB_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_EXPLORE or 150,  # about 6 s for the three loops on a 2-core machine
    deadline=None,
    derandomize=not _EXPLORE,
    database=None,  # no example database: a CI run is the same every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A small preprocessing, so that the decoding, not the resizing, is what takes the time.
PREP = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Mutation:
    kind: str  # flip | truncate | header | insert | repeat
    at: float  # where, as a fraction of the length
    value: int
    chunk: bytes

    def apply(self, data: bytearray) -> bytearray:
        n = len(data)
        i = min(n - 1, int(self.at * n)) if n else 0
        if self.kind == "flip" and n:
            data[i] ^= 1 << (self.value % 8)
        elif self.kind == "truncate":
            del data[i:]
        elif self.kind == "header":  # garbage over the first bytes, where the headers are
            data[: len(self.chunk)] = self.chunk
        elif self.kind == "insert":
            data[i:i] = self.chunk
        elif self.kind == "repeat":  # a stretch of the file again: lengths and offsets lie
            data[i:i] = data[i : i + self.value]
        return data


mutations = st.builds(
    Mutation,
    kind=st.sampled_from(["flip", "flip", "truncate", "header", "insert", "repeat"]),
    at=st.floats(0, 1),
    value=st.integers(0, 4096),
    chunk=st.binary(min_size=1, max_size=64),
)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for m in draw(st.lists(mutations, min_size=1, max_size=4)):
        data = m.apply(data)
    return bytes(data)


def assert_loads_or_refuses(data: bytes) -> None:
    try:
        img = load_image_bytes(data)
    except ImageReadError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert img.mode == "RGB" and img.width * img.height <= MAX_PIXELS
    img.tobytes()  # the pixels really are there


# --- the corpus on its own -------------------------------------------------------------------


def test_the_corpus_is_what_the_tests_expect() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)
    assert {n.rsplit(".", 1)[1] for n in SEEDS} == {"jpg", "png", "webp", "gif"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_corpus_file_loads_upright_or_says_why_not(name: str) -> None:
    expected = EXPECTED[name]
    if isinstance(expected, tuple):
        img = load_image(CORPUS / name)
        assert img.mode == "RGB" and img.size == expected
    else:
        with pytest.raises(ImageReadError, match=expected):
            load_image(CORPUS / name)


# --- the fuzz loops ----------------------------------------------------------------------------


@FUZZ
@given(data=mutated_images())
def test_mutated_bytes_load_or_raise_image_read_error(data: bytes) -> None:
    assert_loads_or_refuses(data)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated")


@FUZZ
@given(data=mutated_images())
def test_mutated_files_are_decoded_or_skipped_by_the_store(files: Path, data: bytes) -> None:
    path = files / "image.bin"
    path.write_bytes(data)
    loaded = load_images([Sample(path, "x")], {"x": 0}, PREP, memory_budget_mb=16)
    if loaded.skipped:
        assert len(loaded.images) == 0 and loaded.skipped[0][0] == path
    else:
        assert loaded.images.images is not None
        # kept at its own size, never above the base size (the transforms resize on the fly)
        _, channels, height, width = loaded.images.images.shape
        assert channels == 3 and height == width == loaded.images.side <= PREP.base_size


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app in-process: fast enough for a fuzz loop; 500s are answers, not raised."""
    backend = load_backend(trained_run(tmp_path_factory))
    with TestClient(create_app(backend), raise_server_exceptions=False) as test_client:
        yield test_client


@FUZZ
@given(data=mutated_images(), multipart=st.booleans())
def test_mutated_uploads_get_200_or_4xx_never_5xx(
    client: TestClient, data: bytes, multipart: bool
) -> None:
    if multipart:
        r = client.post("/predict", files={"file": ("upload.jpg", data)})
    else:
        r = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code in (200, 413, 415, 422), r.text
    if r.status_code != 200:
        detail = r.json()["detail"]
        assert isinstance(detail, str) and detail and "\n" not in detail


# --- the corpus against the real server process ------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_real_server_answers_each_corpus_file(server: Server, name: str) -> None:  # noqa: F811
    body = (CORPUS / name).read_bytes()
    r = httpx.post(f"{server.url}/predict", content=body, timeout=60)
    assert r.status_code == SERVER_STATUS.get(name, 200), r.text
