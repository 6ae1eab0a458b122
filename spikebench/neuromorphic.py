"""Rule neuromorphic: the measured energy of each network next to the energy its operation counts would cost on an
energy-per-operation model (config ``energy_model``, :mod:`spikebench.opcounts`), the per-layer counts of every
network, and a figure (per-layer firing rate of each SNN; per-experiment ratios, measured vs estimated).

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
from spikebench.energy import estimate_energy  # noqa: E402

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
        rows.append(
            {
                "experiment": spec.get("experiment"),
                "network": results.network_label(network, networks),
                "network_id": network,
                "device": test.get("device"),
                "accuracy": test.get("accuracy"),
                "measured_energy_per_sample_uj": None if measured is None else measured * 1e6,
                "measured_energy_basis": basis,
                **{k.removesuffix("_j") + "_uj": v * 1e6 for k, v in estimate_energy(ops, model).items()},
                **{c: ops.get(c) for c in OPERATION_COLUMNS},
                "effective_ops_per_sample": ops.get("effective_ops_per_sample"),
            }
        )
        if spec.get("kind") != "snn":
            notes[(i, "mean_firing_rate")] = "an ANN emits no spikes (its ReLU zeros are in activation_sparsity)"
            notes[(i, "membrane_updates_per_sample")] = "an ANN has no membrane"
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
    return (
        f"energy model {model['name']}: {model['mac_pj']:g} pJ per MAC, {model['ac_pj']:g} pJ per AC, "
        f"{model.get('neuron_update_pj', 0.0):g} pJ per membrane update ({model['source']})"
    )


def intro(model: Mapping[str, Any]) -> list[str]:
    return [
        f"Estimated energy assumes the {model_text(model)}. Estimated = effective MACs x MAC energy + effective "
        "ACs x AC energy + membrane updates x update energy; dense = every connection at every time step as a MAC "
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
    layers: pd.DataFrame, ratios: pd.DataFrame, style: Mapping[str, Any] | None = None
) -> plt.Figure:
    """A: firing rate per layer of each SNN. B: per-experiment ratio, measured vs estimated energy (log scale)."""
    from spikebench.figures import network_palette, set_style

    style = dict(style or {})
    set_style(style.get("style", "whitegrid"), style.get("context", "paper"))
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2))
    snn = layers[layers["firing_rate"].notna()] if len(layers) else layers
    names = list(dict.fromkeys(snn["network_id"])) if len(snn) else []
    palette = network_palette(names)
    for name in names:
        part = snn[snn["network_id"] == name]
        ax_a.plot(
            part["layer"] + 1,
            part["firing_rate"],
            marker="o",
            color=palette[name],
            label=f"exp {part['experiment'].iloc[0]} {part['network'].iloc[0]}",
        )
    ax_a.set(xlabel="layer", ylabel="firing rate (spikes per neuron per step)", title="A  Firing rate per layer")
    if names:
        ax_a.set_ylim(bottom=0)
        ax_a.legend(fontsize="small")
    else:
        _message(ax_a, "no SNN in this run")
    _ratio_bars(ax_b, ratios)
    fig.tight_layout()
    return fig


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _message(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#8a1c1c")


def _ratio_bars(ax: plt.Axes, ratios: pd.DataFrame) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_title("B  Ratio per experiment: measured vs estimated energy")
    if not len(ratios):
        _message(ax, "no pair of networks to compare")
        return
    width = 0.38
    for offset, column, label in (
        (-width / 2, "measured_energy_ratio", "measured (device)"),
        (width / 2, "estimated_energy_ratio", "estimated (operation model)"),
    ):
        values = [math.nan if _missing(v) else float(v) for v in ratios[column]]
        ax.bar([i + offset for i in range(len(ratios))], values, width, label=label)
        for i, v in enumerate(values):
            text = "not measured" if math.isnan(v) else f"{v:.2g}x"
            ax.text(
                i + offset,
                1.0 if math.isnan(v) else v,
                text,
                ha="center",
                va="bottom",
                fontsize="x-small",
                rotation=90 if math.isnan(v) else 0,
                color="#8a1c1c" if math.isnan(v) else "black",
            )
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.margins(y=0.25)
    ax.set_xticks(
        range(len(ratios)),
        [f"exp {e}\n{c}" for e, c in zip(ratios["experiment"], ratios["comparison"])],
        fontsize="small",
    )
    ax.set_ylabel("ratio (log scale; below 1: the first network costs less)")
    ax.legend(fontsize="small")


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
        neuromorphic_figure(per_layer, ratios, style),
        outputs["figure_png"],
        outputs["figure_svg"],
        dpi=int((style or {}).get("dpi", 150)),
    )
