"""`transferlab stream`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, setup_logging
from transferlab.cli.predict import BackendOption, ModelArgument, RejectBelowOption, TtaOption

STREAM_EXAMPLES = """
[bold]Examples[/bold]

  transferlab stream runs/demo --source 0
  transferlab stream runs/demo --source walk.mp4 --output annotated.mp4 --every 3 --smooth 5
  transferlab stream runs/demo --source walk.mp4 --output annotated.mp4 --reject-below 0.6
  transferlab stream model.onnx --source rtsp://127.0.0.1:8554/cam --output cam.mp4 \\
      --max-frames 600

Without --output a window shows the video (q or Esc quits); on a machine without a
display pass --output. Ctrl-C stops and keeps what was written.
"""


@app.command(epilog=STREAM_EXAMPLES)
def stream(
    model: ModelArgument,
    source: Annotated[
        str, typer.Option("--source", help="Webcam index (0, 1, ...), a video file or a URL.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Write the annotated video here (.mp4 or .avi)."),
    ] = None,
    every: Annotated[int, typer.Option(help="Classify every Nth frame.")] = 1,
    smooth: Annotated[
        int, typer.Option(help="Average the probabilities of the last N classified frames.")
    ] = 1,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    backend: BackendOption = None,
    tta: TtaOption = "none",
    reject_below: RejectBelowOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary (and label timeline) as JSON.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Classify video frames and draw the top label on them; reports frames per second."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.backends import load_backend
        from transferlab.stream import StreamOptions, run_stream
        from transferlab.tta import check_mode

        check_mode(tta)
        options = StreamOptions(every, smooth, output, max_frames, tta, reject_below).check()
        runner = load_backend(model, backend)
        stats = run_stream(runner, source, options)
        if as_json:
            out.print_json(json.dumps(stats.to_dict()))
            return
        where = f" -> {stats.output}" if stats.output else ""
        out.print(
            f"{stats.frames} frames ({stats.classified} classified) in {stats.seconds:.1f}s: "
            f"{stats.fps:.1f} frames/s{where}",
            highlight=False,
            soft_wrap=True,
        )
        if not quiet:
            timeline = ", ".join(f"{c['frame']}: {c['label']}" for c in stats.label_changes)
            err.print(f"labels by first frame: {timeline}", highlight=False, soft_wrap=True)
