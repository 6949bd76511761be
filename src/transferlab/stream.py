"""Classify video frames live: a webcam, a video file or a stream URL, read by OpenCV.

Every ``every``-th frame is classified (the probabilities optionally averaged over the
last ``smooth`` classified frames); every frame gets the current top label and its
probability (or ``unknown`` below the reject threshold) drawn in an opaque band at the
top, and goes to a video file or a window.
The video file is written beside its name and renamed when the stream ends, so an
existing file there is only ever replaced by a whole video, and never the one being read.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferlab.backends import Backend
from transferlab.bundle import display_names
from transferlab.calibration import UNKNOWN, check_reject_below, is_rejected
from transferlab.data.transforms import to_base
from transferlab.errors import ConfigError, DatasetError
from transferlab.files import replace_when_done

logger = logging.getLogger(__name__)

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
WINDOW = "transferlab"


@dataclass(frozen=True)
class StreamOptions:
    every: int = 1  # classify every Nth frame; the label is kept in between
    smooth: int = 1  # average probabilities over this many classified frames
    output: Path | None = None  # annotated video; None shows a window
    max_frames: int | None = None
    tta: str = "none"
    reject_below: float | None = None  # None: the model's own reject_below, if any

    def check(self) -> StreamOptions:
        check_reject_below(self.reject_below)
        if self.every < 1 or self.smooth < 1:
            raise ConfigError("--every and --smooth must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError("--max-frames must be at least 1")
        if self.output is not None and self.output.is_dir():
            raise ConfigError(
                f"--output {self.output} is a folder; give a video file name, e.g. "
                f"{self.output / 'annotated.mp4'}"
            )
        if self.output is not None and self.output.suffix.lower() not in FOURCC:
            raise ConfigError(
                f"--output {self.output}: use one of {', '.join(sorted(FOURCC))} as extension"
            )
        return self


@dataclass
class StreamStats:
    frames: int = 0
    classified: int = 0
    seconds: float = 0.0
    source_fps: float = 0.0
    output: str | None = None
    # The frames where the shown label changed, with the new label: a compact timeline.
    label_changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fps": round(self.fps, 2)}


def is_file_source(source: str) -> bool:
    """A video file, not a webcam index or a URL."""
    return not source.isdigit() and "://" not in source


def check_output(source: str, output: Path) -> None:
    """Refuse an ``output`` that is the ``source`` file under another spelling (or a hard
    link to it): writing the annotated video would destroy the video being read."""
    if not is_file_source(source):
        return
    src = Path(source)
    same = src.resolve() == output.resolve()
    if not same and src.exists() and output.exists():
        same = os.path.samefile(src, output)
    if same:
        raise ConfigError(
            f"--output {output} is the --source video; write the annotated video to another file"
        )


def open_source(source: str) -> Any:
    """A ``cv2.VideoCapture`` for a webcam index ("0"), a file or a URL."""
    import cv2

    is_camera = source.isdigit()
    if is_file_source(source) and not Path(source).exists():
        raise DatasetError(f"video source not found: {source}")
    capture = cv2.VideoCapture(int(source) if is_camera else source)
    if not capture.isOpened():
        what = f"camera {source}" if is_camera else source
        raise DatasetError(f"cannot open {what} as a video source; check the index, file or URL")
    return capture


def annotate(frame: np.ndarray, text: str) -> np.ndarray:
    """Draw ``text`` in an opaque band across the top of a BGR frame (in place)."""
    import cv2

    height, width = frame.shape[:2]
    band = max(24, height // 9)
    scale = max(0.4, band / 40)
    cv2.rectangle(frame, (0, 0), (width, band), (32, 32, 32), thickness=-1)
    baseline = int(band * 0.72)
    cv2.putText(
        frame,
        text,
        (8, baseline),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        2,
        cv2.LINE_AA,
    )
    return frame


def classify_frame(backend: Backend, frame: np.ndarray, tta: str = "none") -> torch.Tensor:
    """One BGR frame -> class probabilities (C,)."""
    rgb = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1]))
    return backend.predict(to_base(rgb, backend.preprocessing)[None], tta)[0]


def _writer(path: Path, fps: float, size: tuple[int, int], shown: Path) -> Any:
    """A video writer into ``path``; errors name ``shown`` (the --output it becomes)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter.fourcc(*FOURCC[path.suffix.lower()])
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    if not writer.isOpened():
        raise ConfigError(f"cannot write video {shown}; try another extension (.mp4, .avi)")
    return writer


def _open_window() -> None:
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ConfigError(
            "no window can be shown here (headless OpenCV or no display); "
            "pass --output annotated.mp4 to write the video instead"
        ) from None


def _show(frame: np.ndarray) -> bool:
    """Show a frame; False when the user pressed q or Esc."""
    import cv2

    cv2.imshow(WINDOW, frame)
    return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)


def run_stream(
    backend: Backend,
    source: str,
    options: StreamOptions,
    on_frame: Callable[[StreamStats], None] | None = None,
) -> StreamStats:
    """Read ``source`` to the end (or ``max_frames``, or Ctrl-C); annotate every frame."""
    options.check()
    output = options.output
    if output is not None:
        check_output(source, output)
    capture = open_source(source)
    try:
        stats = StreamStats(source_fps=float(capture.get(5) or 0.0))  # 5: CAP_PROP_FPS
        if output is None:
            _open_window()
            _annotate_all(backend, source, capture, options, stats, None, on_frame)
        else:
            replace_when_done(
                output,
                lambda tmp: _annotate_all(backend, source, capture, options, stats, tmp, on_frame),
            )
            stats.output = str(output)
    finally:
        capture.release()
    return stats


def _annotate_all(
    backend: Backend,
    source: str,
    capture: Any,
    options: StreamOptions,
    stats: StreamStats,
    video: Path | None,
    on_frame: Callable[[StreamStats], None] | None,
) -> None:
    """Annotate frames into ``video`` (None: the window) until the stream ends; fails if
    there was not one frame (so that no empty video replaces ``options.output``)."""
    recent: deque[torch.Tensor] = deque(maxlen=options.smooth)
    shown = display_names(backend.meta)  # the overlay shows what people read
    writer = None
    text, label = "", None
    threshold = backend.reject_below if options.reject_below is None else options.reject_below
    started = time.perf_counter()
    try:
        while options.max_frames is None or stats.frames < options.max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if stats.frames % options.every == 0:
                recent.append(classify_frame(backend, frame, options.tta))
                probs = torch.stack(list(recent)).mean(0)
                best = int(probs.argmax())
                text = f"{shown[best]}  {float(probs[best]) * 100:.0f}%"
                answer = backend.class_names[best]
                if is_rejected(float(probs[best]), threshold):
                    text = answer = UNKNOWN
                stats.classified += 1
                if answer != label:
                    label = answer
                    stats.label_changes.append({"frame": stats.frames, "label": label})
            annotate(frame, text)
            if video is not None:
                if writer is None:
                    fps = stats.source_fps if 0 < stats.source_fps < 240 else 25.0
                    size = (frame.shape[1], frame.shape[0])
                    writer = _writer(video, fps, size, options.output or video)
                writer.write(frame)
            elif not _show(frame):
                break
            stats.frames += 1
            if on_frame is not None:
                on_frame(stats)
    except KeyboardInterrupt:  # keep what was written
        logger.info("interrupted; closing the video")
    finally:
        stats.seconds = time.perf_counter() - started
        if writer is not None:
            writer.release()
    if stats.frames == 0:
        raise DatasetError(f"no frames could be read from {source}")
