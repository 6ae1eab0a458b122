"""Rule neuromorphic: the measured energy of each network next to the energy its operation counts would cost on an
energy-per-operation model (config ``energy_model``, :mod:`spikebench.opcounts`), the per-layer counts of every
network, and a figure (per-layer firing rate of each SNN; per-experiment ratios, measured vs estimated).
Membrane updates are priced by the model's ``neuron_update_pj`` (built-in: one MAC each, :mod:`spikebench.energy`),
shown in the table with their energy as a column of its own; a model at 0 pJ says "not counted".

The energy model is applied here, not in the evaluate jobs, so changing it reruns only this rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from spikebench import results  # noqa: E402
from spikebench.energy import estimate_energy, membrane_update_text  # noqa: E402

OPERATION_COLUMNS = (
    "dense_ops_per_sample",
    "effective_macs_per_sample",
    "effective_acs_per_sample",
    "membrane_updates_per_sample",
    "mean_firing_rate",
    "activation_sparsity",
    "footprint_bytes",
    "connection_sparsity",
)
#: The columns of ``layers.parquet`` (spikebench.opcounts, without importing torch) this rule reads.
LAYER_COLUMNS = (
    "network",
    "layer",
    "synapse",
    "shape",
    "neurons",
    "firing_rate",
    "activation_sparsity",
    "dense_ops_per_sample",
    "effective_macs_per_sample",
    "effective_acs_per_sample",
)
RATIO_QUANTITIES = (
    "measured_energy_per_sample_uj",
    "estimated_energy_per_sample_uj",
    "dense_ops_per_sample",
    "effective_ops_per_sample",
)


def read_operations(path: str | Path) -> dict:
    """The ``operations`` of one network's test.json (written by the rule evaluate)."""
    test = results.read_test(path)
    ops = test.get("operations")
    if not isinstance(ops, dict):
        raise results.ResultsInputError(
            f"{path}: no 'operations' object (test.json written before operation "
            f"counting; delete it and rerun the rule evaluate)"
        )
    return test


def read_layers(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"per-layer counts not found: {path} (written by the rule evaluate)")
    table = pd.read_parquet(path)
    missing = [c for c in LAYER_COLUMNS if c not in table.columns]  # spikebench.opcounts.LAYER_COLUMNS has all
    if missing:
        raise results.ResultsInputError(
            f"{path}: lacks columns {missing} (written by an older rule evaluate; delete it and rerun evaluate)"
        )
    return table


def _measured(test: Mapping[str, Any], telemetry_enabled: bool) -> tuple[float | None, str | None, str | None]:
    """(measured J per test sample, what it includes, why missing). The tables show microjoules (_uj)."""
    tel = test.get("telemetry") or {}
    above, total = tel.get("energy_above_idle_per_sample_mj"), tel.get("energy_per_sample_mj")
    if above is not None:
        return above / 1000.0, "above idle", None
    if total is not None:
        return total / 1000.0, "total (idle power not measured)", None
    row = {"device": test.get("device"), "telemetry_source": tel.get("telemetry_source")}
    return None, None, results.missing_reason("energy_j", row, telemetry_enabled)


def measured_vs_estimated(
    tests: Mapping[str, Mapping],
    networks: Mapping[str, Mapping],
    model: Mapping[str, Any],
    telemetry_enabled: bool = True,
) -> tuple[pd.DataFrame, dict[tuple[int, str], str]]:
    """One row per network: measured and estimated energy per test sample and the operation counts; footnotes."""
    rows, notes = [], {}
    for i, network in enumerate(n for n in networks if n in tests):
        test, spec = tests[network], networks[network]
        ops = test["operations"]
        measured, basis, why = _measured(test, telemetry_enabled)
        if why:
            notes[(i, "measured_energy_per_sample_uj")] = why
        estimate = estimate_energy(ops, model)
        rows.append(
            {
                "experiment": spec.get("experiment"),
                "network": results.network_label(network, networks),
                "network_id": network,
                "device": test.get("device"),
                "accuracy": test.get("accuracy"),
                "measured_energy_per_sample_uj": None if measured is None else measured * 1e6,
                "measured_energy_basis": basis,
                **{k.removesuffix("_j") + "_uj": None if v is None else v * 1e6 for k, v in estimate.items()},
                "neuron_update_pj": float(model.get("neuron_update_pj") or 0.0),
                **{c: ops.get(c) for c in OPERATION_COLUMNS},
                "effective_ops_per_sample": ops.get("effective_ops_per_sample"),
            }
        )
        if spec.get("kind") != "snn":
            notes[(i, "mean_firing_rate")] = "an ANN emits no spikes (its ReLU zeros are in activation_sparsity)"
            notes[(i, "membrane_updates_per_sample")] = "an ANN has no membrane"
            notes[(i, "membrane_update_energy_per_sample_uj")] = "an ANN has no membrane"
    return pd.DataFrame(rows), notes


def ratio_table(table: pd.DataFrame, networks: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per experiment, the SNN/ANN ratio (experiment 3: N-MNIST SNN / MNIST SNN) of measured and estimated energy
    and of the operation counts (``results.spiking_pairs``)."""
    by_id = table.set_index("network_id")
    rows = []
    for pair in results.spiking_pairs(networks):
        num, den = pair["numerator"], pair["denominator"]
        if num not in by_id.index or den not in by_id.index:
            continue
        row = {"experiment": pair["experiment"], "comparison": pair["comparison"]}
        for quantity in RATIO_QUANTITIES:
            a, b = by_id.at[num, quantity], by_id.at[den, quantity]
            ok = not (_missing(a) or _missing(b)) and b != 0
            row[f"{quantity.removesuffix('_per_sample_uj').removesuffix('_per_sample')}_ratio"] = a / b if ok else None
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "comparison",
            *[f"{q.removesuffix('_per_sample_uj').removesuffix('_per_sample')}_ratio" for q in RATIO_QUANTITIES],
        ],
    )


def model_text(model: Mapping[str, Any]) -> str:
    """The model in words: its name, pJ per MAC, per AC and per membrane update (or "not counted"), its source."""
    return (
        f"energy model {model['name']}: {model['mac_pj']:g} pJ per MAC, {model['ac_pj']:g} pJ per AC, "
        f"{membrane_update_text(model)} ({model['source']})"
    )


def intro(model: Mapping[str, Any]) -> list[str]:
    return [
        f"Estimated energy assumes the {model_text(model)}. Estimated = effective MACs x MAC energy + effective "
        "ACs x AC energy + membrane updates x update energy (neuron_update_pj; their part is the column "
        "membrane_update_energy_per_sample_uj); dense = every connection at every time step as a MAC "
        "(a dense implementation). Memory accesses (weights, membrane states, spikes) are not included, as in the "
        "45 nm operation tables: the estimate is of arithmetic only, a lower bound for real hardware.",
        "Measured energy is the device's energy per test sample during the evaluate job (above idle where idle "
        "power was measured), on the hardware that ran it, not on neuromorphic hardware.",
        "Counts follow NeuroBench's definitions (activation sparsity, synaptic operations, footprint, connection "
        "sparsity), on the whole test set: products (weight != 0) x (input != 0), bias not counted; conv taps on "
        "padding not counted; pooling free; ACs where a layer's input is spikes.",
    ]


def layer_table(layers: Mapping[str, pd.DataFrame], networks: Mapping[str, Mapping]) -> pd.DataFrame:
    frames = []
    for network, frame in layers.items():
        frame = frame.drop(columns=["network", "kind"], errors="ignore")
        frame.insert(0, "network", results.network_label(network, networks))
        frame.insert(0, "experiment", networks[network].get("experiment"))
        frame["network_id"] = network
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["experiment", *LAYER_COLUMNS])
    return table


def neuromorphic_figure(
    layers: pd.DataFrame,
    ratios: pd.DataFrame,
    style: Mapping[str, Any] | None = None,
    *,
    demo: bool = False,
    networks: Mapping[str, Mapping] | None = None,
    model: Mapping[str, Any] | None = None,
) -> plt.Figure:
    """A: firing rate per layer of each SNN (coloured by kind as every figure with ``networks``, an snnTorch twin
    lighter and dashed). B: per-experiment ratio, measured vs estimated energy (log scale), ``model`` under it."""
    from spikebench.figures.style import REPORT_WIDTH_IN, set_style, title

    style = dict(style or {})
    set_style(style.get("style", "whitegrid"), style.get("context", "paper"))
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(REPORT_WIDTH_IN, 4.8), layout="constrained")
    _firing_rates(ax_a, layers, networks)
    _ratio_bars(ax_b, ratios)
    if model is not None:
        ax_b.set_xlabel(
            f"estimated: {model['name']}, {model['mac_pj']:g} pJ/MAC, {model['ac_pj']:g} pJ/AC, "
            f"\n{membrane_update_text(model)}",
            fontsize="small",
        )
    title(fig, "Neuromorphic estimate: firing rates and energy ratios", demo=demo, fontsize="medium")
    return fig


def _firing_rates(ax: plt.Axes, layers: pd.DataFrame, networks: Mapping[str, Mapping] | None) -> None:
    """Panel A: one line per SNN, its firing rate per layer."""
    from matplotlib.ticker import MaxNLocator

    from spikebench.figures.style import is_twin, message, network_color, network_palette

    snn = layers[layers["firing_rate"].notna()] if len(layers) else layers
    names = list(dict.fromkeys(snn["network_id"])) if len(snn) else []
    palette = network_palette(names)
    for i, name in enumerate(names):
        part = snn[snn["network_id"] == name]
        spec = (networks or {}).get(name)
        ax.plot(
            part["layer"] + 1,
            part["firing_rate"],
            marker="osD^vP"[i % 6],
            color=palette[name] if spec is None else network_color(spec),
            linestyle="--" if spec is not None and is_twin(spec) else "-",
            label=f"exp {part['experiment'].iloc[0]} {part['network'].iloc[0]}",
        )
    ax.set(xlabel="layer", ylabel="firing rate (spikes per neuron per step)", title="A  Firing rate per layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if names:
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    else:
        message(ax, "no SNN in this run: no spikes to count")


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


#: Colours of panel B's two sources: neutral greys, not a kind of network's colour.
RATIO_COLORS = {"measured_energy_ratio": "#4d4d4d", "estimated_energy_ratio": "#b0b0b0"}


def _ratio_bars(ax: plt.Axes, ratios: pd.DataFrame) -> None:
    """Panel B: per experiment, the measured and the estimated energy ratio, on a log axis with several ticks."""
    from spikebench.figures.style import log_scale, message

    ax.set_title("B  Ratio per experiment: measured vs estimated energy")
    if not len(ratios):
        message(ax, "no pair of networks to compare")
        return
    width, drawn = 0.38, []
    for offset, column, label in (
        (-width / 2, "measured_energy_ratio", "measured (device)"),
        (width / 2, "estimated_energy_ratio", "estimated (operation model)"),
    ):
        values = [math.nan if _missing(v) else float(v) for v in ratios[column]]
        drawn += [v for v in values if not math.isnan(v)]
        ax.bar([i + offset for i in range(len(ratios))], values, width, label=label, color=RATIO_COLORS[column])
        for i, v in enumerate(values):
            ax.text(
                i + offset,
                0.03 if math.isnan(v) else v,
                "not measured" if math.isnan(v) else f"{v:.2g}x",
                ha="center",
                va="bottom",
                fontsize="small",
                rotation=90 if math.isnan(v) else 0,
                color="#8a1c1c" if math.isnan(v) else "black",
                transform=ax.get_xaxis_transform() if math.isnan(v) else ax.transData,
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(-0.6, len(ratios) - 0.4)  # both bars of every pair in view, drawn or "not measured"
    if drawn:
        log_scale(ax, "y")
        ax.set_ylim(min(drawn + [1.0]) / 1.8, max(drawn + [1.0]) * 1.6)
    ax.set_xticks(
        range(len(ratios)),
        [f"exp {e}\n" + str(c).replace(" / ", " /\n") for e, c in zip(ratios["experiment"], ratios["comparison"])],
        fontsize="small",
    )
    ax.set_ylabel("ratio (log; < 1: the first network costs less)")
    ax.legend(fontsize="small", loc="upper left")


def write_neuromorphic(
    tests: Mapping[str, str | Path],
    layers: Mapping[str, str | Path],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str],
    *,
    model: Mapping[str, Any],
    demo: bool = False,
    telemetry_enabled: bool = True,
    style: Mapping[str, Any] | None = None,
) -> None:
    """The three tables (CSV + HTML) and the figure (PNG + SVG) of the rule neuromorphic."""
    from spikebench.figures import save_figure

    test_data = {n: read_operations(p) for n, p in tests.items()}
    layer_data = {n: read_layers(p) for n, p in layers.items()}
    table, notes = measured_vs_estimated(test_data, networks, model, telemetry_enabled)
    ratios = ratio_table(table, networks)
    per_layer = layer_table(layer_data, networks)
    text = intro(model)
    results.write_table(
        table.assign(energy_model=model["name"]),
        outputs["neuromorphic_csv"],
        outputs["neuromorphic_html"],
        title="Measured vs estimated energy per test sample",
        intro=text,
        notes=notes,
        demo=demo,
        html_drop=("network_id", "energy_model"),
    )
    results.write_table(
        ratios,
        outputs["ratios_csv"],
        outputs["ratios_html"],
        title="Per experiment: ratio of measured and of estimated energy and operations",
        intro=[text[0], "Experiment 3 has no ANN: its ratio is the N-MNIST SNN over the MNIST SNN."],
        demo=demo,
    )
    results.write_table(
        per_layer,
        outputs["layers_csv"],
        outputs["layers_html"],
        title="Operations per layer on the test set",
        intro=text[2:],
        demo=demo,
        html_drop=("network_id",),
    )
    save_figure(
        neuromorphic_figure(per_layer, ratios, style, demo=demo, networks=networks, model=model),
        outputs["figure_png"],
        outputs["figure_svg"],
        dpi=int((style or {}).get("dpi", 150)),
    )
