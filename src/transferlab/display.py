"""HTML for notebooks: what ``Run``, ``Leaderboard``, ``Audit`` and predictions show in Jupyter.

Everything here is laid out by the report's own functions (:mod:`transferlab.report`): the
run's summary, curves and per-class sections, the leaderboard's rows and per-class F1 cells,
the report's tables and thumbnails. Only the wrapping is new: a notebook page must not be
restyled, so the report's CSS is scoped to one ``<div>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transferlab.predict import Prediction

SCOPE = "tl-display"
# A CSS rule's selector list: text before "{" that is not an at-rule (@media keeps its body).
_SELECTORS = re.compile(r"(^|[{}])(\s*)([^{}@]+?)(\s*)\{")


def _scope_selector(selector: str) -> str:
    selector = selector.strip()
    if selector in (":root", "body", "*"):
        return f".{SCOPE}" if selector != "*" else f".{SCOPE} *"
    return f".{SCOPE} {selector}"


def scoped_css(css: str) -> str:
    """The report's CSS with every selector under ``.tl-display``, so it styles only the
    output cell (written here: no CSS parser among the dependencies, and the report's
    stylesheet is a flat list of rules and one ``@media`` block)."""

    def scope(match: re.Match[str]) -> str:
        selectors = ", ".join(_scope_selector(s) for s in match.group(3).split(","))
        return f"{match.group(1)}{match.group(2)}{selectors}{match.group(4)}{{"

    return _SELECTORS.sub(scope, css)


def wrap(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """Sections (title, HTML body) in one scoped ``<div>`` with the report's style."""
    from transferlab.report.html import CSS

    body = "".join(
        f'<section><h2 style="font-size:16px">{escape(t)}</h2>{b}</section>' for t, b in sections
    )
    return (
        f"<div class='{SCOPE}'><style>{scoped_css(CSS)}</style><h3>{escape(title)}</h3>{body}</div>"
    )


def page_html(page: str) -> str:
    """A whole page of the report's :func:`transferlab.report.html.page` (such as the
    audit's) shown in a notebook cell: its title and ``<main>`` sections, scoped."""
    title = re.search(r"<h1>(.*?)</h1>", page, re.S)
    main = re.search(r"<main>(.*)</main>", page, re.S)
    body = main.group(1) if main else page
    from transferlab.report.html import CSS

    heading = title.group(1) if title else ""  # already escaped by the page
    return f"<div class='{SCOPE}'><style>{scoped_css(CSS)}</style><h3>{heading}</h3>{body}</div>"


def run_html(run_dir: Path) -> str:
    """A finished run: the report's summary cards, training curves and per-class table."""
    from transferlab.report import run_report

    run = run_report.read_run(run_dir)
    built = run_report.Built()
    run_report.summary_section(run, built, run_report.calibration_of(run, 15))
    run_report.curves_section(run, built)
    run_report.per_class_section(run, built)
    sections = [(s.title, s.body) for s in built.sections]
    report = run_dir / run_report.REPORT_HTML
    if report.is_file():
        sections.append(("Full report", f"<p class='note'>{escape(str(report))}</p>"))
    return wrap(f"transferlab run: {run.name}", sections)


def leaderboard_html(out: Path) -> str:
    """An experiment folder: the leaderboard's rows and its per-class F1 table."""
    from transferlab.report import html
    from transferlab.report import leaderboard as lb

    board = lb.build_board(out)
    rows = lb.leaderboard_rows(board.cells, board.failed)
    notes = "".join(f"<li>{escape(n)}</li>" for n in board.notes)
    sections = [
        ("Leaderboard", f"<ul class='note'>{notes}</ul>" + html.table(lb.LEADER_HEADER, rows))
    ]
    if board.cells:
        text, bold = lb.f1_cells(board.f1_rows, board.classes)
        sections.append(("Per-class F1", html.table(lb.f1_header(board.classes), text, bold)))
    return wrap(board.title, sections)


def _thumb(path: str) -> str:
    from transferlab.report import html
    from transferlab.report.run_report import thumbnail

    png = thumbnail(Path(path), 96) if path and Path(path).is_file() else None
    return html.img(png, path, width=96) if png else ""


def predictions_html(predictions: Sequence[Prediction], images: Sequence[Any] = ()) -> str:
    """One row per image: a thumbnail (files, or the in-memory image), the top classes with
    probabilities, or the error of an unreadable file."""
    rows: list[str] = []
    for i, p in enumerate(predictions):
        thumb = _thumb(p.path) or (_memory_thumb(images[i]) if i < len(images) else "")
        ranked = (
            escape(p.error)
            if p.error
            else "<br>".join(
                f"{escape(lab)} <b>{prob:.3f}</b>"
                for lab, prob in zip(p.labels, p.probabilities, strict=True)
            )
        )
        rows.append(
            f"<tr><td class='t'>{thumb}</td><td class='t'>{escape(p.path)}</td>"
            f"<td class='t'>{ranked}</td></tr>"
        )
    # The cells hold images and line breaks, which the report's html.table escapes: the
    # rows are built here, in the report's table style.
    head = (
        "<tr><th class='t'>image</th><th class='t'>source</th><th class='t'>top classes</th></tr>"
    )
    table = f"<div class='scroll'><table>{head}{''.join(rows)}</table></div>"
    return wrap(f"{len(predictions)} predictions", [("Predictions", table)])


def _memory_thumb(image: Any) -> str:
    from PIL import Image

    from transferlab.data.images import thumbnail_bytes
    from transferlab.report import html

    if not isinstance(image, Image.Image):
        return ""
    return html.img(thumbnail_bytes(image, 96), "image", width=96)


def metrics_html(metrics: dict[str, Any], title: str) -> str:
    """An evaluation: headline numbers and the per-class table the report shows."""
    from transferlab.report import html
    from transferlab.report.table import HEADER, per_class_rows

    cards = html.cards(
        [
            ("accuracy", f"{metrics['accuracy']:.3f}", ""),
            ("macro-F1", f"{metrics['macro_f1']:.3f}", ""),
            ("images", str(metrics.get("num_images", "")), str(metrics.get("evaluated", ""))),
        ]
    )
    table = html.table(HEADER, per_class_rows(metrics))
    return wrap(title, [("Summary", cards), ("Per-class results", table)])
