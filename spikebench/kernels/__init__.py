"""CPU kernels (numba) for the hot loops of the SNN layers, used by :mod:`spikebench.models` on CPU tensors.

- :mod:`spikebench.kernels.lif`: the LIF recurrence forward and backward in one pass over memory.
- :mod:`spikebench.kernels.event_conv`: event-driven (sparse-input) convolution + 2x2 max-pool.

On a GPU the models use PyTorch's own operations instead.
"""


def match_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as PyTorch uses (``torch.set_num_threads``), so that one
    setting governs a job's CPU use; numba's own default is every core."""
    import numba
    import torch

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
