"""Large CPU buffers reused from one training batch to the next, instead of freshly allocated every batch.

Why: an SNN batch on the CPU allocates several arrays of 100 MB-1 GB (N-MNIST: the dense ``[T, B, 2, 34, 34]``
frames, each layer's LIF spikes, membrane and gradient, the event convolution's outputs and arg-max). glibc
serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it with
``munmap`` on free, so each new array page-faults all its pages in again (and, where numpy asks for transparent
huge pages, zeroes 2 MiB pages in the kernel): measured on N-MNIST, 230k-310k page faults and 6-8 s of kernel
time per batch, more than the arithmetic (issue #22; benchmarks/README.md).

:class:`BufferPool` keeps the big buffers of earlier batches and hands one out again only when **nothing uses
it any more**: a buffer is a numpy array owned by the pool, every array or tensor made from it holds a Python
reference to it (numpy views keep their base, ``torch.from_numpy`` keeps the array), so its reference count
says whether any tensor or view of it is still alive (an output kept by the caller, a tensor saved for
backward by autograd). A live buffer is never handed out twice, so reuse cannot overwrite anything still
needed; it only changes where results are stored, never the float operations (results are bitwise the same).

The pool holds at most ``max_buffers`` free buffers (least recently used dropped first), and buffers are
rounded up (``SLACK``) so that N-MNIST batches of slightly different lengths T fit the same buffer.
``enabled = False`` (or ``SPIKEBENCH_BUFFER_POOL=0``) turns reuse off: every request is then a fresh array.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

#: Requests below this size are allocated directly: glibc keeps such blocks in its heap anyway.
MIN_BYTES = 4 * 2**20
#: A new buffer is this much larger than its first request (then rounded up to 2 MiB, a huge page), so that
#: the next batch's slightly longer N-MNIST recordings (T varies by ~10% between batches) still fit.
SLACK = 1 / 8
_ALIGN = 2 * 2**20


class BufferPool:
    """Reusable flat byte buffers; :meth:`empty` returns a view of a free one (or of a new one)."""

    def __init__(self, max_buffers: int = 24) -> None:
        self.max_buffers = int(max_buffers)
        self.enabled = os.environ.get("SPIKEBENCH_BUFFER_POOL", "1") != "0"
        self._buffers: list[np.ndarray] = []  # most recently used last
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def empty(self, shape, dtype) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` and ``dtype`` (like ``np.empty``), backed by a pooled
        buffer that no live array or tensor uses."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(int(s) for s in shape) * dtype.itemsize
        if not self.enabled or nbytes < MIN_BYTES:
            return np.empty(shape, dtype)
        with self._lock:
            buf = self._take(nbytes)
        return buf[:nbytes].view(dtype).reshape(shape)

    def zeros(self, shape, dtype) -> np.ndarray:
        """Like :meth:`empty`, filled with zeros (one pass over memory that is already mapped)."""
        out = self.empty(shape, dtype)
        out.fill(0)
        return out

    def _take(self, nbytes: int) -> np.ndarray:
        """The smallest free buffer of at least ``nbytes`` (moved to the end: most recently used), else a new one."""
        best = None
        for i, free in enumerate(_free_flags(self._buffers)):
            size = self._buffers[i].nbytes
            fits = nbytes <= size <= 2 * nbytes + _ALIGN  # not a buffer twice too large: a bigger request needs it
            if free and fits and (best is None or size < self._buffers[best].nbytes):
                best = i
        if best is not None:
            self.hits += 1
            buf = self._buffers.pop(best)
        else:
            self.misses += 1
            buf = np.empty(-(-int(nbytes * (1 + SLACK)) // _ALIGN) * _ALIGN, np.uint8)
        self._evict()
        self._buffers.append(buf)  # most recently used last
        return buf

    def _evict(self) -> None:
        """Drop free buffers, least recently used first, until at most ``max_buffers - 1`` are held (in-use ones
        are never dropped: where more are in use, e.g. outputs a caller keeps, the pool holds more until they are
        released and a later request trims it)."""
        excess = len(self._buffers) - (self.max_buffers - 1)
        if excess > 0:
            free = [i for i, flag in enumerate(_free_flags(self._buffers)) if flag][:excess]
            for i in reversed(free):
                del self._buffers[i]

    def clear(self) -> None:
        """Forget every buffer (those still in use stay valid: their arrays keep them alive)."""
        with self._lock:
            self._buffers.clear()

    def free_flags(self) -> list[bool]:
        """Per buffer (least recently used first): whether no array or tensor uses it now."""
        with self._lock:
            return _free_flags(self._buffers)

    def held_bytes(self) -> int:
        """Bytes of all buffers the pool holds (free or in use)."""
        return sum(buf.nbytes for buf in self._buffers)


def _refcounts(buffers: list[np.ndarray]) -> list[int]:
    """``sys.getrefcount`` of each buffer, always counted the same way (the list, the loop variable, the
    argument), so that it can be compared with :data:`_FREE_REFS`, measured the same way at import."""
    return [sys.getrefcount(buf) for buf in buffers]


def _free_flags(buffers: list[np.ndarray]) -> list[bool]:
    """Whether only the pool references each buffer (no array view or tensor of it is alive)."""
    return [n <= _FREE_REFS for n in _refcounts(buffers)]


#: The reference count of a buffer that only a pool's list holds (calibrated, not assumed: it depends on how
#: the interpreter counts the loop variable and the call's argument).
_FREE_REFS = _refcounts([np.empty(1, np.uint8)])[0]


#: The process's pool, shared by the CPU kernels (:mod:`spikebench.kernels`) and the N-MNIST batches.
POOL = BufferPool()


_TORCH_TO_NUMPY = {"float32": np.float32, "int64": np.int64, "float64": np.float64, "int32": np.int32}


def cpu_empty(shape, dtype, channels_last: bool = False, pool: BufferPool | None = None):
    """An uninitialised CPU ``torch`` tensor of ``shape`` (``[N, C, H, W]`` with ``channels_last``: memory order
    ``[N, H, W, C]``) backed by a pooled buffer: ``torch.empty`` without a fresh mapping per batch."""
    import torch

    pool = POOL if pool is None else pool
    np_dtype = _TORCH_TO_NUMPY[str(dtype).removeprefix("torch.")]
    shape = tuple(int(s) for s in shape)
    if channels_last:
        n, c, h, w = shape
        return torch.from_numpy(pool.empty((n, h, w, c), np_dtype)).permute(0, 3, 1, 2)
    return torch.from_numpy(pool.empty(shape, np_dtype))


def cpu_zeros(shape, dtype, pool: BufferPool | None = None):
    """Like :func:`cpu_empty` (contiguous), filled with zeros."""
    out = cpu_empty(shape, dtype, pool=pool)
    out.zero_()
    return out
