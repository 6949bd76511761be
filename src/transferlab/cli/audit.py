"""`transferlab audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transferlab.cli._common import Debug, Quiet, app, guard, out, setup_logging

AUDIT_EXAMPLES = """
[bold]Examples[/bold]

  transferlab audit photos/
  transferlab audit photos/ --split-file runs/demo/split.csv --json audit.json --html audit.html
  transferlab audit photos/ --no-features            # file and hash checks only (seconds)
  transferlab audit photos/ --image-size 96 --feature-cache-dir ~/.cache/tl

Duplicate groups say where their copies are: within one class (redundant), across classes
(a label conflict) or across train/val/test (leakage, when the layout or --split-file
gives splits).
"""

Opt = typer.Option


@app.command(epilog=AUDIT_EXAMPLES)
def audit(
    data: Annotated[
        Path, typer.Argument(help="Class folders, train/ + val/ (+ test/) folders, or a CSV.")
    ],
    split_file: Annotated[
        Path | None, Opt(help="A run's split.csv: report copies across its splits.")
    ] = None,
    json_out: Annotated[Path | None, Opt("--json", help="Write the findings as JSON.")] = None,
    html_out: Annotated[
        Path | None, Opt("--html", help="Write an HTML page with thumbnails.")
    ] = None,
    features: Annotated[
        bool,
        Opt(
            "--features/--no-features",
            help="Backbone-feature near-duplicates and likely label errors (slower).",
        ),
    ] = True,
    model: Annotated[str, Opt(help="Backbone for the feature checks.")] = "tf_efficientnet_lite0",
    image_size: Annotated[
        int | None, Opt(help="Input size for the feature checks (default: the model's).")
    ] = None,
    feature_cache_dir: Annotated[
        Path | None, Opt(help="Keep the backbone features here for the next audit.")
    ] = None,
    similarity: Annotated[
        float | None,
        Opt(help="Feature cosine from which two images are near-copies (default 0.92)."),
    ] = None,
    seed: Annotated[int, Opt(help="Seed of the label probe's folds.")] = 0,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Check DATA before training: unreadable and odd files, duplicates, label errors."""
    setup_logging(quiet, debug)
    with guard(debug):
        from transferlab.api import audit as run_audit
        from transferlab.audit.report import check_out_file, summary_table, write_html, write_json

        for path, flag in ((json_out, "--json"), (html_out, "--html")):
            if path is not None:
                check_out_file(path, flag)
        result = run_audit(
            data,
            split_file=split_file,
            features=features,
            model=model,
            image_size=image_size,
            feature_cache_dir=feature_cache_dir,
            similarity=similarity,
            seed=seed,
        ).result
        out.print(summary_table(result))
        if json_out is not None:
            write_json(result, json_out)
            out.print(f"JSON written to {json_out}")
        if html_out is not None:
            write_html(result, html_out)
            out.print(f"HTML written to {html_out}")
