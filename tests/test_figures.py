"""The study's figures from hand-made results: with GPU telemetry, on a CPU, and with telemetry off."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from test_results import STUDY_NETWORKS, make_epochs, make_telemetry, write_fake_run  # noqa: E402

from spikebench import figures, results  # noqa: E402

EXP1 = {n: STUDY_NETWORKS[n] for n in ("exp1_ann", "exp1_snn")}
LABELS = {n: results.network_label(n, STUDY_NETWORKS) for n in STUDY_NETWORKS}


def _texts(fig) -> str:
    return (
        " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        + " "
        + (fig._suptitle.get_text() if fig._suptitle else "")
    )


def _experiment(telemetry: str, demo: bool = False, enabled: bool = True):
    epochs = {n: make_epochs(n, 3, telemetry, scale=1 + i) for i, n in enumerate(EXP1)}
    timelines = {
        n: figures.run_timeline(make_telemetry(e, telemetry), make_telemetry(None, telemetry, test_s=1.5))
        for n, e in epochs.items()
    }
    fig = figures.experiment_figure(1, epochs, timelines, LABELS, demo=demo, telemetry_enabled=enabled)
    return fig, epochs, timelines


def _power_axes(fig):
    return [ax for ax in fig.axes if "power (W)" in ax.get_ylabel()]


def test_gpu_run_draws_the_four_panels_with_phases_shaded():
    fig, epochs, timelines = _experiment("nvml")
    try:
        titles = [ax.get_title() for ax in fig.axes]
        for panel in ("A  Validation accuracy", "B  Time per epoch", "C  Device memory", "D  Power"):
            assert any(t.startswith(panel) for t in titles), (panel, titles)
        ax_a = next(ax for ax in fig.axes if ax.get_title().startswith("A"))
        assert ax_a.get_ylabel() == "accuracy (%)" and ax_a.get_xlabel() == "epoch"
        val = [line for line in ax_a.get_lines() if len(line.get_xdata()) == 3]
        assert any(np.allclose(line.get_ydata(), epochs["exp1_ann"]["val_acc"] * 100) for line in val)
        power = _power_axes(fig)
        assert len(power) == 2
        for ax, n in zip(power, EXP1):
            (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 10]
            expected = timelines[n]["power_w"].dropna()
            assert len(line.get_ydata()) == len(expected) and np.allclose(line.get_ydata(), expected)
            spans = figures.phase_spans(timelines[n])
            assert list(spans["phase"][:3]) == ["train", "val", "train"] and spans["phase"].iloc[-1] == "test"
            assert sum(isinstance(p, Rectangle) for p in ax.patches) == len(spans)
        assert "DEMO DATA" not in _texts(fig) and "not measured" not in _texts(fig)
    finally:
        matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    "telemetry, enabled, reason",
    [
        ("cpu", True, "no NVIDIA GPU (ran on cpu): power not measured"),
        ("none", False, "telemetry disabled in the configuration"),
    ],
)
def test_unmeasured_telemetry_is_said_in_the_panel_not_drawn_as_zero(telemetry, enabled, reason):
    fig, _, timelines = _experiment(telemetry, demo=True, enabled=enabled)
    try:
        for ax in _power_axes(fig):
            assert not [ln for ln in ax.get_lines() if len(ln.get_xdata())], "power drawn although not measured"
            assert any(reason in t.get_text().replace("\n", " ") for t in ax.texts)
            assert sum(isinstance(p, Rectangle) for p in ax.patches) >= 7  # the phases are still shaded
        ax_c = next(ax for ax in fig.axes if ax.get_title().startswith("C"))
        if telemetry == "cpu":  # the process's memory instead of the GPU's, labelled as such
            assert ax_c.get_ylabel() == "process memory, RSS (MiB)" and len(ax_c.get_lines()) == 2
            assert "no GPU" in ax_c.get_title()
        else:
            assert not ax_c.get_lines() and "Memory not measured" in " ".join(t.get_text() for t in ax_c.texts)
        assert fig._suptitle.get_text().startswith("DEMO DATA")
    finally:
        matplotlib.pyplot.close(fig)


def test_cpu_power_from_rapl_is_drawn_and_labelled():
    fig, _, timelines = _experiment("rapl")
    try:
        for ax, _ in zip(_power_axes(fig), EXP1):
            assert ax.get_ylabel().endswith("CPU package power, RAPL (W)")
            (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 10]
            assert np.nanmax(line.get_ydata()) == pytest.approx(25.0, rel=0.01)  # the fixture's 25 W while training
            assert np.nanmin(line.get_ydata()) == pytest.approx(17.5, rel=0.01)  # and 70 % of it otherwise
            assert not ax.texts
    finally:
        matplotlib.pyplot.close(fig)


def test_write_figures_for_a_run_without_telemetry(tmp_path):
    write_fake_run(tmp_path / "results", EXP1, telemetry="none")
    paths = {n: tmp_path / "results" / n for n in EXP1}
    names = ("experiment1", "energy_per_epoch", "accuracy_vs_energy")
    outputs = {f"{n}_{ext}": tmp_path / "figures" / f"{n}.{ext}" for n in names for ext in ("png", "svg")}
    figures.write_figures(
        {n: p / "epochs.parquet" for n, p in paths.items()},
        {n: p / "test.json" for n, p in paths.items()},
        {n: p / "telemetry_train.parquet" for n, p in paths.items()},
        {n: p / "telemetry_test.parquet" for n, p in paths.items()},
        EXP1,
        outputs,
        style="ticks",
        context="paper",
        dpi=60,
        demo=True,
        telemetry_enabled=False,
    )
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in outputs.values())
    for name in names:
        image = mpimg.imread(outputs[f"{name}_png"])
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05, f"{name}.png looks blank"
        svg = outputs[f"{name}_svg"].read_text()
        assert svg.lstrip().startswith("<?xml") and "DEMO DATA" in svg
        if name != "experiment1":
            text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", svg))  # wrapped lines joined
            assert "Energy not measured for exp1_ann, exp1_snn: telemetry disabled in the configuration" in text


def test_summary_figures_plot_measured_energy_and_mark_the_rest():
    epochs = {n: make_epochs(n, 3, "nvml") for n in ("exp1_ann", "exp2_cnn")}
    epochs["exp2_snn"] = make_epochs("exp2_snn", 3, "cpu")
    fig = figures.energy_per_epoch_figure(epochs, STUDY_NETWORKS)
    try:
        ax = fig.axes[0]
        bars = [p.get_height() for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
        assert sorted(bars) == pytest.approx(sorted(e["energy_j"].mean() for e in list(epochs.values())[:2]))
        assert ax.get_ylabel() == "energy per epoch, training + validation (J)"
        assert "not measured" in " ".join(t.get_text() for t in ax.texts)
    finally:
        matplotlib.pyplot.close(fig)
    t2 = pd.DataFrame(
        {
            "experiment": [1, 2],
            "network": ["exp1_ann", "exp2_snn"],
            "test_acc": [97.8, 67.9],
            "test_time_s": [1.3, 7.9],
            "n_test": [10000, 10000],
            "energy_per_test_sample_mj": [5.4, np.nan],
            "device": ["cuda:0", "cpu"],
            "telemetry_source": ["nvml", "cpu"],
        }
    )
    fig = figures.accuracy_vs_energy_figure(t2)
    try:
        ax_e, ax_t = fig.axes[:2]
        assert ax_e.get_xlabel() == "energy per test sample (mJ)" and ax_t.get_xlabel() == "time per test sample (ms)"
        points = np.vstack([c.get_offsets() for c in ax_e.collections if len(c.get_offsets())])
        assert points.tolist() == [[5.4, 97.8]]
        assert "Energy not measured for exp2_snn" in " ".join(t.get_text() for t in ax_e.texts)
        points = np.vstack([c.get_offsets() for c in ax_t.collections if len(c.get_offsets())])
        assert sorted(points[:, 0]) == pytest.approx([0.13, 0.79])
    finally:
        matplotlib.pyplot.close(fig)


def test_phase_spans_and_thinning():
    timeline = pd.DataFrame(
        {
            "t_s": np.arange(0, 10, 0.1),
            "phase": ["train"] * 50 + ["val"] * 30 + ["test"] * 20,
            "power_w": np.r_[np.full(50, 60.0), np.full(30, 40.0), np.full(20, 30.0)],
        }
    )
    spans = figures.phase_spans(timeline)
    assert list(spans["phase"]) == ["train", "val", "test"]
    assert spans["start_s"].tolist() == pytest.approx([0.0, 5.0, 8.0])
    assert spans["end_s"].tolist() == pytest.approx([5.0, 8.0, 9.9])  # each ends where the next starts
    thinned = figures.thin(timeline, "power_w", max_points=10)
    assert len(thinned) == 10 and thinned["power_w"].mean() == pytest.approx(timeline["power_w"].mean())
    assert figures.thin(timeline.assign(power_w=np.nan), "power_w").empty
    assert figures.run_timeline(timeline.iloc[:0].rename(columns={"t_s": "time_s"})).empty


def _cost(tmp_path, accuracies=None, telemetry="cpu"):
    write_fake_run(tmp_path / "results", telemetry=telemetry)
    paths = {n: tmp_path / "results" / n for n in STUDY_NETWORKS}
    t1 = results.table1({n: results.read_epochs(p / "epochs.parquet") for n, p in paths.items()}, STUDY_NETWORKS)
    t2 = results.table2({n: results.read_test(p / "test.json") for n, p in paths.items()}, STUDY_NETWORKS)
    for network, accuracy in (accuracies or {}).items():
        t2.loc[t2["network"] == network, "test_acc"] = accuracy
    return t1, results.cost_of_spiking(t1, results.load_paper_values(), STUDY_NETWORKS, t2)


def test_cost_of_spiking_figure_marks_networks_that_did_not_learn_and_draws_intervals(tmp_path):
    _, cost = _cost(tmp_path, {"exp2_snn": 10.8})
    time_rows = cost["metric"] == "train_time_per_sample_ms"
    cost.loc[time_rows, "ci_low"] = cost.loc[time_rows, "run_ratio"] * 0.9  # as repeats would give
    cost.loc[time_rows, "ci_high"] = cost.loc[time_rows, "run_ratio"] * 1.2
    fig = figures.cost_of_spiking_figure(cost, demo=True)
    try:
        ax_time, ax_energy, ax_memory = fig.axes[:3]
        assert [ax.get_title() for ax in (ax_time, ax_energy, ax_memory)] == [
            "Training time per sample",
            "Training energy per sample",
            "Memory",
        ]
        bars = [p for p in ax_time.patches if isinstance(p, Rectangle)]
        heights = sorted(p.get_height() for p in bars)
        expected = list(cost.loc[time_rows, "run_ratio"]) + list(cost.loc[time_rows, "paper_ratio"])
        assert heights == pytest.approx(sorted(expected))
        hatched = [p for p in bars if p.get_hatch()]
        assert [p.get_height() for p in hatched] == pytest.approx(
            [cost.loc[time_rows & (cost["experiment"] == 2), "run_ratio"].iloc[0]]
        )
        marked = [t.get_text() for t in ax_time.texts if "\u2717" in t.get_text()]
        assert len(marked) == 1 and marked[0].startswith(f"{hatched[0].get_height():.2g}x")
        assert any("did not learn" in t.get_text() for t in fig.legends[0].get_texts())
        from matplotlib.container import ErrorbarContainer

        intervals = [c for c in ax_time.containers if isinstance(c, ErrorbarContainer)]
        assert len(intervals) == 3 and not any(isinstance(c, ErrorbarContainer) for c in ax_memory.containers)
        assert "not measured" in " ".join(t.get_text() for t in ax_energy.texts)  # no energy on this CPU
        assert "peak_memory_mib: process RSS on the CPU" in ax_memory.get_xlabel().replace("\n", " ")
        assert "not alike" in " ".join(t.get_text() for t in ax_memory.texts)  # no study bar beside RAM
        assert "DEMO DATA" in fig._suptitle.get_text()
    finally:
        matplotlib.pyplot.close(fig)
    # on the CPU with the memory saved for backward measured: that, not the process's RSS, is the memory panel
    peak = cost[cost["metric"] == "peak_memory_mib"]
    fig = figures.cost_of_spiking_figure(pd.concat([cost, peak.assign(metric="saved_for_backward_mib")]))
    try:
        label = fig.axes[2].get_xlabel().replace("\n", " ")
        assert "memory saved for backward (saved_for_backward_mib)" in label and "RSS" not in label
    finally:
        matplotlib.pyplot.close(fig)
    cost = pd.concat([cost, cost[cost["metric"] == "peak_memory_mib"].assign(metric="activation_peak_mib")])
    cost = cost.assign(not_learned="")  # every network learned
    fig = figures.cost_of_spiking_figure(cost)
    try:
        assert "activation memory (activation_peak_mib)" in fig.axes[2].get_xlabel().replace("\n", " ")
        assert not any(p.get_hatch() for ax in fig.axes for p in ax.patches)
    finally:
        matplotlib.pyplot.close(fig)


def test_one_colour_per_kind_of_network_in_every_figure():
    colors = figures.network_colors(STUDY_NETWORKS)
    assert colors["exp1_ann"] == colors["exp2_cnn"] == figures.KIND_COLORS["ann"]
    assert colors["exp1_snn"] == colors["exp2_snn"] == colors["exp3_snn_mnist"] == figures.KIND_COLORS["snn"]
    assert colors["exp3_snn_nmnist"] == figures.KIND_COLORS["snn_events"]
    drawn = {}
    for experiment in (1, 3):
        names = [n for n, s in STUDY_NETWORKS.items() if s["experiment"] == experiment]
        epochs = {n: make_epochs(n, 3, "nvml") for n in names}
        timelines = {n: figures.run_timeline(make_telemetry(e, "nvml")) for n, e in epochs.items()}
        fig = figures.experiment_figure(experiment, epochs, timelines, LABELS, colors=colors)
        try:
            ax_c = fig.axes[2]
            drawn.update({line.get_label(): line.get_color() for line in ax_c.lines})
        finally:
            matplotlib.pyplot.close(fig)
    assert drawn["SNN"] == drawn["SNN: MNIST"] == figures.KIND_COLORS["snn"]  # the same SNN blue in both figures
    assert drawn["ANN"] == figures.KIND_COLORS["ann"] and drawn["SNN: N-MNIST"] == figures.KIND_COLORS["snn_events"]


def test_time_axis_starts_at_the_first_training_sample():
    epochs = make_epochs("exp1_snn", 2, "nvml")
    train = make_telemetry(epochs, "nvml")
    t0 = float(train["time_s"].min())
    startup = train.iloc[:5].assign(time_s=t0 - 8.0 + np.arange(5) * 0.1, phase=pd.NA)  # loading data, 8 s before
    sidecar = pd.concat([startup, train], ignore_index=True)
    timeline = figures.run_timeline(sidecar, make_telemetry(None, "nvml", test_s=1.5))
    assert timeline["t_s"].min() == 0.0
    first = timeline.iloc[0]
    assert first["phase"] == "train" and first["time_s"] == pytest.approx(t0)


def test_svg_fonts_are_legible_at_the_report_width(tmp_path):
    write_fake_run(tmp_path / "results", telemetry="nvml")
    paths = {n: tmp_path / "results" / n for n in STUDY_NETWORKS}
    names = ["cost_of_spiking", "experiment1", "experiment2", "experiment3", "energy_per_epoch", "accuracy_vs_energy"]
    outputs = {f"{n}_{ext}": tmp_path / "figures" / f"{n}.{ext}" for n in names for ext in ("png", "svg")}
    outputs["measured"] = tmp_path / "figures" / "measured"
    figures.write_figures(
        {n: p / "epochs.parquet" for n, p in paths.items()},
        {n: p / "test.json" for n, p in paths.items()},
        {n: p / "telemetry_train.parquet" for n, p in paths.items()},
        {n: p / "telemetry_test.parquet" for n, p in paths.items()},
        STUDY_NETWORKS,
        outputs,
        dpi=50,
    )
    shown_px = 1000.0  # the report shows a figure about this wide in a 1400 px window
    for name in names:
        svg = outputs[f"{name}_svg"].read_text()
        width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
        smallest = min(float(s) for s in re.findall(r"font-size: ([\d.]+)px", svg))
        assert smallest * shown_px / width >= 10.0, (
            f"{name}.svg: its smallest text is {smallest * shown_px / width:.1f} px"
        )
    # energy measured (NVML): the report's folder holds the energy figure
    assert [p.name for p in outputs["measured"].iterdir()] == ["energy_per_epoch.svg"]


def test_energy_figure_left_out_of_the_report_without_an_energy_reading(tmp_path):
    write_fake_run(tmp_path / "results", EXP1, telemetry="cpu")
    paths = {n: tmp_path / "results" / n for n in EXP1}
    names = ["cost_of_spiking", "experiment1", "energy_per_epoch", "accuracy_vs_energy"]
    outputs = {f"{n}_{ext}": tmp_path / "figures" / f"{n}.{ext}" for n in names for ext in ("png", "svg")}
    outputs["measured"] = tmp_path / "figures" / "measured"
    figures.write_figures(
        {n: p / "epochs.parquet" for n, p in paths.items()},
        {n: p / "test.json" for n, p in paths.items()},
        {n: p / "telemetry_train.parquet" for n, p in paths.items()},
        {n: p / "telemetry_test.parquet" for n, p in paths.items()},
        EXP1,
        outputs,
        dpi=50,
    )
    assert outputs["measured"].is_dir() and not list(outputs["measured"].iterdir())
    text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", outputs["cost_of_spiking_svg"].read_text()))
    assert "Not measured in this run: no NVIDIA GPU (ran on cpu): power not measured" in text


# ---------------------------------------------------------------- every figure of a demo run (issue #20)
TWIN = {**STUDY_NETWORKS["exp1_snn"], "implementation": "snntorch"}
DEMO_NETWORKS = {**STUDY_NETWORKS, "exp1_snn_snntorch": TWIN}
DEMO_LABELS = {n: results.network_label(n, DEMO_NETWORKS) for n in DEMO_NETWORKS}


def _sweep_demo(demo: bool):
    from spikebench.aggregate import FIGURES
    from spikebench.sweep_figures import sweep_figure

    def row(network, value, n_ok=2):  # as on the demo's CPU: no energy, no activation memory, two seeds
        out = {"network": network, "status": "ok", "implementation": "spikebench", "n_runs": n_ok, "n_ok": n_ok}
        for name in FIGURES:
            v = np.nan if name in ("energy_per_epoch_j", "activation_peak_mib") else value
            out.update({name: v, f"{name}_ci95_low": v - 10, f"{name}_ci95_high": v + 10})
        return out

    summary = pd.DataFrame([row("exp1_ann", 1.0), row("exp1_snn", 4.0), row("exp1_snn-num_steps2", 2.0)])
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-num_steps2", "base": "exp1_snn", "value": 2},
    ]
    return sweep_figure(summary, "num_steps", points, DEMO_NETWORKS, demo=demo)


def _neuromorphic_demo(demo: bool):
    from spikebench.energy import energy_model
    from spikebench.neuromorphic import layer_table, neuromorphic_figure

    frame = pd.DataFrame({"layer": [0, 1], "firing_rate": [0.2, 0.1]})
    layers = layer_table({"exp1_snn": frame, "exp1_snn_snntorch": frame}, DEMO_NETWORKS)
    ratios = pd.DataFrame(
        {
            "experiment": [1, 1],
            "comparison": ["SNN / ANN", "SNN (snnTorch) / ANN"],
            "measured_energy_ratio": [np.nan, np.nan],
            "estimated_energy_ratio": [0.79, 0.85],
        }
    )
    return neuromorphic_figure(layers, ratios, demo=demo, networks=DEMO_NETWORKS, model=energy_model(None))


def _demo_figures(tmp_path, demo: bool = True):
    """(name, figure) of every figure a demo run draws, from a demo-like fixture (CPU telemetry, an snnTorch twin)."""
    _, cost = _cost(tmp_path)
    yield "cost_of_spiking", figures.cost_of_spiking_figure(cost, demo=demo)
    epochs = {n: make_epochs(n, 3, "cpu", scale=1 + i) for i, n in enumerate(DEMO_NETWORKS)}
    timelines = {
        n: figures.run_timeline(make_telemetry(e, "cpu"), make_telemetry(None, "cpu", test_s=1.5))
        for n, e in epochs.items()
    }
    colors = figures.network_colors(DEMO_NETWORKS)
    for experiment in (1, 2, 3):
        members = [n for n in DEMO_NETWORKS if DEMO_NETWORKS[n]["experiment"] == experiment]
        yield (
            f"experiment{experiment}",
            figures.experiment_figure(
                experiment,
                {n: epochs[n] for n in members},
                {n: timelines[n] for n in members},
                DEMO_LABELS,
                demo=demo,
                colors=colors,
            ),
        )
    yield "energy_per_epoch", figures.energy_per_epoch_figure(epochs, DEMO_NETWORKS, demo=demo)
    tests = {n: results.read_test(tmp_path / "results" / n / "test.json") for n in STUDY_NETWORKS}
    t2 = results.table2(tests, STUDY_NETWORKS)
    yield "accuracy_vs_energy", figures.accuracy_vs_energy_figure(t2, demo=demo, networks=DEMO_NETWORKS)
    yield "sweep_num_steps", _sweep_demo(demo)
    yield "neuromorphic", _neuromorphic_demo(demo)


def _all_texts(fig) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text)]


def _labelled_ticks(axis) -> list[str]:
    """The tick labels with text within the axis's view (after a draw)."""
    low, high = sorted(axis.get_view_interval())
    i = 1 if axis is axis.axes.yaxis else 0
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text() and low <= t.get_position()[i] <= high]


def test_every_figure_of_a_demo_run_says_demo_data_and_has_no_empty_panel(tmp_path):
    names = []
    for name, fig in _demo_figures(tmp_path):
        try:
            names.append(name)
            fig.canvas.draw()
            assert any("DEMO DATA" in t for t in _all_texts(fig)), f"{name}: no DEMO DATA"
            for ax in fig.axes:
                drawn = ax.lines or ax.patches or ax.collections or ax.images or ax.texts
                assert drawn, f"{name}: panel {ax.get_title()!r} is empty and does not say why"
                for axis in (ax.xaxis, ax.yaxis):
                    if axis.get_scale() == "log":
                        assert len(_labelled_ticks(axis)) >= 2, (name, ax.get_title(), _labelled_ticks(axis))
        finally:
            matplotlib.pyplot.close(fig)
    assert len(names) == 8
    for name, fig in _demo_figures(tmp_path / "plain", demo=False):
        try:
            assert not any("DEMO DATA" in t for t in _all_texts(fig)), name
        finally:
            matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("low, high", [(0.79, 0.85), (0.5, 0.9), (0.3, 4.0), (2.0, 40.0), (0.01, 500.0), (95, 99)])
def test_a_log_axis_has_several_labelled_ticks(low, high):
    fig, ax = matplotlib.pyplot.subplots()
    try:
        ax.bar([0, 1], [low, high])
        figures.log_scale(ax, "y")
        ax.set_ylim(low / 1.1, high * 1.1)
        fig.canvas.draw()
        labels = _labelled_ticks(ax.yaxis)
        assert len(labels) >= 2, labels
        assert all("$" not in t for t in labels)  # plain numbers, not mathtext exponents
        assert len(labels) <= 12, labels  # and not crowded
    finally:
        matplotlib.pyplot.close(fig)


def test_the_snntorch_twin_is_told_apart_from_its_snn_in_every_figure(tmp_path):
    from matplotlib.colors import to_rgb

    colors = figures.network_colors(DEMO_NETWORKS)
    assert colors["exp1_snn"] == figures.KIND_COLORS["snn"] and colors["exp1_snn_snntorch"] != colors["exp1_snn"]
    r, g, b = to_rgb(colors["exp1_snn_snntorch"])
    assert b == max(r, g, b)  # the same blue, lighter
    epochs = {n: make_epochs(n, 3, "nvml") for n in ("exp1_ann", "exp1_snn", "exp1_snn_snntorch")}
    fig = figures.energy_per_epoch_figure(epochs, DEMO_NETWORKS)
    try:
        bars = {round(p.get_x() + p.get_width() / 2): p for p in fig.axes[0].patches if isinstance(p, Rectangle)}
        snn, twin = bars[1], bars[2]
        assert twin.get_hatch() and not snn.get_hatch()
        assert to_rgb(twin.get_facecolor()) != to_rgb(snn.get_facecolor())
        legend = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
        assert "SNN (snnTorch twin)" in legend
    finally:
        matplotlib.pyplot.close(fig)
    timelines = {n: figures.run_timeline(make_telemetry(e, "nvml")) for n, e in epochs.items()}
    fig = figures.experiment_figure(1, epochs, timelines, DEMO_LABELS, colors=colors)
    try:
        drawn = {line.get_label(): to_rgb(line.get_color()) for line in fig.axes[2].lines}
        assert drawn["SNN"] == to_rgb(figures.KIND_COLORS["snn"]) and drawn["SNN (snnTorch)"] != drawn["SNN"]
    finally:
        matplotlib.pyplot.close(fig)
    t2 = pd.DataFrame(
        {
            "experiment": [1, 1],
            "network": ["exp1_snn", "exp1_snn_snntorch"],
            "test_acc": [90.0, 89.0],
            "test_time_s": [1.0, 3.0],
            "n_test": [1000, 1000],
            "energy_per_test_sample_mj": [1.0, 2.0],
            "device": ["cuda:0"] * 2,
            "telemetry_source": ["nvml"] * 2,
        }
    )
    fig = figures.accuracy_vs_energy_figure(t2, networks=DEMO_NETWORKS)
    try:
        points = {
            tuple(offset): to_rgb(color)
            for coll in fig.axes[0].collections
            for offset, color in zip(coll.get_offsets(), coll.get_facecolors())
        }
        assert points[(1.0, 90.0)] != points[(2.0, 89.0)]
    finally:
        matplotlib.pyplot.close(fig)


def test_sweep_and_neuromorphic_figures_are_legible_at_the_report_width(tmp_path):
    for name, fig in (("sweep", _sweep_demo(True)), ("neuromorphic", _neuromorphic_demo(True))):
        figures.save_figure(fig, tmp_path / f"{name}.png", tmp_path / f"{name}.svg", dpi=50)
        svg = (tmp_path / f"{name}.svg").read_text()
        width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
        smallest = min(float(s) for s in re.findall(r"font-size: ([\d.]+)px", svg))
        assert width <= figures.REPORT_WIDTH_IN * 72 + 1, f"{name}.svg is {width / 72:.1f} in wide"
        assert smallest * 1000.0 / width >= 10.0, f"{name}.svg: its smallest text is {smallest * 1000 / width:.1f} px"
