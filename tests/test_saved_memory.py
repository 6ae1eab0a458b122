"""What autograd saves for backward, measured (spikebench.saved_memory): each storage once, only while autograd
holds it, parameters left out, per layer and loss; where it is recorded (the warm-up, the epochs table) and how
Table I footnotes it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from spikebench.saved_memory import OUTSIDE, SavedTensorMeter, ctx_tensor_attributes

B = 5


class _First(nn.Module):
    """Linear + ReLU; also a graph that is dropped before backward (as snnTorch's detached reset term)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 8)

    def forward(self, x):
        h = torch.relu(self.linear(x))  # the Linear keeps x (weight gradient), the ReLU its output
        (h * 3).exp().detach()  # exp saves its output, but the graph goes at once: not kept for backward
        return h


class _Second(nn.Module):
    """Saves its input twice and through a view (one storage), and keeps a parameter for the input gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, h):
        both = h * h + h.view(-1).sin().view_as(h)  # h saved three times, once as a view: one storage
        return self.linear(both)  # keeps `both` and its weight (a parameter: not counted)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([_First(), _Second()])

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        return x


def _run(net, x, backward: bool = True) -> dict:
    meter = SavedTensorMeter(net, ["first", "second"])
    with meter.active():
        out = net(x)
        loss = out.pow(2).mean()  # pow keeps `out`: outside every layer
        if backward:
            loss.backward()
    if backward:  # nothing is held after backward: the meter keeps no tensor (nor a dropped graph) alive
        assert meter.live == {}
    return meter.record()


def test_each_storage_counts_once_while_autograd_holds_it_and_parameters_not_at_all():
    record = _run(_Toy(), torch.randn(B, 4))
    layers = json.loads(record["saved_for_backward_layers_mib"])
    mib = 2**20
    assert layers["first"] * mib == B * 4 * 4 + B * 8 * 4  # x and the ReLU's output; not the dropped exp's
    assert layers["second"] * mib == B * 8 * 4  # `both`; h (h*h, sin's view of it) counted in the first layer
    assert layers[OUTSIDE] * mib == B * 3 * 4  # the loss's pow keeps the output
    assert record["saved_for_backward_mib"] == pytest.approx(sum(layers.values()))
    assert record["saved_for_backward_null_reason"] is None


def test_without_a_backward_pass_the_figure_is_null_with_the_reason():
    record = _run(_Toy(), torch.randn(B, 4), backward=False)
    assert record["saved_for_backward_mib"] is None and "no backward" in record["saved_for_backward_null_reason"]


def test_an_ann_sequential_is_split_at_its_synapses():
    from spikebench.saved_memory import top_layers

    net = nn.Module()
    net.layers = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2))
    names = [name for name, _ in top_layers(net, ["fc1", "fc2"])]
    assert names == ["fc1", "fc1", "fc1", "fc1", "fc2"]  # the leading flatten with the first, dropout after ReLU
    with pytest.raises(ValueError, match="synapses"):
        top_layers(net, ["fc1"])


def test_spikebenchs_and_snntorchs_custom_functions_keep_no_tensor_where_the_hooks_cannot_see_it():
    from snntorch import surrogate

    from spikebench.models.convpool import ConvPoolFunction
    from spikebench.models.lif import LeakyFunction

    current = torch.randn(3, 4, 5, requires_grad=True)
    weight, bias = torch.randn(3, 2, 5, 5, requires_grad=True), torch.zeros(3, requires_grad=True)
    dense = torch.randn(6, 2, 8, 8, requires_grad=True)
    sparse = (torch.rand(6, 2, 8, 8) < 0.05).float()  # the event-driven kernel's path
    assert ctx_tensor_attributes(LeakyFunction, current, 0.9, 1.0, 2.0) == []
    assert ctx_tensor_attributes(ConvPoolFunction, dense, weight, bias, 2, 4) == []
    assert ctx_tensor_attributes(ConvPoolFunction, sparse, weight, bias, 2, 4) == []
    assert ctx_tensor_attributes(surrogate.ATan, current, 2.0) == []

    class Stashes(torch.autograd.Function):  # what the check is for: a tensor the hooks would miss
        @staticmethod
        def forward(ctx, a):
            ctx.kept = a * 2
            return a * 3

        @staticmethod
        def backward(ctx, grad):
            return grad * 3

    assert ctx_tensor_attributes(Stashes, current) == ["kept"]


def _images(n: int, generator: torch.Generator):
    from spikebench.data.device import DeviceImages

    images = (torch.rand(n, 1, 28, 28, generator=generator) * 255).to(torch.uint8)
    images[:, :, :4] = 0  # a never-firing border, as MNIST's (active_input_linear skips it)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return DeviceImages(images, labels, name="mnist", source="random")


@pytest.mark.parametrize("implementation", ["spikebench", "snntorch"])
def test_a_training_run_records_the_measured_and_predicted_memory_on_every_epoch(tmp_path, implementation):
    from spikebench.config import load_config
    from spikebench.training import train_network

    networks = load_config(Path(__file__).resolve().parents[1] / "config.yaml")["networks"]
    small = {"hidden": [16, 16], "epochs": 2, "batch_size": 8, "num_steps": 3, "implementation": implementation}
    spec = {**networks["exp1_snn"], **small}
    g = torch.Generator().manual_seed(0)
    table = train_network(
        spec,
        _images(24, g),
        _images(8, g),
        network_id="tiny",
        device=torch.device("cpu"),
        seed=0,
        warmup_steps=0,  # the one measuring step runs anyway
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "e.parquet",
        checkpoint_path=tmp_path / "c.pt",
    )
    measured, predicted = table["saved_for_backward_mib"], table["saved_for_backward_predicted_mib"]
    assert measured.nunique() == 1 and predicted.nunique() == 1  # one figure per run, on every row
    assert predicted.iloc[0] == pytest.approx(measured.iloc[0], rel=0.05)
    layers = json.loads(table["saved_for_backward_layers_mib"].iloc[0])
    assert list(layers) == ["fc1", "fc2", "fc3", OUTSIDE] and sum(layers.values()) == pytest.approx(measured.iloc[0])
    assert table["saved_for_backward_null_reason"].isna().all()
    assert table["saved_for_backward_predicted_null_reason"].isna().all()


def test_a_resumed_run_records_its_first_process_measurement():
    from spikebench.training import _per_run

    first = {"saved_for_backward_mib": 2.0, "saved_for_backward_predicted_mib": 2.1}
    assert _per_run([first], {"saved_for_backward_mib": 3.0})["saved_for_backward_mib"] == 2.0
    assert _per_run([], {"saved_for_backward_mib": 3.0}) == {"saved_for_backward_mib": 3.0}
    old = _per_run([{"epoch": 1}], {"saved_for_backward_mib": 3.0})
    assert old["saved_for_backward_mib"] is None and "checkpoint" in old["saved_for_backward_null_reason"]


def test_table_1s_footnote_says_what_the_figure_counts_and_that_the_cuda_peak_is_another_quantity():
    from spikebench.results.footnotes import SAVED_FOR_BACKWARD, _saved_notes

    table = pd.DataFrame(
        {
            "saved_for_backward_mib": [7.5, 7.5, None, None],
            "saved_for_backward_predicted_mib": [7.5, None, None, None],
            "activation_peak_mib": [None, 30.0, None, None],
            "saved_for_backward_null_reason": [None, None, "no backward pass ran", None],
        }
    )
    notes = _saved_notes(table)
    first = notes[(0, "saved_for_backward_mib")]
    assert first.startswith(SAVED_FOR_BACKWARD) and "predicts 7.5 MiB" in first
    assert "not activation_peak_mib's quantity" in notes[(1, "saved_for_backward_mib")]
    assert notes[(2, "saved_for_backward_mib")] == "no backward pass ran"
    assert "before saved_for_backward_mib existed" in notes[(3, "saved_for_backward_mib")]
