"""`transferlab evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, print_metrics, setup_logging
from transferlab.cli.predict import BackendOption, ModelArgument, TtaOption

EVALUATE_EXAMPLES = """
[bold]Examples[/bold]

  transferlab evaluate runs/demo --data examples/ahe-mini
  transferlab evaluate runs/demo/model --data new_photos/ --split all --out runs/demo/eval-new
  transferlab evaluate runs/demo --data examples/ahe-mini --tta five-crop
  transferlab evaluate model-int8.onnx --data examples/ahe-mini --split all
  transferlab evaluate runs/demo --data examples/ahe-mini --json | jq .risk_coverage
"""


def macro_line(metrics: dict[str, Any]) -> str | None:
    """Says which classes the macro averages are over, when some model classes had no images."""
    absent = metrics.get("absent_classes") or []
    if not absent:
        return None
    verb = "has" if len(absent) == 1 else "have"
    return (
        f"macro averages over the {len(metrics['macro_classes'])} classes with images "
        f"({', '.join(absent)} {verb} none)"
    )


def tta_line(tta: dict[str, Any]) -> str:
    gain = tta["accuracy_gain"] * 100
    return (
        f"TTA {tta['mode']}: accuracy {tta['accuracy']:.4f} vs {tta['accuracy_without']:.4f} "
        f"without ({gain:+.1f} points); macro-F1 {tta['macro_f1']:.4f} vs "
        f"{tta['macro_f1_without']:.4f}"
    )


def coverage_line(rows: list[dict[str, Any]]) -> str:
    """A few points of the risk-coverage curve: what --reject-below P would answer and how
    well (all of them are in --json and metrics.json)."""
    shown = [r for r in rows if round(r["reject_below"] * 10, 6) % 1 == 0 and r["answered"]]
    points = "; ".join(
        f"{r['reject_below']:.1f}: {r['coverage']:.0%} answered, accuracy {r['accuracy']:.3f}"
        for r in shown
    )
    return f"--reject-below P -> {points}"


@app.command(epilog=EVALUATE_EXAMPLES)
def evaluate(
    model: ModelArgument,
    data: Annotated[Path, typer.Option("--data", help="Labelled images in any supported layout.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write metrics.json here.")] = None,
    split: Annotated[
        str,
        typer.Option(
            help="auto | test | val | all. When DATA is the run's data, test and val come from "
            "its split.csv and auto is its held-out split; otherwise from DATA's test/ or val/ "
            "folders (auto: test/, else val/, else everything). all warns about training images."
        ),
    ] = "auto",
    tta: TtaOption = "none",
    backend: BackendOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Measure a trained model on labelled images: accuracy, per-class P/R/F1 with 95% CIs.

    With --tta the metrics are those with test-time augmentation, and a line compares
    them with plain centre-crop predictions on the same images. The last line shows, for
    some thresholds P, the share of images --reject-below P would answer and their accuracy
    (the whole risk-coverage curve is in --json and metrics.json), to choose P.
    """
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import Model

        metrics = Model(model, backend).evaluate(data, split, out_dir, tta).metrics
        if as_json:
            out.print_json(json.dumps(metrics))
            return
        print_metrics(metrics, metrics["evaluated"], quiet)
        note = macro_line(metrics)
        if note:
            out.print(note, highlight=False, soft_wrap=True)
        if "tta" in metrics:
            out.print(tta_line(metrics["tta"]), highlight=False)
        out.print(coverage_line(metrics["risk_coverage"]), highlight=False, soft_wrap=True)
