"""The study's figures from this run (seaborn), and two beyond the study.

- :func:`cost_of_spiking_figure`: the headline, SNN/ANN ratios of time, energy and memory per
  experiment, this run next to the study.
- :func:`experiment_figure`: one figure per experiment with the study's four panels, every network
  of the experiment in each: (A) validation accuracy per epoch, (B) time per epoch, (C) device
  memory over the run, (D) power over the run with the phases (train / val / test) shaded.
- :func:`energy_per_epoch_figure`: energy per epoch of every network side by side.
- :func:`accuracy_vs_energy_figure`: test accuracy against energy (and time) per test sample.

Telemetry that was not measured is never drawn as 0: the panel says so, and why. Figures of a
demo run carry DEMO DATA in their title. Each figure is saved as PNG and SVG, atomically. Every
figure colours a network by what it is (:func:`network_colors`: ANN orange, SNN blue, SNN on event
data green) and is sized for the report's width (:data:`REPORT_WIDTH_IN`).
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: jobs run without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from spikebench import results  # noqa: E402

PHASE_COLORS = {"train": "#c6dbef", "val": "#fdd0a2", "test": "#c7e9c0", "idle": "#e6e6e6"}
PHASE_NAMES = {"train": "training", "val": "validation", "test": "test", "idle": "idle"}
DEMO_TITLE = "DEMO DATA (not the study's data) \u2014 "
MAX_POINTS = 1500  # per line: long runs (100 ms samples over hours) are averaged into bins


#: Width of every figure (inches): the report shows an SVG ~1000 px wide at 1400 px, so 10 in keeps 1 pt ~ 1.4 px.
REPORT_WIDTH_IN = 10.0
#: Smallest font (pt) any text of a figure gets: legible at the report's width.
MIN_FONT_PT = 9.0

_DEEP = sns.color_palette("deep", 10)
#: The one colour mapping of every figure: what a network is, not its position in a list.
KIND_COLORS = {"ann": _DEEP[1], "snn": _DEEP[0], "snn_events": _DEEP[2]}
#: Colours of the headline figure's two sources.
SOURCE_COLORS = {"this run": _DEEP[0], "study": "#9e9e9e"}


def set_style(style: str = "whitegrid", context: str = "paper") -> None:
    """The config's seaborn style and context (``figures.style``, ``figures.context``), no font below MIN_FONT_PT."""
    sns.set_theme(style=style, context=context)
    for key in ("font.size", "axes.labelsize", "axes.titlesize", "xtick.labelsize", "ytick.labelsize",
                "legend.fontsize", "legend.title_fontsize"):
        size = matplotlib.rcParams[key]
        if isinstance(size, (int, float)) and size < MIN_FONT_PT + 1:
            matplotlib.rcParams[key] = MIN_FONT_PT + 1


def network_kind(spec: Mapping[str, Any]) -> str:
    """"ann", "snn" or "snn_events" (an SNN on N-MNIST's event frames)."""
    kind = str(spec.get("kind", "")).lower()
    return "snn_events" if kind == "snn" and spec.get("dataset") == "nmnist" else kind


def network_colors(networks: Mapping[str, Mapping]) -> dict[str, Any]:
    """The colour of every network of the config (:data:`KIND_COLORS`), the same in every figure."""
    return {n: KIND_COLORS.get(network_kind(spec), _DEEP[7]) for n, spec in networks.items()}


def network_palette(names: list[str]) -> dict[str, Any]:
    """Colours by position, for networks without a spec: the first orange, the second blue, then others."""
    order = [_DEEP[1], _DEEP[0], _DEEP[2], _DEEP[3], _DEEP[4], _DEEP[5], _DEEP[6], _DEEP[7]]
    return {name: order[i % len(order)] for i, name in enumerate(names)}


def _log_scale(ax: plt.Axes, axis: str = "y") -> None:
    """A log axis with plain tick labels ("0.5", "10"): mathtext exponents would print at 70% of the font size."""
    getattr(ax, f"set_{axis}scale")("log")
    formatter = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(formatter)
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _message(ax: plt.Axes, text: str, width: int = 48) -> None:
    """Write why a panel has no data into it (instead of plotting zeros)."""
    ax.text(0.5, 0.5, textwrap.fill(text, width), ha="center", va="center", transform=ax.transAxes,
            fontsize="small", color="#8a1c1c", wrap=True,
            bbox={"boxstyle": "round", "facecolor": "#fff4f4", "edgecolor": "#d9a0a0"})


def _context(epochs: pd.DataFrame) -> dict[str, Any]:
    """Device and telemetry source of a network, as the tables' missing-value reasons need them."""
    return {"device": results._text(epochs["device"]), "telemetry_source": results._text(epochs["telemetry_source"])}


# ---------------------------------------------------------------------------------------------
# Telemetry over the run


def with_power(sidecar: pd.DataFrame) -> pd.DataFrame:
    """One sidecar with ``power_kind``: "gpu" where NVML gave ``power_w``; on a CPU run with a readable
    RAPL counter, ``power_w`` derived from ``cpu_energy_uj`` (energy difference over time) and "cpu"."""
    out = sidecar.assign(power_kind=None)
    power = pd.to_numeric(out["power_w"], errors="coerce").astype(float)
    if power.notna().any():
        out["power_w"] = power
        out.loc[power.notna(), "power_kind"] = "gpu"
        return out
    if "cpu_energy_uj" in out:
        energy = pd.to_numeric(out["cpu_energy_uj"], errors="coerce").astype(float).to_numpy()
        t = out["time_s"].astype(float).to_numpy()
        derived = np.full(len(out), np.nan)
        if len(out) > 1:
            dt = np.diff(t)
            with np.errstate(divide="ignore", invalid="ignore"):
                derived[1:] = np.where(dt > 0, np.diff(energy) / dt * 1e-6, np.nan)
        out["power_w"] = derived
        out.loc[~np.isnan(derived), "power_kind"] = "cpu"
    return out


def _from_phase_start(sidecar: pd.DataFrame, phase: str) -> pd.DataFrame:
    """The samples from the first one of ``phase`` on, with ``t_s`` counted from it (start-up left out);
    all samples from the first when no sample has that phase."""
    t = sidecar["time_s"].astype(float)
    in_phase = (sidecar["phase"].astype("string").fillna("") == phase).to_numpy(bool) if "phase" in sidecar else None
    start = float(t[in_phase].min()) if in_phase is not None and in_phase.any() else float(t.min())
    part = with_power(sidecar.loc[t >= start])
    return part.assign(t_s=(part["time_s"].astype(float) - start).to_numpy())


def run_timeline(train: pd.DataFrame, test: pd.DataFrame | None = None) -> pd.DataFrame:
    """The train and test sidecars on one time axis, ``t_s`` seconds from the first training sample.

    Start-up (loading data and the network before the first training sample) is left out; the test phase
    follows training directly (a short gap marks the boundary), from its first test sample; the real gap
    between the two jobs, which may be hours on a cluster, is left out. Adds ``power_kind`` (see
    :func:`with_power`).
    """
    parts = []
    end = 0.0
    if train is not None and len(train):
        part = _from_phase_start(train, "train")
        end = float(part["t_s"].max())
        parts.append(part)
    if test is not None and len(test):
        gap = max(end * 0.01, 0.5) if parts else 0.0
        part = _from_phase_start(test, "test")
        part = part.assign(t_s=part["t_s"].to_numpy() + end + gap)
        part["phase"] = part["phase"].astype(object).where(part["phase"].notna(), "test")
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["t_s", "phase", "source", "power_w", "power_kind", "memory_used_mib", "rss_mib"])
    return pd.concat(parts, ignore_index=True)


def memory_series(timeline: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """``t_s``/``memory_mib`` of one network and its kind: "gpu" (NVML device memory) or "rss" (the process's)."""
    if timeline.empty:
        return None
    source = timeline["source"].astype(object) if "source" in timeline else pd.Series("nvml", index=timeline.index)
    gpu = timeline.loc[(source == "nvml") & timeline["memory_used_mib"].notna(), ["t_s", "memory_used_mib"]]
    if len(gpu):
        return gpu.rename(columns={"memory_used_mib": "memory_mib"}), "gpu"
    rss = timeline.loc[timeline["rss_mib"].notna(), ["t_s", "rss_mib"]]
    if len(rss):
        return rss.rename(columns={"rss_mib": "memory_mib"}), "rss"
    return None


def phase_spans(timeline: pd.DataFrame) -> pd.DataFrame:
    """Consecutive samples of one phase as spans: start_s, end_s, phase (each ends where the next starts)."""
    if timeline.empty or "phase" not in timeline:
        return pd.DataFrame(columns=["start_s", "end_s", "phase"])
    phase = timeline["phase"].astype(object).where(timeline["phase"].notna(), "idle").astype(str)
    block = (phase != phase.shift()).cumsum()
    spans = pd.DataFrame({"t": timeline["t_s"].to_numpy(), "phase": phase.to_numpy(), "block": block.to_numpy()})
    spans = spans.groupby("block", sort=True).agg(start_s=("t", "min"), end_s=("t", "max"), phase=("phase", "first"))
    nxt = spans["start_s"].shift(-1)
    spans["end_s"] = np.where(nxt.notna() & (nxt - spans["end_s"] < 5 * _step(timeline)), nxt, spans["end_s"])
    return spans.reset_index(drop=True)


def _step(timeline: pd.DataFrame) -> float:
    d = np.diff(timeline["t_s"].to_numpy(dtype=float))
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 0.0


def thin(timeline: pd.DataFrame, column: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """``t_s`` and `column` averaged into at most `max_points` time bins (NaN samples skipped)."""
    df = timeline[["t_s", column]].dropna()
    if len(df) <= max_points:
        return df
    t = df["t_s"].to_numpy(dtype=float)
    span = t.max() - t.min()
    bins = np.minimum(((t - t.min()) / span * max_points).astype(np.int64), max_points - 1) if span > 0 else np.zeros(len(t), int)
    return df.groupby(bins, sort=True).mean()


def _time_unit(t_max: float) -> tuple[float, str]:
    return (60.0, "min") if t_max > 1200 else (1.0, "s")


# ---------------------------------------------------------------------------------------------
# Figures


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
    palette = ({labels[n]: colors[n] for n in names} if colors is not None
               else network_palette([labels[n] for n in names]))
    fig = plt.figure(figsize=(REPORT_WIDTH_IN, 7.8), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    ax_a, ax_b, ax_c = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 0])
    grid_d = grid[1, 1].subgridspec(len(names), 1, hspace=0.08)

    # (A) validation (solid) and training (dashed) accuracy per epoch
    acc = pd.concat([
        pd.DataFrame({
            "epoch": e["epoch"].astype(int).to_numpy(),
            "network": labels[n],
            "validation": e["val_acc"].astype(float).to_numpy() * 100,
            "training": e["train_acc"].astype(float).to_numpy() * 100,
        }) for n, e in epochs.items()
    ]).melt(id_vars=["epoch", "network"], var_name="set", value_name="accuracy_pct")
    sns.lineplot(data=acc, x="epoch", y="accuracy_pct", hue="network", style="set", style_order=["validation", "training"],
                 palette=palette, markers=True, dashes={"validation": "", "training": (4, 2)}, ax=ax_a)
    ax_a.set(title="A  Validation accuracy per epoch (training dashed)", xlabel="epoch", ylabel="accuracy (%)")
    ax_a.legend(fontsize="small")

    # (B) time per epoch (training + validation)
    times = pd.concat([
        pd.DataFrame({"epoch": e["epoch"].astype(int).to_numpy(), "network": labels[n],
                      "epoch_time_s": e["epoch_time_s"].astype(float).to_numpy()})
        for n, e in epochs.items()
    ])
    sns.lineplot(data=times, x="epoch", y="epoch_time_s", hue="network", palette=palette, marker="o", ax=ax_b)
    ax_b.set(title="B  Time per epoch (training + validation)", xlabel="epoch", ylabel="time per epoch (s)")
    ax_b.set_ylim(bottom=0)
    ax_b.legend(fontsize="small")
    for ax in (ax_a, ax_b):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))

    t_max = max((float(tl["t_s"].max()) for tl in telemetry.values() if len(tl)), default=0.0)
    scale, unit = _time_unit(t_max)
    xlabel = f"time since the first training sample ({unit}; start-up left out)"

    # (C) memory over the run: GPU memory from NVML; without a GPU, the process's resident memory
    series = {n: memory_series(telemetry.get(n, pd.DataFrame())) for n in names}
    series = {n: v for n, v in series.items() if v is not None}
    kinds = {kind for _, kind in series.values()}
    suffix = {"gpu": " (GPU)", "rss": " (process RSS)"} if len(kinds) > 1 else {"gpu": "", "rss": ""}
    for n, (line, kind) in series.items():
        line = thin(line, "memory_mib")
        ax_c.plot(line["t_s"] / scale, line["memory_mib"], color=palette[labels[n]], label=labels[n] + suffix[kind], lw=1.2)
    if kinds == {"rss"}:
        title, ylabel = "C  Memory over the run: no GPU, the process's RSS", "process memory, RSS (MiB)"
    elif kinds == {"gpu"}:
        title, ylabel = "C  Device memory over the run", "device memory used (MiB)"
    else:
        title, ylabel = "C  Memory over the run", "memory used (MiB)"
    ax_c.set(title=title, xlabel=xlabel, ylabel=ylabel)
    unmeasured = [n for n in names if n not in series]
    if unmeasured:
        reasons = {results.missing_reason("avg_memory_pct", _context(epochs[n]), telemetry_enabled) for n in unmeasured}
        _message(ax_c, f"Memory not measured for {', '.join(labels[n] for n in unmeasured)}: " + "; ".join(sorted(reasons)))
    if series:
        ax_c.set_ylim(0, 1.08 * max(float(v[0]["memory_mib"].max()) for v in series.values()))
        ax_c.legend(fontsize="small", loc="lower right")
    else:
        ax_c.set_yticks([])
    if t_max > 0:
        ax_c.set_xlim(0, t_max / scale)

    # (D) power over the run, one strip per network, phases shaded
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
            reason = results.missing_reason("avg_power_w", _context(epochs[n]), telemetry_enabled)
            _message(ax, f"{labels[n]}: {reason}", width=60)
            ax.set_yticks([])
        what = "CPU package power, RAPL" if kind == "cpu" else "power"
        ax.set_ylabel(f"{labels[n]}\n{what} (W)", fontsize="small")
        if i < len(names) - 1:
            ax.tick_params(labelbottom=False)
    axes_d[0].set_title("D  Power over the run (shaded: phase)")
    axes_d[-1].set_xlabel(xlabel)
    if t_max > 0:
        axes_d[-1].set_xlim(0, t_max / scale)
    present = {p for tl in telemetry.values() if len(tl) for p in phase_spans(tl)["phase"]}
    handles = [Patch(color=PHASE_COLORS[p], label=PHASE_NAMES[p]) for p in PHASE_COLORS if p in present]
    if handles:
        axes_d[0].legend(handles=handles, fontsize="small", loc="upper right", ncols=len(handles), framealpha=0.9)

    title = f"Experiment {experiment}: " + " vs ".join(labels[n] for n in names)
    fig.suptitle((DEMO_TITLE if demo else "") + title, fontweight="bold", color="#b00020" if demo else "black")
    return fig


def _energy_frame(epochs: Mapping[str, pd.DataFrame], networks: Mapping[str, Mapping]) -> pd.DataFrame:
    return pd.concat([
        pd.DataFrame({
            "network": n,
            "experiment": f"Experiment {int(networks[n]['experiment'])}",
            "epoch": e["epoch"].astype(int).to_numpy(),
            "energy_j": pd.to_numeric(e["energy_j"], errors="coerce").astype(float).to_numpy(),
        }) for n, e in epochs.items()
    ], ignore_index=True)


KIND_NAMES = {"ann": "ANN / CNN", "snn": "SNN", "snn_events": "SNN on event data (N-MNIST)"}


def _kind_handles(networks: Mapping[str, Mapping], shown: Iterable[str]) -> list[Patch]:
    """Legend entries of the kinds among the ``shown`` networks, in KIND_COLORS' order."""
    kinds = {network_kind(networks[n]) for n in shown}
    return [Patch(color=c, label=KIND_NAMES[k]) for k, c in KIND_COLORS.items() if k in kinds]


def energy_measured(epochs: Mapping[str, pd.DataFrame]) -> bool:
    """Whether any network has an energy reading for any epoch (else the energy figure is left out)."""
    return any(pd.to_numeric(e["energy_j"], errors="coerce").notna().any() for e in epochs.values())


def energy_per_epoch_figure(
    epochs: Mapping[str, pd.DataFrame],
    networks: Mapping[str, Mapping],
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
) -> plt.Figure:
    """Energy per epoch (training + validation) of every network: bars are means, dots are epochs."""
    order = results._order(networks, epochs)
    data = _energy_frame({n: epochs[n] for n in order}, networks)
    fig, ax = plt.subplots(figsize=(REPORT_WIDTH_IN, 5.5), layout="constrained")
    measured = data.dropna(subset=["energy_j"])
    missing = [n for n in order if n not in set(measured["network"])]
    if len(measured):
        colors = network_colors({n: networks[n] for n in order})
        sns.barplot(data=data, x="network", y="energy_j", hue="network", palette=colors, order=order,
                    hue_order=order, errorbar=None, alpha=0.8, legend=False, ax=ax)
        sns.stripplot(data=data, x="network", y="energy_j", order=order, color="black", size=4, jitter=0.15,
                      ax=ax, legend=False)
        values = measured["energy_j"]
        if values.min() > 0 and values.max() / values.min() > 30:
            _log_scale(ax, "y")
        for n in missing:
            ax.text(order.index(n), 0.02, "not measured", rotation=90, ha="center", va="bottom", color="#8a1c1c",
                    transform=ax.get_xaxis_transform(), fontsize="small")
        ax.legend(handles=_kind_handles(networks, order), fontsize="small")
    else:
        ax.set_yticks([])
    if missing:
        reasons = {results.missing_reason("energy_per_epoch_j", _context(epochs[n]), telemetry_enabled) for n in missing}
        _message(ax, f"Energy not measured for {', '.join(missing)}: " + "; ".join(sorted(reasons)), width=70)
    ax.set(xlabel="network", ylabel="energy per epoch, training + validation (J)",
           title="Energy per epoch (bars: mean over epochs; dots: epochs)")
    ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
    if demo:
        fig.suptitle(DEMO_TITLE + "energy per epoch", fontweight="bold", color="#b00020")
    return fig


def accuracy_vs_energy_figure(
    t2: pd.DataFrame,
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
    networks: Mapping[str, Mapping] | None = None,
) -> plt.Figure:
    """Test accuracy against energy per test sample (left) and time per test sample (right); with
    ``networks``, points are coloured by kind (:func:`network_colors`) and shaped by experiment."""
    data = t2.assign(
        experiment=t2["experiment"].map(lambda x: f"Experiment {int(x)}"),
        time_per_sample_ms=t2["test_time_s"].astype(float) / t2["n_test"].astype(float) * 1e3,
    )
    fig, (ax_e, ax_t) = plt.subplots(1, 2, figsize=(REPORT_WIDTH_IN, 4.8), layout="constrained", sharey=True)
    hue_order = sorted(data["experiment"].unique())
    if networks is not None:
        data["kind"] = [KIND_NAMES.get(network_kind(networks[n]), "other") for n in data["network"]]
        kind_colors = {KIND_NAMES[k]: c for k, c in KIND_COLORS.items()}
    for ax, x, xlabel in (
        (ax_e, "energy_per_test_sample_mj", "energy per test sample (mJ)"),
        (ax_t, "time_per_sample_ms", "time per test sample (ms)"),
    ):
        shown = data.dropna(subset=[x, "test_acc"])
        if len(shown):
            if networks is not None:
                sns.scatterplot(data=shown, x=x, y="test_acc", hue="kind", palette=kind_colors, style="experiment",
                                style_order=hue_order, s=90, ax=ax)
            else:
                sns.scatterplot(data=shown, x=x, y="test_acc", hue="experiment", hue_order=hue_order, s=90, ax=ax)
            for row in shown.itertuples():
                ax.annotate(row.network, (getattr(row, x), row.test_acc), xytext=(5, 4), textcoords="offset points",
                            fontsize="small")
            if shown[x].min() > 0 and shown[x].max() / shown[x].min() > 30:
                _log_scale(ax, "x")
            if ax.get_legend() is not None:
                ax.legend(fontsize="small", title=None)
        else:
            ax.set_xticks([])
        ax.axhline(results.LEARNED_FACTOR * results.CHANCE_PCT, color="#b00020", ls=":", lw=1)
        ax.set(xlabel=xlabel, ylabel="test accuracy (%)")
    ax_t.annotate(f"{results.LEARNED_FACTOR:g}x chance: below, a network did not learn",
                  (1, results.LEARNED_FACTOR * results.CHANCE_PCT), xycoords=("axes fraction", "data"),
                  xytext=(-4, 3), textcoords="offset points", ha="right", fontsize="small", color="#b00020")
    ax_e.set_title("Accuracy vs energy per test sample")
    ax_t.set_title("Accuracy vs time per test sample")
    missing = data.loc[data["energy_per_test_sample_mj"].isna()]
    if len(missing):
        reasons = {results.missing_reason("energy_per_test_sample_mj", row, telemetry_enabled)
                   for row in missing.to_dict("records")}
        _message(ax_e, f"Energy not measured for {', '.join(missing['network'])}: " + "; ".join(sorted(reasons)))
    if demo:
        fig.suptitle(DEMO_TITLE + "test accuracy vs cost per test sample", fontweight="bold", color="#b00020")
    return fig


def _memory_metric(cost: pd.DataFrame) -> str:
    """``activation_peak_mib`` where the cost table has it with a value, else ``peak_memory_mib``."""
    rows = cost[cost["metric"] == "activation_peak_mib"]
    return "activation_peak_mib" if len(rows) and rows["run_ratio"].notna().any() else "peak_memory_mib"


def _headline_panels(cost: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(title, run metric, study metric, memory note) of the headline figure's three panels."""
    memory = _memory_metric(cost)
    on_cpu = cost.loc[cost["metric"] == memory, "note"].astype(str).str.contains("process's resident memory").any()
    run_memory = ("activation memory (activation_peak_mib)" if memory == "activation_peak_mib"
                  else "peak memory (peak_memory_mib" + (": process RSS on the CPU)" if on_cpu else ")"))
    return [
        ("Time per epoch", "avg_epoch_time_s", "avg_epoch_time_s", ""),
        ("Energy per epoch", "energy_per_epoch_j", "energy_per_epoch_j", "study: power x time"),
        ("Memory", memory, "avg_memory_pct", f"this run: {run_memory}; study: average GPU memory (%)"),
    ]


def _ratio_bars(ax: plt.Axes, cost: pd.DataFrame, run_metric: str, study_metric: str) -> list[float]:
    """One pair of bars (this run, study) per experiment; returns the ratios drawn."""
    pairs = cost.drop_duplicates("experiment")[["experiment", "comparison"]]
    drawn, width = [], 0.38
    for x, (experiment, _comparison) in enumerate(pairs.itertuples(index=False)):
        run = cost[(cost["experiment"] == experiment) & (cost["metric"] == run_metric)]
        study = cost[(cost["experiment"] == experiment) & (cost["metric"] == study_metric)]
        for dx, source, rows, column in ((-width / 2, "this run", run, "run_ratio"),
                                         (width / 2, "study", study, "paper_ratio")):
            value = float(rows[column].iloc[0]) if len(rows) else math.nan
            failed = source == "this run" and len(rows) and str(rows["not_learned"].iloc[0] or "")
            if math.isnan(value):
                ax.text(x + dx, 0.03, "not measured" if source == "this run" else "not reported", rotation=90,
                        ha="center", va="bottom", fontsize="small", color="#8a1c1c", transform=ax.get_xaxis_transform())
                continue
            ax.bar(x + dx, value, width, color="white" if failed else SOURCE_COLORS[source],
                   edgecolor="#b00020" if failed else SOURCE_COLORS[source], hatch="//" if failed else None, lw=1.5)
            low, high = (rows.get("ci_low"), rows.get("ci_high")) if source == "this run" else (None, None)
            if low is not None and high is not None and pd.notna(low.iloc[0]) and pd.notna(high.iloc[0]):
                ax.errorbar(x + dx, value, yerr=[[value - float(low.iloc[0])], [float(high.iloc[0]) - value]],
                            color="black", capsize=4, lw=1.2)
            ax.annotate(f"{value:.2g}x" + (" \u2717" if failed else ""), (x + dx, value),
                        xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize="small",
                        color="#b00020" if failed else "black")
            drawn.append(value)
    ticks = ["Exp. {}\n{}".format(e, c.replace(" / ", " /\n")) for e, c in pairs.itertuples(index=False)]
    ax.set_xticks(range(len(pairs)), ticks)
    return drawn


def cost_of_spiking_figure(cost: pd.DataFrame, *, demo: bool = False, energy_note: str | None = None) -> plt.Figure:
    """The headline: per experiment, the SNN/ANN ratios of time per epoch, energy per epoch and memory,
    this run next to the study (``results.cost_of_spiking``'s table).

    Bars above the line at 1 mean that the SNN costs more. A ratio with ``ci_low``/``ci_high`` (repeats)
    gets an interval; a pair with a network that did not learn (``not_learned``) is hatched and marked.
    ``energy_note`` (why this run has no energy) is written into the energy panel.
    """
    if cost.empty:
        raise ValueError("the cost of spiking has no rows: no experiment pairs an SNN with an ANN or a second SNN")
    fig, axes = plt.subplots(1, 3, figsize=(REPORT_WIDTH_IN, 4.6), layout="constrained")
    for ax, (title, run_metric, study_metric, note) in zip(axes, _headline_panels(cost)):
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
        if run_metric == "energy_per_epoch_j" and energy_note:
            _message(ax, energy_note, width=30)
    axes[0].set_ylabel("SNN over ANN (x; > 1: the SNN costs more)")
    handles = [Patch(color=color, label=source) for source, color in SOURCE_COLORS.items()]
    if "ci_low" in cost and cost["ci_low"].notna().any():
        handles.append(Line2D([], [], color="black", marker="_", markersize=10, lw=1.2,
                              label="this run with repeats: ratio of the means over seeds, 95% interval"))
    if cost["not_learned"].astype(str).str.len().gt(0).any():
        handles.append(Patch(facecolor="white", edgecolor="#b00020", hatch="//",
                             label="\u2717 a network did not learn (test accuracy < 2x chance)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    title = "The cost of spiking: SNN over ANN (Exp. 3: N-MNIST SNN over MNIST SNN)"
    fig.suptitle(("DEMO DATA \u2014 " if demo else "") + title, fontweight="bold", color="#b00020" if demo else "black",
                 fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------------
# Saving


def save_figure(fig: plt.Figure, png: str | Path, svg: str | Path | None = None, dpi: int = 150) -> None:
    """Save as PNG (and SVG, text kept as text), each to a temporary name first, then close the figure."""
    try:
        for path, fmt in ((png, "png"), (svg, "svg")):
            if path is None:
                continue
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            results.chmod_default(tmp)
            try:
                with plt.rc_context({"svg.fonttype": "none"}):
                    fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
    finally:
        plt.close(fig)


def experiments_of(networks: Mapping[str, Mapping]) -> list[int]:
    """The experiment numbers of the config's networks, ascending."""
    return sorted({int(spec["experiment"]) for spec in networks.values()})


def write_figures(
    epochs_paths: Mapping[str, str | Path],
    test_paths: Mapping[str, str | Path],
    telemetry_train_paths: Mapping[str, str | Path],
    telemetry_test_paths: Mapping[str, str | Path],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str | Path],
    *,
    style: str = "whitegrid",
    context: str = "paper",
    dpi: int = 150,
    demo: bool = False,
    telemetry_enabled: bool = True,
    paper_path: str | Path = results.PAPER_VALUES,
    summary_path: str | Path | None = None,
) -> None:
    """Rule figures: every figure as PNG + SVG (``summary_path``: intervals of repeats in the headline).

    ``outputs`` keys: ``cost_of_spiking_png``/``_svg``, ``experiment{N}_png``/``_svg`` per experiment,
    ``energy_per_epoch_png``/``_svg``, ``accuracy_vs_energy_png``/``_svg``, and optionally ``measured``: a folder
    that gets a copy of ``energy_per_epoch.svg`` only where energy was measured (what the report shows).
    """
    set_style(style, context)
    epochs = {n: results.read_epochs(p) for n, p in epochs_paths.items()}
    tests = {n: results.read_test(p) for n, p in test_paths.items()}
    timelines = {
        n: run_timeline(results.read_telemetry(telemetry_train_paths[n]),
                        results.read_telemetry(telemetry_test_paths[n]) if n in telemetry_test_paths else None)
        for n in epochs
    }
    labels = {n: results.network_label(n, networks) for n in networks}
    colors = network_colors(networks)
    order = results._order(networks, epochs)
    t2 = results.table2(tests, networks)
    measured = energy_measured(epochs)
    if "cost_of_spiking_png" in outputs:
        cost = results.cost_of_spiking(results.table1(epochs, networks), results.load_paper_values(paper_path),
                                       networks, t2)
        if summary_path is not None:
            from spikebench import aggregate
            cost = aggregate.ratio_intervals(cost, aggregate.read_table(summary_path, "summary"))
        reasons = {results.missing_reason("energy_per_epoch_j", _context(e), telemetry_enabled) for e in epochs.values()}
        note = None if measured else "Not measured in this run: " + "; ".join(sorted(reasons))
        save_figure(cost_of_spiking_figure(cost, demo=demo, energy_note=note), outputs["cost_of_spiking_png"],
                    outputs.get("cost_of_spiking_svg"), dpi)
    for experiment in experiments_of({n: networks[n] for n in order}):
        members = [n for n in order if int(networks[n]["experiment"]) == experiment]
        fig = experiment_figure(
            experiment, {n: epochs[n] for n in members}, {n: timelines[n] for n in members}, labels,
            demo=demo, telemetry_enabled=telemetry_enabled, colors=colors,
        )
        save_figure(fig, outputs[f"experiment{experiment}_png"], outputs.get(f"experiment{experiment}_svg"), dpi)
    fig = energy_per_epoch_figure(epochs, networks, demo=demo, telemetry_enabled=telemetry_enabled)
    save_figure(fig, outputs["energy_per_epoch_png"], outputs.get("energy_per_epoch_svg"), dpi)
    if "measured" in outputs:
        folder = Path(outputs["measured"])
        folder.mkdir(parents=True, exist_ok=True)
        if measured and outputs.get("energy_per_epoch_svg"):
            _copy_atomic(Path(outputs["energy_per_epoch_svg"]), folder / "energy_per_epoch.svg")
    fig = accuracy_vs_energy_figure(t2, demo=demo, telemetry_enabled=telemetry_enabled, networks=networks)
    save_figure(fig, outputs["accuracy_vs_energy_png"], outputs.get("accuracy_vs_energy_svg"), dpi)


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(source.read_bytes())
        results.chmod_default(tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
