"""This run's answer on the report's landing page: a short reStructuredText table (``tables/answer.rst``) that
the report's ``workflow.rst`` includes, written by rule ``tables``.

Per experiment (spikebench's implementation of the study pair: the SNN over its ANN; experiment 3, the N-MNIST
SNN over the MNIST SNN): the ratio of training time per sample, of training energy per sample, of activation
memory, of training time to the target accuracy, and both test accuracies, each this run's next to the study's.
Every ratio is the cost table's (``aggregate.seed_ratios``: the ratio of the means over seeds, with its 95%
interval where both sides have >= 3 seeds). A value that was not measured is a numbered footnote with the reason,
given once. Every text taken from results or the config is escaped for reStructuredText, so nothing in it can
become markup (a directive, a link, raw HTML).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from spikebench import atomic
from spikebench.results.cells import is_missing
from spikebench.results.footnotes import explain_missing
from spikebench.results.networks import spiking_pairs

#: The answer's ratio columns: header -> cost-table metric.
RATIO_COLUMNS = {
    "time / sample": "train_time_per_sample_ms",
    "energy / sample": "energy_per_train_sample_mj",
    "activation mem.": "activation_peak_mib",
    "saved for backward": "saved_for_backward_mib",
    "time to target": "time_to_target_s",
}
#: The ratio columns whose metric the cost table has only where it was measured, and why a run may lack it.
OPTIONAL_RATIOS = {
    "activation_peak_mib": "activation memory not measured in this run",
    "saved_for_backward_mib": "memory saved for backward not measured in this run",
}


def rst_text(text: object) -> str:
    """``text`` as plain reStructuredText: one line, every character that could start markup escaped."""
    flat = " ".join(str(text).split())
    return re.sub(r"([\\`*_|\[\]<>:.])", r"\\\1", flat)


def _ratio(value: float) -> str:
    return f"{value:.3g}x" if value < 100 else f"{value:.0f}x"


def short_reason(text: str, keep: int = 25) -> str:
    """A footnote's reason cut before its first parenthesis or comma past ``keep`` characters (the landing page
    has room for one line; Table I's footnote has the whole reason)."""
    cut = [i for i in (text.find(" (", keep), text.find(", ", keep)) if i >= keep]
    return text[: min(cut)] if cut else text


class _Notes:
    """Numbered footnotes, each text once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        text = short_reason(text)
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"{i}. {rst_text(t)}" for i, t in enumerate(self.texts, 1)]


def _ratio_cell(row: pd.Series | None, notes: _Notes, missing_reason: str | None) -> str:
    """``10.6x (1.1 to 103)`` and the study's ratio beside it, or why there is no ratio (a footnote)."""
    if row is None:
        return "n/a"
    ratio = row.get("run_ratio")
    study = row.get("paper_ratio")
    study_text = f" · {_ratio(float(study))}" if not is_missing(study) else ""
    if is_missing(ratio):
        reason = row.get("ratio_interval_null_reason")
        reason = reason if isinstance(reason, str) and reason.startswith("target accuracy not reached") else None
        text = "not reached" if reason else "not measured"
        return f"{text} {notes.mark(reason or missing_reason or 'not measured in this run')}{study_text}"
    low, high = row.get("ci_low"), row.get("ci_high")
    if not is_missing(low) and not is_missing(high):
        spread = f" ({float(low):.3g}\u2013{float(high):.3g})"
    else:  # too few seeds: the column's header says how many; any other reason is a footnote
        reason = row.get("ratio_interval_null_reason")
        spread = f" {notes.mark(str(reason))}" if isinstance(reason, str) and reason and "seeds" not in reason else ""
    return f"**{_ratio(float(ratio))}**{spread}{study_text}"


def _accuracy_cell(num: str, den: str, accuracy: Mapping[str, float], study: Mapping[str, float]) -> str:
    """Both networks' test accuracy (mean over seeds), this run and the study."""

    def pct(values: Mapping[str, float], n: str) -> str:
        v = values.get(n, math.nan)
        return "n/a" if is_missing(v) else f"{v:.1f}"

    run = f"{pct(accuracy, num)} / {pct(accuracy, den)}"
    if num in study and den in study:
        return f"{run} · {pct(study, num)} / {pct(study, den)}"
    return run


def _short(comparison: str) -> str:
    """``SNN: N-MNIST / SNN: MNIST`` as ``N-MNIST / MNIST SNN``; other comparisons as they are."""
    parts = [p.strip() for p in comparison.split("/")]
    if len(parts) == 2 and all(p.startswith("SNN: ") for p in parts):
        return f"{parts[0][5:]} / {parts[1][5:]} SNN"
    return comparison


def _missing_reasons(t1: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Table I's footnotes by (network, column): why a value was not measured."""
    return {(t1["network"].iloc[i], column): text for (i, column), text in explain_missing(t1).items()}


def answer_rows(
    cost: pd.DataFrame,
    t1: pd.DataFrame,
    networks: Mapping[str, Mapping],
    accuracy: Mapping[str, float],
    study_accuracy: Mapping[str, float],
) -> tuple[list[list[str]], list[str]]:
    """The answer table's rows (header first: one column per experiment, one row per figure) and its footnotes."""
    notes, reasons = _Notes(), _missing_reasons(t1)
    pairs = [p for p in spiking_pairs(networks) if p["implementation"] == "spikebench"]
    header, columns = [""], []
    for pair in pairs:
        num, den = pair["numerator"], pair["denominator"]
        mine = cost[(cost["numerator"] == num) & (cost["denominator"] == den)].set_index("metric")
        seeds = mine["seeds"].dropna().iloc[0] if "seeds" in mine and mine["seeds"].notna().any() else "1/1"
        header.append(f"Exp. {pair['experiment']} {rst_text(_short(pair['comparison']))}, {rst_text(seeds)} seeds")
        cells = []
        for metric in RATIO_COLUMNS.values():
            row = mine.loc[metric] if metric in mine.index else None
            reason = reasons.get((num, metric)) or reasons.get((den, metric))
            if row is None and metric in OPTIONAL_RATIOS:  # not measured anywhere in this run
                cells.append(f"not measured {notes.mark(reason or OPTIONAL_RATIOS[metric])}")
                continue
            cells.append(_ratio_cell(row, notes, reason))
        cells.append(_accuracy_cell(num, den, accuracy, study_accuracy))
        columns.append(cells)
    labels = [*RATIO_COLUMNS, "test accuracy %"]
    rows = [header] + [[label] + [column[i] for column in columns] for i, label in enumerate(labels)]
    return rows, notes.lines()


def answer_rst(rows: list[list[str]], footnotes: list[str], *, demo: bool, targets: str | None = None) -> str:
    """The landing page's answer: the list-table, the targets, the footnotes (report/workflow.rst says how to
    read it, just above the include)."""
    lines = [".. list-table::", "   :header-rows: 1", "   :stub-columns: 1", ""]
    for row in rows:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    if targets:
        lines += ["", rst_text(targets)]
    if footnotes:
        lines += ["", *footnotes]
    return "\n".join(lines).rstrip() + "\n"


def write_answer(
    path: str | Path,
    cost: pd.DataFrame,
    t1: pd.DataFrame,
    t2: pd.DataFrame,
    networks: Mapping[str, Mapping],
    paper: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    *,
    demo: bool = False,
) -> str:
    """Write ``tables/answer.rst`` (rule tables) and return its text."""
    accuracy = dict(zip(t2["network"], t2["test_acc"]))
    if summary is not None and "test_acc_pct" in summary:
        means = summary.drop_duplicates("network").set_index("network")["test_acc_pct"]
        accuracy.update({n: float(v) for n, v in means.items() if n in networks and not is_missing(v)})
    study = paper[(paper["table"] == "II") & (paper["metric"] == "test_acc")]
    rows, footnotes = answer_rows(cost, t1, networks, accuracy, dict(zip(study["network"], study["value"])))
    if summary is not None and "target_val_acc_pct" in summary:
        by = summary.drop_duplicates("network").set_index("network")["target_val_acc_pct"]
        pairs = [p for p in spiking_pairs(networks) if p["implementation"] == "spikebench"]
        goals = [by.get(p["numerator"], math.nan) for p in pairs]
        # the target in the same row as the time to reach it (a row of its own made the landing page taller
        # than a 1400x900 window, which Snakemake then centres, cutting off its top)
        at = next(i for i, r in enumerate(rows) if r[0] == "time to target")
        cells = [cell if is_missing(g) else f"{cell}; target {g:.1f} %" for cell, g in zip(rows[at][1:], goals)]
        rows[at] = ["time to target (val. acc.)", *cells]
    text = answer_rst(rows, footnotes, demo=demo)
    atomic.write_text(text, path)
    return text
