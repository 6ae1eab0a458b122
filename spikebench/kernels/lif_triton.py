"""A hand-written Triton kernel for the leaky integrate-and-fire (LIF) recurrence on CUDA, forward and backward.

It computes what :class:`spikebench.models.lif.LeakyFunction` computes with PyTorch operations (and the numba
CPU kernels of :mod:`spikebench.kernels.lif`), with the time loop inside the kernel::

    forward   U[0] = I[0],  U[t] = ((beta * U[t-1]) + I[t]) - S[t-1] * thr,  S[t] = (U[t] > thr)
    backward  local[t] = alpha/2 / (1 + (pi/2 * alpha * (U[t] - thr))^2) * dL/dS[t]  (+ dL/dU[t])
              grad[T-1] = local[T-1],  grad[t] = local[t] + beta * grad[t+1]

Why: the PyTorch loop launches ~5 kernels per time step and layer (T=25: ~125 launches a layer and direction;
N-MNIST's T~310: ~1,550), each a full pass over the layer's neurons. Here each program owns a block of
neurons and runs their whole time loop with the state in registers: one launch per layer and direction, one
read of the input currents and one write of spikes and membrane (as SpikingJelly's Triton/CuPy neurons do).

Exactness. The kernels are launched with floating-point contraction off (``enable_fp_fusion=False``), so
``beta * U + I`` is a multiply and an add, each rounded, as in PyTorch's separate kernels: spikes and membrane
equal the eager path bit for bit. The backward's ``+ beta * grad[t+1]`` is an explicit fused multiply-add,
as PyTorch's ``add_(x, alpha=beta)`` computes it on the CPU (and the numba kernel does); gradients agree with
the eager path to float rounding (tested within 1e-6). The reciprocal is IEEE-rounded (``div_rn``).

Tested on the CPU with Triton's interpreter: ``TRITON_INTERPRET=1`` runs ``@triton.jit`` kernels on CPU
tensors (read when the kernels are built, :func:`kernels`). Without Triton, or where the kernel cannot be
built or launched, :mod:`spikebench.models.lif` falls back to the eager loop and records why.
"""

from __future__ import annotations

import functools
import math
import os

import torch

from spikebench.kernels import memory_order

#: Neurons per program: 1024 float32 lanes (4 warps of 32 threads, 8 values each).
BLOCK = 1024
NUM_WARPS = 4


def interpreted() -> bool:
    """Whether Triton's interpreter runs the kernels (``TRITON_INTERPRET=1``: CPU tensors, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def kernels(interpret: bool):
    """The two ``@triton.jit`` kernels, built on first use (so importing this module needs no Triton, and
    ``TRITON_INTERPRET`` is read at build time: one build per mode). Raises ImportError without Triton."""
    import triton
    import triton.language as tl

    @triton.jit
    def lif_forward_kernel(cur, spk, mem, n, n_steps, beta, thr, BLOCK: tl.constexpr):  # noqa: N803
        # Pointers advance by n per time step (pointer arithmetic is 64-bit: T x N may pass 2^31).
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        cur_t, spk_t, mem_t = cur + offs, spk + offs, mem + offs  # row t's pointers, advanced by n per step
        u = tl.load(cur_t, mask=mask, other=0.0)  # t = 0: U[-1] = S[-1] = 0, so U[0] = I[0] exactly
        s = (u > thr).to(tl.float32)
        tl.store(mem_t, u, mask=mask)
        tl.store(spk_t, s, mask=mask)
        for _ in range(1, n_steps):
            cur_t, spk_t, mem_t = cur_t + n, spk_t + n, mem_t + n
            u = ((u * beta) + tl.load(cur_t, mask=mask, other=0.0)) - s * thr  # beta*U[t-1] + I[t] - S[t-1]*thr
            s = (u > thr).to(tl.float32)  # H(U[t] - threshold)
            tl.store(mem_t, u, mask=mask)
            tl.store(spk_t, s, mask=mask)

    @triton.jit
    def lif_backward_kernel(
        mem,
        grad_spk,
        grad_mem,
        grad,
        n,
        n_steps,
        last_row,
        beta,
        thr,
        scale,
        half_alpha,
        HAS_SPK: tl.constexpr,  # noqa: N803
        HAS_MEM: tl.constexpr,  # noqa: N803
        BLOCK: tl.constexpr,  # noqa: N803
    ):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        last = offs + last_row  # row T-1; the pointers step back by n per time step
        mem_t, gs_t, gm_t, grad_t = mem + last, grad_spk + last, grad_mem + last, grad + last
        g_next = tl.zeros([BLOCK], dtype=tl.float32)
        for k in range(0, n_steps):  # reverse time: t = T-1 .. 0
            if HAS_SPK:  # dS/dU of the arctan surrogate * dL/dS, in snntorch.surrogate.ATan's order
                x = (tl.load(mem_t, mask=mask, other=0.0) - thr) * scale
                g = tl.math.div_rn(1.0, x * x + 1.0) * half_alpha * tl.load(gs_t, mask=mask, other=0.0)
                if HAS_MEM:
                    g = g + tl.load(gm_t, mask=mask, other=0.0)
            else:
                g = tl.load(gm_t, mask=mask, other=0.0)
            if k > 0:  # + beta * dL/dU[t+1] (the reset term is detached, as in snnTorch)
                g = tl.math.fma(g_next, beta, g)
            tl.store(grad_t, g, mask=mask)
            g_next = g
            mem_t, gs_t, gm_t, grad_t = mem_t - n, gs_t - n, gm_t - n, grad_t - n

    return lif_forward_kernel, lif_backward_kernel


def launch(kernel, n: int, *args, **meta) -> None:
    """Launch ``kernel`` over ``n`` neurons (every launch goes through here; benchmarks count them)."""
    grid = (max(1, triton_cdiv(n, BLOCK)),)
    kernel[grid](*args, BLOCK=BLOCK, num_warps=NUM_WARPS, enable_fp_fusion=False, **meta)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _check(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.float32:
        raise TypeError(f"LIF Triton kernel: {name} must be float32, got {x.dtype}")
    if x.device.type != "cuda" and not interpreted():
        raise TypeError(
            f"LIF Triton kernel: {name} is on {x.device}; Triton runs CUDA tensors (TRITON_INTERPRET=1 "
            "runs it on CPU tensors, in the interpreter)"
        )


def _flat(x: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """``x [T, ...]`` with its dims in ``perm``'s order as a contiguous [T, N] tensor (a view where possible)."""
    x = x.detach().permute(perm).contiguous()
    return x.view(x.shape[0], -1)


def _unflat(a: torch.Tensor, like: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """``a [T, N]`` as a tensor of ``like``'s shape and memory layout (the inverse of ``_flat``)."""
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return a.view([like.shape[d] for d in perm]).permute(inverse)


def lif_forward(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and membrane potentials ``[T, ...]`` (float32) of LIF neurons driven by ``current [T, ...]``, in
    ``current``'s memory layout; one kernel launch."""
    _check(current, "current")
    forward, _ = kernels(interpreted())
    perm = memory_order(current)
    cur = _flat(current, perm)
    n_steps, n = cur.shape
    spk, mem = torch.empty_like(cur), torch.empty_like(cur)
    if cur.numel():
        launch(forward, n, cur, spk, mem, n, n_steps, float(beta), float(threshold))
    return _unflat(spk, current, perm), _unflat(mem, current, perm)


def lif_backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    beta: float,
    threshold: float,
    alpha: float,
) -> torch.Tensor:
    """dL/d(current) ``[T, ...]`` from the saved membrane and dL/d(spikes), dL/d(membrane) (either may be None, or
    a broadcast view), in ``mem``'s memory layout; one kernel launch."""
    if grad_spk is None and grad_mem is None:
        raise ValueError("lif_backward needs grad_spk or grad_mem")
    _check(mem, "mem")
    _, backward = kernels(interpreted())
    perm = memory_order(mem)
    u = _flat(mem, perm)
    gs = _flat(grad_spk.to(torch.float32), perm) if grad_spk is not None else u  # placeholder when absent
    gm = _flat(grad_mem.to(torch.float32), perm) if grad_mem is not None else u
    grad = torch.empty_like(u)
    n_steps, n = u.shape
    if u.numel():
        launch(
            backward,
            n,
            u,
            gs,
            gm,
            grad,
            n,
            n_steps,
            (n_steps - 1) * n,
            float(beta),
            float(threshold),
            float(math.pi / 2 * alpha),
            float(alpha / 2),
            HAS_SPK=grad_spk is not None,
            HAS_MEM=grad_mem is not None,
        )
    return _unflat(grad, mem, perm)
