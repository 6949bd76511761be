"""`transferlab export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, setup_logging

EXPORT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab export runs/demo --format onnx --out runs/demo/model/model.onnx
  transferlab export runs/demo --format torchscript --out demo.pt
  transferlab export runs/demo/model --format onnx --out demo.onnx --data examples/ahe-mini
  transferlab export runs/demo --format onnx --quantize int8 --out demo-int8.onnx
  transferlab export runs/demo --prune 0.3 --finetune-epochs 2 --format bundle --out runs/pruned

Every export is run on real images (--data, else the run's held-out split) and compared
with PyTorch; a class probability off by more than 1e-4 fails the export. --quantize and
--prune report the accuracy before and after on the same images instead. A model.onnx
kept in the bundle folder is what 'predict/evaluate/serve --backend onnx' load.
"""


@app.command(epilog=EXPORT_EXAMPLES)
def export(
    model: Annotated[Path, typer.Argument(help="A run folder or a model bundle folder.")],
    out_file: Annotated[Path, typer.Option("--out", help="File to write (a folder for bundle).")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="onnx | torchscript | bundle (bundle: a pruned copy of the bundle)."
        ),
    ] = "onnx",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Images to check the export on; labelled ones also measure accuracy "
            "(default: the run's held-out split).",
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(
            "--quantize", help="int8: ONNX Runtime static int8 quantisation, calibrated on images."
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration", help="Images to calibrate int8 on (default: the run's train split)."
        ),
    ] = None,
    prune: Annotated[
        float | None,
        typer.Option(
            "--prune", help="Zero this share of conv/linear weights by magnitude, e.g. 0.3."
        ),
    ] = None,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs", help="After --prune, fine-tune this many epochs on the run's data."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Export a model to ONNX or TorchScript (optionally int8 / pruned), checked on real images."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import Model
        from transferlab.export import PARITY_TOLERANCE

        report = Model(model).export(
            out_file, fmt, data, quantize, prune, finetune_epochs, calibration
        )
        if as_json:
            out.print_json(json.dumps(report.to_dict()))
            return
        out.print(
            f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, {report.format}) "
            f"in {report.seconds:.1f}s",
            highlight=False,
            soft_wrap=True,
        )
        if report.parity_max_abs_diff is not None:
            out.print(
                f"parity with PyTorch on {report.parity_images} images: max abs diff of "
                f"probabilities {report.parity_max_abs_diff:.2e} (limit {PARITY_TOLERANCE:.0e})",
                highlight=False,
                soft_wrap=True,
            )
        if report.pruning:
            out.print(
                f"pruned: {report.pruning['sparsity'] * 100:.1f}% of conv/linear weights are zero",
                highlight=False,
                soft_wrap=True,
            )
        if report.quantization:
            out.print(
                f"int8: calibrated on {report.quantization['calibration']}; max abs diff vs "
                f"float {report.quantization['max_abs_diff_vs_fp32']:.3f}",
                highlight=False,
                soft_wrap=True,
            )
        change = report.accuracy_change
        if change is not None:
            out.print(
                f"accuracy on {report.evaluated}: {report.accuracy_before:.4f} -> "
                f"{report.accuracy_after:.4f} ({change * 100:+.1f} points); top-1 agreement "
                f"{report.top1_agreement:.3f}",
                highlight=False,
                soft_wrap=True,
            )
