"""The fused leaky integrate-and-fire (LIF) layer of spikebench's SNNs and where its recurrence runs.

LIF semantics are those of ``snntorch.Leaky(beta, threshold, reset_mechanism="subtract",
spike_grad=snntorch.surrogate.atan(), reset_delay=True)`` with a zero initial membrane::

    U[t] = beta * U[t-1] + I[t] - S[t-1] * threshold     (U[-1] = 0, S[-1] = 0; reset term detached)
    S[t] = H(U[t] - threshold)                           (strictly greater than the threshold)
    dS/dU ~ (alpha/2) / (1 + (pi/2 * alpha * (U - threshold))^2),  alpha = 2  (arctan surrogate)

The LIF forward pass performs the same float32 operations in the same order as snnTorch, so for the same
input currents spikes and membrane potentials are bitwise equal; gradients agree to float rounding.

:class:`LeakyFunction` runs the recurrence over all time steps of a layer at once, as one autograd node with a
hand-written reverse-time backward, in one of three ways (``LIF_BACKEND``, config ``lif_backend``; what ran is
recorded by :func:`backend_record`):

- ``triton`` (``auto`` on CUDA): the Triton kernel of :mod:`spikebench.kernels.lif_triton`, the time loop inside
  the kernel: one launch per layer and direction instead of ~5 per time step; spikes and membrane bitwise equal
  to the eager loop, gradients to float rounding. If it cannot be built or launched, the job goes on eager.
- ``numba`` (``auto`` on the CPU, layers of at least ``LIF_KERNEL_MIN_SIZE`` neuron-steps): the numba kernels of
  :mod:`spikebench.kernels.lif`, bitwise the same as the eager loop.
- ``eager``: PyTorch operations, a loop over T on whole tensors.

``CPU_KERNELS = False`` switches the numba kernels (here and in :mod:`.convpool`) off.
"""

from __future__ import annotations

import logging
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

#: How the LIF recurrence runs outside the numba CPU kernels: ``auto`` (the Triton kernel on CUDA, the eager
#: loop elsewhere), ``eager`` (the PyTorch loop below: ~5 kernel launches per time step on a GPU) or ``triton``
#: (the hand-written Triton kernel of :mod:`spikebench.kernels.lif_triton`: one launch per layer and direction;
#: CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``). Set from the config key ``lif_backend`` by the jobs
#: (:func:`set_lif_backend`). A kernel that cannot be built or launched never ends a job: the layer falls back to
#: the eager loop, logs why once, and :func:`backend_record` says what ran.
LIF_BACKEND = "auto"

LIF_BACKENDS = ("auto", "eager", "triton")

_LOG = logging.getLogger("spikebench.models.lif")

#: What ran since the last :func:`set_lif_backend` (the job's start): backends used, and why Triton fell back.
_RUN: dict[str, Any] = {"used": set(), "fallback_reason": None}


def set_lif_backend(name: str) -> None:
    """Choose ``LIF_BACKEND`` (config key ``lif_backend``) and start a new record of what runs."""
    global LIF_BACKEND
    if name not in LIF_BACKENDS:
        raise ValueError(f"lif_backend {name!r}: expected one of {', '.join(LIF_BACKENDS)}")
    LIF_BACKEND = name
    reset_backend_record()


def reset_backend_record() -> None:
    """Start a new record of which LIF recurrence runs (and let a Triton kernel that fell back try again)."""
    _RUN["used"], _RUN["fallback_reason"] = set(), None


def backend_record() -> dict:
    """The LIF backend asked for, the ones that actually ran (``eager``, ``numba``, ``triton``, joined by ``+``;
    None with a reason where no LIF layer ran, e.g. an ANN's job) and why the Triton kernel fell back, if it did."""
    used = sorted(_RUN["used"])
    return {
        "lif_backend": LIF_BACKEND,
        "lif_backend_used": "+".join(used) if used else None,
        "lif_backend_used_null_reason": None if used else "no LIF layer ran in this process",
        "lif_backend_fallback_reason": _RUN["fallback_reason"],
    }


def wants_triton(x: torch.Tensor) -> bool:
    """Whether this layer's recurrence is to run in the Triton kernel (``LIF_BACKEND``: ``triton``, or ``auto`` on
    CUDA) and the kernel has not fallen back in this process."""
    if _RUN["fallback_reason"] is not None:
        return False
    return LIF_BACKEND == "triton" or (LIF_BACKEND == "auto" and x.device.type == "cuda")


def _fall_back(exc: BaseException, direction: str) -> None:
    """Record (once) and log why the Triton kernel could not run: this process's layers run eager from now on."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        raise exc  # out of memory is a result (status: oom, spikebench.oom), not a kernel failure
    reason = f"Triton LIF {direction} failed ({type(exc).__name__}: {str(exc).strip()[:300]}); ran eager"
    if _RUN["fallback_reason"] is None:
        _RUN["fallback_reason"] = reason
        _LOG.warning("%s. Every LIF layer of this job now runs PyTorch's eager loop (lif_backend: eager).", reason)


def _triton_forward(current: torch.Tensor, beta: float, threshold: float):
    """(spikes, membrane) from the Triton kernel, or None where it cannot run (recorded by :func:`_fall_back`)."""
    try:
        from spikebench.kernels import lif_triton

        return lif_triton.lif_forward(current, beta, threshold)
    except Exception as exc:  # noqa: BLE001 - any build or launch failure: the eager loop runs instead
        _fall_back(exc, "forward")
        return None


def _triton_backward(mem, grad_spk, grad_mem, beta: float, threshold: float, alpha: float):
    """dL/d(current) from the Triton kernel, or None where it cannot run (recorded by :func:`_fall_back`)."""
    try:
        from spikebench.kernels import lif_triton

        return lif_triton.lif_backward(mem, grad_spk, grad_mem, beta, threshold, alpha)
    except Exception as exc:  # noqa: BLE001 - any build or launch failure: the eager loop runs instead
        _fall_back(exc, "backward")
        return None


def _eager_forward(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LIF forward as PyTorch operations, one time step at a time (~5 whole-tensor ops per step)."""
    mem = torch.empty_like(current)
    spk = torch.empty_like(current)
    # t = 0: U[-1] = 0 and S[-1] = 0, so U[0] = 0 * beta + I[0] - 0 = I[0] exactly.
    mem[0].copy_(current[0])
    torch.gt(mem[0], threshold, out=spk[0])
    for t in range(1, current.shape[0]):
        m = mem[t]
        torch.mul(mem[t - 1], beta, out=m)  # beta * U[t-1]
        m.add_(current[t])  # + I[t]
        m.sub_(spk[t - 1], alpha=threshold)  # - S[t-1] * threshold (exact: S is 0 or 1)
        torch.gt(m, threshold, out=spk[t])  # H(U[t] - threshold)
    return spk, mem


def _eager_backward(mem, grad_spk, grad_mem, beta: float, threshold: float, alpha: float) -> torch.Tensor:
    """dL/d(current) as PyTorch operations, in reverse time."""
    if grad_spk is not None:
        # dS/dU of the arctan surrogate, as snntorch.surrogate.ATan.backward computes it.
        grad = (mem - threshold).mul_(math.pi / 2 * alpha).pow_(2).add_(1.0)
        grad = torch.reciprocal_(grad).mul_(alpha / 2).mul_(grad_spk)
        if grad_mem is not None:
            grad.add_(grad_mem)
    else:
        grad = grad_mem.clone()
    # dL/dU[t] = (local) + beta * dL/dU[t+1]; the reset term is detached, as in snnTorch.
    for t in range(grad.shape[0] - 2, -1, -1):
        grad[t].add_(grad[t + 1], alpha=beta)
    return grad


class LeakyFunction(torch.autograd.Function):
    """LIF recurrence over all time steps at once: ``current [T, ...] -> (spikes, membrane) [T, ...]``."""

    @staticmethod
    def forward(ctx: Any, current: torch.Tensor, beta: float, threshold: float, alpha: float):
        ctx.beta, ctx.threshold, ctx.alpha = beta, threshold, alpha
        ctx.set_materialize_grads(False)
        ctx.backend = "eager"
        if wants_triton(current) and (out := _triton_forward(current, beta, threshold)) is not None:
            spk, mem = out
            ctx.backend = "triton"
        elif current.numel() >= LIF_KERNEL_MIN_SIZE and use_cpu_kernels(current):
            from spikebench.kernels import lif

            spk, mem = lif.lif_forward(current, beta, threshold)
            ctx.backend = "numba"
        else:
            spk, mem = _eager_forward(current, beta, threshold)
        _RUN["used"].add(ctx.backend)
        ctx.save_for_backward(mem)
        return spk, mem

    @staticmethod
    def backward(ctx: Any, grad_spk: torch.Tensor | None, grad_mem: torch.Tensor | None):
        (mem,) = ctx.saved_tensors
        if grad_spk is None and grad_mem is None:
            return None, None, None, None
        args = (mem, grad_spk, grad_mem, ctx.beta, ctx.threshold, ctx.alpha)
        if ctx.backend == "numba":
            from spikebench.kernels import lif

            return lif.lif_backward(*args), None, None, None
        if ctx.backend == "triton" and (grad := _triton_backward(*args)) is not None:
            return grad, None, None, None
        return _eager_backward(*args), None, None, None


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
