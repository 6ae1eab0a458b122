"""How every figure looks: the seaborn style, the report's width and smallest font, one colour per kind
of network (:data:`KIND_COLORS`: ANN orange, SNN blue, SNN on event data green; an snnTorch twin a lighter
shade of its SNN's colour, hatched where it is a bar), DEMO DATA in red in the title of a demo run
(:func:`title`), and three drawing conventions: a log axis with several plain tick labels (:func:`log_scale`),
why a panel has no data written into it (:func:`message`), never zeros drawn instead, and an interval only
over :data:`MIN_SEEDS` or more runs, clipped to where the figure can lie (:func:`interval_bars`)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.patches import Patch

DEMO_TITLE = "DEMO DATA (not the study's data) \u2014 "
#: Colour of the DEMO DATA title.
DEMO_COLOR = "#b00020"

#: Width of every figure (inches): the report shows an SVG ~1000 px wide at 1400 px, so 10 in keeps 1 pt ~ 1.4 px.
REPORT_WIDTH_IN = 10.0
#: Smallest font (pt) any text of a figure gets: legible at the report's width.
MIN_FONT_PT = 9.0

_DEEP = sns.color_palette("deep", 10)
#: The one colour mapping of every figure: what a network is, not its position in a list.
KIND_COLORS = {"ann": _DEEP[1], "snn": _DEEP[0], "snn_events": _DEEP[2]}
#: An snnTorch twin (``implementation: snntorch``): its SNN's colour this far towards white, bars hatched so.
TWIN_LIGHTEN = 0.5
TWIN_HATCH = "\\\\"
#: An interval over seeds needs this many completed runs (spikebench.aggregate.MIN_RUNS): with two, Student's t
#: has one degree of freedom and its 95% interval is +-12.7 standard errors wide.
MIN_SEEDS = 3
#: Colours of the headline figure's two sources.
SOURCE_COLORS = {"this run": _DEEP[0], "study": "#9e9e9e"}

#: What each kind of network is, in legends.
KIND_NAMES = {"ann": "ANN / CNN", "snn": "SNN", "snn_events": "SNN on event data (N-MNIST)"}
TWIN_NAME = " (snnTorch twin)"


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


def is_twin(spec: Mapping[str, Any]) -> bool:
    """Whether a network is an snnTorch twin (``implementation: snntorch``), the study's code path."""
    return str(spec.get("implementation", "spikebench")) == "snntorch"


def lighter(color: Any, amount: float = TWIN_LIGHTEN) -> tuple[float, float, float]:
    """``color`` moved ``amount`` of the way towards white: the same hue, lighter."""
    r, g, b = matplotlib.colors.to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def network_color(spec: Mapping[str, Any]) -> Any:
    """The colour of one network: its kind's (:data:`KIND_COLORS`), lighter for an snnTorch twin."""
    color = KIND_COLORS.get(network_kind(spec), _DEEP[7])
    return lighter(color) if is_twin(spec) else color


def network_colors(networks: Mapping[str, Mapping]) -> dict[str, Any]:
    """The colour of every network of the config (:func:`network_color`), the same in every figure."""
    return {n: network_color(spec) for n, spec in networks.items()}


def network_hatch(spec: Mapping[str, Any]) -> str | None:
    """The hatch of a network's bars: :data:`TWIN_HATCH` for an snnTorch twin, else none."""
    return TWIN_HATCH if is_twin(spec) else None


def kind_label(spec: Mapping[str, Any]) -> str:
    """What a network is, in legends (:data:`KIND_NAMES`, " (snnTorch twin)" for a twin)."""
    return KIND_NAMES.get(network_kind(spec), "other") + (TWIN_NAME if is_twin(spec) else "")


def kind_palette() -> dict[str, Any]:
    """Colour of every :func:`kind_label`: the kinds' colours and their twins' lighter shades."""
    palette = {KIND_NAMES[k]: c for k, c in KIND_COLORS.items()}
    palette.update({KIND_NAMES[k] + TWIN_NAME: lighter(c) for k, c in KIND_COLORS.items()})
    return palette


def network_palette(names: list[str]) -> dict[str, Any]:
    """Colours by position, for networks without a spec: the first orange, the second blue, then others."""
    order = [_DEEP[1], _DEEP[0], _DEEP[2], _DEEP[3], _DEEP[4], _DEEP[5], _DEEP[6], _DEEP[7]]
    return {name: order[i % len(order)] for i, name in enumerate(names)}


class ReadableLogLocator(matplotlib.ticker.Locator):
    """Major ticks of a log axis with at least ``minimum`` of them in view: decades where the axis spans enough
    of them, else 1-2-5 per decade, else 1, 2, ..., 9 per decade, else a few round values (an axis within a
    factor of ~3). Matplotlib's default labels only decades: a ratio axis from 0.5 to 0.9 gets one tick."""

    def __init__(self, minimum: int = 3) -> None:
        self.minimum = minimum

    def __call__(self) -> list[float]:
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        vmin, vmax = sorted((float(vmin), float(vmax)))
        if not (np.isfinite(vmin) and np.isfinite(vmax)) or vmax <= 0:
            return []
        vmin = vmin if vmin > 0 else vmax / 1000
        low, high = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        for subs in ((1.0,), (1.0, 2.0, 5.0), tuple(float(m) for m in range(1, 10))):
            ticks = [m * 10.0**e for e in range(low, high + 1) for m in subs]
            inside = [t for t in ticks if vmin * (1 - 1e-9) <= t <= vmax * (1 + 1e-9)]
            if len(inside) >= self.minimum:
                return inside
        return sorted({float(f"{v:.2g}") for v in np.geomspace(vmin, vmax, self.minimum + 1)})


def log_scale(ax: plt.Axes, axis: str = "y") -> None:
    """A log axis with several plain tick labels ("0.5", "0.6", "1", "10") (:class:`ReadableLogLocator`):
    mathtext exponents would print at 70% of the font size; unlabelled minor ticks in between."""
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(ReadableLogLocator())
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(matplotlib.ticker.LogLocator(subs="all"))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def title(fig: plt.Figure, text: str, *, demo: bool = False, **kwargs: Any) -> None:
    """The figure's title: bold, and on a demo run red and led by DEMO DATA (:data:`DEMO_TITLE`)."""
    fig.suptitle(
        (DEMO_TITLE if demo else "") + text, fontweight="bold", color=DEMO_COLOR if demo else "black", **kwargs
    )


def interval_bars(
    values: Iterable[float],
    low: Iterable[float],
    high: Iterable[float],
    n_runs: Iterable[float] | None,
    domain: tuple[float, float] = (0.0, math.inf),
) -> np.ndarray | None:
    """``yerr`` (2 x n) of the intervals to draw: only where ``n_runs`` >= :data:`MIN_SEEDS` and both bounds are
    known, clipped to ``domain`` (accuracies (0, 100), everything else >= 0), NaN elsewhere (draw nothing there);
    None when none is left. Without ``n_runs`` the bounds are trusted (spikebench.aggregate leaves them empty
    below its MIN_RUNS)."""
    v = np.asarray(list(values), dtype=float)
    lo = np.clip(np.asarray(list(low), dtype=float), *domain)
    hi = np.clip(np.asarray(list(high), dtype=float), *domain)
    n = np.full(len(v), float(MIN_SEEDS)) if n_runs is None else np.asarray(list(n_runs), dtype=float)
    keep = np.isfinite(v) & np.isfinite(lo) & np.isfinite(hi) & (n >= MIN_SEEDS)
    if not keep.any():
        return None
    return np.vstack(
        [np.where(keep, np.clip(v - lo, 0.0, None), np.nan), np.where(keep, np.clip(hi - v, 0.0, None), np.nan)]
    )


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
    """Legend entries of the kinds among the ``shown`` networks, in KIND_COLORS' order, each followed by its
    snnTorch twin's (lighter, hatched) where one is shown."""
    present = {(network_kind(networks[n]), is_twin(networks[n])) for n in shown}
    handles = []
    for kind, color in KIND_COLORS.items():
        if (kind, False) in present:
            handles.append(Patch(color=color, label=KIND_NAMES[kind]))
        if (kind, True) in present:
            handles.append(
                Patch(facecolor=lighter(color), edgecolor=color, hatch=TWIN_HATCH, label=KIND_NAMES[kind] + TWIN_NAME)
            )
    return handles
