"""The study's figures from this run (seaborn), and two beyond the study.

- :func:`cost_of_spiking_figure` (:mod:`~spikebench.figures.cost`): the headline, SNN/ANN ratios of time,
  energy and memory per experiment, this run next to the study.
- :func:`experiment_figure` (:mod:`~spikebench.figures.experiment`): one figure per experiment with the
  study's four panels, every network of the experiment in each: (A) validation accuracy per epoch, (B) time
  per epoch, (C) device memory over the run, (D) power over the run with the phases (train / val / test) shaded.
- :func:`energy_per_epoch_figure`, :func:`accuracy_vs_energy_figure` (:mod:`~spikebench.figures.summary`):
  energy per epoch of every network side by side; test accuracy against energy (and time) per test sample.

Telemetry that was not measured is never drawn as 0: the panel says so, and why. Figures of a demo run carry
DEMO DATA in their title. Each figure is saved as PNG and SVG, atomically (:mod:`~spikebench.figures.writing`).
Every figure colours a network by what it is (:func:`network_colors`: ANN orange, SNN blue, SNN on event data
green) and is sized for the report's width (:data:`REPORT_WIDTH_IN`) (:mod:`~spikebench.figures.style`). The
telemetry of a run on one time axis is :mod:`~spikebench.figures.timeline`.
"""

import matplotlib

matplotlib.use("Agg")  # headless: jobs run without a display; before any submodule imports pyplot

from spikebench.figures.cost import cost_of_spiking_figure  # noqa: E402
from spikebench.figures.experiment import PHASE_COLORS, PHASE_NAMES, experiment_figure  # noqa: E402
from spikebench.figures.style import (  # noqa: E402
    DEMO_TITLE,
    KIND_COLORS,
    KIND_NAMES,
    MIN_FONT_PT,
    REPORT_WIDTH_IN,
    SOURCE_COLORS,
    kind_handles,
    log_scale,
    message,
    network_colors,
    network_kind,
    network_palette,
    set_style,
)
from spikebench.figures.summary import accuracy_vs_energy_figure, energy_measured, energy_per_epoch_figure  # noqa: E402
from spikebench.figures.timeline import (  # noqa: E402
    MAX_POINTS,
    memory_series,
    phase_spans,
    run_timeline,
    thin,
    time_unit,
    with_power,
)
from spikebench.figures.writing import experiments_of, save_figure, write_figures  # noqa: E402

__all__ = [
    "DEMO_TITLE",
    "KIND_COLORS",
    "KIND_NAMES",
    "MAX_POINTS",
    "MIN_FONT_PT",
    "PHASE_COLORS",
    "PHASE_NAMES",
    "REPORT_WIDTH_IN",
    "SOURCE_COLORS",
    "accuracy_vs_energy_figure",
    "cost_of_spiking_figure",
    "energy_measured",
    "energy_per_epoch_figure",
    "experiment_figure",
    "experiments_of",
    "kind_handles",
    "log_scale",
    "memory_series",
    "message",
    "network_colors",
    "network_kind",
    "network_palette",
    "phase_spans",
    "run_timeline",
    "save_figure",
    "set_style",
    "thin",
    "time_unit",
    "with_power",
    "write_figures",
]
