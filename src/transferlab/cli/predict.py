"""`transferlab predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, err, guard, out, setup_logging

PREDICT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab predict runs/demo examples/samples/capitol-dome.jpg
  transferlab predict runs/demo/model photos/ --top-k 3 --json > predictions.json
  transferlab predict runs/demo photos/ --tta ten-crop
  transferlab predict runs/demo photos/ --backend onnx
  transferlab predict model.onnx photos/

[bold]Exit codes[/bold]

  0: every file was classified
  2: bad input (an option, the model or a folder), with a one-line error
  3: some files could not be read; the others were classified and printed
  1: an unexpected crash (rerun with --debug)
"""
# Distinct from 1 (a crash) and 2 (bad input): a batch that was partly classified.
EXIT_UNREADABLE = 3

ModelArgument = Annotated[
    Path, typer.Argument(help="A run folder, a model bundle folder or an exported .onnx file.")
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="torch | onnx (ONNX Runtime on CPU). Default: onnx for a .onnx file, else torch.",
    ),
]
TtaOption = Annotated[
    str,
    typer.Option(
        "--tta",
        help="Test-time augmentation: none | flip | five-crop | ten-crop (softmax averaged "
        "over the views).",
    ),
]


@app.command(epilog=PREDICT_EXAMPLES)
def predict(
    model: ModelArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many classes to show.")] = 3,
    tta: TtaOption = "none",
    backend: BackendOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document with all predictions.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Classify images with a trained model and show the top-k classes with probabilities."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.backends import load_backend
        from transferlab.errors import ConfigError, DatasetError
        from transferlab.predict import expand_inputs, predict_files
        from transferlab.tta import check_mode

        if top_k < 1:
            raise ConfigError("--top-k must be at least 1")
        check_mode(tta)
        runner = load_backend(model, backend)
        paths = expand_inputs(images)
        if not paths:
            raise DatasetError("no image files found in the given folders")
        results = predict_files(runner, paths, top_k, tta=tta)
        if as_json:
            doc = {
                "model": str(model),
                "backend": runner.name,
                "tta": tta,
                "predictions": [r.to_dict() for r in results],
            }
            out.print_json(json.dumps(doc))
        else:
            for r in results:
                if r.error:
                    err.print(f"warning: {r.path}: {r.error}", highlight=False)
                    continue
                ranked = "  ".join(
                    f"{lab} {p:.3f}" for lab, p in zip(r.labels, r.probabilities, strict=True)
                )
                # Plain write: rich would expand the tab that scripts split on.
                out.file.write(f"{r.path}\t{ranked}\n")
        if any(r.error for r in results):
            raise typer.Exit(EXIT_UNREADABLE)
