"""The headline figure: per experiment, the SNN/ANN ratios of training time and energy per training sample and of
memory, this run next to the study (the cost table, :func:`spikebench.results.cost_of_spiking`, with the ratio of
the means over seeds and its interval where there are >= 3 seeds, ``spikebench.aggregate.seed_ratios``)."""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from spikebench.figures.style import REPORT_WIDTH_IN, SOURCE_COLORS, log_scale as _log_scale, message as _message

#: This run's memory figure for the headline, the first the cost table has a ratio of: the allocator's activation
#: peak (CUDA), what autograd saves for backward in one batch (every device), the peak memory (on the CPU the
#: process's RSS, mostly the runtime).
MEMORY_METRICS = ("activation_peak_mib", "saved_for_backward_mib", "peak_memory_mib")
MEMORY_LABELS = {
    "activation_peak_mib": "activation memory (activation_peak_mib)",
    "saved_for_backward_mib": "memory saved for backward (saved_for_backward_mib)",
}


def _memory_metric(cost: pd.DataFrame) -> str:
    """The first of :data:`MEMORY_METRICS` the cost table has with a value (``peak_memory_mib`` at the least)."""
    for metric in MEMORY_METRICS[:-1]:
        rows = cost[cost["metric"] == metric]
        if len(rows) and rows["run_ratio"].notna().any():
            return metric
    return MEMORY_METRICS[-1]


def _headline_panels(cost: pd.DataFrame) -> list[tuple[str, str, str | None, str]]:
    """(title, run metric, study metric or None where the study has no like quantity, note) of the three panels."""
    memory = _memory_metric(cost)
    peak_notes = cost.loc[cost["metric"] == "peak_memory_mib", "note"].astype(str)
    on_cpu = peak_notes.str.contains("process's resident memory").any()
    gpu_pct = cost[cost["metric"] == "avg_memory_pct"]
    if not on_cpu and len(gpu_pct) and gpu_pct["run_ratio"].notna().any():
        memory_panel = ("Memory", "avg_memory_pct", "avg_memory_pct", "average GPU memory (%), both")
    else:
        run_memory = MEMORY_LABELS.get(memory) or (
            "peak memory (peak_memory_mib" + (": process RSS on the CPU)" if on_cpu else ")")
        )
        memory_panel = ("Memory", memory, None, f"this run: {run_memory}; the study's % of GPU memory is not alike")
    return [
        ("Training time per sample", "train_time_per_sample_ms", "train_time_per_sample_ms", "study: per-epoch ratio"),
        (
            "Training energy per sample",
            "energy_per_train_sample_mj",
            "energy_per_train_sample_mj",
            "study: power x time, per-epoch ratio",
        ),
        memory_panel,
    ] + (
        [
            (
                "Time to the target accuracy",
                "time_to_target_s",
                "time_to_target_s",  # the study reports none: "not reported"
                "training time until the target validation accuracy",
            )
        ]
        if (cost["metric"] == "time_to_target_s").any()
        else []
    )


def _missing_label(ax: plt.Axes, x: float, rows: pd.DataFrame, source: str, study_metric: str | None) -> None:
    """Why a bar is absent, written up the bar's place: not measured / not reached (this run), not reported /
    not alike (the study)."""
    reason = (
        str(rows["ratio_interval_null_reason"].iloc[0]) if "ratio_interval_null_reason" in rows and len(rows) else ""
    )
    if source == "this run":
        text = "not reached" if reason.startswith("target accuracy not reached") else "not measured"
    else:
        text = "not reported" if study_metric else "not alike"
    ax.text(
        x,
        0.03,
        text,
        rotation=90,
        ha="center",
        va="bottom",
        fontsize="small",
        color="#8a1c1c",
        transform=ax.get_xaxis_transform(),
    )


def _bar(ax: plt.Axes, x: float, value: float, width: float, rows: pd.DataFrame, source: str, failed: bool) -> None:
    """One ratio's bar, its interval (this run, where there is one) and its label (marked if a network failed)."""
    ax.bar(
        x,
        value,
        width,
        color="white" if failed else SOURCE_COLORS[source],
        edgecolor="#b00020" if failed else SOURCE_COLORS[source],
        hatch="//" if failed else None,
        lw=1.5,
    )
    low, high = (rows.get("ci_low"), rows.get("ci_high")) if source == "this run" else (None, None)
    if low is not None and high is not None and pd.notna(low.iloc[0]) and pd.notna(high.iloc[0]):
        yerr = [[value - float(low.iloc[0])], [float(high.iloc[0]) - value]]
        ax.errorbar(x, value, yerr=yerr, color="black", capsize=4, lw=1.2)
    ax.annotate(
        f"{value:.2g}x" + (" \u2717" if failed else ""),
        (x, value),
        xytext=(0, 3),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize="small",
        color="#b00020" if failed else "black",
    )


def _ratio_bars(ax: plt.Axes, cost: pd.DataFrame, run_metric: str, study_metric: str | None) -> list[float]:
    """One pair of bars (this run, study) per experiment; returns the ratios drawn."""
    pairs = cost.drop_duplicates("experiment")[["experiment", "comparison"]]
    drawn, width = [], 0.38
    for x, (experiment, _comparison) in enumerate(pairs.itertuples(index=False)):
        run = cost[(cost["experiment"] == experiment) & (cost["metric"] == run_metric)]
        study = cost[(cost["experiment"] == experiment) & (cost["metric"] == study_metric)]
        for dx, source, rows, column in (
            (-width / 2, "this run", run, "run_ratio"),
            (width / 2, "study", study, "paper_ratio"),
        ):
            value = float(rows[column].iloc[0]) if len(rows) else math.nan
            failed = bool(source == "this run" and len(rows) and str(rows["not_learned"].iloc[0] or ""))
            if math.isnan(value):
                _missing_label(ax, x + dx, rows, source, study_metric)
                continue
            _bar(ax, x + dx, value, width, rows, source, failed)
            drawn.append(value)
    ticks = ["Exp. {}\n{}".format(e, c.replace(" / ", " /\n")) for e, c in pairs.itertuples(index=False)]
    ax.set_xticks(range(len(pairs)), ticks)
    ax.set_xlim(-0.6, len(pairs) - 0.4)  # room for the outer bars' rotated "not measured" labels
    return drawn


def cost_of_spiking_figure(cost: pd.DataFrame, *, demo: bool = False, energy_note: str | None = None) -> plt.Figure:
    """The headline: per experiment, the SNN/ANN ratios of training time and energy per training sample and of
    memory, this run next to the study (``results.cost_of_spiking``'s table).

    Bars above the line at 1 mean that the SNN costs more. A ratio with ``ci_low``/``ci_high`` (repeats)
    gets an interval; a pair with a network that did not learn (``not_learned``) is hatched and marked.
    ``energy_note`` (why this run has no energy) is written into the energy panel.
    """
    if cost.empty:
        raise ValueError("the cost of spiking has no rows: no experiment pairs an SNN with an ANN or a second SNN")
    panels = _headline_panels(cost)
    fig, axes = plt.subplots(1, len(panels), figsize=(REPORT_WIDTH_IN, 4.6), layout="constrained")
    for ax, (title, run_metric, study_metric, note) in zip(axes, panels):
        drawn = _ratio_bars(ax, cost, run_metric, study_metric)
        ax.axhline(1.0, color="black", lw=0.8)
        if drawn and min(drawn) > 0 and max(drawn) / min(drawn) > 20:
            _log_scale(ax, "y")
        top = max(drawn, default=1.0)
        ax.set_ylim(top=top * (3 if ax.get_yscale() == "log" else 1.3))
        if ax.get_yscale() != "log":
            ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel(textwrap.fill(note, 38) if note else "")
        if run_metric == "energy_per_train_sample_mj" and energy_note:
            _message(ax, energy_note, width=30)
    axes[0].set_ylabel("SNN over ANN (x; > 1: the SNN costs more)")
    handles = [Patch(color=color, label=source) for source, color in SOURCE_COLORS.items()]
    if "ci_low" in cost and cost["ci_low"].notna().any():
        handles.append(
            Line2D(
                [],
                [],
                color="black",
                marker="_",
                markersize=10,
                lw=1.2,
                label="this run, >= 3 seeds: ratio of the means, 95% interval",
            )
        )
    if cost["not_learned"].astype(str).str.len().gt(0).any():
        handles.append(
            Patch(
                facecolor="white",
                edgecolor="#b00020",
                hatch="//",
                label="\u2717 a network did not learn (test accuracy < 2x chance)",
            )
        )
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    title = "The cost of spiking: SNN over ANN (Exp. 3: N-MNIST SNN over MNIST SNN)"
    fig.suptitle(
        ("DEMO DATA \u2014 " if demo else "") + title,
        fontweight="bold",
        color="#b00020" if demo else "black",
        fontsize="medium",
    )
    return fig
