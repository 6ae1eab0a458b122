"""A table as a self-contained HTML page for the Snakemake report: units in the headers, numbers right
aligned, an empty cell with a footnote mark saying why it is empty, DEMO DATA in red on a demo run."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from spikebench.results.cells import format_number, is_missing
from spikebench.results.tables import UNITS

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.25em;margin:.2em 0 .6em}
.demo{background:#b00020;color:#fff;font-weight:bold;padding:.5em .8em;margin-bottom:1em;font-size:1.1em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f2f2f2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.missing{background:#fafafa;text-align:center}
sup a{text-decoration:none;color:#b00020}
.intro{max-width:60em}
ol.footnotes{font-size:.85em;max-width:60em}
"""


def _marks() -> Iterable[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    for n in range(1, 100):
        for letter in letters:
            yield letter * n


def render_html(
    table: pd.DataFrame,
    *,
    title: str,
    intro: Iterable[str] = (),
    notes: Mapping[tuple[int, str], str] | None = None,
    demo: bool = False,
) -> str:
    """A self-contained HTML page of `table`: empty cells carry a footnote mark saying why."""
    notes = dict(notes or {})
    mark_of: dict[str, str] = {}
    marks = _marks()
    for key in sorted(notes, key=lambda k: (k[0], list(table.columns).index(k[1]) if k[1] in table.columns else 0)):
        if notes[key] not in mark_of:
            mark_of[notes[key]] = next(marks)
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(('DEMO DATA: ' if demo else '') + title)}</title><style>{_CSS}</style></head><body>",
    ]
    if demo:
        out.append(
            '<div class="demo">DEMO DATA: made offline by spikebench and shrunk networks, '
            "not the study's data; the numbers only show that the pipeline works.</div>"
        )
    out.append(f"<h1>{esc(title)}</h1>")
    for paragraph in intro:
        out.append(f'<p class="intro">{esc(paragraph)}</p>')
    out.append("<table><thead><tr>")
    for column in table.columns:
        unit = UNITS.get(str(column))
        label = (
            f"{column} ({unit})"
            if unit and unit != "1" and not str(column).endswith(("_s", "_w", "_j", "_mj", "_mib", "_pct"))
            else str(column)
        )
        out.append(f"<th>{esc(label)}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(table.itertuples(index=False, name=None)):
        out.append("<tr>")
        for column, value in zip(table.columns, row):
            note = notes.get((i, column))
            sup = f'<sup><a href="#note-{mark_of[note]}" title="{esc(note)}">{mark_of[note]}</a></sup>' if note else ""
            if is_missing(value):
                out.append(f'<td class="missing">{sup}</td>')
            elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                out.append(f'<td class="num">{esc(format_number(value))}{sup}</td>')
            else:
                out.append(f"<td>{esc(str(value))}{sup}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if mark_of:
        out.append('<ol class="footnotes">')
        for text, mark in mark_of.items():
            out.append(f'<li id="note-{mark}" style="list-style:none"><sup>{mark}</sup> {esc(text)}</li>')
        out.append("</ol>")
    out.append("</body></html>")
    return "\n".join(out)
