"""The per-class table printed at the end of ``train`` and ``evaluate``."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _ci(stats: dict[str, Any], key: str) -> str:
    ci = stats.get("ci95", {}).get(key)
    return f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else ""


def per_class_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """Rows of class, precision, recall, F1, F1 95% CI, support; then macro and accuracy."""
    rows = []
    for name, s in metrics["per_class"].items():
        rows.append(
            [
                name,
                f"{s['precision']:.3f}",
                f"{s['recall']:.3f}",
                f"{s['f1']:.3f}",
                _ci(s, "f1"),
                str(s["support"]),
            ]
        )
    ci = metrics.get("ci95", {})
    macro_ci = ci.get("macro_f1")
    acc_ci = ci.get("accuracy")
    rows.append(
        [
            "macro avg",
            f"{metrics['macro_precision']:.3f}",
            f"{metrics['macro_recall']:.3f}",
            f"{metrics['macro_f1']:.3f}",
            f"{macro_ci[0]:.2f}-{macro_ci[1]:.2f}" if macro_ci else "",
            str(metrics["num_images"]),
        ]
    )
    rows.append(
        [
            "accuracy",
            "",
            "",
            f"{metrics['accuracy']:.3f}",
            f"{acc_ci[0]:.2f}-{acc_ci[1]:.2f}" if acc_ci else "",
            str(metrics["num_images"]),
        ]
    )
    return rows


HEADER = ["class", "precision", "recall", "f1", "f1 95% CI", "support"]


def per_class_table(metrics: dict[str, Any], title: str = "") -> Table:
    table = Table(title=title or None, show_lines=False)
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="left" if i == 0 else "right")
    rows = per_class_rows(metrics)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 3)
    return table


def render_text(metrics: dict[str, Any]) -> str:
    """The same table as plain aligned text (for logs and files)."""
    rows = [HEADER, *per_class_rows(metrics)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(lines)
