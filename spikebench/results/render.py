"""A table as a self-contained HTML page for the Snakemake report: readable labels with units in the headers
(the CSV keeps the machine names), numbers right aligned, an empty cell with a numbered footnote saying why (each
reason once), wide tables split into parts that fit a report at 1400 px, DEMO DATA in red on a demo run."""

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
h2{font-size:1em;margin:1.2em 0 .4em;color:#555}
.demo{background:#b00020;color:#fff;font-weight:bold;padding:.5em .8em;margin-bottom:1em;font-size:1.1em}
table{border-collapse:collapse;font-size:.85em;max-width:100%}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f2f2f2;text-align:left;max-width:9em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{max-width:16em;overflow-wrap:anywhere}
td.missing{background:#fafafa;text-align:center}
sup a{text-decoration:none;color:#b00020}
.intro{max-width:60em}
ol.footnotes{font-size:.85em;max-width:60em;padding-left:1em}
"""

#: Columns shown at the start of every part of a table split for width (they say what a row is).
KEY_COLUMNS = ("experiment", "network", "run_id", "comparison", "snn", "ann", "table", "metric", "figure")
#: Columns per part besides the key columns: a part stays within ~1400 px (a report at 1400x900).
MAX_COLUMNS = 8
#: Text that footnotes already give, left out of the HTML (the CSV keeps it).
HIDDEN_SUFFIXES = ("_null_reason", "_note")

#: Column -> what a reader calls it (the CSV keeps the machine names; the unit comes from UNITS or the name).
LABELS = {
    "experiment": "exp.",
    "highest_train_acc": "highest training accuracy",
    "highest_val_acc": "highest validation accuracy",
    "epochs_to_best_val": "epochs to the best validation accuracy",
    "avg_epoch_time_s": "time per epoch",
    "median_epoch_time_s": "median time per epoch",
    "avg_memory_pct": "average device memory",
    "avg_power_w": "average power",
    "energy_per_epoch_j": "energy per epoch",
    "energy_per_train_sample_mj": "energy per training sample",
    "peak_memory_mib": "peak memory",
    "energy_above_idle_per_epoch_j": "energy above idle per epoch",
    "activation_peak_mib": "activation memory peak",
    "dataset_mib": "resident dataset",
    "saved_for_backward_mib": "memory saved for backward",
    "saved_for_backward_predicted_mib": "memory saved for backward, predicted",
    "train_time_per_sample_ms": "time per training sample",
    "train_samples_per_epoch": "training samples per epoch",
    "lif_backend_used": "LIF recurrence ran as",
    "telemetry_epochs": "epochs with telemetry",
    "test_acc": "test accuracy",
    "test_time_s": "test time",
    "recall": "macro recall",
    "f1": "macro F1",
    "precision": "macro precision",
    "energy_j": "test energy",
    "energy_per_test_sample_mj": "energy per test sample",
    "energy_above_idle_per_test_sample_mj": "energy above idle per test sample",
    "test_time_per_sample_ms": "time per test sample",
    "n_test": "test samples",
    "epoch_of_weights": "epoch of the weights",
    "run_value": "this run",
    "paper_value": "study",
    "paper_label": "study's name",
    "paper_source": "study's source",
}
_SUFFIX_UNITS = {
    "_pct": "%",
    "_ms": "ms",
    "_s": "s",
    "_w": "W",
    "_uj": "µJ",
    "_mj": "mJ",
    "_j": "J",
    "_pj": "pJ",
    "_mib": "MiB",
    "_bytes": "bytes",
    "_c": "°C",
}


def column_label(column: str) -> str:
    """``energy_per_train_sample_mj`` -> ``energy per training sample (mJ)``: a label with its unit."""
    name = str(column)
    unit = UNITS.get(name)
    base = LABELS.get(name)
    if base is None:
        base = name
        for suffix, suffix_unit in _SUFFIX_UNITS.items():
            if name.endswith(suffix):
                base, unit = name[: -len(suffix)], unit or suffix_unit
                break
        base = base.replace("_", " ")
    return f"{base} ({unit})" if unit and unit not in ("1", "") else base


def _marks() -> Iterable[str]:
    n = 1
    while True:
        yield str(n)
        n += 1


def column_parts(columns: list[str]) -> list[list[str]]:
    """The columns of each part of a table split for width: the key columns, then at most ``MAX_COLUMNS``."""
    keys = [c for c in columns if c in KEY_COLUMNS]
    rest = [c for c in columns if c not in keys]
    if len(rest) <= MAX_COLUMNS + 2:  # a part of one or two columns is not worth a second table
        return [keys + rest]
    return [keys + rest[i : i + MAX_COLUMNS] for i in range(0, len(rest), MAX_COLUMNS)]


def _cell(value, note: str | None, mark_of: Mapping[str, str]) -> str:
    esc = html.escape
    sup = f'<sup><a href="#note-{mark_of[note]}" title="{esc(note)}">{mark_of[note]}</a></sup>' if note else ""
    if is_missing(value):
        return f'<td class="missing">{sup}</td>'
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f'<td class="num">{esc(format_number(value))}{sup}</td>'
    return f'<td class="text">{esc(str(value))}{sup}</td>'


def _table_html(table: pd.DataFrame, columns: list[str], notes: Mapping, mark_of: Mapping[str, str]) -> list[str]:
    out = ["<table><thead><tr>"]
    out += [f"<th>{html.escape(column_label(c))}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    positions = [list(table.columns).index(c) for c in columns]
    for i, row in enumerate(table.itertuples(index=False, name=None)):
        out.append("<tr>" + "".join(_cell(row[p], notes.get((i, c)), mark_of) for p, c in zip(positions, columns)))
        out.append("</tr>")
    out.append("</tbody></table>")
    return out


def render_html(
    table: pd.DataFrame,
    *,
    title: str,
    intro: Iterable[str] = (),
    notes: Mapping[tuple[int, str], str] | None = None,
    demo: bool = False,
) -> str:
    """A self-contained HTML page of `table`: labelled columns with units, empty cells with a numbered footnote
    saying why (each reason once), split into parts of a readable width (the key columns repeated in each)."""
    table = table.drop(columns=[c for c in table.columns if str(c).endswith(HIDDEN_SUFFIXES)])
    notes = {k: v for k, v in (notes or {}).items() if k[1] in table.columns}
    mark_of: dict[str, str] = {}
    marks = _marks()
    for key in sorted(notes, key=lambda k: (k[0], list(table.columns).index(k[1]))):
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
    parts = column_parts(list(table.columns))
    for n, columns in enumerate(parts, 1):
        if len(parts) > 1:
            out.append(f"<h2>Part {n} of {len(parts)}</h2>")
        out += _table_html(table, columns, notes, mark_of)
    if mark_of:
        out.append('<ol class="footnotes">')
        for text, mark in mark_of.items():
            out.append(f'<li id="note-{mark}" style="list-style:none"><sup>{mark}</sup> {esc(text)}</li>')
        out.append("</ol>")
    out.append("</body></html>")
    return "\n".join(out)
