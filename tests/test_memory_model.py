"""The model of BPTT's saved tensors (spikebench.memory_estimate.saved_bytes) against the measurement
(spikebench.saved_memory): within 5% per layer and in total, for the six networks of config.yaml and both
implementations, on the CPU at small batches, time steps and (experiment 2) channel widths.

The CPU paths that depend on the input are pinned by its density and checked to have run: a dense input
(half the values non-zero) runs ConvPoolFunction's dense loop and every input feature of a fully connected
first layer; a sparse one (5%) the event-driven convolution (``EVENT_DENSITY``) and ``active_input_linear``,
which keeps only the features that fire in the batch (the model is told how many). Both paths save the same
tensors in ConvPoolFunction (input, arg-max); the tied-weight convolution (experiment 2's small maps) is the
model's own rule, ``tied_weights_pay``: at the demo's widths both conv4 and conv5 run tied, at the study's
widths conv4 runs ConvPoolFunction (its matrix would be too large)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from spikebench import memory_estimate
from spikebench.config import load_config
from spikebench.implementation import implementation_of
from spikebench.saved_memory import SavedTensorMeter
from spikebench.spec import as_spec
from spikebench.training import train_step

PROJECT = Path(__file__).resolve().parents[1]
MIB = 2**20
TOLERANCE = 0.05
SMALL = {"batch_size": 4, "num_steps": 3}
#: Experiment 2 at a fifth of the demo's widths (the architecture as it is: five conv layers, FC, dropout).
NARROW_CONV5 = {"channels": [4, 8, 8, 8, 8], "fc": 16}
CASES = [
    (network, implementation, density)
    for network in ("exp1_ann", "exp1_snn", "exp2_cnn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist")
    for implementation in (("spikebench", "snntorch") if "snn" in network else ("spikebench",))
    for density in (0.5, 0.05)
    if "ann" not in network and "cnn" not in network or density == 0.5
]


@pytest.fixture(scope="module")
def networks() -> dict:
    return load_config(PROJECT / "config.yaml")["networks"]


def _spec(networks: dict, network: str, implementation: str, **settings):
    narrow = NARROW_CONV5 if networks[network]["architecture"] == "conv5" else {}
    return as_spec({**networks[network], **SMALL, **narrow, **settings, "implementation": implementation}, network)


def _batch(spec, density: float, generator: torch.Generator):
    """(input, targets, per-sample steps) of one batch: spikes of ``density`` (an SNN), images (an ANN)."""
    b, t, shape = spec.batch_size, spec.num_steps, spec.input_shape
    y = torch.randint(0, 10, (b,), generator=generator)
    if spec.kind == "ann":
        return torch.rand(b, *shape, generator=generator), y, None
    x = (torch.rand(t, b, *shape, generator=generator) < density).float()
    return x, y, (torch.full((b,), t) if spec.dataset == "nmnist" else None)


def _measure(spec, x, y, n_steps) -> dict[str, float]:
    torch.manual_seed(0)
    net = implementation_of(spec).build(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    meter = SavedTensorMeter(net, [name for name, _, _ in memory_estimate.layer_neurons(spec)])
    with meter.active():
        train_step(net, optimizer, spec, x, y, n_steps)
    return json.loads(meter.record()["saved_for_backward_layers_mib"])


def _predict(spec, x) -> dict[str, float]:
    active = None
    if spec.kind == "snn" and spec.architecture == "fc":
        active = int(x.reshape(-1, math.prod(spec.input_shape)).ne(0).any(0).sum())
    steps = spec.num_steps if spec.kind == "snn" else 1
    return {k: v / MIB for k, v in memory_estimate.saved_bytes(spec, steps, active_inputs=active).items()}


def _assert_close(measured: dict[str, float], predicted: dict[str, float]) -> None:
    assert list(measured) == list(predicted)  # the same layers, in order, and the loss
    for layer, value in measured.items():
        assert predicted[layer] == pytest.approx(value, rel=TOLERANCE, abs=1e-4), layer
    assert sum(predicted.values()) == pytest.approx(sum(measured.values()), rel=TOLERANCE)


@pytest.mark.parametrize("network, implementation, density", CASES)
def test_the_model_predicts_the_measured_saved_tensors_within_5_percent(
    networks, monkeypatch, network, implementation, density
):
    import spikebench.kernels.event_conv as event_conv

    calls = {"event": 0}
    real = event_conv.event_conv_pool_forward

    def counted(*args, **kwargs):
        calls["event"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(event_conv, "event_conv_pool_forward", counted)
    spec = _spec(networks, network, implementation)
    x, y, n_steps = _batch(spec, density, torch.Generator().manual_seed(1))
    _assert_close(_measure(spec, x, y, n_steps), _predict(spec, x))
    event_path = implementation == "spikebench" and spec.kind == "snn" and spec.architecture != "fc"
    assert (calls["event"] > 0) == (event_path and density < 0.2)  # the path the density pins ran
    if spec.architecture == "fc" and spec.kind == "snn" and implementation == "spikebench":
        skipped = _predict(spec, x)["fc1"] < memory_estimate.saved_bytes(spec, spec.num_steps)["fc1"] / MIB
        assert skipped == (density < 0.2)  # the sparse batch kept only its active input features


def test_at_the_study_widths_experiment_2_runs_conv4_as_a_convolution_and_the_model_follows(networks):
    spec = _spec(
        networks, "exp2_snn", "spikebench", batch_size=2, num_steps=2, channels=[32, 64, 128, 256, 512], fc=512
    )
    x, y, n_steps = _batch(spec, 0.5, torch.Generator().manual_seed(2))
    measured, predicted = _measure(spec, x, y, n_steps), _predict(spec, x)
    _assert_close(measured, predicted)
    # conv4 (a 4x4 map) keeps no tied-weight matrix at these widths; conv5 (2x2) does: 512 x 256 x 4^2 floats
    assert measured["conv5"] > 512 * 256 * 16 * 4 / MIB > measured["conv4"]


def test_the_model_is_linear_in_the_time_steps_for_an_snn_and_flat_for_an_ann(networks):
    snn = as_spec(networks["exp1_snn"], "exp1_snn")
    steps = [sum(memory_estimate.saved_bytes(snn, t).values()) for t in (1, 2, 3)]
    assert steps[2] - steps[1] == steps[1] - steps[0] > 0
    ann = as_spec(networks["exp1_ann"], "exp1_ann")
    assert memory_estimate.saved_bytes(ann, 1) == memory_estimate.saved_bytes(ann, 25)


def test_snntorchs_loop_keeps_the_full_convolution_output_that_spikebenchs_fused_layer_does_not(networks):
    fused = memory_estimate.saved_bytes(as_spec(networks["exp3_snn_mnist"], "exp3_snn_mnist"), 25)
    loop = memory_estimate.saved_bytes(
        as_spec({**networks["exp3_snn_mnist"], "implementation": "snntorch"}, "exp3_snn_mnist"), 25
    )
    # conv1 on 32x32: the 12 x 28 x 28 output before the 2x2 max-pool, 4 bytes, per step and sample (+1 scalar)
    assert loop["conv1"] - fused["conv1"] == 128 * 25 * 12 * 28 * 28 * 4 + 25 * 4
    assert loop["fc1"] - fused["fc1"] == 25 * 4  # fully connected: the same bytes but snnTorch's scalar per step
