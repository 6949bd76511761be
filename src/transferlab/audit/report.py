"""The audit as a rich table on the terminal, JSON for tools and a self-contained HTML page
with a thumbnail of every member of every duplicate group and of every label suspect."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from rich.markup import escape as markup
from rich.table import Table

from transferlab.audit.core import AuditResult, DuplicateGroup, Suspect
from transferlab.data.images import ImageReadError, load_image, thumbnail_bytes
from transferlab.errors import ConfigError
from transferlab.files import replace_when_done
from transferlab.report import html

THUMB_PX = 120
# A page stays openable on big, messy data: the JSON keeps every group, the page the first.
HTML_GROUPS = 300


def check_out_file(path: Path, flag: str) -> None:
    """Refuse an output ``path`` (of option ``flag``) that is a folder, before any work."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")


def summary_table(result: AuditResult) -> Table:
    """The findings with counts and the first file of each, for the terminal."""
    s = result.summary()
    table = Table(title=f"audit of {result.data} ({result.layout}, {s['images']} images)")
    for col in ("check", "found", "first example"):
        table.add_column(col, justify="right" if col == "found" else "left", overflow="fold")
    first_group = {
        "duplicate groups": result.groups,
        "across classes (label conflict)": [g for g in result.groups if g.conflict],
        "across splits (leakage)": [g for g in result.groups if g.leak],
    }
    rows: list[tuple[str, int, str]] = [
        ("unreadable files", s["unreadable"], _head([f"{f}: {r}" for f, r in result.unreadable])),
        ("tiny (side < 32 px)", s["tiny"], _head(result.tiny)),
        *[(k, len(v), _head(v)) for k, v in result.kinds.items()],
        ("classes (imbalance max/min)", s["classes"], f"{result.imbalance:.2f}"),
        *[(k, len(v), _group_text(v[0]) if v else "") for k, v in first_group.items()],
    ]
    if result.features:
        rows.append(
            (
                f"likely label errors (first {s['label_suspects']} listed)",
                s["label_issues"],
                _suspect_text(result.suspects[0]) if result.suspects else "",
            )
        )
    for check, n, example in rows:
        table.add_row(
            check, str(n), markup(example), style="bold red" if n and "across" in check else None
        )
    return table


def _head(items: list[str]) -> str:
    return items[0] if items else ""


def _group_text(g: DuplicateGroup) -> str:
    return " = ".join(f"{Path(f).name} [{lab}]" for f, lab in zip(g.files, g.labels, strict=True))


def _suspect_text(s: Suspect) -> str:
    return f"{Path(s.file).name}: {s.given} -> {s.suggested} ({s.suggested_probability:.2f})"


def write_json(result: AuditResult, out: Path) -> None:
    text = json.dumps(result.to_dict(), indent=2, ensure_ascii=False)
    replace_when_done(out, lambda tmp: tmp.write_text(text, "utf-8"))


def _thumb(path: str) -> str:
    try:
        jpeg = thumbnail_bytes(load_image(path), THUMB_PX, "JPEG", quality=80)
    except ImageReadError:
        return '<div class="missing">unreadable</div>'
    return html.img(jpeg, Path(path).name, "image/jpeg")


def _card(path: str, lines: list[str], bad: bool = False) -> str:
    verdict = ' class="bad"' if bad else ""
    text = "".join(f"<div{verdict}>{escape(line)}</div>" for line in lines)
    return f'<div class="thumb">{_thumb(path)}{text}<div class="path">{escape(path)}</div></div>'


def _group_html(n: int, g: DuplicateGroup) -> str:
    cards = "".join(
        _card(f, [lab + (f" / {s}" if s else "")], g.conflict or g.leak)
        for f, lab, s in zip(g.files, g.labels, g.splits, strict=True)
    )
    head = f"group {n}: {len(g.files)} images, {g.where}; found by {', '.join(g.found_by)}"
    return html.note(escape(head)) + f'<div class="gallery">{cards}</div>'


def render_html(result: AuditResult) -> str:
    s = result.summary()
    overview = html.cards(
        [
            ("images", str(s["images"]), f"{s['classes']} classes"),
            ("duplicate groups", str(s["duplicate_groups"]), f"{s['exact_groups']} exact"),
            ("label conflicts", str(s["label_conflicts"]), "groups across classes"),
            ("leaks", str(s["leaks"]), "groups across splits"),
            ("label issues", str(s["label_issues"]), result.features or "not run"),
        ]
    )
    counts = html.table(["class", "images"], [[c, str(n)] for c, n in result.class_counts.items()])
    files = html.table(
        ["check", "files", "first"],
        [["unreadable", str(s["unreadable"]), _head([f for f, _ in result.unreadable])]]
        + [["tiny", str(s["tiny"]), _head(result.tiny)]]
        + [[k, str(len(v)), _head(v)] for k, v in result.kinds.items()],
    )
    groups = "".join(_group_html(i + 1, g) for i, g in enumerate(result.groups[:HTML_GROUPS]))
    if len(result.groups) > HTML_GROUPS:
        groups += html.note(f"first {HTML_GROUPS} of {len(result.groups)} groups; all in the JSON")
    suspects = "".join(
        _card(
            x.file,
            [
                f"given {x.given} ({x.given_probability:.2f})",
                f"suggested {x.suggested} ({x.suggested_probability:.2f})",
            ],
            True,
        )
        for x in result.suspects
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    sections = [
        html.Section("overview", "Overview", overview + html.note(escape(timing))),
        html.Section(
            "files",
            "Files",
            files + html.note(f"imbalance max/min {result.imbalance:.2f}") + counts,
        ),
        html.Section("duplicates", "Duplicate groups", groups or html.note("none found")),
        html.Section(
            "labels",
            "Likely label errors",
            f'<div class="gallery">{suspects}</div>'
            if suspects
            else html.note("none found" if result.features else "feature checks not run"),
        ),
    ]
    return html.page(f"Audit of {result.data}", escape(result.layout), sections)


def write_html(result: AuditResult, out: Path) -> None:
    text = render_html(result)
    replace_when_done(out, lambda tmp: tmp.write_text(text, "utf-8"))
