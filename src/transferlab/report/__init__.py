"""Reports: the per-class table, each run's HTML report, and comparison tables."""

from __future__ import annotations

from pathlib import Path

from transferlab.report.table import per_class_rows, per_class_table, render_text


def write_run_report(run_dir: Path, window: int = 20, top_k: int = 12, bins: int = 15) -> Path:
    """Write ``RUN/report.html`` (self-contained) and ``RUN/report/`` (every figure as PNG,
    every number in ``report.json``) from a finished run folder; return the HTML's path.

    ``window``: batches in the rolling mean/std of the batch-loss curve; ``top_k``: images in
    the top-losses gallery; ``bins``: confidence bins of the calibration plot.
    """
    # Imported here so that the per-class table (printed by every command) needs no matplotlib.
    from transferlab.report.run_report import write_run_report as write

    return write(run_dir, window=window, top_k=top_k, bins=bins)


__all__ = ["per_class_rows", "per_class_table", "render_text", "write_run_report"]
