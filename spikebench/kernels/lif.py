"""Numba CPU kernels for the leaky integrate-and-fire (LIF) recurrence, forward and backward.

They compute exactly what :class:`spikebench.models.lif.LeakyFunction` computes with PyTorch operations:

    forward   U[0] = I[0],  U[t] = ((beta * U[t-1]) + I[t]) - S[t-1] * thr,  S[t] = (U[t] > thr)
    backward  local[t] = alpha/2 / (1 + (pi/2 * alpha * (U[t] - thr))^2) * dL/dS[t]  (+ dL/dU[t])
              grad[T-1] = local[T-1],  grad[t] = local[t] + beta * grad[t+1]

Why: PyTorch needs ~5 whole-tensor operations per time step, each one a full pass over a layer's [N]
neurons (out of cache for big layers), plus the interpreter overhead of T small calls. Here the
neurons are cut into contiguous blocks and each block runs its whole time loop while its state stays
in cache: one pass over memory per block instead. Blocks are independent (so are the neurons), so
they run in parallel (``numba.prange``) and the results do not depend on the number of threads.

Every operation is float32 and in PyTorch's order, with no fast-math, so the forward pass is bitwise
equal to LeakyFunction's. Backward matches too where PyTorch's ``add_(x, alpha=beta)`` is a fused
multiply-add (its vectorised CPU kernels, e.g. AVX2), which the recurrence here uses; elsewhere it
differs by rounding only. Compiled on first call and cached on disk (``cache=True``:
in the package's ``__pycache__``, else the user's cache dir; with neither writable, compiled in every process).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

from spikebench.buffers import POOL
from spikebench.kernels import memory_order, njit_cached

#: Neurons per block: the block's rows (5 x 16 KiB per time step) stay in L2 over the whole time loop.
BLOCK = 4096


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once, in float32 (LLVM's fma intrinsic; vectorised on CPUs with FMA)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@njit_cached()
def _forward_row(cur, mem_prev, spk_prev, mem, spk, beta, thr):  # pragma: no cover - compiled
    for j in range(cur.shape[0]):
        u = ((beta * mem_prev[j]) + cur[j]) - spk_prev[j] * thr
        mem[j] = u
        spk[j] = u > thr


@njit_cached(parallel=True)
def _forward(cur, spk, mem, beta, thr):  # pragma: no cover - compiled
    n_steps, n = cur.shape
    for b in numba.prange((n + BLOCK - 1) // BLOCK):
        lo, hi = b * BLOCK, min(b * BLOCK + BLOCK, n)
        for j in range(lo, hi):  # t = 0: U[-1] = S[-1] = 0, so U[0] = I[0] exactly
            mem[0, j] = cur[0, j]
            spk[0, j] = cur[0, j] > thr
        for t in range(1, n_steps):
            _forward_row(cur[t, lo:hi], mem[t - 1, lo:hi], spk[t - 1, lo:hi], mem[t, lo:hi], spk[t, lo:hi], beta, thr)


# error_model="numpy": x / 0 gives inf as in PyTorch (and no Python ZeroDivisionError check that
# would stop the loop from being vectorised).
@njit_cached(error_model="numpy")
def _backward_row(
    mem, grad_spk, grad_mem, grad_next, grad, has_spk, has_mem, has_next, beta, thr, scale, half_alpha
):  # pragma: no cover - compiled
    one = np.float32(1.0)
    for j in range(mem.shape[0]):
        if has_spk:  # arctan surrogate dS/dU * dL/dS, as torch orders it
            x = (mem[j] - thr) * scale
            g = (one / (x * x + one)) * half_alpha * grad_spk[j]
            if has_mem:
                g = g + grad_mem[j]
        else:
            g = grad_mem[j]
        if has_next:  # + beta * dL/dU[t+1]; torch's add_(alpha=beta) is an FMA
            g = _fma(grad_next[j], beta, g)
        grad[j] = g


@njit_cached(parallel=True)
def _backward(mem, grad_spk, grad_mem, has_spk, has_mem, grad, beta, thr, scale, half_alpha):  # pragma: no cover
    n_steps, n = mem.shape
    for b in numba.prange((n + BLOCK - 1) // BLOCK):
        lo, hi = b * BLOCK, min(b * BLOCK + BLOCK, n)
        for t in range(n_steps - 1, -1, -1):
            nxt = min(t + 1, n_steps - 1)  # unused at t = T-1
            _backward_row(
                mem[t, lo:hi],
                grad_spk[t, lo:hi],
                grad_mem[t, lo:hi],
                grad[nxt, lo:hi],
                grad[t, lo:hi],
                has_spk,
                has_mem,
                t < n_steps - 1,
                beta,
                thr,
                scale,
                half_alpha,
            )


def _as_2d(x: torch.Tensor, perm: list[int]) -> np.ndarray:
    """A [T, N] float32 C-contiguous numpy view of CPU tensor ``x [T, ...]`` with its dims in the order ``perm``
    (no copy when that is its memory order): the LIF is elementwise over neurons, so any neuron order will do."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        raise TypeError(f"expected a float32 CPU tensor, got {x.dtype} on {x.device}")
    x = x.detach().permute(perm)
    if not x.is_contiguous():
        # A copy in the kernel's order (e.g. dL/dS of a channels-last layer coming back from a Linear layer in
        # NCHW order) into a pooled buffer, free again once the kernel returned (issue #22: no fresh 100 MB copy
        # to page-fault in per batch). A copy is exact: the same values as .contiguous().
        x = torch.from_numpy(POOL.empty(x.shape, np.float32)).copy_(x)
    return x.numpy().reshape(x.shape[0], math.prod(x.shape[1:]))


def _as_tensor(a: np.ndarray, like: torch.Tensor, perm: list[int]) -> torch.Tensor:
    """``a [T, N]`` as a tensor of ``like``'s shape and memory layout (the inverse of ``_as_2d``)."""
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return torch.from_numpy(a).view([like.shape[d] for d in perm]).permute(inverse)


def lif_forward(current: torch.Tensor, beta: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and membrane potentials ``[T, ...]`` (float32) of LIF neurons driven by ``current [T, ...]``, in
    ``current``'s memory layout (a channels-last input gives channels-last outputs, with no copy)."""
    perm = memory_order(current)
    cur = _as_2d(current, perm)
    # S and U buffers from the pool: reused from the previous batch once nothing holds them (a fresh 100 MB-1 GB
    # array per batch would be page-faulted in again, issue #22); numpy memory, so transparent huge pages.
    # Every element is written by _forward, so reuse does not change a value.
    spk = POOL.empty(cur.shape, np.float32)
    mem = POOL.empty(cur.shape, np.float32)
    _forward(cur, spk, mem, np.float32(beta), np.float32(threshold))
    return _as_tensor(spk, current, perm), _as_tensor(mem, current, perm)


def lif_backward(
    mem: torch.Tensor,
    grad_spk: torch.Tensor | None,
    grad_mem: torch.Tensor | None,
    beta: float,
    threshold: float,
    alpha: float,
) -> torch.Tensor:
    """dL/d(current) ``[T, ...]`` from the saved membrane and dL/d(spikes), dL/d(membrane) (either may be None),
    in ``mem``'s memory layout."""
    if grad_spk is None and grad_mem is None:
        raise ValueError("lif_backward needs grad_spk or grad_mem")
    perm = memory_order(mem)
    u = _as_2d(mem, perm)
    gs = _as_2d(grad_spk, perm) if grad_spk is not None else u  # placeholder when absent (never read)
    gm = _as_2d(grad_mem, perm) if grad_mem is not None else u
    grad = POOL.empty(u.shape, np.float32)  # dL/dI, every element written by _backward (pooled: issue #22)
    _backward(
        u,
        gs,
        gm,
        grad_spk is not None,
        grad_mem is not None,
        grad,
        np.float32(beta),
        np.float32(threshold),
        np.float32(math.pi / 2 * alpha),
        np.float32(alpha / 2),
    )
    return _as_tensor(grad, mem, perm)
