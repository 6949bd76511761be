"""`transferlab crop`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import (
    EXIT_UNREADABLE,
    Debug,
    Quiet,
    app,
    guard,
    out,
    setup_logging,
)

CROP_EXAMPLES = """
[bold]Examples[/bold]

  transferlab crop data/cars --out data/cars-cropped --classes car,truck
  transferlab crop data/cars --out data/cars-cropped --detector ssdlite320_mobilenet_v3_large
  transferlab crop data/cars --out data/cars-cropped --detector ~/fasterrcnn_resnet50_fpn-1.pth
  transferlab crop data/cars --out data/cars-cropped --saliency runs/cars --margin 0.05

[bold]Exit codes[/bold]

  0: every image was written (cut to its box, or whole when no wanted box was found)
  2: bad input (an option, the data folder, no detector weights), with a one-line error
  3: some images could not be read; the others were written
  1: an unexpected crash (rerun with --debug)
"""


@app.command(epilog=CROP_EXAMPLES)
def crop(
    data: Annotated[Path, typer.Argument(help="A dataset folder (class folders of images).")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="The new dataset tree (a new or empty folder).")
    ],
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Comma-separated COCO classes to crop to, e.g. car,truck. Default: any class.",
        ),
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(
            "--detector",
            metavar="NAME|PATH",
            help="A torchvision detection model (weights from the hub, or the torch hub cache "
            "offline) or its weights file named like torchvision's. "
            "Default: fasterrcnn_mobilenet_v3_large_fpn.",
        ),
    ] = None,
    margin: Annotated[
        float,
        typer.Option("--margin", help="Grow the box by this fraction of its size on each side."),
    ] = 0.1,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Ignore boxes scoring below this. Default: 0.5."),
    ] = None,
    saliency: Annotated[
        Path | None,
        typer.Option(
            "--saliency",
            metavar="RUN",
            help="Instead of a detector: box the Grad-CAM map of this trained model's top "
            "class (a run or bundle folder).",
        ),
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Cut each image to the largest box of the wanted objects (the whole image if none),
    into a new dataset tree with a CSV of the boxes and scores."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import crop_images

        summary = crop_images(
            data,
            out_dir,
            classes=classes,
            detector=detector,
            margin=margin,
            min_score=min_score,
            saliency=saliency,
        )
        out.print(
            f"{summary.boxed} images cut to a box, {summary.whole} kept whole, "
            f"{summary.unreadable} unreadable; boxes in {summary.boxes_csv}",
            highlight=False,
        )
        if summary.unreadable:
            raise typer.Exit(EXIT_UNREADABLE)
