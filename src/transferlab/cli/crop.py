"""`transferlab crop`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, setup_logging

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
if TYPE_CHECKING:
    from transferlab.crop import Boxer

EXIT_UNREADABLE = 3
DEFAULT_MIN_SCORE = 0.5


def _fraction(value: float, option: str) -> None:
    from transferlab.errors import ConfigError

    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{option} {value} is out of range; use a number in [0, 1]")


def _saliency_only(
    saliency: Path, classes: str | None, detector: str | None, score: float | None
) -> None:
    """The detector's options mean nothing with --saliency: refuse them, never ignore them."""
    from transferlab.errors import ConfigError

    options = (("--classes", classes), ("--detector", detector), ("--min-score", score))
    given = [name for name, value in options if value is not None]
    if given:
        raise ConfigError(
            f"--saliency {saliency} boxes the classifier's own Grad-CAM map; {', '.join(given)} "
            "belong to the detector: drop them or --saliency"
        )


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
        from transferlab import crop as crops

        _fraction(margin, "--margin")
        if min_score is not None:
            _fraction(min_score, "--min-score")
        crops.check_out(data, out_dir)
        if saliency is not None:
            _saliency_only(saliency, classes, detector, min_score)
            boxer, source = _saliency_boxer(saliency), "saliency"
        else:
            found = crops.load_detector(detector or crops.DEFAULT_DETECTOR)
            wanted = (
                crops.check_classes(classes.split(","), found.categories)
                if classes is not None
                else None
            )
            score = DEFAULT_MIN_SCORE if min_score is None else min_score
            boxer, source = crops.detector_boxer(found, wanted, score), f"detector:{found.name}"
        summary = crops.crop_dataset(data, out_dir, boxer, margin, source)
        out.print(
            f"{summary.boxed} images cut to a box, {summary.whole} kept whole, "
            f"{summary.unreadable} unreadable; boxes in {summary.csv}",
            highlight=False,
        )
        if summary.unreadable:
            raise typer.Exit(EXIT_UNREADABLE)


def _saliency_boxer(run: Path) -> Boxer:
    from transferlab.bundle import find_bundle_dir, load_bundle
    from transferlab.crop import saliency_boxer
    from transferlab.explain import target_layer

    bundle = load_bundle(find_bundle_dir(run))
    target_layer(bundle.model)  # a model Grad-CAM cannot read fails before anything is written
    return saliency_boxer(bundle.model, bundle.preprocessing, bundle.class_names)
