"""Kernel launches per training batch of every network on the CUDA path, counted on any machine (no GPU needed).

A GPU's cost of a small network is often its kernel launches (~5-10 us each), not its arithmetic. This counts
them for one steady-state training step (the second; the first also creates the optimiser's state) of each
network: data preparation (rate coding, N-MNIST densification), forward, loss, backward and the optimiser (fused
Adam, as ``spikebench.training`` uses on CUDA), with the LIF recurrence as the Triton kernel (``triton``, what
``lif_backend: auto`` runs on CUDA) and as PyTorch's loop (``eager``).

How: the step runs on PyTorch's ``meta`` device, which computes shapes and no values, so every ``x.device.type ==
"cpu"`` shortcut of spikebench (numba kernels, skipped zero inputs, tied weights, chunked convolutions) takes
its GPU branch, as on CUDA. A ``TorchDispatchMode`` counts each ATen operation that would launch a kernel (not
views, ``empty*``, ``detach`` or profiler markers), and each Triton LIF launch is counted at
``spikebench.kernels.lif_triton.launch``. An ATen op is counted as one launch: cuBLAS/cuDNN may split one into
two or three kernels (e.g. split-K), fused Adam launches once per ~36 tensors; the counts are therefore a lower
bound, the same way for both networks of a comparison.

    PYTHONPATH=. python benchmarks/count_launches.py            # the table of the six networks
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import types
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PROJECT = Path(__file__).resolve().parents[1]
NETWORKS = ("exp1_ann", "exp1_snn", "exp2_cnn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist")
#: The ANN each SNN is compared with (experiment 3 has none: its SNNs are compared with exp1_ann's MNIST ANN
#: for scale only).
BASELINE = {"exp1_snn": "exp1_ann", "exp2_snn": "exp2_cnn", "exp3_snn_mnist": "exp1_ann", "exp3_snn_nmnist": "exp1_ann"}
NMNIST_T = 310  # time steps of an N-MNIST batch (1 ms frames of ~300 ms recordings: the batch's longest)
NO_LAUNCH = {"empty", "empty_like", "empty_strided", "detach", "_record_function_enter_new", "_record_function_exit"}


class LaunchCounter(TorchDispatchMode):
    """ATen operations that launch a kernel, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_LAUNCH:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def cuda_path(lif_backend: str):
    """The LIF backend set, Triton launches counted instead of run (meta tensors hold no data), fused Adam
    allowed on meta tensors, autocast off for them (precision fp32); everything restored afterwards."""
    import torch.optim.adam as adam

    from spikebench import models
    from spikebench.kernels import lif_triton

    counted = [0]
    saved = (models.lif.LIF_BACKEND, lif_triton.launch, lif_triton._check, adam._device_dtype_check_for_fused)
    autocast_enabled = torch.is_autocast_enabled
    torch.is_autocast_enabled = lambda *a: False if a and a[0] == "meta" else autocast_enabled(*a)  # fp32 here
    models.set_lif_backend(lif_backend)
    lif_triton.launch = lambda kernel, n, *args, **meta: counted.__setitem__(0, counted[0] + 1)
    lif_triton._check = lambda x, name: None
    adam._device_dtype_check_for_fused = lambda p, cuda_unsupported=False: None
    try:
        yield counted
    finally:
        models.set_lif_backend(saved[0])
        lif_triton.launch, lif_triton._check, adam._device_dtype_check_for_fused = saved[1:]
        torch.is_autocast_enabled = autocast_enabled


def _batch_data(spec, device: torch.device, n_steps: int):
    """A training batch's dataset on ``device`` (shapes only): images, or N-MNIST sparse frames."""
    from spikebench.data.device import DeviceImages, dense_batch_without_sync
    from spikebench.models import input_shape

    b = spec.batch_size
    labels = torch.zeros(b, dtype=torch.int64, device=device)
    if spec.dataset != "nmnist":
        images = torch.zeros(b, *input_shape(spec.to_dict()), dtype=torch.uint8, device=device)
        return DeviceImages(images, labels, name="train", source="meta")
    cells = 4000 * b  # about the events' cells of a batch of N-MNIST recordings (denoised, 1 ms frames)
    frames = types.SimpleNamespace(
        offsets=torch.zeros(b + 1, dtype=torch.int64, device=device),
        cells=torch.zeros(cells, dtype=torch.int32, device=device),
        counts=torch.zeros(cells, dtype=torch.int16, device=device),
        n_frames=torch.zeros(b, dtype=torch.int64, device=device),
        device=device,
    )

    class Frames:  # what encode_batch reads of spikebench.data.device.DeviceFrames
        def __init__(self) -> None:
            self.labels = labels

        def __len__(self) -> int:
            return b

        def batch(self, idx):
            return dense_batch_without_sync(frames, idx, n_steps, cells)

    return Frames()


def count_training_step(name: str, network: dict, lif_backend: str, num_steps: int | None = None) -> dict:
    """Launches of one steady-state training step of ``network`` (a config entry) on the CUDA path."""
    from spikebench import models
    from spikebench.implementation import encode_batch
    from spikebench.spec import NetworkSpec
    from spikebench.training import train_step

    entry = {**network, **({"num_steps": num_steps} if num_steps and network.get("kind") == "snn" else {})}
    spec = NetworkSpec.from_config(entry, name)
    device = torch.device("meta")
    n_steps = num_steps or (NMNIST_T if spec.dataset == "nmnist" else int(entry.get("num_steps") or 0))
    with cuda_path(lif_backend) as triton_launches:
        torch.manual_seed(0)
        net = models.build_network(entry, name).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr, fused=True)
        data = _batch_data(spec, device, n_steps)
        idx = torch.arange(spec.batch_size, device=device)
        for _ in range(2):  # the second step is the steady state (the first also creates Adam's state)
            triton_launches[0] = 0
            with LaunchCounter() as counter:
                x, steps = encode_batch(spec, data, idx, None)
                train_step(net, optimizer, spec, x, data.labels[idx], steps)
        used = models.backend_record()["lif_backend_used"]
    aten = sum(counter.ops.values())
    return {
        "network": name,
        "kind": spec.kind,
        "time_steps": n_steps if spec.kind == "snn" else None,
        "lif_backend": lif_backend if spec.kind == "snn" else None,
        "lif_backend_used": used,
        "aten_launches": aten,
        "triton_launches": triton_launches[0],
        "launches": aten + triton_launches[0],
        "by_op": dict(counter.ops.most_common()),
    }


def count_all(networks: dict, names=NETWORKS) -> list[dict]:
    """Both LIF backends for each SNN, once for each ANN; each SNN's ratio to its baseline ANN."""
    rows = []
    for name in names:
        backends = ("triton", "eager") if networks[name]["kind"] == "snn" else ("triton",)
        rows += [count_training_step(name, networks[name], b) for b in backends]
    ann = {r["network"]: r["launches"] for r in rows if r["kind"] == "ann"}
    for r in rows:
        base = BASELINE.get(r["network"])
        r["baseline"] = base
        r["ratio_vs_baseline"] = r["launches"] / ann[base] if base in ann else None
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| network | T | LIF | launches per training batch | of them Triton | vs its ANN |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ratio_vs_baseline']:.2f}x {r['baseline']}" if r["ratio_vs_baseline"] else "-"
        lines.append(
            f"| {r['network']} | {r['time_steps'] or '-'} | {r['lif_backend'] or '-'} | {r['launches']} | "
            f"{r['triton_launches']} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from spikebench.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=PROJECT / "config.yaml")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    args = parser.parse_args(argv)
    networks = load_config(args.config)["networks"]
    rows = count_all(networks, [n.strip() for n in args.networks.split(",") if n.strip()])
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
