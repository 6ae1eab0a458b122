"""CPU kernels (numba) for the hot loops of the SNN layers, used by :mod:`spikebench.models` on CPU tensors.

- :mod:`spikebench.kernels.lif`: the LIF recurrence forward and backward in one pass over memory.
- :mod:`spikebench.kernels.event_conv`: event-driven (sparse-input) convolution + 2x2 max-pool.

- :mod:`spikebench.kernels.lif_triton`: the LIF recurrence on CUDA as a Triton kernel (no numba; Triton is
  imported only when it first runs), chosen by ``spikebench.models.lif.LIF_BACKEND``.

On a GPU the models otherwise use PyTorch's own operations.
"""

import numba


def njit_cached(**options):
    """``numba.njit(cache=True, **options)``, or without the on-disk cache where numba finds no writable
    place for one (neither the package's ``__pycache__`` nor the user's cache dir): it then raises at
    decoration time, which would make this module fail to import; compiling in every process is fine."""

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError:
            return numba.njit(**options)(func)

    return decorate


def match_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as PyTorch uses (``torch.set_num_threads``), so that one
    setting governs a job's CPU use; numba's own default is every core.

    Starting numba's threading layer (on its first parallel call, or in ``numba.set_num_threads``) sets the
    OpenMP runtime's thread count to every core, and PyTorch, which shares that runtime, then reports and uses
    that count too. The layer is therefore started here first, with PyTorch's count read before and put back
    after, so both stay at the configured count (``torch.get_num_threads()`` before the first SNN layer).
    """
    import torch
    from numba.np.ufunc import parallel

    wanted = torch.get_num_threads()
    parallel._launch_threads()  # idempotent; the first call is what resets the OpenMP thread count
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    numba.set_num_threads(max(1, min(wanted, numba.config.NUMBA_NUM_THREADS)))


def thread_counts() -> dict:
    """The thread counts PyTorch and numba use now and numba's threading layer (numba's are None before any
    numba kernel ran in this process: the models then used no numba kernel)."""
    import torch

    try:
        layer = numba.threading_layer()
    except ValueError:  # not started yet: no parallel kernel has run in this process
        layer = None
    # numba.get_num_threads() would start the layer (and so reset the OpenMP count): read it only once started.
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "numba_threads": numba.get_num_threads() if layer is not None else None,
        "numba_threading_layer": layer,
    }


def memory_order(x) -> list[int]:
    """The permutation of ``x [T, ...]``'s dims into memory order (outermost first) when that keeps T first (e.g.
    channels-last conv outputs: the LIF kernels then read and write them with no copy); else the identity (the
    tensor is then made contiguous). The LIF is elementwise over neurons, so any neuron order will do."""
    perm = sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))
    if perm[0] == 0 and x.permute(perm).is_contiguous():
        return perm
    return list(range(x.dim()))
