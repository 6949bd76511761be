"""``stream`` on a video made from real photos: every frame is written back with the label of
what it shows drawn on it, and the drawn label changes when the content does."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from trained_model import CLASSES, held_out_photos
from transferlab.backends import load_backend
from transferlab.cli import app
from transferlab.stream import StreamOptions, run_stream

SIZE = (160, 120)  # width, height
PER_PHOTO = 12  # frames each photo is shown for
BAND = 24  # rows of the label band at this frame height (max(24, height // 9))


@pytest.fixture(autouse=True)
def _logging(restore_transferlab_logging: None) -> None:
    """In-process CLI calls reconfigure logging; restore it after each test."""


def make_video(path: Path) -> Path:
    """One held-out photo of each class, shown in turn, as an mp4 at 10 frames/s."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, SIZE)
    assert writer.isOpened()
    for label in CLASSES:
        rgb = np.asarray(Image.open(held_out_photos(label, 1)[0]).convert("RGB").resize(SIZE))
        for _ in range(PER_PHOTO):
            writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_annotated_video_has_every_frame_and_the_label_follows_the_content(
    run: Path, tmp_path: Path
) -> None:
    source = make_video(tmp_path / "walk.mp4")
    out = tmp_path / "annotated.mp4"
    result = CliRunner().invoke(
        app,
        ["stream", str(run), "--source", str(source), "--output", str(out), "--every", "2",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    n = PER_PHOTO * len(CLASSES)
    assert stats["frames"] == n and stats["classified"] == n // 2 and stats["fps"] > 0
    assert stats["label_changes"] == [
        {"frame": i * PER_PHOTO, "label": label} for i, label in enumerate(CLASSES)
    ]

    frames = read_frames(out)
    assert len(frames) == n
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    bands = [f[:BAND].astype(np.float32) for f in frames]
    below = [f[BAND + 4 :].astype(np.float32) for f in frames]
    originals = read_frames(source)
    # The band is drawn (dark, with light text); the picture under it is untouched.
    assert all(b.mean() < 90 and b.max() > 200 for b in bands)
    assert np.abs(below[5] - originals[5][BAND + 4 :]).mean() < 8
    # Within one photo the band stays the same; across photos the label drawn differs.
    middle = [i * PER_PHOTO + PER_PHOTO // 2 for i in range(len(CLASSES))]
    for i in middle:
        assert np.abs(bands[i] - bands[i + 2]).mean() < 3
    for a, b in itertools.pairwise(middle):
        assert np.abs(bands[a] - bands[b]).mean() > 5


def test_smoothing_and_max_frames(run: Path, tmp_path: Path) -> None:
    source = make_video(tmp_path / "walk.mp4")
    result = CliRunner().invoke(
        app,
        ["stream", str(run), "--source", str(source), "--output", str(tmp_path / "o.avi"),
         "--smooth", "4", "--max-frames", "20", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["frames"] == 20 and stats["classified"] == 20
    # Averaged over 4 frames, the label of the second photo shows up a little later.
    assert stats["label_changes"][0] == {"frame": 0, "label": CLASSES[0]}
    assert stats["label_changes"][1]["frame"] > PER_PHOTO
    assert len(read_frames(tmp_path / "o.avi")) == 20


def test_bad_sources_and_no_display_are_one_line_errors(run: Path, tmp_path: Path) -> None:
    def err(*args: str) -> str:
        result = CliRunner().invoke(app, ["stream", str(run), *args])
        assert result.exit_code == 2, result.stdout
        assert "Traceback" not in result.stderr
        return result.stderr

    assert "video source not found" in err("--source", str(tmp_path / "missing.mp4"))
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    assert "cannot open" in err("--source", str(notes), "--output", str(tmp_path / "o.mp4"))
    video = make_video(tmp_path / "v.mp4")
    assert "pass --output" in err("--source", str(video))  # headless OpenCV: no window
    assert "use one of" in err("--source", str(video), "--output", str(tmp_path / "o.gif"))


def test_the_output_may_not_be_the_source_however_it_is_spelled(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = make_video(tmp_path / "v.mp4")
    before = video.read_bytes()
    (tmp_path / "sub").mkdir()
    os.link(video, tmp_path / "same file.mp4")
    monkeypatch.chdir(tmp_path)
    for output in ("v.mp4", str(video), "sub/../v.mp4", "same file.mp4"):
        result = CliRunner().invoke(
            app, ["stream", str(run), "--source", "v.mp4", "--output", output]
        )
        assert result.exit_code == 2, (output, result.stdout)
        assert result.stderr.startswith(f"error: --output {output} is the --source video")
        assert len(result.stderr.strip().splitlines()) == 1
        assert video.read_bytes() == before


def test_an_existing_output_is_replaced_only_by_a_whole_video(run: Path, tmp_path: Path) -> None:
    source = make_video(tmp_path / "walk.mp4")
    out = tmp_path / "annotated.mp4"
    out.write_bytes(b"yesterday's video")
    seen: list[bytes] = []
    options = StreamOptions(output=out, max_frames=5)
    backend = load_backend(run)
    stats = run_stream(backend, str(source), options, lambda _: seen.append(out.read_bytes()))
    assert len(seen) == 5 and set(seen) == {b"yesterday's video"}  # untouched while writing
    assert stats.output == str(out) and len(read_frames(out)) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "walk.mp4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "0"], "--every and --smooth must be at least 1"),
        (["--smooth", "-1"], "--every and --smooth must be at least 1"),
        (["--max-frames", "0"], "--max-frames must be at least 1"),
        (["--tta", "sideways"], "--tta 'sideways' is not one of"),
        (["--backend", "tpu"], "--backend 'tpu' is not one of"),
        (["--output", "{tmp}/o.gif"], "use one of .avi"),
        (["--output", "{tmp}/folder.mp4"], "is a folder; give a video file name"),
    ],
)
def test_bad_stream_options_are_one_line(
    run: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    video = make_video(tmp_path / "v.mp4")
    (tmp_path / "folder.mp4").mkdir()
    output = ["--output", str(tmp_path / "o.mp4")]
    given = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, ["stream", str(run), "--source", str(video), *output, *given])
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
