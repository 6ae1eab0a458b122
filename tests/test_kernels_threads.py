"""numba's threading layer must leave PyTorch's (and its own) thread count at the configured one."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

# A fresh process: the reset happens when numba's threading layer starts, once per process.
SCRIPT = textwrap.dedent("""
    import torch
    torch.set_num_threads(1)
    from spikebench import models
    from spikebench.kernels import thread_counts
    models.lif.CPU_KERNELS = True
    models.lif.LIF_KERNEL_MIN_SIZE = 1          # force the numba LIF kernel on this small layer
    spec = {"experiment": 1, "kind": "snn", "architecture": "fc", "dataset": "mnist", "epochs": 1,
            "optimizer": "adam", "lr": 1e-3, "batch_size": 4, "num_steps": 5, "beta": 0.9, "threshold": 1.0,
            "surrogate": "atan", "correct_rate": 0.8, "incorrect_rate": 0.2, "hidden": [16, 16]}
    net = models.build_network(spec, "threads")
    x = (torch.rand(5, 4, 784, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    net(x).sum().backward()
    counts = thread_counts()
    assert counts["numba_threading_layer"] is not None, counts   # the kernel really ran
    print(counts["torch_threads"], counts["numba_threads"])
""")


def test_forward_leaves_torch_and_numba_thread_counts_unchanged():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    torch_threads, numba_threads = out.stdout.split()
    assert (torch_threads, numba_threads) == ("1", "1")
