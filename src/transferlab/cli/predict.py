"""`transferlab predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from transferlab.cli._common import (
    EXIT_UNREADABLE,
    Debug,
    Quiet,
    app,
    err,
    guard,
    out,
    setup_logging,
)

PREDICT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab predict runs/demo examples/samples/capitol-dome.jpg
  transferlab predict runs/demo/model photos/ --top-k 3 --json > predictions.json
  transferlab predict runs/demo photos/ --tta ten-crop
  transferlab predict runs/demo photos/ --backend onnx
  transferlab predict runs/demo photos/ --explain heat-maps/ --json
  transferlab predict model.onnx photos/
  transferlab predict runs/demo photos/ --reject-below 0.6

[bold]Exit codes[/bold]

  0: every file was classified
  2: bad input (an option, the model or a folder), with a one-line error
  3: some files could not be read; the others were classified and printed
  1: an unexpected crash (rerun with --debug)
"""

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


def _with_display(doc: dict[str, Any], shown: dict[str, str]) -> dict[str, Any]:
    """A prediction's JSON with each class's display name beside its label (the key);
    a label that is no class (such as an answer of "unknown") shows as itself."""
    if "label" in doc:
        doc["display"] = shown.get(doc["label"], doc["label"])
        doc["top_k"] = [{**t, "display": shown.get(t["label"], t["label"])} for t in doc["top_k"]]
    return doc


ExplainOption = Annotated[
    Path | None,
    typer.Option(
        "--explain",
        metavar="OUT_DIR",
        help="Write a Grad-CAM heat map of the predicted class over each photo (the centre "
        "view the model sees) into OUT_DIR as <name>.gradcam.png. Torch backend only.",
    ),
]


def _explain(runner: Any, results: list[Any], out_dir: Path) -> dict[str, str]:
    """Heat maps for the classified files: {image path: PNG path}."""
    from transferlab.explain import write_explanations

    done = [r for r in results if not r.error]
    items = [(Path(r.path), next(x for x in r.labels if x in runner.class_names)) for r in done]
    pngs = write_explanations(
        runner.model, runner.preprocessing, runner.class_names, items, out_dir
    )
    return {r.path: str(png) for r, png in zip(done, pngs, strict=True)}


RejectBelowOption = Annotated[
    float | None,
    typer.Option(
        "--reject-below",
        metavar="P",
        help="Answer 'unknown' (top-k still listed) when the top probability is below P, in "
        "[0, 1]. Default: the model's reject_below (set with 'transferlab reject-below'), "
        "else none; 0 answers every image.",
    ),
]


@app.command(epilog=PREDICT_EXAMPLES)
def predict(
    model: ModelArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many classes to show.")] = 3,
    tta: TtaOption = "none",
    backend: BackendOption = None,
    reject_below: RejectBelowOption = None,
    explain: ExplainOption = None,
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
        from transferlab.bundle import display_names
        from transferlab.calibration import check_reject_below
        from transferlab.errors import ConfigError, DatasetError
        from transferlab.predict import expand_inputs, predict_files
        from transferlab.tta import check_mode

        if top_k < 1:
            raise ConfigError("--top-k must be at least 1")
        check_mode(tta)
        check_reject_below(reject_below)
        if explain is not None and (backend == "onnx" or model.suffix.lower() == ".onnx"):
            from transferlab.explain import NEEDS_TORCH

            raise ConfigError(NEEDS_TORCH)
        runner = load_backend(model, backend)
        paths = expand_inputs(images)
        if not paths:
            raise DatasetError("no image files found in the given folders")
        results = predict_files(runner, paths, top_k, tta=tta, reject_below=reject_below)
        shown = dict(zip(runner.class_names, display_names(runner.meta), strict=True))
        explained = _explain(runner, results, explain) if explain is not None else {}
        if as_json:
            doc = {
                "model": str(model),
                "backend": runner.name,
                "tta": tta,
                "predictions": [
                    _with_display(r.to_dict(), shown)
                    | ({"explanation": explained[r.path]} if r.path in explained else {})
                    for r in results
                ],
            }
            out.print_json(json.dumps(doc))
        else:
            for r in results:
                if r.error:
                    err.print(f"warning: {r.path}: {r.error}", highlight=False)
                    continue
                ranked = "  ".join(
                    f"{shown.get(lab, lab)} {p:.3f}"
                    for lab, p in zip(r.labels, r.probabilities, strict=True)
                )
                if r.rejected:  # the answer first, then the top-k it was not sure of
                    ranked = f"{r.label}  {ranked}"
                # Plain write: rich would expand the tab that scripts split on.
                heat = f"\t{explained[r.path]}" if r.path in explained else ""
                out.file.write(f"{r.path}\t{ranked}{heat}\n")
        if any(r.error for r in results):
            raise typer.Exit(EXIT_UNREADABLE)
