"""Helpers for building tiny test data from the repository's own photos or with PIL.

Nothing here reads outside the repository or touches the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
AHE_MINI = EXAMPLES / "ahe-mini"
SAMPLES = EXAMPLES / "samples"

# Three visually distinct classes of the bundled example data.
CLASSES = ("altar", "apse", "dome(inner)")

# A file name with spaces, quotes, parentheses, a comma and non-ASCII letters.
AWKWARD_NAME = 'Kölner Dom (1) "west", l\'abside.jpg'


def example_photos(label: str, n: int) -> list[Path]:
    """The first ``n`` photos (sorted by name) of an ``examples/ahe-mini`` class."""
    photos = sorted((AHE_MINI / label).iterdir())[:n]
    assert len(photos) == n, f"examples/ahe-mini/{label} has fewer than {n} photos"
    return photos


def copy_photos(label: str, dest: Path, n: int, offset: int = 0) -> list[Path]:
    """Copy ``n`` example photos of ``label`` into ``dest`` (created); return the copies."""
    dest.mkdir(parents=True, exist_ok=True)
    photos = example_photos(label, offset + n)[offset:]
    return [Path(shutil.copy(p, dest / p.name)) for p in photos]


def make_image(
    path: Path,
    size: tuple[int, int] = (24, 16),
    color: tuple[int, int, int] = (200, 30, 30),
    mode: str = "RGB",
    **save: object,
) -> Path:
    """Write a solid-colour image; the format follows the suffix unless ``format`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path, **save)
    return path


def truncated_jpeg(path: Path) -> Path:
    """A real photo cut off after a third of its bytes."""
    data = example_photos("apse", 1)[0].read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 3])
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """One file of each unreadable kind in ``folder``, keyed by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    text_as_jpg = folder / "notes renamed.jpg"
    text_as_jpg.write_text("not a picture, just text\n", encoding="utf-8")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    return {
        "truncated": truncated_jpeg(folder / "truncated.jpg"),
        "empty": empty,
        "text": text_as_jpg,
    }


def invoke(*args: object) -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from transferlab.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr
