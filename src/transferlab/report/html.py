"""Self-contained HTML: one file, inline CSS, images as base64 data URIs, no scripts, no CDN."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

CSS = """
:root { --fg:#1d232b; --muted:#5c6670; --line:#dde2e7; --accent:#1f6feb; --bg:#f7f8fa; }
* { box-sizing:border-box; }
body { font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:var(--bg); margin:0; }
header { background:#fff; border-bottom:1px solid var(--line); padding:18px 28px 10px; }
header h1 { margin:0 0 4px; font-size:22px; }
header .sub { color:var(--muted); font-size:13px; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:4px 14px; font-size:13px; }
nav a { color:var(--accent); text-decoration:none; }
main { padding:8px 28px 40px; max-width:1500px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
          padding:14px 18px; margin:16px 0; }
section h2 { margin:0 0 8px; font-size:18px; }
.note { color:var(--muted); font-size:13px; margin:4px 0 10px; }
ul.note { padding-left:20px; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:6px 0; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 12px; min-width:140px; }
.card .k { color:var(--muted); font-size:12px; }
.card .v { font-size:20px; font-weight:600; }
.card .ci { color:var(--muted); font-size:12px; }
.figs { display:flex; flex-wrap:wrap; gap:14px; align-items:flex-start; }
.figs img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
.figs.pair img { max-width:calc(50% - 7px); }
@media (max-width: 1000px) { .figs.pair img { max-width:100%; } }
table { border-collapse:collapse; font-size:13px; margin:6px 0; }
th, td { padding:4px 9px; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; }
th { background:#f0f3f6; white-space:normal; vertical-align:bottom; }
td.t, th.t { text-align:left; }
tr.baseline td { background:#fff8e1; font-style:italic; }
td b { color:#0b5d1e; }
.scroll { overflow-x:auto; }
.gallery { display:flex; flex-wrap:wrap; gap:12px; }
.thumb { width:172px; border:1px solid var(--line); border-radius:6px; padding:6px;
         font-size:12px; background:#fff; }
.thumb img { width:160px; height:160px; object-fit:contain; background:#eee; display:block; }
.thumb .missing { width:160px; height:160px; display:flex; align-items:center;
                  justify-content:center; background:#eee; color:var(--muted); text-align:center; }
.thumb .path { color:var(--muted); overflow-wrap:anywhere; }
.bad { color:#b42318; font-weight:600; }
"""


# Cells that read as numbers (0.906, +2, ±0, 95%, 0.40–1.00, 0.81 ± 0.02, 3.38 M, 12 s)
_NUMERIC = re.compile(r"[-+±]?\d[\d.,]*( ?[%MsK])?(( ?[–±-] ?)\d[\d.,]*)?")


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, alt: str, mime: str = "image/png", width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{data_uri(data, mime)}" alt="{escape(alt)}"{size}>'


def figures(*tags: str) -> str:
    """Figures side by side, two per row on wide screens."""
    cls = "figs pair" if len(tags) > 1 else "figs"
    return f'<div class="{cls}">' + "".join(tags) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Headline numbers: (label, value, small print)."""
    cells = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="ci">{escape(ci)}</div></div>'
        for k, v, ci in items
    )
    return f'<div class="cards">{cells}</div>'


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    bold: Sequence[Sequence[bool]] | None = None,
    row_classes: Sequence[str] | None = None,
    hrefs: Sequence[str | None] | None = None,
    link_col: int = 0,
) -> str:
    """A table of already formatted cells; ``bold[i][j]`` wraps a cell in ``<b>``, and
    ``hrefs[i]`` links row ``i``'s cell in column ``link_col``."""
    text_cols = [
        all(not _NUMERIC.fullmatch(r[j]) for r in rows if j < len(r) and r[j])
        for j in range(len(header))
    ]
    align = [' class="t"' if t else "" for t in text_cols]
    head = "".join(f"<th{align[j]}>{escape(h)}</th>" for j, h in enumerate(header))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            text = escape(cell)
            if bold is not None and bold[i][j]:
                text = f"<b>{text}</b>"
            if hrefs is not None and j == link_col and hrefs[i]:
                text = f'<a href="{escape(str(hrefs[i]))}">{text}</a>'
            cells.append(f"<td{align[j]}>{text}</td>")
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}"><h2>{escape(s.title)}</h2>\n{s.body}\n</section>' for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style></head>\n"
        f"<body><header><h1>{escape(title)}</h1>"
        f'<div class="sub">{subtitle}</div><nav>{nav}</nav></header>\n'
        f"<main>\n{body}\n</main></body></html>\n"
    )
