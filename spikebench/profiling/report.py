"""Rule profile_summary: the per-network summary table (CSV) and the stacked-bar figure of where one training
step's time goes (:func:`write_profile_summary`).

Figure: one bar per network, 100% = the profiled step; from the bottom the data preparation, the forward pass,
the backward pass (hatched) and the optimiser step, each stacked by op kind. The black line across a bar is the
arithmetic floor as a share of the unprofiled step time (``floor_ms / step_ms``); above each bar the step time
and the floor (dotted at the top where the floor exceeds the step: spikebench's event-driven CPU kernels skip
the zeros that the dense floor multiplies). A network that could not be profiled gets its reason in place of a
bar, never a zero bar.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from spikebench import atomic  # noqa: E402
from spikebench.profiling.events import KINDS, PHASES  # noqa: E402

#: One colour per op kind (the same in every profile figure).
KIND_COLORS = {
    "matmul/conv": "#4c72b0",
    "LIF recurrence": "#c44e52",
    "pooling": "#8172b3",
    "ReLU/dropout": "#937860",
    "loss": "#da8bc3",
    "optimiser": "#8c8c8c",
    "data preparation": "#ccb974",
    "other": "#dddddd",
}
BACKWARD_HATCH = "///"
#: Network-level columns of the summary table (then one ``pct_<op kind>`` column per op kind).
SUMMARY_COLUMNS = (
    "network",
    "kind",
    "implementation",
    "device",
    "batch_size",
    "time_steps",
    "step_ms",
    "profiled_step_ms",
    "profiler_overhead_pct",
    "floor_ms",
    "step_over_floor",
    "arithmetic_pct",
    "spiking_pct",
    "null_reason",
)


def kind_column(kind: str) -> str:
    """``pct_matmul_conv``, ``pct_lif_recurrence``, ...: the summary column of an op kind's share of the step."""
    return "pct_" + re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


def step_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Each (phase, op kind)'s share of the whole profiled step (the four phases together), percent."""
    rows = table[table["phase"].isin(PHASES)]
    total = rows["time_ms"].sum()
    shares = rows.groupby(["phase", "op_kind"], sort=False)["time_ms"].sum() / total * 100.0
    return shares.reset_index(name="pct")


def summary_table(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per network: its step time, floor, step/floor, overhead and the shares of the step by op kind."""
    rows = []
    for network, table in tables.items():
        row = {col: table.iloc[0][col] if col in table else None for col in SUMMARY_COLUMNS}
        row["network"] = network
        measured = table["time_ms"].notna().any()
        shares = step_shares(table).groupby("op_kind")["pct"].sum() if measured else pd.Series(dtype=float)
        for kind in KINDS:
            row[kind_column(kind)] = float(shares.get(kind, 0.0)) if measured else None
        rows.append(row)
    return pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *(kind_column(k) for k in KINDS)])


def _bar(ax, i: int, table: pd.DataFrame) -> None:
    """Network ``i``'s stacked bar, its floor line and its label."""
    bottom = 0.0
    shares = step_shares(table).set_index(["phase", "op_kind"])["pct"]
    for phase in PHASES:
        for kind in KINDS:
            pct = float(shares.get((phase, kind), 0.0))
            if pct <= 0:
                continue
            hatch = BACKWARD_HATCH if phase == "backward" else None
            ax.bar(i, pct, 0.7, bottom=bottom, color=KIND_COLORS[kind], hatch=hatch, edgecolor="white", lw=0.5)
            bottom += pct
    first = table.iloc[0]
    floor_pct = 100.0 * first["floor_ms"] / first["step_ms"]
    above = floor_pct > 100.0  # spikebench's event-driven CPU kernels beat the dense floor: drawn at the top
    ax.hlines(min(floor_pct, 101.5), i - 0.42, i + 0.42, color="black", lw=2.5, ls=":" if above else "-", zorder=5)
    label = f"step {_ms(first['step_ms'])}\nfloor {_ms(first['floor_ms'])}"
    ax.text(i, 104, label, ha="center", va="bottom", fontsize="small")


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else f"{value:.3g} ms"


def profile_figure(tables: Mapping[str, pd.DataFrame], *, demo: bool = False, style: dict | None = None):
    """The stacked-bar figure of the networks' ``profile.parquet`` tables (in ``tables``' order)."""
    from spikebench.figures.style import REPORT_WIDTH_IN, set_style, title

    style = style or {}
    set_style(style.get("style", "whitegrid"), style.get("context", "paper"))
    fig, ax = plt.subplots(figsize=(REPORT_WIDTH_IN, 7.0))
    for i, table in enumerate(tables.values()):
        if table["time_ms"].notna().any():
            _bar(ax, i, table)
        else:
            reason = textwrap.fill(f"not profiled: {table.iloc[0]['null_reason']}", 22)
            ax.text(i, 50, reason, ha="center", va="center", fontsize="small", color="#8a1c1c")
    ax.set_xticks(range(len(tables)), list(tables), rotation=25, ha="right")
    ax.set_xlim(-0.6, len(tables) - 0.4)
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("share of one profiled training step (%)")
    handles = [Patch(facecolor=KIND_COLORS[k], label=k) for k in KINDS]
    handles.append(Patch(facecolor="white", edgecolor="#555555", hatch=BACKWARD_HATCH, label="backward pass"))
    handles.append(Line2D([], [], color="black", lw=2.5, label="arithmetic floor / step time"))
    handles.append(Line2D([], [], color="black", lw=2.5, ls=":", label="floor above the step (drawn at 100%)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    title(fig, "Where the time of one training step goes", demo=demo)
    fig.tight_layout()
    return fig


def write_profile_summary(
    profiles: Mapping[str, str | Path], outputs: Mapping[str, str | Path], *, demo: bool = False, style=None
) -> pd.DataFrame:
    """Read each network's ``profile.parquet`` (``profiles``: network -> path), write the summary CSV
    (``outputs["table"]``) and the figure (``outputs["png"]``, ``outputs["svg"]``)."""
    from spikebench.figures.writing import save_figure

    tables = {name: pd.read_parquet(path) for name, path in profiles.items()}
    summary = summary_table(tables)
    if demo:
        summary.insert(0, "data", "DEMO DATA")
    atomic.write_text(summary.to_csv(index=False), outputs["table"])
    save_figure(profile_figure(tables, demo=demo, style=style), outputs["png"], outputs["svg"])
    return summary
