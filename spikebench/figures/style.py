"""How every figure looks: the seaborn style, the report's width and smallest font, one colour per kind
of network (:data:`KIND_COLORS`: ANN orange, SNN blue, SNN on event data green), DEMO DATA in the title
of a demo run, and two drawing conventions: a log axis with plain tick labels (:func:`log_scale`) and why a
panel has no data written into it (:func:`message`), never zeros drawn instead."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.patches import Patch

DEMO_TITLE = "DEMO DATA (not the study's data) \u2014 "

#: Width of every figure (inches): the report shows an SVG ~1000 px wide at 1400 px, so 10 in keeps 1 pt ~ 1.4 px.
REPORT_WIDTH_IN = 10.0
#: Smallest font (pt) any text of a figure gets: legible at the report's width.
MIN_FONT_PT = 9.0

_DEEP = sns.color_palette("deep", 10)
#: The one colour mapping of every figure: what a network is, not its position in a list.
KIND_COLORS = {"ann": _DEEP[1], "snn": _DEEP[0], "snn_events": _DEEP[2]}
#: Colours of the headline figure's two sources.
SOURCE_COLORS = {"this run": _DEEP[0], "study": "#9e9e9e"}

#: What each kind of network is, in legends.
KIND_NAMES = {"ann": "ANN / CNN", "snn": "SNN", "snn_events": "SNN on event data (N-MNIST)"}


def set_style(style: str = "whitegrid", context: str = "paper") -> None:
    """The config's seaborn style and context (``figures.style``, ``figures.context``), no font below MIN_FONT_PT."""
    sns.set_theme(style=style, context=context)
    for key in (
        "font.size",
        "axes.labelsize",
        "axes.titlesize",
        "xtick.labelsize",
        "ytick.labelsize",
        "legend.fontsize",
        "legend.title_fontsize",
    ):
        size = matplotlib.rcParams[key]
        if isinstance(size, (int, float)) and size < MIN_FONT_PT + 1:
            matplotlib.rcParams[key] = MIN_FONT_PT + 1


def network_kind(spec: Mapping[str, Any]) -> str:
    """ "ann", "snn" or "snn_events" (an SNN on N-MNIST's event frames)."""
    kind = str(spec.get("kind", "")).lower()
    return "snn_events" if kind == "snn" and spec.get("dataset") == "nmnist" else kind


def network_colors(networks: Mapping[str, Mapping]) -> dict[str, Any]:
    """The colour of every network of the config (:data:`KIND_COLORS`), the same in every figure."""
    return {n: KIND_COLORS.get(network_kind(spec), _DEEP[7]) for n, spec in networks.items()}


def network_palette(names: list[str]) -> dict[str, Any]:
    """Colours by position, for networks without a spec: the first orange, the second blue, then others."""
    order = [_DEEP[1], _DEEP[0], _DEEP[2], _DEEP[3], _DEEP[4], _DEEP[5], _DEEP[6], _DEEP[7]]
    return {name: order[i % len(order)] for i, name in enumerate(names)}


def log_scale(ax: plt.Axes, axis: str = "y") -> None:
    """A log axis with plain tick labels ("0.5", "10"): mathtext exponents would print at 70% of the font size."""
    getattr(ax, f"set_{axis}scale")("log")
    formatter = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(formatter)
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def message(ax: plt.Axes, text: str, width: int = 48) -> None:
    """Write why a panel has no data into it (instead of plotting zeros)."""
    ax.text(
        0.5,
        0.5,
        textwrap.fill(text, width),
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize="small",
        color="#8a1c1c",
        wrap=True,
        bbox={"boxstyle": "round", "facecolor": "#fff4f4", "edgecolor": "#d9a0a0"},
    )


def kind_handles(networks: Mapping[str, Mapping], shown: Iterable[str]) -> list[Patch]:
    """Legend entries of the kinds among the ``shown`` networks, in KIND_COLORS' order."""
    kinds = {network_kind(networks[n]) for n in shown}
    return [Patch(color=c, label=KIND_NAMES[k]) for k, c in KIND_COLORS.items() if k in kinds]
