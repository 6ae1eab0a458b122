"""CPU kernels (numba) for the hot loops of the SNN layers, used by :mod:`spikebench.models` on CPU tensors.

- :mod:`spikebench.kernels.lif`: the LIF recurrence forward and backward in one pass over memory.
- :mod:`spikebench.kernels.event_conv`: event-driven (sparse-input) convolution + 2x2 max-pool.

On a GPU the models use PyTorch's own operations instead.
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
    setting governs a job's CPU use; numba's own default is every core."""
    import torch

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
