"""One figure per swept setting (config ``sweeps``): the cost and the accuracy against the setting's value.

Four panels, time per epoch, energy per epoch, activation memory and test accuracy, each against the
setting's value: one line per base network (its own value is one of the points; the implementation,
when the network has one, is in its label), the ANN of the same experiment as a dashed reference line,
the 95% interval over seeds as error bars when there are repeats. A point that ran out of memory is a
cross at the bottom of each panel (one whose seeds ran out of memory only in part is labelled
"oom in k of n", its mean is of the others); a figure that was not measured (activation memory on the CPU) is
never drawn as 0: the panel says so. Input: the summary table of ``spikebench.aggregate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: jobs run without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from spikebench import figures, results  # noqa: E402

PANELS = {
    "avg_epoch_time_s": "time per epoch (s)",
    "energy_per_epoch_j": "energy per epoch (J)",
    "activation_peak_mib": "activation memory (MiB)",
    "test_acc_pct": "test accuracy (%)",
}


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


def _draw_panel(
    ax: plt.Axes,
    lines: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str,
    networks: Mapping[str, Mapping],
    palette: Mapping,
) -> bool:
    """One panel; False when nothing of `metric` was measured."""
    drawn = False
    for base, line in lines.groupby("base", sort=False):
        line = line.sort_values("x")
        ok = line[line["status"] != "oom"]
        err = np.vstack([ok[metric] - ok[f"{metric}_ci95_low"], ok[f"{metric}_ci95_high"] - ok[metric]])
        if ok[metric].notna().any():
            ax.errorbar(
                ok["x"],
                ok[metric],
                yerr=np.where(np.isfinite(err), err, 0.0),
                marker="o",
                capsize=3,
                color=palette[base],
                label=line["label"].iloc[0],
            )
            drawn = True
        for row in ok[ok["status"].astype(str).str.startswith("oom in")].itertuples():
            if np.isfinite(getattr(row, metric)):  # some seeds ran out of memory: the mean is of the others
                ax.annotate(
                    str(row.status),
                    (row.x, getattr(row, metric)),
                    xytext=(4, -10),
                    textcoords="offset points",
                    fontsize="x-small",
                    color=palette[base],
                )
        oom = line[line["status"] == "oom"]
        if len(oom):
            ax.scatter(
                oom["x"],
                [0.02] * len(oom),
                marker="x",
                color=palette[base],
                transform=ax.get_xaxis_transform(),
                label=f"{base}: out of memory",
            )
        ann = _ann_of(base, networks)
        if ann is not None and ann in set(summary["network"]):
            value = summary.loc[summary["network"] == ann, metric].iloc[0]
            if np.isfinite(value):
                ax.axhline(value, linestyle="--", color="grey", label=f"{ann} (ANN)")
    return drawn


def sweep_figure(
    summary: pd.DataFrame,
    setting: str,
    points: Sequence[Mapping],
    networks: Mapping[str, Mapping],
    *,
    demo: bool = False,
) -> plt.Figure:
    """The figure of one swept `setting`; `points`: {network, base, value} of every base network and variant."""
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
    palette = figures.network_palette(list(dict.fromkeys(frame["base"])))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), constrained_layout=True)
    for ax, (metric, name) in zip(axes, PANELS.items()):
        if not _draw_panel(ax, frame, summary, metric, networks, palette):
            figures.message(
                ax,
                f"{name}: not measured in this run"
                + (" (no activation peak on the CPU)" if metric == "activation_peak_mib" else ""),
            )
        ax.set_xlabel(setting)
        ax.set_ylabel(name)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(4, len(handles)))
    fig.suptitle((figures.DEMO_TITLE if demo else "") + f"Sweep of {setting}")
    return fig


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
