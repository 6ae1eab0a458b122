"""Operation counts (spikebench.opcounts): by hand on tiny networks with known spikes, the energy arithmetic,
predictions unchanged by counting, and the cross-check with NeuroBench on the exp1 and exp3 SNNs."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import PROJECT
from spikebench.data.device import DeviceImages
from spikebench.energy import ENERGY_MODELS, EnergyModelError, energy_model, estimate_energy
from spikebench.evaluation import evaluate_network
from spikebench.models import ANN, SNN, Conv2d, Leaky, SpikingStage, build_network
from spikebench.opcounts import OperationCounter, write_layers
from spikebench.training import run_batches

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
NETWORKS = CONFIG["networks"]


def _set(linear: nn.Module, weight) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(linear.weight.shape))
        linear.bias.zero_()


def tiny_fc() -> SNN:
    """Linear 3-2 + LIF, Linear 2-2 + LIF (beta 0.5, threshold 1), weights with zeros in them."""
    stages = [
        SpikingStage(nn.Linear(3, 2), Leaky(0.5, 1.0), flatten=True),
        SpikingStage(nn.Linear(2, 2), Leaky(0.5, 1.0)),
    ]
    _set(stages[0].synapse, [[2.0, 0.0, 0.5], [0.0, 2.0, 0.0]])
    _set(stages[1].synapse, [[2.0, 0.0], [0.0, 0.5]])
    return SNN("tiny_fc", (1, 1, 3), stages)


def count(net, x, n_steps=None):
    with OperationCounter(net) as counter:
        counter.begin_batch(n_steps, x.shape[1] if net.kind == "snn" else x.shape[0], x.shape[0])
        with torch.no_grad():
            out = net(x)
    rows = counter.layer_rows()
    return out, rows, counter.summary(rows)


def test_two_layer_fc_snn_by_hand() -> None:
    # t0: inputs 0 and 2 spike, t1: input 1. Currents layer 1: t0 [2, 0] -> spikes [1, 0];
    # t1 [0, 2], U = 0.5*[2, 0] + [0, 2] - [1, 0] = [0, 2] -> spikes [0, 1]. Layer 2: t0 current [2, 0] -> [1, 0];
    # t1 current [0, 0.5], U = [1, 0] + [0, 0.5] - [1, 0] = [0, 0.5] -> no spike.
    x = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])  # [T=2, B=1, 3]
    out, rows, total = count(tiny_fc(), x)
    assert out[:, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    first, second = rows
    # effective ACs: input spikes x non-zero weights in their columns (1 each): 3; not 3 spikes x fan-out 2 = 6
    assert first["effective_acs_per_sample"] == 3 and first["effective_macs_per_sample"] == 0
    assert first["dense_ops_per_sample"] == 3 * 2 * 2  # every connection at each of 2 steps
    assert second["effective_acs_per_sample"] == 2 and second["dense_ops_per_sample"] == 2 * 2 * 2
    assert [r["nonzero_activations"] for r in rows] == [2, 1]
    assert first["firing_rate"] == 0.5 and second["firing_rate"] == 0.25
    assert first["activation_sparsity"] == 0.5 and first["zero_relu_fraction"] is None
    assert first["membrane_updates_per_sample"] == 2 * 2
    assert total["effective_acs_per_sample"] == 5 and total["dense_ops_per_sample"] == 20
    assert total["membrane_updates_per_sample"] == 8 and total["spikes_per_sample"] == 3
    assert total["activation_sparsity"] == 1 - 3 / 8 and total["mean_firing_rate"] == 3 / 8
    assert total["connection_sparsity"] == 5 / 10  # 3 of 6 and 2 of 4 weights are zero
    assert total["footprint_bytes"] == (6 + 2 + 4 + 2) * 4 and total["parameters"] == 14


def test_padding_steps_are_not_counted() -> None:
    # sample 1 has 1 real step of 2: its step-1 input (3 spikes) and whatever it causes are padding
    x = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]])  # [T=2, B=2, 3]
    _, rows, total = count(tiny_fc(), x, n_steps=torch.tensor([2, 1]))
    assert rows[0]["effective_acs_per_sample"] == (3 + 1) / 2  # sample 0: 3, sample 1 (step 0 only): 1
    assert rows[0]["dense_ops_per_sample"] == 6 * 3 / 2  # 3 real sample-steps
    assert total["time_steps_per_sample"] == 1.5 and rows[0]["activations"] == 2 * 3


def test_one_conv_snn_by_hand() -> None:
    # Conv 3x3 (padding 1) on a 4x4 map, all taps 1 except centre 2 and top-left 0; 2x2 max-pool; LIF.
    conv = Conv2d(1, 1, 3, padding=1)
    weight = np.ones((3, 3))
    weight[1, 1], weight[0, 0] = 2.0, 0.0
    _set(conv, weight)
    net = SNN("tiny_conv", (1, 4, 4), [SpikingStage(conv, Leaky(0.5, 1.0), pool=True)])
    x = torch.zeros(2, 1, 1, 4, 4)
    x[0, 0, 0, 0, 0] = 1.0  # t0: a corner spike reaches 4 outputs (the other 5 taps fall on padding) ...
    x[1, 0, 0, 1, 1] = 1.0  # t1: an inner spike reaches all 9 outputs
    out, (row,), total = count(net, x)
    # ... and the top-left tap (weight 0) is one of them both times: 3 + 8 effective ACs
    assert row["effective_acs_per_sample"] == 11 and row["effective_macs_per_sample"] == 0
    # taps reaching the input: per axis 2 + 3 + 3 + 2 = 10 of 4 outputs x 3 taps, so 10 x 10 per step (not 16 x 9)
    assert row["dense_ops_per_sample"] == 2 * 100
    # pooled currents t0 [[2, 0], [0, 0]], t1 [[2, 1], [1, 0]]: pooled neuron (0, 0) spikes at t0 and t1
    # (U = 1 + 2 - 1 = 2); (0, 1) and (1, 0) reach U = 1, not above the threshold
    assert out[:, 0].reshape(2, 4).tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    assert row["neurons"] == 4 and row["nonzero_activations"] == 2 and row["firing_rate"] == 2 / 8
    assert total["membrane_updates_per_sample"] == 8 and total["connection_sparsity"] == 1 / 9


def test_non_binary_input_counts_macs() -> None:
    x = torch.tensor([[[0.5, 0.0, 1.0]], [[0.0, 3.0, 0.0]]])
    _, rows, total = count(tiny_fc(), x)
    assert rows[0]["effective_macs_per_sample"] == 3 and rows[0]["effective_acs_per_sample"] == 0
    assert total["effective_acs_per_sample"] == rows[1]["effective_acs_per_sample"]


def test_ann_zero_relu_fraction_and_macs() -> None:
    layers = nn.Sequential(nn.Flatten(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2))
    _set(layers[1], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    _set(layers[3], [[1.0, 1.0], [1.0, 1.0]])
    net = ANN("tiny_ann", (1, 1, 3), layers)
    x = torch.tensor([[1.0, -1.0, 0.0], [2.0, 3.0, 4.0]])  # ReLU outputs [1, 0] and [2, 3]
    _, (hidden, output), total = count(net, x)
    assert hidden["zero_relu_fraction"] == 0.25 and hidden["activation_sparsity"] == 0.25
    # sample 0: inputs 0, 1 hit one non-zero weight each (2); sample 1: 2 (input 2's column is all zero)
    assert hidden["effective_macs_per_sample"] == 2 and hidden["effective_acs_per_sample"] == 0
    assert output["effective_macs_per_sample"] == (2 + 4) / 2 and output["activation_sparsity"] is None
    assert total["dense_ops_per_sample"] == 10 and total["membrane_updates_per_sample"] is None
    assert total["mean_firing_rate"] is None and total["time_steps_per_sample"] == 1.0


def test_energy_arithmetic() -> None:
    fp32 = energy_model(None)
    assert fp32["name"] == "horowitz45_fp32" and (fp32["mac_pj"], fp32["ac_pj"]) == (4.6, 0.9)
    ops = {
        "effective_macs_per_sample": 10,
        "effective_acs_per_sample": 100,
        "dense_ops_per_sample": 1000,
        "membrane_updates_per_sample": 50,
    }
    energy = estimate_energy(ops, fp32)
    # 10 MACs, 100 ACs and 50 membrane updates, each update one fp32 multiply + add (4.6 pJ)
    assert energy["estimated_energy_per_sample_j"] == pytest.approx(
        (10 * 4.6 + 100 * 0.9 + 50 * 4.6) * 1e-12, rel=1e-12
    )
    assert energy["membrane_update_energy_per_sample_j"] == pytest.approx(50 * 4.6e-12, rel=1e-12)
    assert energy["dense_energy_per_sample_j"] == pytest.approx(1000 * 4.6e-12, rel=1e-12)
    int8 = energy_model({"name": "horowitz45_int8"})
    assert estimate_energy(ops, int8)["estimated_energy_per_sample_j"] == pytest.approx(
        (10 * 0.23 + 100 * 0.03 + 50 * 0.23) * 1e-12
    )
    ann = estimate_energy({**ops, "membrane_updates_per_sample": None}, fp32)  # an ANN has no membrane
    assert ann["membrane_update_energy_per_sample_j"] is None
    assert ann["estimated_energy_per_sample_j"] == pytest.approx((10 * 4.6 + 100 * 0.9) * 1e-12, rel=1e-12)
    chip = energy_model({"name": "chip", "custom": {"chip": {"mac_pj": 0, "ac_pj": 2.0, "neuron_update_pj": 1.0}}})
    assert estimate_energy(ops, chip)["estimated_energy_per_sample_j"] == pytest.approx((200 + 50) * 1e-12)
    assert "user-defined" in chip["source"] and set(ENERGY_MODELS) <= {
        "horowitz45_fp32",
        "horowitz45_fp16",
        "horowitz45_int8",
        "horowitz45_int32",
    }
    with pytest.raises(EnergyModelError, match="energy_model.name.*'nope'.*horowitz45_fp16"):
        energy_model({"name": "nope"})
    with pytest.raises(EnergyModelError, match="energy_model.custom.bad.ac_pj"):
        energy_model({"name": "bad", "custom": {"bad": {"mac_pj": 1.0}}})
    with pytest.raises(EnergyModelError, match="energy_model.custom.bad.neuron_update_pj"):
        energy_model({"name": "bad", "custom": {"bad": {"mac_pj": 1.0, "ac_pj": 1.0, "neuron_update_pj": -1}}})


# (mult, add) pJ of Horowitz's 45 nm table, ISSCC 2014 Fig. 1.1.9
HOROWITZ = {"fp32": (3.7, 0.9), "fp16": (1.1, 0.4), "int8": (0.2, 0.03), "int32": (3.1, 0.1)}


@pytest.mark.parametrize("precision", sorted(HOROWITZ))
def test_every_built_in_model_prices_a_membrane_update_with_its_source(precision: str) -> None:
    """A LIF update (U <- beta U + I) is one multiply and one add: each built-in model prices it as its MAC and
    says so in its source (the table header); none leaves membrane updates out at 0 pJ."""
    mult, add = HOROWITZ[precision]
    model = energy_model({"name": f"horowitz45_{precision}"})
    assert ENERGY_MODELS[f"horowitz45_{precision}"]["neuron_update_pj"] == pytest.approx(mult + add)
    assert model["neuron_update_pj"] == pytest.approx(mult + add) == pytest.approx(model["mac_pj"])
    assert "Horowitz" in model["source"] and "membrane update" in model["source"]
    assert set(ENERGY_MODELS[f"horowitz45_{precision}"]) >= {"mac_pj", "ac_pj", "neuron_update_pj", "source"}


def test_a_model_without_membrane_energy_says_that_updates_are_not_counted() -> None:
    from spikebench.energy import membrane_update_text
    from spikebench.neuromorphic import intro, model_text

    chip = energy_model({"name": "chip", "custom": {"chip": {"mac_pj": 1.0, "ac_pj": 0.5}}})
    assert chip["neuron_update_pj"] == 0.0
    assert membrane_update_text(chip) == "membrane updates at 0 pJ: not counted"
    assert "membrane updates at 0 pJ: not counted" in intro(chip)[0]
    assert "4.6 pJ per membrane update" in model_text(energy_model(None))


# ---------------------------------------------------------------- real networks on real MNIST
@pytest.fixture(scope="module")
def mnist_test(shared_data: Path) -> DeviceImages:
    from spikebench.data.mnist import read_idx

    images = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:300].copy())[:, None]
    labels = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")[:300].astype(np.int64))
    return DeviceImages(images, labels, name="test", source=f"{shared_data}/mnist (t10k 0:300)")


@pytest.mark.parametrize("network", ["exp1_ann", "exp1_snn", "exp3_snn_mnist"])
def test_counting_does_not_change_predictions(mnist_test, network: str) -> None:
    spec = {**NETWORKS[network], "num_steps": 5, "batch_size": 128}
    torch.manual_seed(1)
    net = build_network(spec, network)
    data = DeviceImages(
        mnist_test.images, mnist_test.labels, name="test", source="MNIST t10k 0:300", size=spec.get("input_size")
    )
    runs = []
    for counting in (False, True):
        counter = OperationCounter(net) if counting else None
        generator = torch.Generator().manual_seed(3)
        runs.append(run_batches(net, spec, data, 128, generator, want_predictions=True, counter=counter))
        if counter is not None:
            counter.close()
            assert counter.n_samples == 300
    (loss0, acc0, pred0), (loss1, acc1, pred1) = runs
    assert torch.equal(pred0, pred1) and loss0 == loss1 and acc0 == acc1


def test_evaluate_network_reports_operations(tmp_path: Path, mnist_test) -> None:
    network, spec = "exp1_snn", {**NETWORKS["exp1_snn"], "num_steps": 4}
    net = build_network(spec, network)
    weights = tmp_path / "weights.pt"
    torch.save({"state_dict": net.state_dict(), "network": network, "spec": spec, "epoch": 1}, weights)
    result = evaluate_network(weights, spec, mnist_test, network_id=network, device=torch.device("cpu"), seed=0)
    plain = evaluate_network(
        weights, spec, mnist_test, network_id=network, device=torch.device("cpu"), seed=0, count_operations=False
    )
    assert result["confusion_matrix"] == plain["confusion_matrix"] and "operations" not in plain
    ops, rows = result["operations"], result["layer_operations"]
    assert ops["n_samples"] == 300 and ops["time_steps_per_sample"] == 4 and len(rows) == 3
    assert ops["dense_ops_per_sample"] == 4 * (784 * 256 + 256 * 256 + 256 * 10)
    assert 0 < ops["effective_acs_per_sample"] < ops["dense_ops_per_sample"] and ops["effective_macs_per_sample"] == 0
    assert ops["membrane_updates_per_sample"] == 4 * (256 + 256 + 10)
    write_layers(rows, tmp_path / "layers.parquet", network=network, kind="snn")
    table = pd.read_parquet(tmp_path / "layers.parquet")
    assert table["layer"].tolist() == [0, 1, 2] and table["spikes_per_sample"].sum() == pytest.approx(
        ops["spikes_per_sample"]
    )


# ---------------------------------------------------------------- cross-check with NeuroBench
neurobench = pytest.importorskip("neurobench", reason="neurobench not installed (pip install '.[test]')")
sys.path.insert(0, str(ROOT / "benchmarks"))


class _Twin(nn.Module):
    """The tutorial-style snnTorch network as NeuroBench's custom forward: ``[B, T, ...] -> spikes [T, B, 10]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(0, 1))[0]


def neurobench_metrics(twin: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict:
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import SNNTorchModel

    model = SNNTorchModel(_Twin(twin), custom_forward=True)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x.transpose(0, 1), labels), batch_size=len(labels)
    )
    bench = Benchmark(model, data, [], [], [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations]])
    return bench.run(quiet=True)


@pytest.mark.parametrize("network", ["exp1_snn", "exp3_snn_mnist", "exp3_snn_nmnist"])
def test_counts_agree_with_neurobench(mnist_test, network: str) -> None:
    from reference_snntorch import build_reference_network, copy_parameters_

    spec = {**NETWORKS[network], "num_steps": 6}
    torch.manual_seed(2)
    net = build_network(spec, network).eval()
    twin = build_reference_network(spec).eval()
    copy_parameters_(twin, net)
    shape = net.input_shape
    generator = torch.Generator().manual_seed(0)
    if spec["dataset"] == "nmnist":
        # event counts per frame cell (0..3): not spikes, so the first layer's products are MACs for both
        x = torch.poisson(torch.full((6, 16, *shape), 0.05), generator=generator)
        x[:, :, 0, 0, 0] = 2.0  # every step non-binary (NeuroBench decides per step)
    else:
        images = mnist_test.images[:16].float() / 255
        if images.shape[-1] != shape[-1]:
            images = torch.nn.functional.interpolate(images, size=shape[1:], mode="bilinear", align_corners=False)
        x = torch.bernoulli(images.expand(6, *images.shape), generator=generator)
    ours_out, _, ours = count(net, x)
    # footprint: snnTorch's Leaky keeps beta, threshold, ... as buffers (before a run); spikebench's LIF Python floats
    buffers = sum(b.numel() * b.element_size() for b in twin.buffers())
    theirs = neurobench_metrics(twin, x, mnist_test.labels[:16])
    assert torch.equal(ours_out, twin(x)[0])  # the same spikes, so the same counts
    syn = theirs["SynapticOperations"]
    assert ours["effective_acs_per_sample"] == syn["Effective_ACs"]
    assert ours["effective_macs_per_sample"] == syn["Effective_MACs"]
    assert (syn["Effective_MACs"] > 0) == (spec["dataset"] == "nmnist")
    assert ours["dense_ops_per_sample"] == syn["Dense"]
    assert ours["activation_sparsity"] == pytest.approx(theirs["ActivationSparsity"], abs=1e-12)
    assert ours["connection_sparsity"] == pytest.approx(theirs["ConnectionSparsity"], abs=5e-4)  # NB rounds to 3
    assert 0 < buffers < 100 and ours["footprint_bytes"] == theirs["Footprint"] - buffers


# ---------------------------------------------------------------- the measured-vs-estimated table
def test_measured_vs_estimated_table_and_ratios(tmp_path: Path) -> None:
    from spikebench.neuromorphic import layer_table, measured_vs_estimated, neuromorphic_figure, ratio_table

    networks = {
        "a_ann": {"experiment": 1, "kind": "ann", "architecture": "fc", "dataset": "mnist"},
        "a_snn": {"experiment": 1, "kind": "snn", "architecture": "fc", "dataset": "mnist"},
    }
    ops = {
        "a_ann": {
            "dense_ops_per_sample": 1000.0,
            "effective_macs_per_sample": 500.0,
            "effective_acs_per_sample": 0.0,
            "effective_ops_per_sample": 500.0,
        },
        "a_snn": {
            "dense_ops_per_sample": 4000.0,
            "effective_macs_per_sample": 100.0,
            "effective_acs_per_sample": 900.0,
            "effective_ops_per_sample": 1000.0,
            "membrane_updates_per_sample": 50.0,
            "mean_firing_rate": 0.1,
        },
    }
    tests = {
        "a_ann": {
            "device": "cpu",
            "accuracy": 0.9,
            "operations": ops["a_ann"],
            "telemetry": {"energy_above_idle_per_sample_mj": 2.0, "energy_per_sample_mj": 3.0},
        },
        "a_snn": {
            "device": "cpu",
            "accuracy": 0.8,
            "operations": ops["a_snn"],
            "telemetry": {
                "energy_above_idle_per_sample_mj": None,
                "energy_per_sample_mj": None,
                "telemetry_source": "none",
            },
        },
    }
    table, notes = measured_vs_estimated(tests, networks, energy_model(None))
    assert table["measured_energy_per_sample_uj"].iloc[0] == pytest.approx(2000.0)
    assert table["measured_energy_basis"][0] == "above idle"
    assert pd.isna(table["measured_energy_per_sample_uj"].iloc[1])
    assert "not measured" in notes[(1, "measured_energy_per_sample_uj")]
    # the SNN: 100 MACs x 4.6 + 900 ACs x 0.9 + 50 membrane updates x 4.6 pJ = 460 + 810 + 230 pJ
    assert table["estimated_energy_per_sample_uj"].tolist() == pytest.approx([500 * 4.6e-6, (460 + 810 + 230) * 1e-6])
    membrane = table["membrane_update_energy_per_sample_uj"]  # an ANN has no membrane: empty, footnoted
    assert table["neuron_update_pj"].tolist() == [4.6, 4.6] and membrane[1] == pytest.approx(230e-6)
    assert pd.isna(membrane[0]) and notes[(0, "membrane_update_energy_per_sample_uj")] == "an ANN has no membrane"
    ratios = ratio_table(table, networks)
    assert ratios["comparison"].tolist() == ["SNN / ANN"]
    assert ratios["estimated_energy_ratio"][0] == pytest.approx(1500 / 2300) and ratios["dense_ops_ratio"][0] == 4.0
    assert pd.isna(ratios["measured_energy_ratio"][0])  # never 0 for what was not measured
    parquet = pd.DataFrame({"network": ["a_snn"] * 2, "kind": ["snn"] * 2, "layer": [0, 1], "firing_rate": [0.2, 0.0]})
    layers = layer_table({"a_snn": parquet}, networks)  # as read from layers.parquet
    assert layers.columns[:3].tolist() == ["experiment", "network", "layer"] and layers["network"][0] == "SNN"
    fig = neuromorphic_figure(layers, ratios)
    assert len(fig.axes) == 2 and fig.axes[0].lines[0].get_ydata().tolist() == [0.2, 0.0]
    assert "DEMO DATA" not in fig._suptitle.get_text() and not plt.close(fig)


def _twin_layers_and_ratios():
    from spikebench.neuromorphic import layer_table

    networks = {
        "a_ann": {"experiment": 1, "kind": "ann", "architecture": "fc", "dataset": "mnist"},
        "a_snn": {"experiment": 1, "kind": "snn", "architecture": "fc", "dataset": "mnist"},
        "a_snn_snntorch": {
            "experiment": 1,
            "kind": "snn",
            "architecture": "fc",
            "dataset": "mnist",
            "implementation": "snntorch",
        },
    }
    frame = pd.DataFrame({"layer": [0, 1], "firing_rate": [0.2, 0.1]})
    layers = layer_table({"a_snn": frame, "a_snn_snntorch": frame.assign(firing_rate=[0.21, 0.1])}, networks)
    ratios = pd.DataFrame(
        {
            "experiment": [1, 1],
            "comparison": ["SNN / ANN", "SNN (snnTorch) / ANN"],
            "measured_energy_ratio": [np.nan, np.nan],  # a CPU without RAPL: not measured
            "estimated_energy_ratio": [0.79, 0.85],  # within a decade: matplotlib's default would label only 1
        }
    )
    return networks, layers, ratios


def test_neuromorphic_figure_of_a_demo_run(tmp_path: Path) -> None:
    """DEMO DATA, a log axis with several labelled ticks, the kinds' colours (the twin lighter), no empty panel,
    the energy model under panel B and text legible at the report's width."""
    import re

    from matplotlib.colors import to_rgb

    from spikebench.figures import KIND_COLORS, save_figure
    from spikebench.neuromorphic import neuromorphic_figure

    networks, layers, ratios = _twin_layers_and_ratios()
    fig = neuromorphic_figure(layers, ratios, demo=True, networks=networks, model=energy_model(None))
    ax_a, ax_b = fig.axes
    fig.canvas.draw()
    assert "DEMO DATA" in fig._suptitle.get_text()
    low, high = ax_b.get_ylim()
    labelled = [t for t in ax_b.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert ax_b.get_yscale() == "log" and len(labelled) >= 3, [t.get_text() for t in labelled]
    assert "4.6 pJ per membrane update" in ax_b.get_xlabel()
    snn, twin = ax_a.lines[:2]
    assert to_rgb(snn.get_color()) == to_rgb(KIND_COLORS["snn"]) and to_rgb(twin.get_color()) != to_rgb(snn.get_color())
    assert twin.get_linestyle() != snn.get_linestyle()
    for ax in fig.axes:
        assert ax.lines or ax.patches or ax.collections or ax.texts, f"{ax.get_title()} is empty"
    save_figure(fig, tmp_path / "n.png", tmp_path / "n.svg", dpi=50)
    svg = (tmp_path / "n.svg").read_text()
    width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
    smallest = min(float(v) for v in re.findall(r"font-size: ([\d.]+)px", svg))
    assert smallest * 1000.0 / width >= 10.0  # the report shows it ~1000 px wide


# ---------------------------------------------------------------- the snnTorch twin counts the same
@pytest.mark.parametrize("network, padded", [("exp1_snn", False), ("exp3_snn_mnist", False), ("exp3_snn_nmnist", True)])
def test_the_snntorch_twin_counts_what_spikebench_counts(network: str, padded: bool) -> None:
    """Its stages run once per time step: the counts from the same weights and input spikes are the same
    (a per-step stage seen as all steps at once counted the batch axis as time and gave effective > dense)."""
    from spikebench.config import load_config
    from spikebench.models import build_network
    from spikebench.models.snntorch_twin import build_snntorch_network

    spec = load_config(PROJECT / "config.yaml")["networks"][network]
    torch.manual_seed(0)
    ours = build_network(spec, network).eval()
    torch.manual_seed(0)
    twin = build_snntorch_network({**spec, "implementation": "snntorch"}, network).eval()
    steps, batch = (12, 3) if padded else (6, 4)
    x = (torch.rand(steps, batch, *ours.input_shape, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    n_steps = torch.tensor([12, 7, 9]) if padded else None
    _, rows_ours, summary_ours = count(ours, x, n_steps)
    _, rows_twin, summary_twin = count(twin, x, n_steps)
    assert 0 < summary_ours["effective_ops_per_sample"] < summary_ours["dense_ops_per_sample"]
    for key in (
        "dense_ops_per_sample",
        "effective_acs_per_sample",
        "effective_macs_per_sample",
        "membrane_updates_per_sample",
        "activation_sparsity",
        "time_steps_per_sample",
    ):
        assert summary_twin[key] == pytest.approx(summary_ours[key], rel=1e-6), key
    for a, b in zip(rows_ours, rows_twin, strict=True):
        assert a["neurons"] == b["neurons"] and a["firing_rate"] == pytest.approx(b["firing_rate"], rel=1e-6)
