"""Two figures beyond the study: energy per epoch of every network side by side
(:func:`energy_per_epoch_figure`) and test accuracy against energy and time per test sample
(:func:`accuracy_vs_energy_figure`)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from spikebench import results
from spikebench.figures.style import (
    REPORT_WIDTH_IN,
    kind_handles,
    kind_label,
    kind_palette,
    log_scale,
    message,
    network_color,
    network_hatch,
    title,
)


def _energy_frame(epochs: Mapping[str, pd.DataFrame], networks: Mapping[str, Mapping]) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "network": n,
                    "experiment": f"Experiment {int(networks[n]['experiment'])}",
                    "epoch": e["epoch"].astype(int).to_numpy(),
                    "energy_j": pd.to_numeric(e["energy_j"], errors="coerce").astype(float).to_numpy(),
                }
            )
            for n, e in epochs.items()
        ],
        ignore_index=True,
    )


def energy_measured(epochs: Mapping[str, pd.DataFrame]) -> bool:
    """Whether any network has an energy reading for any epoch (else the energy figure is left out)."""
    return any(pd.to_numeric(e["energy_j"], errors="coerce").notna().any() for e in epochs.values())


def _draw_energy_bars(ax: plt.Axes, data: pd.DataFrame, networks: Mapping[str, Mapping], order: list[str]) -> None:
    """Bars of the mean energy per network and a dot per epoch, coloured by kind, an snnTorch twin lighter and
    hatched (log axis over a wide range)."""
    means = data.groupby("network")["energy_j"].mean()
    for i, n in enumerate(order):
        if pd.notna(means.get(n)):
            color = network_color(networks[n])
            ax.bar(i, means[n], 0.8, color=color, edgecolor=color, hatch=network_hatch(networks[n]), alpha=0.9)
    sns.stripplot(
        data=data, x="network", y="energy_j", order=order, color="black", size=4, jitter=0.15, ax=ax, legend=False
    )
    values = data["energy_j"].dropna()
    if values.min() > 0 and values.max() / values.min() > 30:
        log_scale(ax, "y")


def _mark_not_measured(ax: plt.Axes, order: list[str], missing: list[str]) -> None:
    """Write "not measured" upright in the slot of each network without an energy reading."""
    for n in missing:
        ax.text(
            order.index(n),
            0.02,
            "not measured",
            rotation=90,
            ha="center",
            va="bottom",
            color="#8a1c1c",
            transform=ax.get_xaxis_transform(),
            fontsize="small",
        )


def _energy_missing_message(
    ax: plt.Axes, epochs: Mapping[str, pd.DataFrame], missing: list[str], telemetry_enabled: bool
) -> None:
    """Say in the panel which networks have no energy reading, and why."""
    reasons = {
        results.missing_reason("energy_per_epoch_j", results.missing_context(epochs[n]), telemetry_enabled)
        for n in missing
    }
    message(ax, f"Energy not measured for {', '.join(missing)}: " + "; ".join(sorted(reasons)), width=70)


def energy_per_epoch_figure(
    epochs: Mapping[str, pd.DataFrame],
    networks: Mapping[str, Mapping],
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
) -> plt.Figure:
    """Energy per epoch (training + validation) of every network: bars are means, dots are epochs."""
    order = results.network_order(networks, epochs)
    data = _energy_frame({n: epochs[n] for n in order}, networks)
    fig, ax = plt.subplots(figsize=(REPORT_WIDTH_IN, 5.5), layout="constrained")
    measured = data.dropna(subset=["energy_j"])
    missing = [n for n in order if n not in set(measured["network"])]
    if len(measured):
        _draw_energy_bars(ax, data, networks, order)
        _mark_not_measured(ax, order, missing)
        ax.legend(handles=kind_handles(networks, order), fontsize="small")
    else:
        ax.set_yticks([])
    if missing:
        _energy_missing_message(ax, epochs, missing, telemetry_enabled)
    ax.set(
        xlabel="network",
        ylabel="energy per epoch, training + validation (J)",
        title="Energy per epoch (bars: mean over epochs; dots: epochs)",
    )
    ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
    if demo:
        title(fig, "energy per epoch", demo=True)
    return fig


def _accuracy_frame(t2: pd.DataFrame, networks: Mapping[str, Mapping] | None) -> pd.DataFrame:
    """Table II with the experiment as a label, the time per test sample in ms and, with ``networks``, the kind."""
    data = t2.assign(
        experiment=t2["experiment"].map(lambda x: f"Experiment {int(x)}"),
        time_per_sample_ms=t2["test_time_s"].astype(float) / t2["n_test"].astype(float) * 1e3,
    )
    if networks is not None:
        data["kind"] = [kind_label(networks[n]) for n in data["network"]]
    return data


def _scatter_accuracy(ax: plt.Axes, shown: pd.DataFrame, x: str, hue_order: list[str], by_kind: bool) -> None:
    """One point per network (coloured by kind, an snnTorch twin lighter, and shaped by experiment, or coloured
    by experiment), named."""
    if by_kind:
        palette = kind_palette()
        sns.scatterplot(
            data=shown,
            x=x,
            y="test_acc",
            hue="kind",
            hue_order=[k for k in palette if k in set(shown["kind"])],
            palette=palette,
            style="experiment",
            style_order=hue_order,
            s=90,
            ax=ax,
        )
    else:
        sns.scatterplot(data=shown, x=x, y="test_acc", hue="experiment", hue_order=hue_order, s=90, ax=ax)
    for row in shown.itertuples():
        ax.annotate(
            row.network,
            (getattr(row, x), row.test_acc),
            xytext=(5, 4),
            textcoords="offset points",
            fontsize="small",
        )


def _accuracy_panel(ax: plt.Axes, data: pd.DataFrame, x: str, xlabel: str, hue_order: list[str], by_kind: bool) -> None:
    """One panel: test accuracy against ``x`` where both are known, with the learned-threshold line."""
    shown = data.dropna(subset=[x, "test_acc"])
    if len(shown):
        _scatter_accuracy(ax, shown, x, hue_order, by_kind)
        if shown[x].min() > 0 and shown[x].max() / shown[x].min() > 30:
            log_scale(ax, "x")
        if ax.get_legend() is not None:
            ax.legend(fontsize="small", title=None)
    else:
        ax.set_xticks([])
    ax.axhline(results.LEARNED_FACTOR * results.CHANCE_PCT, color="#b00020", ls=":", lw=1)
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)")


def _label_learned_line(ax: plt.Axes) -> None:
    """Name the learned-threshold line at the right edge of the panel."""
    ax.annotate(
        f"{results.LEARNED_FACTOR:g}x chance: below, a network did not learn",
        (1, results.LEARNED_FACTOR * results.CHANCE_PCT),
        xycoords=("axes fraction", "data"),
        xytext=(-4, 3),
        textcoords="offset points",
        ha="right",
        fontsize="small",
        color="#b00020",
    )


def accuracy_vs_energy_figure(
    t2: pd.DataFrame,
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
    networks: Mapping[str, Mapping] | None = None,
) -> plt.Figure:
    """Test accuracy against energy per test sample (left) and time per test sample (right); with
    ``networks``, points are coloured by kind (:func:`network_colors`) and shaped by experiment."""
    data = _accuracy_frame(t2, networks)
    fig, (ax_e, ax_t) = plt.subplots(1, 2, figsize=(REPORT_WIDTH_IN, 4.8), layout="constrained", sharey=True)
    hue_order = sorted(data["experiment"].unique())
    for ax, x, xlabel in (
        (ax_e, "energy_per_test_sample_mj", "energy per test sample (mJ)"),
        (ax_t, "time_per_sample_ms", "time per test sample (ms)"),
    ):
        _accuracy_panel(ax, data, x, xlabel, hue_order, networks is not None)
    _label_learned_line(ax_t)
    ax_e.set_title("Accuracy vs energy per test sample")
    ax_t.set_title("Accuracy vs time per test sample")
    missing = data.loc[data["energy_per_test_sample_mj"].isna()]
    if len(missing):
        reasons = {
            results.missing_reason("energy_per_test_sample_mj", row, telemetry_enabled)
            for row in missing.to_dict("records")
        }
        message(ax_e, f"Energy not measured for {', '.join(missing['network'])}: " + "; ".join(sorted(reasons)))
    if demo:
        title(fig, "test accuracy vs cost per test sample", demo=True)
    return fig
