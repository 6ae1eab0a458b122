"""The fused leaky integrate-and-fire (LIF) layer of spikebench's SNNs and where its recurrence runs.

LIF semantics are those of ``snntorch.Leaky(beta, threshold, reset_mechanism="subtract",
spike_grad=snntorch.surrogate.atan(), reset_delay=True)`` with a zero initial membrane::

    U[t] = beta * U[t-1] + I[t] - S[t-1] * threshold     (U[-1] = 0, S[-1] = 0; reset term detached)
    S[t] = H(U[t] - threshold)                           (strictly greater than the threshold)
    dS/dU ~ (alpha/2) / (1 + (pi/2 * alpha * (U - threshold))^2),  alpha = 2  (arctan surrogate)

The LIF forward pass performs the same float32 operations in the same order as snnTorch, so for the same
input currents spikes and membrane potentials are bitwise equal; gradients agree to float rounding.

:class:`LeakyFunction` runs the recurrence over all time steps of a layer at once: a forward loop over T on
whole tensors that builds one autograd node, and a hand-written reverse-time backward. On the CPU the numba
kernels of :mod:`spikebench.kernels` run it for large layers (bitwise the same as the PyTorch loop); on CUDA it
runs ``torch.compile``'d (``LIF_BACKEND``, config ``lif_backend``): one fused kernel per layer forward and one
backward instead of ~5 launches per time step, the same values to float rounding (the compiler may contract
multiply-adds). ``CPU_KERNELS = False`` switches the numba kernels (here and in :mod:`.convpool`) off.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from spikebench.spec import NetworkSpecError

#: Use the numba CPU kernels (fused LIF, event-driven convolution) for CPU tensors; False: PyTorch ops only.
CPU_KERNELS = True


def use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether the numba kernels of :mod:`spikebench.kernels` run this float32 CPU tensor's layer (then on as
    many threads as PyTorch uses)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or not CPU_KERNELS:
        return False
    from spikebench.kernels import match_torch_threads

    match_torch_threads()
    return True


#: The numba LIF kernel runs layers of at least this many neuron-steps (T x neurons). Below, PyTorch's ops are as
#: fast (experiment 1's layers; benchmarks/README.md) and loading numba would cost resident memory and start-up
#: time per job for nothing.
LIF_KERNEL_MIN_SIZE = 2**20

#: How the LIF recurrence runs outside the numba CPU kernels: ``auto`` (compiled on CUDA, the eager loop
#: elsewhere), ``eager`` (the PyTorch loop below: ~5 kernel launches per time step on a GPU) or ``compiled``
#: (``torch.compile`` of :func:`lif_recurrence` / :func:`lif_recurrence_backward`: one fused kernel per layer
#: and direction on CUDA). Set from the config key ``lif_backend`` by the jobs (:func:`set_lif_backend`).
LIF_BACKEND = "auto"

LIF_BACKENDS = ("auto", "eager", "compiled")


def set_lif_backend(name: str) -> None:
    """Choose ``LIF_BACKEND`` (config key ``lif_backend``)."""
    global LIF_BACKEND
    if name not in LIF_BACKENDS:
        raise ValueError(f"lif_backend {name!r}: expected one of {', '.join(LIF_BACKENDS)}")
    LIF_BACKEND = name


def lif_compiled(x: torch.Tensor) -> bool:
    """Whether this layer's recurrence runs compiled (``LIF_BACKEND``; the numba kernels take precedence)."""
    return LIF_BACKEND == "compiled" or (LIF_BACKEND == "auto" and x.device.type == "cuda")


def lif_recurrence(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF forward of ``current [T, N]`` written functionally, the eager loop's operations in its order, for
    ``torch.compile``: the loop over T unrolls into one graph that inductor fuses into one kernel over N."""
    mem = [current[0]]  # U[0] = I[0]
    spk = [(current[0] > threshold).to(current.dtype)]
    for t in range(1, current.shape[0]):
        u = (mem[-1] * beta + current[t]) - spk[-1] * threshold
        mem.append(u)
        spk.append((u > threshold).to(current.dtype))
    return torch.stack(spk), torch.stack(mem)


def lif_recurrence_backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    beta: float,
    threshold: float,
    alpha: float,
) -> torch.Tensor:
    """dL/d(current) ``[T, N]`` of :func:`lif_recurrence` (the eager backward's formula), for ``torch.compile``."""
    if grad_spk is not None:
        x = (mem - threshold) * (math.pi / 2 * alpha)
        local = (1.0 / (x * x + 1.0)) * (alpha / 2) * grad_spk
        if grad_mem is not None:
            local = local + grad_mem
    else:
        local = grad_mem
    grads = [local[-1]]
    for t in range(mem.shape[0] - 2, -1, -1):
        grads.append(local[t] + beta * grads[-1])
    return torch.stack(grads[::-1])


@functools.cache
def compiled(fn):
    # dynamic=None: the first call specialises on its shape; a layer of another size recompiles once with a
    # dynamic neuron count. T stays static (the loop is unrolled over it).
    return torch.compile(fn, fullgraph=True, dynamic=None)


class LeakyFunction(torch.autograd.Function):
    """LIF recurrence over all time steps at once: ``current [T, ...] -> (spikes, membrane) [T, ...]``."""

    @staticmethod
    def forward(ctx: Any, current: torch.Tensor, beta: float, threshold: float, alpha: float):
        ctx.beta, ctx.threshold, ctx.alpha = beta, threshold, alpha
        ctx.set_materialize_grads(False)
        if current.numel() >= LIF_KERNEL_MIN_SIZE and use_cpu_kernels(current):
            from spikebench.kernels import lif

            spk, mem = lif.lif_forward(current, beta, threshold)
            ctx.save_for_backward(mem)
            return spk, mem
        n_steps = current.shape[0]
        if lif_compiled(current) and current.numel():
            spk, mem = compiled(lif_recurrence)(current.reshape(n_steps, -1), beta, threshold)
            ctx.save_for_backward(mem)
            ctx.shape = current.shape
            return spk.view(current.shape), mem.view(current.shape)
        mem = torch.empty_like(current)
        spk = torch.empty_like(current)
        # t = 0: U[-1] = 0 and S[-1] = 0, so U[0] = 0 * beta + I[0] - 0 = I[0] exactly.
        mem[0].copy_(current[0])
        torch.gt(mem[0], threshold, out=spk[0])
        for t in range(1, n_steps):
            m = mem[t]
            torch.mul(mem[t - 1], beta, out=m)  # beta * U[t-1]
            m.add_(current[t])  # + I[t]
            m.sub_(spk[t - 1], alpha=threshold)  # - S[t-1] * threshold (exact: S is 0 or 1)
            torch.gt(m, threshold, out=spk[t])  # H(U[t] - threshold)
        ctx.save_for_backward(mem)
        return spk, mem

    @staticmethod
    def backward(ctx: Any, grad_spk: torch.Tensor | None, grad_mem: torch.Tensor | None):
        (mem,) = ctx.saved_tensors
        if grad_spk is None and grad_mem is None:
            return None, None, None, None
        if getattr(ctx, "shape", None) is not None:  # the compiled forward saved mem as [T, N]
            flat = [g.reshape(mem.shape) if g is not None else None for g in (grad_spk, grad_mem)]
            grad = compiled(lif_recurrence_backward)(mem, *flat, ctx.beta, ctx.threshold, ctx.alpha)
            return grad.view(ctx.shape), None, None, None
        if mem.numel() >= LIF_KERNEL_MIN_SIZE and use_cpu_kernels(mem):
            from spikebench.kernels import lif

            return lif.lif_backward(mem, grad_spk, grad_mem, ctx.beta, ctx.threshold, ctx.alpha), None, None, None
        if grad_spk is not None:
            # dS/dU of the arctan surrogate, as snntorch.surrogate.ATan.backward computes it.
            grad = (mem - ctx.threshold).mul_(math.pi / 2 * ctx.alpha).pow_(2).add_(1.0)
            grad = torch.reciprocal_(grad).mul_(ctx.alpha / 2).mul_(grad_spk)
            if grad_mem is not None:
                grad.add_(grad_mem)
        else:
            grad = grad_mem.clone()
        # dL/dU[t] = (local) + beta * dL/dU[t+1]; the reset term is detached, as in snnTorch.
        for t in range(grad.shape[0] - 2, -1, -1):
            grad[t].add_(grad[t + 1], alpha=ctx.beta)
        return grad, None, None, None


class Leaky(nn.Module):
    """Fused LIF layer over a whole spike train: ``forward(current [T, ...]) -> (spikes, membrane)``."""

    def __init__(self, beta: float, threshold: float = 1.0, alpha: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= float(beta) <= 1.0:
            raise NetworkSpecError(f"LIF beta must be in [0, 1], got {beta}")
        if float(threshold) <= 0.0:
            raise NetworkSpecError(f"LIF threshold must be > 0, got {threshold}")
        # Stored as float32-rounded Python floats: snnTorch keeps beta/threshold as float32 buffers.
        self.beta = float(torch.tensor(float(beta), dtype=torch.float32))
        self.threshold = float(torch.tensor(float(threshold), dtype=torch.float32))
        self.alpha = float(alpha)

    def forward(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if current.dtype in (torch.bfloat16, torch.float16):
            current = current.float()  # under autocast (precision bf16) the membrane still integrates in fp32
        return LeakyFunction.apply(current, self.beta, self.threshold, self.alpha)

    def extra_repr(self) -> str:
        return f"beta={self.beta:.4g}, threshold={self.threshold:.4g}, surrogate=atan(alpha={self.alpha:g})"
