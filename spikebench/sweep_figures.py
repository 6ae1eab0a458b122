"""One figure per swept setting (config ``sweeps``): the cost and the accuracy against the setting's value.

Up to five panels, time per epoch, energy per epoch, activation memory, memory saved for backward (measured, and
dotted what the model of BPTT's saved tensors predicts: ``spikebench.memory_estimate.saved_bytes``; linear in the
time steps for an SNN) and test accuracy, each against the setting's value: one line per base network (its own value
is one of the points; the implementation, when the network has one, is in its label), coloured by kind as every
figure (``spikebench.figures.network_colors``: an snnTorch twin lighter and dashed), the ANN of the same experiment
as a dashed orange reference line, the 95% interval over seeds as error bars only where a point has ``MIN_SEEDS``
(3) or more completed runs, clipped to where the figure can lie (accuracies within [0, 100] %, everything else >=
0). A point that ran out of memory is a cross at the bottom of each panel (one whose seeds ran out of memory only in
part is labelled "oom in k of n", its mean is of the others). A figure that was not measured at all (activation
memory on the CPU, energy without a power reading) gets no panel: a note under the figure says so, never a 0 drawn.
Input: the summary table of ``spikebench.aggregate``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: jobs run without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from spikebench import figures, results  # noqa: E402
from spikebench.figures.style import KIND_COLORS, MIN_SEEDS, interval_bars, is_twin, network_color, title  # noqa: E402

PANELS = {
    "avg_epoch_time_s": "time per epoch (s)",
    "energy_per_epoch_j": "energy per epoch (J)",
    "activation_peak_mib": "activation memory (MiB)",
    "saved_for_backward_mib": "memory saved for backward (MiB)",
    "test_acc_pct": "test accuracy (%)",
}
#: Why a figure has no value at all in a run (the note under the figure).
UNMEASURED = {
    "avg_epoch_time_s": "no completed run",
    "energy_per_epoch_j": "no power reading (a CPU without readable RAPL, or telemetry off)",
    "activation_peak_mib": "no activation peak on the CPU",
    "saved_for_backward_mib": "results from before it was measured",
    "test_acc_pct": "no completed run",
}
#: A panel's second line per network: the model's prediction of the measured figure (dotted, black crosses).
PREDICTED = {"saved_for_backward_mib": "saved_for_backward_predicted_mib"}
#: Where a figure can lie: accuracies within [0, 100] %, everything else >= 0.
DOMAIN = {"test_acc_pct": (0.0, 100.0)}
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _positions(values: Sequence) -> tuple[list[float], list[str] | None]:
    """Numeric values as they are; anything else (lists, names) as categories 0, 1, ... with their labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values], None
    labels = sorted({str(v) for v in values})
    return [float(labels.index(str(v))) for v in values], labels


def _ann_of(network: str, networks: Mapping[str, Mapping]) -> str | None:
    for pair in results.spiking_pairs(networks):
        if pair["numerator"] == network and networks[pair["denominator"]].get("kind") == "ann":
            return pair["denominator"]
    return None


def _draw_means(ax: plt.Axes, ok: pd.DataFrame, metric: str, style: Mapping) -> bool:
    """The line of means of one base network, with intervals where they may be drawn; False when it has none."""
    if not ok[metric].notna().any():
        return False
    n_ok = ok["n_ok"] if "n_ok" in ok else None
    yerr = interval_bars(
        ok[metric], ok[f"{metric}_ci95_low"], ok[f"{metric}_ci95_high"], n_ok, DOMAIN.get(metric, (0.0, math.inf))
    )
    ax.plot(ok["x"], ok[metric], **style)
    if yerr is not None:  # only the points with an interval: no zero-length bar where there is none
        keep = np.isfinite(yerr).all(axis=0)
        x, y = ok["x"].to_numpy()[keep], ok[metric].to_numpy()[keep]
        ax.errorbar(x, y, yerr=yerr[:, keep], fmt="none", capsize=3, color=style["color"])
    for row in ok[ok["status"].astype(str).str.startswith("oom in")].itertuples():
        if np.isfinite(getattr(row, metric)):  # some seeds ran out of memory: the mean is of the others
            ax.annotate(
                str(row.status),
                (row.x, getattr(row, metric)),
                xytext=(4, -12),
                textcoords="offset points",
                fontsize="small",
                color=style["color"],
            )
    return True


def _draw_predicted(ax: plt.Axes, ok: pd.DataFrame, metric: str, style: Mapping) -> None:
    """The model's prediction of ``metric`` (:data:`PREDICTED`) as a dotted black line with crosses, drawn over
    the measured one (where the two agree, the crosses sit on its points)."""
    column = PREDICTED.get(metric)
    if column is None or column not in ok or not ok[column].notna().any():
        return
    label = f"{style['label']}, predicted"
    ax.plot(ok["x"], ok[column], color="black", linestyle=":", marker="x", markersize=8, zorder=3, label=label)


def _line_style(base: str, networks: Mapping[str, Mapping], i: int, label: str) -> dict:
    """Colour by kind (twins lighter and dashed), a marker per base network."""
    spec = networks.get(base, {})
    return {
        "color": network_color(spec),
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": "--" if is_twin(spec) else "-",
        "label": label,
    }


def _draw_panel(ax: plt.Axes, lines: pd.DataFrame, summary: pd.DataFrame, metric: str, networks: Mapping) -> bool:
    """One panel; False when nothing of `metric` was measured."""
    drawn = False
    for i, (base, line) in enumerate(lines.groupby("base", sort=False)):
        line = line.sort_values("x")
        style = _line_style(base, networks, i, line["label"].iloc[0])
        drawn |= _draw_means(ax, line[line["status"] != "oom"], metric, style)
        _draw_predicted(ax, line[line["status"] != "oom"], metric, style)
        oom = line[line["status"] == "oom"]
        if len(oom):
            ax.scatter(
                oom["x"],
                [0.02] * len(oom),
                marker="x",
                color=style["color"],
                transform=ax.get_xaxis_transform(),
                label=f"{base}: out of memory",
            )
        ann = _ann_of(base, networks)
        if ann is not None and ann in set(summary["network"]):
            value = summary.loc[summary["network"] == ann, metric].iloc[0]
            if np.isfinite(value):
                ax.axhline(value, linestyle="--", color=KIND_COLORS["ann"], label=f"{ann} (ANN)")
    if drawn:
        low, high = DOMAIN.get(metric, (0.0, math.inf))
        ax.set_ylim(bottom=max(low, ax.get_ylim()[0]), top=min(high * 1.02, ax.get_ylim()[1]))
    return drawn


def _frame(summary: pd.DataFrame, points: Sequence[Mapping]) -> tuple[pd.DataFrame, list[str] | None]:
    """One row per point with its summary figures, ``x`` and ``label``; the category labels of a non-numeric x."""
    rows = summary.set_index("network")
    frame = pd.DataFrame(
        [
            {**p, **rows.loc[p["network"]].drop(["base", "value"], errors="ignore").to_dict()}
            for p in points
            if p["network"] in rows.index
        ]
    )
    frame["x"], labels = _positions(list(frame["value"]))
    impl = frame.get("implementation", pd.Series([None] * len(frame)))
    frame["label"] = [b if not isinstance(i, str) else f"{b} ({i})" for b, i in zip(frame["base"], impl)]
    return frame, labels


def _measured(frame: pd.DataFrame, metric: str) -> bool:
    return metric in frame and bool(frame.loc[frame["status"] != "oom", metric].notna().any())


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) of ``n`` panels at the report's width: side by side up to 3, else two by two."""
    return (1, n) if n <= 3 else (math.ceil(n / 2), 2)


def sweep_figure(
    summary: pd.DataFrame,
    setting: str,
    points: Sequence[Mapping],
    networks: Mapping[str, Mapping],
    *,
    demo: bool = False,
) -> plt.Figure:
    """The figure of one swept `setting`; `points`: {network, base, value} of every base network and variant."""
    frame, labels = _frame(summary, points)
    shown = [m for m in PANELS if _measured(frame, m)] or ["test_acc_pct"]
    rows, cols = _grid(len(shown))
    fig, axes = plt.subplots(
        rows, cols, figsize=(figures.REPORT_WIDTH_IN, 1.2 + 3.3 * rows), layout="constrained", squeeze=False
    )
    for ax in axes.flat[len(shown) :]:
        ax.remove()
    for ax, metric in zip(axes.flat, shown):
        if not _draw_panel(ax, frame, summary, metric, networks):
            figures.message(ax, f"{PANELS[metric]}: not measured in this run ({UNMEASURED[metric]})", width=36)
        ax.set(xlabel=setting, ylabel=PANELS[metric])
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
    _legend_and_notes(fig, axes.flat[: len(shown)], [m for m in PANELS if m not in shown], frame)
    title(fig, f"Sweep of {setting}", demo=demo)
    return fig


def _legend_and_notes(fig: plt.Figure, axes: Sequence[plt.Axes], left_out: Sequence[str], frame: pd.DataFrame) -> None:
    """One legend for all panels; under it, which figures have no panel and why, and when intervals are shown."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    notes = [f"Not measured in this run, so no panel: {PANELS[m]} ({UNMEASURED[m]})." for m in left_out]
    n_ok = frame["n_ok"] if "n_ok" in frame else pd.Series(dtype=float)
    if (n_ok >= MIN_SEEDS).any():
        notes.append(f"Error bars: 95% interval over seeds, only at points with >= {MIN_SEEDS} completed runs.")
    else:
        notes.append(f"No error bars: a 95% interval needs >= {MIN_SEEDS} seeds per point (points are means).")
    text = "\n".join(notes)
    if handles:
        legend = fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(3, len(handles)))
        if text:
            legend.set_title(text, prop={"size": "small"})
    elif text:
        fig.supxlabel(text, fontsize="small")


def write_sweep_figures(
    summary_path: str,
    sweeps: Mapping[str, Sequence[Mapping]],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str],
    *,
    style: Mapping,
    demo: bool = False,
) -> None:
    """Rule sweep_figures: `sweeps` maps each swept setting to its points; outputs <setting>_png / _svg."""
    summary = pd.read_csv(summary_path)
    figures.set_style(style.get("style", "whitegrid"), style.get("context", "paper"))
    for setting, points in sweeps.items():
        fig = sweep_figure(summary, setting, points, networks, demo=demo)
        figures.save_figure(fig, outputs[f"{setting}_png"], outputs[f"{setting}_svg"], dpi=int(style.get("dpi", 150)))
