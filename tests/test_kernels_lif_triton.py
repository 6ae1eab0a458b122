"""The Triton LIF kernel (spikebench.kernels.lif_triton) run on the CPU by Triton's interpreter (TRITON_INTERPRET=1),
against the eager PyTorch loop: spikes and membrane bitwise, gradients within 1e-6, on the study's SNNs' own
layers (every time step count, short last batches, with and without grad), and the fallback that keeps a job
running when the kernel cannot be built or launched."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from spikebench import models
from spikebench.config import load_config
from spikebench.kernels import lif_triton

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
BETA, THR, ALPHA = 0.8, 1.0, 2.0


@pytest.fixture
def interpreter(monkeypatch):
    """Triton's interpreter on, the numba kernels off (the eager loop is the reference), a fresh backend record."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(models.lif, "CPU_KERNELS", False)
    saved = models.lif.LIF_BACKEND
    models.set_lif_backend("triton")
    yield
    models.set_lif_backend(saved)


def _run(backend: str, current: torch.Tensor, grad_spk, grad_mem):
    """(spikes, membrane, dL/dcurrent) of one Leaky layer under ``backend``; gradients None where both are."""
    models.set_lif_backend(backend)
    c = current.clone().requires_grad_()
    spk, mem = models.Leaky(BETA, THR, ALPHA)(c)
    loss = 0
    if grad_spk is not None:
        loss = loss + (spk * grad_spk).sum()
    if grad_mem is not None:
        loss = loss + (mem * grad_mem).sum()
    loss.backward()
    return spk.detach(), mem.detach(), c.grad


def _assert_same(current, grad_spk, grad_mem):
    s0, m0, g0 = _run("eager", current, grad_spk, grad_mem)
    s1, m1, g1 = _run("triton", current, grad_spk, grad_mem)
    assert torch.equal(s1, s0) and torch.equal(m1, m0)  # bitwise: the same float32 operations in the same order
    torch.testing.assert_close(g1, g0, rtol=1e-6, atol=1e-6)
    assert models.backend_record()["lif_backend_used"] == "triton"  # it did run, no fallback


@pytest.mark.parametrize("n_steps", [1, 2, 7, 25])
@pytest.mark.parametrize("batch", [1, 3, 128])
def test_kernel_equals_eager_for_any_time_steps_and_batch(interpreter, n_steps, batch):
    g = torch.Generator().manual_seed(n_steps * 1000 + batch)
    current = torch.randn(n_steps, batch, 37, generator=g) * 1.5  # 37: not a multiple of anything
    grad_spk, grad_mem = torch.randn(current.shape, generator=g), torch.randn(current.shape, generator=g)
    _assert_same(current, grad_spk, grad_mem)


@pytest.mark.parametrize("which", ["spikes only", "membrane only", "broadcast (stride 0)"])
def test_kernel_backward_with_one_gradient_or_a_broadcast_one(interpreter, which):
    g = torch.Generator().manual_seed(1)
    current = torch.randn(9, 4, 1500, generator=g)  # 6000 neurons: six programs, the last one partial
    grad = torch.randn(current.shape, generator=g)
    if which == "spikes only":
        _assert_same(current, grad, None)
    elif which == "membrane only":
        _assert_same(current, None, grad)
    else:
        _assert_same(current, torch.randn(1, 4, 1500, generator=g).expand(current.shape), None)


def test_kernel_keeps_a_channels_last_layout_without_copying(interpreter):
    current = torch.randn(6, 2 * 3, 5, 7, 7).view(6, 2, 3, 5, 7, 7)[:, :, 0]  # a non-contiguous view
    cl = torch.randn(6 * 2, 5, 7, 7).contiguous(memory_format=torch.channels_last).view(6, 2, 5, 7, 7)
    for x in (current, cl):
        _assert_same(x, torch.randn(x.shape), torch.randn(x.shape))
    spk, mem = lif_triton.lif_forward(cl, BETA, THR)
    assert spk.stride() == cl.stride() and mem.stride() == cl.stride()


def test_kernel_without_grad_and_empty_layers(interpreter):
    current = torch.randn(5, 3, 11)
    with torch.no_grad():
        spk, mem = models.Leaky(BETA)(current)
    models.set_lif_backend("eager")
    with torch.no_grad():
        s0, m0 = models.Leaky(BETA)(current)
    assert torch.equal(spk, s0) and torch.equal(mem, m0)
    spk, mem = lif_triton.lif_forward(torch.zeros(4, 0, 3), BETA, THR)
    assert spk.shape == (4, 0, 3) and mem.shape == (4, 0, 3)


def _snn_layers_inputs(name: str, batch: int) -> list[torch.Tensor]:
    """The input currents of every LIF layer of network ``name`` (config.yaml, the study's settings) on one
    random batch of ``batch`` samples."""
    cfg = load_config(ROOT / "config.yaml")
    spec = cfg["networks"][name]
    torch.manual_seed(0)
    net = models.build_network(spec, name)
    n_steps = 310 if spec["dataset"] == "nmnist" else int(spec["num_steps"])  # N-MNIST: T from the data (~310)
    shape = (n_steps, batch, *models.input_shape(spec))
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
        for m in net.modules()
        if isinstance(m, models.Leaky)
    ]
    models.set_lif_backend("eager")
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert seen, f"{name}: no LIF layer"
    return seen


@pytest.mark.parametrize("name", ["exp1_snn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist"])
def test_kernel_equals_eager_on_every_lif_layer_of_the_study_snns(interpreter, name):
    """Every LIF layer's real input currents (the networks' shapes and time steps; a short batch of 3, as a last
    batch is), spikes and membrane bitwise, gradients within 1e-6."""
    for current in _snn_layers_inputs(name, batch=3):
        g = torch.Generator().manual_seed(current.numel())
        _assert_same(current, torch.randn(current.shape, generator=g), torch.randn(current.shape, generator=g))


def test_whole_network_training_step_equal_under_both_backends(interpreter):
    """exp3_snn_mnist: a conv SNN's loss and every weight gradient, Triton vs eager."""
    cfg = load_config(ROOT / "config.yaml")
    spec = cfg["networks"]["exp3_snn_mnist"]
    x = (torch.rand(8, 2, *models.input_shape(spec), generator=torch.Generator().manual_seed(2)) < 0.3).float()
    grads = {}
    for backend in ("eager", "triton"):
        models.set_lif_backend(backend)
        torch.manual_seed(0)
        net = models.build_network(spec, "exp3_snn_mnist")
        out = net(x)
        loss = models.network_loss("snn", out, torch.tensor([3, 7]), None, spec)
        loss.backward()
        grads[backend] = (loss.detach(), [p.grad.clone() for p in net.parameters()])
        assert models.backend_record()["lif_backend_used"] == backend
    assert torch.equal(grads["eager"][0], grads["triton"][0])
    for a, b in zip(grads["eager"][1], grads["triton"][1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# No backend can end a job
# --------------------------------------------------------------------------------------------------
def test_a_kernel_that_cannot_build_falls_back_to_eager_and_says_why(interpreter, monkeypatch, caplog):
    def broken(interpret):
        raise RuntimeError("ptxas fatal: Unsupported .version 9.9")

    monkeypatch.setattr(lif_triton, "kernels", broken)
    current = torch.randn(5, 2, 30)
    models.set_lif_backend("eager")
    s0, m0 = models.Leaky(BETA)(current)
    models.set_lif_backend("triton")
    with caplog.at_level(logging.WARNING, logger="spikebench.models.lif"):
        spk, mem = models.Leaky(BETA)(current.requires_grad_())
        spk.sum().backward()
        models.Leaky(BETA)(current)  # a second layer: no second warning, no second try
    assert torch.equal(spk, s0) and torch.equal(mem, m0) and current.grad is not None
    record = models.backend_record()
    assert record["lif_backend"] == "triton" and record["lif_backend_used"] == "eager"
    assert "ptxas fatal" in record["lif_backend_fallback_reason"]
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "ran eager" in caplog.records[0].getMessage()


def test_a_kernel_that_fails_in_backward_falls_back_there(interpreter, monkeypatch):
    def broken_backward(*args, **kwargs):
        raise RuntimeError("CUDA error: too many resources requested for launch")

    monkeypatch.setattr(lif_triton, "lif_backward", broken_backward)
    current = torch.randn(4, 2, 9)
    s0, m0, g0 = _run("eager", current, torch.ones(current.shape), None)
    models.set_lif_backend("triton")
    c = current.clone().requires_grad_()
    spk, _ = models.Leaky(BETA)(c)
    spk.sum().backward()
    torch.testing.assert_close(c.grad, g0, rtol=1e-6, atol=1e-6)
    assert "too many resources" in models.backend_record()["lif_backend_fallback_reason"]


def test_triton_on_a_cpu_tensor_without_the_interpreter_falls_back(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    saved = models.lif.LIF_BACKEND
    try:
        models.set_lif_backend("triton")
        models.Leaky(BETA)(torch.randn(3, 2, 4))
        record = models.backend_record()
        assert record["lif_backend_used"] == "eager"
        assert "Triton runs CUDA tensors" in record["lif_backend_fallback_reason"]
    finally:
        models.set_lif_backend(saved)


def test_out_of_memory_is_not_a_kernel_failure(interpreter, monkeypatch):
    """An out-of-memory error propagates (the job records status: oom) instead of being retried eager."""

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(lif_triton, "lif_forward", oom)
    with pytest.raises(torch.OutOfMemoryError):
        models.Leaky(BETA)(torch.randn(3, 2, 4))
    assert models.backend_record()["lif_backend_fallback_reason"] is None


def test_auto_picks_triton_on_cuda_only(monkeypatch):
    import types

    monkeypatch.setattr(models.lif, "LIF_BACKEND", "auto")
    monkeypatch.setitem(models.lif._RUN, "fallback_reason", None)
    assert models.lif.wants_triton(types.SimpleNamespace(device=torch.device("cuda")))
    assert not models.lif.wants_triton(torch.zeros(1))
    with pytest.raises(ValueError, match="lif_backend 'compiled': expected one of auto, eager, triton"):
        models.set_lif_backend("compiled")
