"""The study's four panels for one experiment, every network of the experiment in each: (A) validation
accuracy per epoch, (B) time per epoch, (C) device memory over the run, (D) power over the run with the
phases (train / val / test) shaded. Telemetry that was not measured is never drawn as 0: the panel says so,
and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from spikebench import results
from spikebench.figures.style import REPORT_WIDTH_IN, message, network_palette, title as figure_title
from spikebench.figures.timeline import memory_series, phase_spans, thin, time_unit

PHASE_COLORS = {"train": "#c6dbef", "val": "#fdd0a2", "test": "#c7e9c0", "idle": "#e6e6e6"}
PHASE_NAMES = {"train": "training", "val": "validation", "test": "test", "idle": "idle"}


def _accuracy_panel(
    ax: plt.Axes, epochs: Mapping[str, pd.DataFrame], labels: Mapping[str, str], palette: Mapping[str, Any]
) -> None:
    """(A) validation (solid) and training (dashed) accuracy per epoch."""
    acc = pd.concat(
        [
            pd.DataFrame(
                {
                    "epoch": e["epoch"].astype(int).to_numpy(),
                    "network": labels[n],
                    "validation": e["val_acc"].astype(float).to_numpy() * 100,
                    "training": e["train_acc"].astype(float).to_numpy() * 100,
                }
            )
            for n, e in epochs.items()
        ]
    ).melt(id_vars=["epoch", "network"], var_name="set", value_name="accuracy_pct")
    sns.lineplot(
        data=acc,
        x="epoch",
        y="accuracy_pct",
        hue="network",
        style="set",
        style_order=["validation", "training"],
        palette=palette,
        markers=True,
        dashes={"validation": "", "training": (4, 2)},
        ax=ax,
    )
    ax.set(title="A  Validation accuracy per epoch (training dashed)", xlabel="epoch", ylabel="accuracy (%)")
    ax.legend(fontsize="small")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _time_panel(
    ax: plt.Axes, epochs: Mapping[str, pd.DataFrame], labels: Mapping[str, str], palette: Mapping[str, Any]
) -> None:
    """(B) time per epoch (training + validation)."""
    times = pd.concat(
        [
            pd.DataFrame(
                {
                    "epoch": e["epoch"].astype(int).to_numpy(),
                    "network": labels[n],
                    "epoch_time_s": e["epoch_time_s"].astype(float).to_numpy(),
                }
            )
            for n, e in epochs.items()
        ]
    )
    sns.lineplot(data=times, x="epoch", y="epoch_time_s", hue="network", palette=palette, marker="o", ax=ax)
    ax.set(title="B  Time per epoch (training + validation)", xlabel="epoch", ylabel="time per epoch (s)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _memory_panel(
    ax: plt.Axes,
    epochs: Mapping[str, pd.DataFrame],
    telemetry: Mapping[str, pd.DataFrame],
    labels: Mapping[str, str],
    palette: Mapping[str, Any],
    t_max: float,
    telemetry_enabled: bool,
) -> None:
    """(C) memory over the run: GPU memory from NVML; without a GPU, the process's resident memory."""
    scale, unit = time_unit(t_max)
    names = list(epochs)
    series = {n: memory_series(telemetry.get(n, pd.DataFrame())) for n in names}
    series = {n: v for n, v in series.items() if v is not None}
    kinds = {kind for _, kind in series.values()}
    suffix = {"gpu": " (GPU)", "rss": " (process RSS)"} if len(kinds) > 1 else {"gpu": "", "rss": ""}
    for n, (line, kind) in series.items():
        line = thin(line, "memory_mib")
        ax.plot(
            line["t_s"] / scale, line["memory_mib"], color=palette[labels[n]], label=labels[n] + suffix[kind], lw=1.2
        )
    if kinds == {"rss"}:
        title, ylabel = "C  Memory over the run: no GPU, the process's RSS", "process memory, RSS (MiB)"
    elif kinds == {"gpu"}:
        title, ylabel = "C  Device memory over the run", "device memory used (MiB)"
    else:
        title, ylabel = "C  Memory over the run", "memory used (MiB)"
    ax.set(title=title, xlabel=_time_label(unit), ylabel=ylabel)
    unmeasured = [n for n in names if n not in series]
    if unmeasured:
        reasons = {
            results.missing_reason("avg_memory_pct", results.missing_context(epochs[n]), telemetry_enabled)
            for n in unmeasured
        }
        message(
            ax, f"Memory not measured for {', '.join(labels[n] for n in unmeasured)}: " + "; ".join(sorted(reasons))
        )
    if series:
        ax.set_ylim(0, 1.08 * max(float(v[0]["memory_mib"].max()) for v in series.values()))
        ax.legend(fontsize="small", loc="lower right")
    else:
        ax.set_yticks([])
    if t_max > 0:
        ax.set_xlim(0, t_max / scale)


def _power_panels(
    fig: plt.Figure,
    grid: Any,
    epochs: Mapping[str, pd.DataFrame],
    telemetry: Mapping[str, pd.DataFrame],
    labels: Mapping[str, str],
    palette: Mapping[str, Any],
    t_max: float,
    telemetry_enabled: bool,
) -> None:
    """(D) power over the run, one strip per network in the cell ``grid``, phases shaded."""
    scale, unit = time_unit(t_max)
    names = list(epochs)
    grid_d = grid.subgridspec(len(names), 1, hspace=0.08)
    axes_d = []
    for i, n in enumerate(names):
        ax = fig.add_subplot(grid_d[i, 0], sharex=axes_d[0] if axes_d else None)
        axes_d.append(ax)
        tl = telemetry.get(n, pd.DataFrame())
        for span in phase_spans(tl).itertuples():
            ax.axvspan(span.start_s / scale, span.end_s / scale, color=PHASE_COLORS.get(span.phase, "#eeeeee"), lw=0)
        kind = "gpu"
        if len(tl) and tl["power_w"].notna().any():
            kind = "cpu" if (tl["power_kind"] == "cpu").any() else "gpu"
            line = thin(tl, "power_w")
            ax.plot(line["t_s"] / scale, line["power_w"], color=palette[labels[n]], lw=1.0)
            ax.set_ylim(0, 1.15 * float(tl["power_w"].max()))
        else:
            reason = results.missing_reason("avg_power_w", results.missing_context(epochs[n]), telemetry_enabled)
            message(ax, f"{labels[n]}: {reason}", width=60)
            ax.set_yticks([])
        what = "CPU package power, RAPL" if kind == "cpu" else "power"
        ax.set_ylabel(f"{labels[n]}\n{what} (W)", fontsize="small")
        if i < len(names) - 1:
            ax.tick_params(labelbottom=False)
    axes_d[0].set_title("D  Power over the run (shaded: phase)")
    axes_d[-1].set_xlabel(_time_label(unit))
    if t_max > 0:
        axes_d[-1].set_xlim(0, t_max / scale)
    present = {p for tl in telemetry.values() if len(tl) for p in phase_spans(tl)["phase"]}
    handles = [Patch(color=PHASE_COLORS[p], label=PHASE_NAMES[p]) for p in PHASE_COLORS if p in present]
    if handles:
        axes_d[0].legend(handles=handles, fontsize="small", loc="upper right", ncols=len(handles), framealpha=0.9)


def _time_label(unit: str) -> str:
    return f"time since the first training sample ({unit}; start-up left out)"


def experiment_figure(
    experiment: int,
    epochs: Mapping[str, pd.DataFrame],
    telemetry: Mapping[str, pd.DataFrame],
    labels: Mapping[str, str],
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
    colors: Mapping[str, Any] | None = None,
) -> plt.Figure:
    """The study's four panels for one experiment; ``telemetry`` maps network to :func:`run_timeline`;
    ``colors`` maps network to colour (default: by position, :func:`network_palette`)."""
    names = list(epochs)
    if not names:
        raise ValueError(f"experiment {experiment}: no networks to plot")
    palette = (
        {labels[n]: colors[n] for n in names} if colors is not None else network_palette([labels[n] for n in names])
    )
    fig = plt.figure(figsize=(REPORT_WIDTH_IN, 7.8), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    ax_a, ax_b, ax_c = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 0])
    _accuracy_panel(ax_a, epochs, labels, palette)
    _time_panel(ax_b, epochs, labels, palette)
    t_max = max((float(tl["t_s"].max()) for tl in telemetry.values() if len(tl)), default=0.0)
    _memory_panel(ax_c, epochs, telemetry, labels, palette, t_max, telemetry_enabled)
    _power_panels(fig, grid[1, 1], epochs, telemetry, labels, palette, t_max, telemetry_enabled)
    figure_title(fig, f"Experiment {experiment}: " + " vs ".join(labels[n] for n in names), demo=demo)
    return fig
