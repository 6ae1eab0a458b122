"""The six networks (shapes, parameter counts), the fused LIF against snntorch.Leaky, the losses and predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import snntorch as snn
import snntorch.functional as SF
import torch
import yaml
from snntorch import surrogate
from torch import nn

from spikebench.models import (
    InputShapeError,
    Leaky,
    NetworkSpecError,
    build_network,
    count_parameters,
    network_loss,
    predict,
    spike_count_loss,
)

CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
NETWORKS = CONFIG["networks"]
#: The study's spike-count targets (config.yaml: correct_rate, incorrect_rate of every SNN).
RATES = {"correct_rate": 0.8, "incorrect_rate": 0.2}


def _lin(a: int, b: int) -> int:
    return a * b + b


def _conv(a: int, b: int) -> int:
    return b * a * 5 * 5 + b


def expected_parameters(spec: dict) -> int:
    """Parameter count from the layer sizes, written out by hand."""
    c_in = {"mnist": 1, "cifar10": 3, "nmnist": 2}[spec["dataset"]]
    if spec["architecture"] == "fc":
        sizes = [784, *spec["hidden"], 10]
        return sum(_lin(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
    ch = [c_in, *spec["channels"]]
    convs = sum(_conv(a, b) for a, b in zip(ch[:-1], ch[1:]))
    if spec["architecture"] == "conv5":  # 32x32 -> 16 -> 8 -> 4 -> 2 -> 1 after five 2x2 pools
        return convs + _lin(ch[-1] * 1 * 1, spec["fc"]) + _lin(spec["fc"], 10)
    return convs + _lin(32 * 5 * 5, 10)  # conv2: 800 features


def test_parameter_counts_written_out() -> None:
    assert expected_parameters(NETWORKS["exp1_ann"]) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10 == 269_322
    assert expected_parameters(NETWORKS["exp3_snn_mnist"]) == (12 * 25 + 12) + (32 * 12 * 25 + 32) + 8010 == 17_954
    assert expected_parameters(NETWORKS["exp3_snn_nmnist"]) == (12 * 50 + 12) + (32 * 12 * 25 + 32) + 8010 == 18_254


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_shapes_and_parameter_counts(network: str) -> None:
    spec = NETWORKS[network]
    net = build_network(spec, network)
    assert count_parameters(net) == expected_parameters(spec)
    shape = {
        "mnist": (1, spec.get("input_size", 28), spec.get("input_size", 28)),
        "cifar10": (3, 32, 32),
        "nmnist": (2, 34, 34),
    }[spec["dataset"]]
    assert net.input_shape == shape
    torch.manual_seed(0)
    if spec["kind"] == "ann":
        out = net(torch.rand(3, *shape))
        assert out.shape == (3, 10)
    else:
        out, mem = net((torch.rand(4, 3, *shape) < 0.3).float(), return_membrane=True)
        assert out.shape == mem.shape == (4, 3, 10)
        assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_kaiming_initialisation() -> None:
    torch.manual_seed(0)
    net = build_network(NETWORKS["exp1_ann"], "exp1_ann")
    w = net.layers[1].weight
    assert abs(w.std().item() - (2 / 784) ** 0.5) < 0.002  # Kaiming normal, fan-in, ReLU gain
    assert torch.count_nonzero(net.layers[1].bias) == 0


def test_bad_specs_and_inputs_name_the_network() -> None:
    spec = dict(NETWORKS["exp1_snn"])
    with pytest.raises(NetworkSpecError, match="exp9.*architecture 'mlp'"):
        build_network({**spec, "architecture": "mlp"}, "exp9")
    with pytest.raises(NetworkSpecError, match="exp9.*missing key 'hidden'"):
        build_network({k: v for k, v in spec.items() if k != "hidden"}, "exp9")
    net = build_network(spec, "exp1_snn")
    with pytest.raises(InputShapeError, match=r"exp1_snn.*\(2, 4, 3, 32, 32\).*\(1, 28, 28\)"):
        net(torch.rand(2, 4, 3, 32, 32))
    with pytest.raises(InputShapeError, match="exp1_snn"):
        net(torch.rand(4, 784))  # no time dimension
    ann = build_network(NETWORKS["exp2_cnn"], "exp2_cnn")
    with pytest.raises(InputShapeError, match="exp2_cnn"):
        ann(torch.rand(2, 1, 28, 28))


# ---------------------------------------------------------------- LIF against snntorch.Leaky
def _snntorch_lif(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    lif = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism="subtract", spike_grad=surrogate.atan())
    mem = lif.reset_mem()
    spikes, mems = [], []
    for t in range(current.shape[0]):
        spk, mem = lif(current[t], mem)
        spikes.append(spk)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


@pytest.mark.parametrize(
    "steps,shape,scale,beta,threshold",
    [
        (25, (16, 64), 1.0, 0.8, 1.0),
        (7, (3, 4, 5, 5), 6.0, 0.8, 1.0),  # inputs far above the threshold
        (40, (8, 10), 0.4, 0.95, 0.5),
        (1, (5, 3), 3.0, 0.8, 1.0),
    ],
)
@pytest.mark.parametrize("kernel", [False, True], ids=["torch-ops", "numba-kernel"])
def test_lif_matches_snntorch(steps, shape, scale, beta, threshold, kernel, monkeypatch) -> None:
    from spikebench import models

    monkeypatch.setattr(models.lif, "LIF_KERNEL_MIN_SIZE", 0 if kernel else 2**62)
    torch.manual_seed(steps)
    current = (torch.randn(steps, *shape) * scale + 0.3).requires_grad_()
    w_spk, w_mem = torch.randn(steps, *shape), torch.randn(steps, *shape)
    ref_spk, ref_mem = _snntorch_lif(current, beta, threshold)
    ((ref_spk * w_spk).sum() + (ref_mem * w_mem).sum()).backward()
    ref_grad, current.grad = current.grad.clone(), None
    spk, mem = Leaky(beta, threshold)(current)
    ((spk * w_spk).sum() + (mem * w_mem).sum()).backward()
    assert torch.equal(spk, ref_spk)
    assert torch.equal(mem, ref_mem)
    assert 0.02 < spk.mean().item() < 0.98
    torch.testing.assert_close(current.grad, ref_grad, rtol=1e-5, atol=1e-6)
    # gradient through the spikes alone (the membrane unused)
    current.grad = None
    ref_spk, _ = _snntorch_lif(current, beta, threshold)
    (ref_spk * w_spk).sum().backward()
    ref_grad, current.grad = current.grad.clone(), None
    spk, _ = Leaky(beta, threshold)(current)
    (spk * w_spk).sum().backward()
    torch.testing.assert_close(current.grad, ref_grad, rtol=1e-5, atol=1e-6)


def _reference_network(net) -> nn.Sequential:
    """A snnTorch-tutorial network with the same weights, run step by step."""
    lif = lambda: snn.Leaky(beta=0.8, threshold=1.0, spike_grad=surrogate.atan(), init_hidden=True)  # noqa: E731
    mods: list[nn.Module] = []
    for stage in net.stages:
        if stage.flatten:
            mods.append(nn.Flatten())
        if stage.dropout:
            mods.append(nn.Dropout(stage.dropout))
        mods.append(stage.synapse)
        if stage.pool:
            mods.append(nn.MaxPool2d(2))
        mods.append(lif())
    return nn.Sequential(*mods)


def _run_reference(ref: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for m in ref.modules():
        if isinstance(m, snn.Leaky):
            m.reset_mem()
    return torch.stack([ref(x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("kernels", [False, True], ids=["torch-ops", "all-cpu-kernels"])
@pytest.mark.parametrize(
    "network,steps", [("exp1_snn", 6), ("exp2_snn", 3), ("exp3_snn_mnist", 5), ("exp3_snn_nmnist", 4)]
)
def test_network_matches_snntorch_loop(network: str, steps: int, kernels: bool, monkeypatch) -> None:
    """Same output spikes, loss and gradients as a snnTorch-tutorial loop with the same weights; with the CPU
    kernels forced on for every layer (numba LIF, event-driven convolutions) or off."""
    from spikebench import models

    monkeypatch.setattr(models.lif, "CPU_KERNELS", kernels)
    monkeypatch.setattr(models.lif, "LIF_KERNEL_MIN_SIZE", 0)
    monkeypatch.setattr(models.convpool, "EVENT_DENSITY", 1.01)
    torch.manual_seed(1)
    spec = NETWORKS[network]
    net = build_network(spec, network).eval()  # eval: dropout (exp2) off, its masks are random
    for p in net.parameters():  # larger weights than Kaiming so that every layer spikes a lot
        p.data.mul_(1.5)
    x = (torch.rand(steps, 4, *net.input_shape) < 0.4).float()
    y = torch.tensor([0, 3, 7, 9])
    out = net(x)
    loss = spike_count_loss(out, y, correct_rate=0.8, incorrect_rate=0.2)
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    ref = _reference_network(net).eval()
    ref_out = _run_reference(ref, x)
    ref_loss = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)(ref_out, y)
    ref_loss.backward()
    assert torch.equal(out, ref_out)
    assert out.sum() > 0
    torch.testing.assert_close(loss, ref_loss)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------- losses and predictions
@pytest.mark.parametrize("steps", [25, 7, 1])
def test_spike_count_loss_matches_snntorch(steps: int) -> None:
    torch.manual_seed(steps)
    spikes = (torch.rand(steps, 6, 10) < 0.3).float().requires_grad_()
    y = torch.randint(0, 10, (6,))
    ref = SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2)(spikes, y)
    ref.backward()
    ref_grad, spikes.grad = spikes.grad.clone(), None
    ours = spike_count_loss(spikes, y, correct_rate=0.8, incorrect_rate=0.2)
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    torch.testing.assert_close(spikes.grad, ref_grad, rtol=0, atol=0)
    # the variable-length path with every sample at full length gives the same value and gradient
    spikes.grad = None
    full = spike_count_loss(spikes, y, n_steps=torch.full((6,), steps), correct_rate=0.8, incorrect_rate=0.2)
    full.backward()
    torch.testing.assert_close(full, ref)
    torch.testing.assert_close(spikes.grad, ref_grad)


def test_padding_changes_neither_loss_nor_prediction() -> None:
    torch.manual_seed(2)
    short = (torch.rand(7, 1, 10) < 0.5).float()
    y = torch.tensor([4])
    alone_loss = spike_count_loss(short, y, n_steps=torch.tensor([7]), **RATES)
    alone_pred = predict("snn", short, torch.tensor([7]))
    # pad to 12 steps with spikes at every padded step of every neuron but the predicted one
    padded = torch.ones(12, 2, 10)
    padded[:7, 0] = short[:, 0]
    padded[7:, 0, alone_pred.item()] = 0.0
    n_steps = torch.tensor([7, 12])
    assert predict("snn", padded, n_steps)[0] == alone_pred[0]
    torch.testing.assert_close(spike_count_loss(padded[:, :1], y, n_steps[:1], **RATES), alone_loss)
    assert predict("snn", padded[:, :1])[0] != alone_pred[0]  # without the mask the padding would win
    # per-sample targets: int(7 * 0.8) = 5 on, int(7 * 0.2) = 1 off
    zeros = torch.zeros(7, 1, 10)
    expected = ((0 - 5) ** 2 + 9 * (0 - 1) ** 2) / 10 / 7
    assert spike_count_loss(zeros, y, torch.tensor([7]), **RATES).item() == pytest.approx(expected)


def test_padding_in_a_real_network() -> None:
    torch.manual_seed(3)
    spec = NETWORKS["exp3_snn_nmnist"]
    net = build_network(spec, "exp3_snn_nmnist")
    for p in net.parameters():
        p.data.mul_(2.0)
    a = (torch.rand(6, 1, 2, 34, 34) < 0.2).float()
    b = (torch.rand(11, 1, 2, 34, 34) < 0.2).float()
    y = torch.tensor([3, 5])
    with torch.no_grad():
        alone = net(a)
        batch = torch.zeros(11, 2, 2, 34, 34)
        batch[:6, :1], batch[:, 1:] = a, b
        out = net(batch)
    n_steps = torch.tensor([6, 11])
    assert torch.equal(out[:6, 0], alone[:, 0])
    assert predict("snn", out, n_steps)[0] == predict("snn", alone)[0]
    torch.testing.assert_close(
        spike_count_loss(out[:, :1], y[:1], n_steps[:1], **RATES), spike_count_loss(alone, y[:1], **RATES)
    )


def test_prediction_ties_go_to_the_lowest_class() -> None:
    spikes = torch.zeros(4, 2, 10)
    spikes[:, 0, [2, 7]] = 1.0  # a tie between classes 2 and 7
    spikes[:2, 1, 9] = 1.0
    assert predict("snn", spikes).tolist() == [2, 9]
    assert predict("snn", torch.zeros(3, 1, 10)).tolist() == [0]
    assert predict("ann", torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [1]


def test_ann_loss_is_cross_entropy() -> None:
    logits, y = torch.randn(5, 10), torch.randint(0, 10, (5,))
    torch.testing.assert_close(network_loss("ann", logits, y), nn.functional.cross_entropy(logits, y))


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "torch-only"])
@pytest.mark.parametrize(
    "c_in,size,padding,density", [(1, 32, 0, 0.13), (2, 34, 0, 0.01), (3, 16, 2, 0.3), (8, 16, 2, 0.3)]
)
def test_conv_pool_matches_conv_then_max_pool(
    c_in: int, size: int, padding: int, density: float, kernels: bool, monkeypatch
) -> None:
    """Chunked conv + max-pool: same output and gradients as Conv2d then MaxPool2d, ties included.

    Sparse binary inputs make many 2x2 windows all-zero, so the four candidates of a window tie at the bias;
    the gradient must go to the same (first) position as in PyTorch's max-pool. With the CPU kernels on, the
    two sparse cases (densities below ``EVENT_DENSITY``) run event-driven, the others densely (the 3-channel
    one with the event-driven weight gradient).
    """
    from spikebench import models
    from spikebench.kernels import event_conv
    from spikebench.models import ConvPoolFunction

    monkeypatch.setattr(models.lif, "CPU_KERNELS", kernels)
    calls, grad_calls = [], []
    real, real_grad = event_conv.event_conv_pool_forward, event_conv.event_conv_pool_weight_grad
    monkeypatch.setattr(event_conv, "event_conv_pool_forward", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(event_conv, "event_conv_pool_weight_grad", lambda *a: grad_calls.append(1) or real_grad(*a))

    torch.manual_seed(c_in)
    conv = nn.Conv2d(c_in, 6, 5, padding=padding)
    x = (torch.rand(37, c_in, size, size) < density).float().requires_grad_()
    ref = nn.functional.max_pool2d(conv(x), 2)
    weight = torch.randn_like(ref)
    (ref * weight).sum().backward()
    ref_grads = [x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()]
    x.grad = conv.weight.grad = conv.bias.grad = None
    out = ConvPoolFunction.apply(x, conv.weight, conv.bias, padding, 8)  # 5 chunks, the last one short
    (out * weight).sum().backward()
    assert len(calls) == (kernels and density < models.convpool.EVENT_DENSITY)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)  # channels-last sums in another order on the CPU
    assert len(grad_calls) == (kernels and c_in <= 3)
    # weight gradients: sums of ~10^4 products in another order (some cancel), hence the looser tolerance
    for got, want, tol in zip([x.grad, conv.weight.grad, conv.bias.grad], ref_grads, [1e-5, 1e-4, 1e-4]):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("size,c_in,c_out", [(2, 16, 24), (4, 8, 12), (1, 4, 6)])
def test_tied_weight_conv_matches_conv2d(size: int, c_in: int, c_out: int) -> None:
    """Experiment 2's 4x4 and 2x2 convolutions run as tied-weight Linears: same values and gradients as Conv2d."""
    from spikebench.models import Conv2d, conv_pool, tied_weights_pay

    assert tied_weights_pay(torch.zeros(9, c_in, size, size), Conv2d(c_in, c_out, 5, padding=2))
    assert not tied_weights_pay(torch.zeros(9, c_in, 8, 8), Conv2d(c_in, c_out, 5, padding=2))
    # exp2's fourth convolution: tied for an SNN's 3200 images per batch, direct for a CNN's 128 (memory)
    conv4 = Conv2d(128, 256, 5, padding=2)
    assert tied_weights_pay(torch.zeros(3200, 128, 4, 4), conv4)
    assert not tied_weights_pay(torch.zeros(128, 128, 4, 4), conv4)
    torch.manual_seed(size)
    ours = Conv2d(c_in, c_out, 5, padding=2)
    ref = nn.Conv2d(c_in, c_out, 5, padding=2)
    ref.load_state_dict(ours.state_dict())  # the same parameters and state-dict keys
    ref.bias.data.normal_()
    ours.bias.data.copy_(ref.bias.data)
    x = (torch.rand(9, c_in, size, size) < 0.4).float().requires_grad_()
    weight = torch.randn(9, c_out, size, size)
    for run in (
        lambda m: m(x),
        lambda m: nn.functional.max_pool2d(m(x), 2) if size > 1 else m(x),
        lambda m: conv_pool(x, m) if size > 1 else m(x),
    ):
        outs, grads = [], []
        for m in (ref, ours):
            y = run(m)
            (y * weight[..., : y.shape[-2], : y.shape[-1]]).sum().backward()
            outs.append(y)
            grads.append([x.grad.clone(), m.weight.grad.clone(), m.bias.grad.clone()])
            x.grad = m.weight.grad = m.bias.grad = None
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
        for got, want in zip(grads[1], grads[0]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_active_input_linear_skips_zero_columns_exactly() -> None:
    """Experiment 1's first layer skips the pixels that are zero in every image: same output and weight gradient."""
    from spikebench.models import active_input_linear

    torch.manual_seed(5)
    linear = nn.Linear(30, 7)
    x = (torch.rand(25, 4, 30) < 0.3).float()
    x[..., ::3] = 0.0  # a third of the inputs never fire
    y = active_input_linear(x, linear)
    weight = torch.randn_like(y)
    (y * weight).sum().backward()
    grads = [linear.weight.grad.clone(), linear.bias.grad.clone()]
    linear.zero_grad()
    ref = linear(x)
    (ref * weight).sum().backward()
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0], linear.weight.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[1], linear.bias.grad, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(grads[0][:, ::3]) == 0
