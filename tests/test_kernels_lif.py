"""spikebench.kernels.lif (numba) against the PyTorch reference spikebench.models.LeakyFunction.

The reference runs with ``spikebench.models.lif.CPU_KERNELS = False`` (LeakyFunction's own PyTorch operations);
otherwise LeakyFunction would itself call the kernel on CPU tensors.
"""

import numba
import pytest
import torch

from spikebench import models
from spikebench.kernels.lif import BLOCK, lif_backward, lif_forward
from spikebench.models import LeakyFunction

ALPHA = 2.0


def reference(current, beta, threshold, grad_spk=None, grad_mem=None):
    """LeakyFunction's (spikes, membrane) and, given output gradients, its input gradient via autograd."""
    x = current.detach().clone().requires_grad_()
    saved, models.lif.CPU_KERNELS = models.lif.CPU_KERNELS, False
    try:
        spk, mem = LeakyFunction.apply(x, beta, threshold, ALPHA)
        grad = None
        if grad_spk is not None or grad_mem is not None:
            pairs = [(out, g) for out, g in ((spk, grad_spk), (mem, grad_mem)) if g is not None]
            (grad,) = torch.autograd.grad([o for o, _ in pairs], x, [g for _, g in pairs])
    finally:
        models.lif.CPU_KERNELS = saved
    return spk.detach(), mem.detach(), grad


def near_threshold(shape, threshold, gen):
    """Currents at and a few float32 ulps around the threshold, mixed with ordinary random ones."""
    thr = torch.tensor(threshold, dtype=torch.float32)
    ulps = torch.randint(-3, 4, shape, generator=gen).float()
    near = thr + ulps * torch.finfo(torch.float32).eps * thr
    rand = torch.randn(shape, generator=gen) * 0.6 + 0.4
    return torch.where(torch.rand(shape, generator=gen) < 0.5, near, rand)


SHAPES = [(1, 7), (25, 100), (25, BLOCK + 3), (13, 3, 5, 7), (40, 2 * BLOCK + 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta, threshold", [(0.9, 1.0), (0.0, 1.0), (1.0, 1.0), (0.95, 0.7)])
def test_forward_bitwise_equal(shape, beta, threshold):
    gen = torch.Generator().manual_seed(hash((shape, beta)) % 2**31)
    for current in (torch.randn(shape, generator=gen) * 0.8 + 0.3, near_threshold(shape, threshold, gen)):
        ref_spk, ref_mem = reference(current, beta, threshold)[:2]
        spk, mem = lif_forward(current, beta, threshold)
        assert spk.shape == mem.shape == current.shape and spk.dtype == mem.dtype == torch.float32
        assert torch.equal(spk, ref_spk)
        assert torch.equal(mem, ref_mem)  # bitwise, not just close


def assert_grad_close(got, ref):
    # Bitwise where torch's add_(alpha=beta) is an FMA (its vectorised CPU kernels); rounding otherwise.
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", ["spk", "mem", "both"])
@pytest.mark.parametrize("beta", [0.9, 0.0, 1.0])
def test_backward_matches_autograd(shape, which, beta):
    gen = torch.Generator().manual_seed(7)
    current = near_threshold(shape, 1.0, gen)
    grad_spk = torch.randn(shape, generator=gen) if which in ("spk", "both") else None
    grad_mem = torch.randn(shape, generator=gen) if which in ("mem", "both") else None
    _, mem, ref = reference(current, beta, 1.0, grad_spk, grad_mem)
    got = lif_backward(mem, grad_spk, grad_mem, beta, 1.0, ALPHA)
    assert got.shape == current.shape and got.dtype == torch.float32
    assert_grad_close(got, ref)


def test_non_contiguous_inputs():
    gen = torch.Generator().manual_seed(3)
    current = (torch.randn(3 * BLOCK, 50, generator=gen) + 0.5).t()[:, ::3]  # [50, BLOCK] view, strided
    assert current.shape == (50, BLOCK) and not current.is_contiguous()
    ref_spk, ref_mem, _ = reference(current, 0.9, 1.0)
    spk, mem = lif_forward(current, 0.9, 1.0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)

    grad_spk = torch.randn(current.shape[1], current.shape[0], generator=gen).t()  # transposed
    grad_mem = torch.ones(()).expand(current.shape)  # stride 0
    ref = reference(current, 0.9, 1.0, grad_spk, grad_mem)[2]
    assert_grad_close(lif_backward(mem.t().contiguous().t(), grad_spk, grad_mem, 0.9, 1.0, ALPHA), ref)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has a single thread")
def test_same_results_with_1_and_2_threads():
    gen = torch.Generator().manual_seed(5)
    current = near_threshold((30, 5 * BLOCK + 11), 1.0, gen)
    grad_spk, grad_mem = torch.randn(current.shape, generator=gen), torch.randn(current.shape, generator=gen)
    before = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            spk, mem = lif_forward(current, 0.9, 1.0)
            results.append((spk, mem, lif_backward(mem, grad_spk, grad_mem, 0.9, 1.0, ALPHA)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_rejects_bad_input():
    with pytest.raises(TypeError):
        lif_forward(torch.zeros(3, 4, dtype=torch.float64), 0.9, 1.0)
    with pytest.raises(ValueError):
        lif_backward(torch.zeros(3, 4), None, None, 0.9, 1.0, ALPHA)


def test_leaky_function_uses_the_kernel_on_the_cpu(monkeypatch):
    """LeakyFunction sends float32 CPU layers of LIF_KERNEL_MIN_SIZE neuron-steps or more to the kernel (same
    numbers as its PyTorch path), smaller ones to its PyTorch operations."""
    calls = []
    import spikebench.kernels.lif as lif_module

    real = lif_module.lif_forward
    monkeypatch.setattr(lif_module, "lif_forward", lambda *a: calls.append(1) or real(*a))
    current = torch.randn(6, 3, 5)
    LeakyFunction.apply(current, 0.8, 1.0, ALPHA)
    assert calls == []
    monkeypatch.setattr(models.lif, "LIF_KERNEL_MIN_SIZE", current.numel())
    spk, mem = LeakyFunction.apply(current, 0.8, 1.0, ALPHA)
    assert calls == [1]
    ref_spk, ref_mem, _ = reference(current, 0.8, 1.0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)


def test_channels_last_layout_is_kept_without_copies():
    """A channels-last layer (conv + pool output viewed as [T, B, C, H, W]) keeps its layout through the kernel."""
    conv_out = torch.randn(6 * 4, 5, 7, 7).contiguous(memory_format=torch.channels_last) * 2
    current = conv_out.view(6, 4, 5, 7, 7)
    spk, mem = lif_forward(current, 0.8, 1.0)
    assert spk.stride() == mem.stride() == current.stride()
    ref_spk, ref_mem, _ = reference(current, 0.8, 1.0)
    assert torch.equal(spk, ref_spk) and torch.equal(mem, ref_mem)
    grad_spk = torch.randn_like(current)  # same (channels-last) layout as the spikes
    grad = lif_backward(mem, grad_spk, None, 0.8, 1.0, ALPHA)
    assert grad.stride() == current.stride()
    _, _, ref_grad = reference(current, 0.8, 1.0, grad_spk=grad_spk)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-7)
    grad = lif_backward(mem, grad_spk.contiguous(), None, 0.8, 1.0, ALPHA)  # another layout: copied, same values
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-7)
