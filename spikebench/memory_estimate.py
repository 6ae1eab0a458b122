"""How much memory one training batch needs at least, known before anything is allocated.

A train job checks this before it loads its data (:func:`spikebench.oom.refuse_if_too_large`): where the
estimate exceeds the device's free memory, the run is recorded as ``status: oom`` with the estimate, and
nothing is allocated. Without the check a size the machine cannot hold was allocated and filled for real: on
the CPU, Linux grants a 20 GiB ``torch.empty`` and the kernel's OOM killer then ends the job with no record.

The estimate (:func:`estimate`) is a floor, not a forecast: the activations backprop must keep for one batch,
``B x T x sum over layers of (neurons x values kept per neuron) x 4 bytes`` (float32), plus the network's input
batch and the resident dataset. Values kept per neuron (:data:`KEPT`), from what the layers save for backward:

- SNN layer: its spikes and its membrane potential (the LIF saves the membrane; the next layer keeps the
  spikes), 2; a conv layer also the int64 arg-max of its 2x2 max-pool (``spikebench.models.convpool``), +2.
- ANN layer: its activation, 1; a conv layer also the convolution's output before the 2x2 max-pool (4 values
  per pooled neuron) and the pool's int64 arg-max, +6.

Weights, gradients, optimiser state and temporaries come on top (small next to the activations of the networks
here), so a run refused by this check could not have run, and one it lets through may still run out of memory,
which is then caught as before (``spikebench.oom``). ``T`` is ``num_steps`` for rate-coded images, 1 for an ANN,
and for N-MNIST the longest recording's frame count (a GPU batch is padded to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikebench.data.catalog import DATASET_SHAPES, N_CLASSES
from spikebench.spec import NetworkSpec, as_spec

MIB = 2**20
DTYPE_BYTES = 4  # float32 activations (precision bf16 runs the convolutions in bf16, the membrane in fp32)
LABEL_BYTES = 8  # int64 labels
#: Values kept for backward per neuron and time step: (fully connected layer, conv + 2x2 max-pool layer).
KEPT = {"snn": (2, 4), "ann": (1, 7)}
#: N-MNIST cells as spikebench.data.nmnist.load_frames keeps them: int32 cell, int16 count; per sample
#: an int64 offset, label and frame count.
NMNIST_CELL_BYTES, NMNIST_SAMPLE_BYTES = 4 + 2, 3 * 8


def layer_neurons(spec: NetworkSpec | Mapping[str, Any]) -> list[tuple[str, int, bool]]:
    """(layer, neurons per sample, is a conv + pool layer) of every layer after the input, output layer last.

    The sizes follow ``spikebench.models`` (and ``spikebench.config.geometry_errors``): 5x5 convolutions with
    padding 2 (conv5) or 0 (conv2), each followed by a 2x2 max-pool.
    """
    spec = as_spec(spec)
    _, height, _ = spec.input_shape
    if spec.architecture == "fc":
        return [(f"fc{i + 1}", int(n), False) for i, n in enumerate([*spec.hidden, N_CLASSES])]
    padding, fc = (2, [int(spec.fc), N_CLASSES]) if spec.architecture == "conv5" else (0, [N_CLASSES])
    layers, side = [], height
    for i, width in enumerate(spec.channels):
        side = (side + 2 * padding - 5 + 1) // 2
        layers.append((f"conv{i + 1}", int(width) * side * side, True))
    return layers + [(f"fc{i + 1}", n, False) for i, n in enumerate(fc)]


def time_steps(spec: NetworkSpec | Mapping[str, Any], frames: int | None = None) -> int:
    """T of one batch: ``num_steps`` (rate-coded images), 1 (ANN), ``frames`` (N-MNIST: its longest recording)."""
    spec = as_spec(spec)
    if spec.dataset == "nmnist":
        if frames is None:
            raise ValueError(f"{spec.name}: an N-MNIST network's time steps are its recordings' frames: pass frames")
        return int(frames)
    return int(spec.num_steps) if spec.kind == "snn" else 1


def activation_bytes(spec: NetworkSpec | Mapping[str, Any], steps: int) -> int:
    """The floor of one training batch's activations kept for backprop, input batch included (module docstring)."""
    spec = as_spec(spec)
    fc_kept, conv_kept = KEPT[spec.kind]
    kept = sum(n * (conv_kept if conv else fc_kept) for _, n, conv in layer_neurons(spec))
    per_step_and_sample = math.prod(spec.input_shape) + kept
    return int(spec.batch_size) * int(steps) * per_step_and_sample * DTYPE_BYTES


def image_dataset_bytes(dataset: str, n_samples: int) -> int:
    """uint8 images [N, C, H, W] (at their stored size: resizing happens per batch) and int64 labels."""
    return int(n_samples) * (math.prod(DATASET_SHAPES[dataset]) + LABEL_BYTES)


def nmnist_dataset(frames: str | Path, samples: str | Path) -> tuple[int, int]:
    """(resident bytes, longest recording in frames) of an N-MNIST frames/samples Parquet pair, read from the
    files' footers and the samples' frame counts (nothing else is read)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cells = pq.ParquetFile(frames).metadata.num_rows
    n_frames = pq.read_table(samples, columns=["n_frames"]).column("n_frames")
    longest = pc.max(n_frames).as_py() if len(n_frames) else 0
    return cells * NMNIST_CELL_BYTES + len(n_frames) * NMNIST_SAMPLE_BYTES, int(longest or 0)


def estimate(spec: NetworkSpec | Mapping[str, Any], dataset_bytes: int, steps: int) -> dict[str, Any]:
    """One training batch's floor: ``activation_estimate_mib`` + ``dataset_estimate_mib`` = ``memory_estimate_mib``,
    with the batch size, the time steps and the layers it counted."""
    spec = as_spec(spec)
    activations = activation_bytes(spec, steps)
    return {
        "memory_estimate_mib": (activations + int(dataset_bytes)) / MIB,
        "activation_estimate_mib": activations / MIB,
        "dataset_estimate_mib": int(dataset_bytes) / MIB,
        "batch_size": int(spec.batch_size),
        "time_steps": int(steps),
        "layers": {name: n for name, n, _ in layer_neurons(spec)},
    }


def free_memory(device) -> tuple[int | None, str]:
    """(free bytes, where the figure comes from) of ``device``: the CPU's available memory (psutil), a CUDA GPU's
    free memory (``torch.cuda.mem_get_info``); None, with the reason, where neither applies."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        import psutil

        return int(psutil.virtual_memory().available), "psutil.virtual_memory().available"
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "torch.cuda.mem_get_info"
    return None, f"no free-memory figure for device type {device.type!r}"
