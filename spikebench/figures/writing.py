"""The figures on disk: each as PNG and SVG (text kept as text), atomically (:mod:`spikebench.atomic`);
:func:`write_figures` is the rule figures."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from spikebench import atomic, results
from spikebench.figures.cost import cost_of_spiking_figure
from spikebench.figures.experiment import experiment_figure
from spikebench.figures.style import network_colors, set_style
from spikebench.figures.summary import accuracy_vs_energy_figure, energy_measured, energy_per_epoch_figure
from spikebench.figures.timeline import run_timeline


def save_figure(fig: plt.Figure, png: str | Path, svg: str | Path | None = None, dpi: int = 150) -> None:
    """Save as PNG (and SVG, text kept as text), each to a temporary name first, then close the figure."""
    try:
        for path, fmt in ((png, "png"), (svg, "svg")):
            if path is None:
                continue
            with atomic.atomic_output(path) as tmp, plt.rc_context({"svg.fonttype": "none"}):
                fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Date": None} if fmt == "svg" else None)
    finally:
        plt.close(fig)


def experiments_of(networks: Mapping[str, Mapping]) -> list[int]:
    """The experiment numbers of the config's networks, ascending."""
    return sorted({int(spec["experiment"]) for spec in networks.values()})


def _headline_cost(
    epochs: Mapping[str, pd.DataFrame],
    networks: Mapping[str, Mapping],
    t2: pd.DataFrame,
    paper_path: str | Path,
    summary_path: str | Path | None,
) -> pd.DataFrame:
    """The cost table the headline figure draws; with the aggregate summary, the cost table's own statistic (the
    ratio of the means over seeds, ``aggregate.seed_ratios``) and its interval where there are enough seeds."""
    cost = results.cost_of_spiking(
        results.table1(epochs, networks),
        results.load_paper_values(paper_path),
        networks,
        t2,
        to_target=summary_path is not None,
    )
    if summary_path is not None:
        from spikebench import aggregate

        cost = aggregate.seed_ratios(cost, aggregate.read_table(summary_path, "summary"))
    return cost


def _read_timelines(
    epochs: Mapping[str, pd.DataFrame],
    telemetry_train_paths: Mapping[str, str | Path],
    telemetry_test_paths: Mapping[str, str | Path],
) -> dict[str, pd.DataFrame]:
    """Each network's telemetry timeline: training, then test where its telemetry was recorded."""
    return {
        n: run_timeline(
            results.read_telemetry(telemetry_train_paths[n]),
            results.read_telemetry(telemetry_test_paths[n]) if n in telemetry_test_paths else None,
        )
        for n in epochs
    }


def _energy_note(epochs: Mapping[str, pd.DataFrame], telemetry_enabled: bool) -> str:
    """Why no network has an energy reading, for the headline figure."""
    reasons = {
        results.missing_reason("energy_per_epoch_j", results.missing_context(e), telemetry_enabled)
        for e in epochs.values()
    }
    return "Not measured in this run: " + "; ".join(sorted(reasons))


def _write_experiment_figures(
    epochs: Mapping[str, pd.DataFrame],
    timelines: Mapping[str, pd.DataFrame],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str | Path],
    *,
    dpi: int,
    demo: bool,
    telemetry_enabled: bool,
) -> None:
    """One figure per experiment, its networks in the config's order."""
    labels = {n: results.network_label(n, networks) for n in networks}
    colors = network_colors(networks)
    order = results.network_order(networks, epochs)
    for experiment in experiments_of({n: networks[n] for n in order}):
        members = [n for n in order if int(networks[n]["experiment"]) == experiment]
        fig = experiment_figure(
            experiment,
            {n: epochs[n] for n in members},
            {n: timelines[n] for n in members},
            labels,
            demo=demo,
            telemetry_enabled=telemetry_enabled,
            colors=colors,
        )
        save_figure(fig, outputs[f"experiment{experiment}_png"], outputs.get(f"experiment{experiment}_svg"), dpi)


def _copy_measured_energy(outputs: Mapping[str, str | Path], measured: bool) -> None:
    """With ``outputs["measured"]``: that folder, holding the energy figure's SVG only where energy was measured."""
    if "measured" in outputs:
        folder = Path(outputs["measured"])
        folder.mkdir(parents=True, exist_ok=True)
        if measured and outputs.get("energy_per_epoch_svg"):
            atomic.write_bytes(Path(outputs["energy_per_epoch_svg"]).read_bytes(), folder / "energy_per_epoch.svg")


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
    timelines = _read_timelines(epochs, telemetry_train_paths, telemetry_test_paths)
    t2 = results.table2(tests, networks)
    measured = energy_measured(epochs)
    if "cost_of_spiking_png" in outputs:
        cost = _headline_cost(epochs, networks, t2, paper_path, summary_path)
        note = None if measured else _energy_note(epochs, telemetry_enabled)
        save_figure(
            cost_of_spiking_figure(cost, demo=demo, energy_note=note),
            outputs["cost_of_spiking_png"],
            outputs.get("cost_of_spiking_svg"),
            dpi,
        )
    _write_experiment_figures(
        epochs, timelines, networks, outputs, dpi=dpi, demo=demo, telemetry_enabled=telemetry_enabled
    )
    fig = energy_per_epoch_figure(epochs, networks, demo=demo, telemetry_enabled=telemetry_enabled)
    save_figure(fig, outputs["energy_per_epoch_png"], outputs.get("energy_per_epoch_svg"), dpi)
    _copy_measured_energy(outputs, measured)
    fig = accuracy_vs_energy_figure(t2, demo=demo, telemetry_enabled=telemetry_enabled, networks=networks)
    save_figure(fig, outputs["accuracy_vs_energy_png"], outputs.get("accuracy_vs_energy_svg"), dpi)
