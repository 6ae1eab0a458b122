"""How much memory one training batch keeps for backward: the per-layer model of BPTT, and the size check.

:func:`saved_bytes` predicts, per layer, the bytes autograd keeps for backward in one training batch: the tensors
each operation saves, from the network's shapes, the batch size ``B``, the time steps ``T`` and float32 (4 bytes;
int64 arg-max indices 8). It is the model that :mod:`spikebench.saved_memory` measures against
(``saved_for_backward_mib``; tests/test_memory_model.py: within 5% for the six networks and both implementations).
``N`` below is the number of images a synapse sees: ``T x B`` (SNN) or ``B`` (ANN); what is saved, per layer:

- ANN: the network's input (the first layer's synapse keeps it for the weight gradient); a hidden ReLU its output
  (which the next synapse also keeps: one storage); a conv layer also its convolution's output before the 2x2
  max-pool (4 values per pooled neuron) and the pool's int64 arg-max; a dropout its float mask (a bool one on
  CUDA), and the next synapse the dropped output. The output layer keeps nothing: its logits' log-softmax is the
  loss's (``loss``: log-softmax, int64 targets).
- spikebench's SNN (all ``T`` steps of a layer at once): the synapse its input (the previous layer's spikes, a
  copy in channels-last on the CPU: the same bytes); the fused LIF its membrane ``[T, B, ...]`` (and nothing per
  step); ``ConvPoolFunction`` the int64 arg-max, never the full-size convolution output. On the CPU the first
  fully connected layer keeps only the input features that are non-zero in some sample of the batch
  (``active_input_linear``, data-dependent: ``active_inputs``, and their int64 index), and a convolution on a map
  with fewer positions than kernel taps runs as a tied-weight Linear (``tied_weights_pay``), which keeps its
  input's (position, channel) copy, the gathered ``[C_out*H*W, H*W*C_in]`` matrix and its tap index, and the full
  output for PyTorch's max-pool. The loss keeps the output spike counts and their targets (N-MNIST's padded
  batches: the step mask and each sample's steps too).
- snnTorch's loop (``implementation: snntorch``, one step at a time): per step and layer the synapse its input
  (the step's spikes), ``F.max_pool2d`` the full-size convolution output and its arg-max, the ATan surrogate its
  input ``U - threshold`` (the membrane's size), and a 4-byte scalar (the clamped ``beta``). Its conv layers keep
  the convolution's output on top of spikebench's (4 values per pooled neuron); its fully connected layers keep
  the same bytes, and its first layer the whole input.

Weights (autograd keeps references to them, but they are resident anyway), their gradients, optimiser state,
temporaries and the allocator's overhead are not in the model. Under precision bf16 the synapses keep bfloat16
inputs and weight copies: the float32 model does not cover it (the measurement's prediction is null there).

The size check. A train job checks :func:`estimate` before it loads its data
(:func:`spikebench.oom.refuse_if_too_large`): where the estimate exceeds the device's free memory, the run is
recorded as ``status: oom`` with the estimate, and nothing is allocated. Without the check a size the machine
cannot hold was allocated and filled for real: on the CPU, Linux grants a 20 GiB ``torch.empty`` and the kernel's
OOM killer then ends the job with no record.
The estimate is a floor, not a forecast: :func:`activation_bytes` (the model with every input feature counted:
the input batch is resident during the step either way) plus the resident dataset. Weights, gradients,
optimiser state and temporaries come on top (small next to the activations of the networks here), so a run
refused by this check could not have run, and one it lets through may still run out of memory, which is then
caught as before (``spikebench.oom``). ``T`` is ``num_steps`` for rate-coded images, 1 for an ANN, and for
N-MNIST the longest recording's frame count (a GPU batch is padded to it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from spikebench.data.catalog import DATASET_SHAPES, N_CLASSES
from spikebench.spec import NetworkSpec, as_spec

MIB = 2**20
DTYPE_BYTES = 4  # float32 activations
INDEX_BYTES = 8  # int64 arg-max indices, tap indices, active-feature indices
LABEL_BYTES = 8  # int64 labels
#: snnTorch's Leaky keeps one 0-dim float32 tensor per step and layer (the clamped beta of ``beta * U``).
SNNTORCH_STEP_SCALAR_BYTES = 4
#: N-MNIST cells as spikebench.data.nmnist.load_frames keeps them: int32 cell, int16 count; per sample
#: an int64 offset, label and frame count.
NMNIST_CELL_BYTES, NMNIST_SAMPLE_BYTES = 4 + 2, 3 * 8
#: Where the loss's saved tensors go in :func:`saved_bytes` (as :data:`spikebench.saved_memory.OUTSIDE`).
LOSS = "loss"


@dataclass(frozen=True)
class Layer:
    """One layer's shapes per sample: its input ``(C, H, W)`` or ``(features,)``, its pooled output (conv) or
    width (fc), the convolution's padding, and whether a dropout acts on its input (experiment 2's last layer)."""

    name: str
    conv: bool
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    padding: int = 0
    dropout_in: bool = False

    @property
    def neurons(self) -> int:
        return math.prod(self.out_shape)

    @property
    def conv_out(self) -> int:
        """Values per sample of the convolution's output before the 2x2 max-pool."""
        c, h, w = self.in_shape
        side = h + 2 * self.padding - 5 + 1
        return self.out_shape[0] * side * (w + 2 * self.padding - 5 + 1) if side else 0


def layers(spec: NetworkSpec | Mapping[str, Any]) -> list[Layer]:
    """The layers after the input, output layer last, as ``spikebench.models`` builds them (and
    ``spikebench.config.geometry_errors`` checks them): 5x5 convolutions with padding 2 (conv5) or 0 (conv2), each
    followed by a 2x2 max-pool."""
    spec = as_spec(spec)
    shape = spec.input_shape
    if spec.architecture == "fc":
        sizes = [math.prod(shape), *map(int, spec.hidden), N_CLASSES]
        return [Layer(f"fc{i + 1}", False, (a,), (b,)) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    padding, fc = (2, [int(spec.fc), N_CLASSES]) if spec.architecture == "conv5" else (0, [N_CLASSES])
    out: list[Layer] = []
    for i, width in enumerate(spec.channels):
        side = (shape[1] + 2 * padding - 5 + 1) // 2
        out.append(Layer(f"conv{i + 1}", True, tuple(shape), (int(width), side, side), padding))
        shape = (int(width), side, side)
    sizes = [math.prod(shape), *fc]
    dropout = spec.architecture == "conv5" and float(spec.dropout or 0.0) > 0.0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        out.append(Layer(f"fc{i + 1}", False, (a,), (b,), dropout_in=dropout and i == 1))
    return out


def layer_neurons(spec: NetworkSpec | Mapping[str, Any]) -> list[tuple[str, int, bool]]:
    """(layer, neurons per sample, is a conv + pool layer) of every layer after the input, output layer last."""
    return [(layer.name, layer.neurons, layer.conv) for layer in layers(spec)]


def time_steps(spec: NetworkSpec | Mapping[str, Any], frames: int | None = None) -> int:
    """T of one batch: ``num_steps`` (rate-coded images), 1 (ANN), ``frames`` (N-MNIST: its longest recording)."""
    spec = as_spec(spec)
    if spec.dataset == "nmnist":
        if frames is None:
            raise ValueError(f"{spec.name}: an N-MNIST network's time steps are its recordings' frames: pass frames")
        return int(frames)
    return int(spec.num_steps) if spec.kind == "snn" else 1


def _tied(layer: Layer, n: int, device: str) -> bool:
    """Whether ``spikebench.models.tied_weights_pay`` runs this conv layer as a tied-weight Linear (its own rule)."""
    from spikebench.models.tied_conv import tied_weights_pay

    c, h, w = layer.in_shape
    x = SimpleNamespace(shape=(n, c, h, w), device=SimpleNamespace(type=device))
    conv = SimpleNamespace(
        kernel_size=(5, 5), padding=(layer.padding, layer.padding), out_channels=layer.out_shape[0], in_channels=c
    )
    return tied_weights_pay(x, conv)


def _conv_bytes(layer: Layer, n: int, device: str, ann: bool, fused: bool) -> int:
    """A conv layer's synapse and pool on ``n`` images, its input aside: ``ConvPoolFunction`` (spikebench's SNN:
    the arg-max only), conv + ``max_pool2d`` (ANN, snnTorch: the full output too) or, in spikebench's networks on
    the CPU where it pays, the tied-weight Linear + ``max_pool2d`` (its tap index and matrix too)."""
    kept = n * layer.neurons * INDEX_BYTES  # the 2x2 max-pool's arg-max
    tied = fused and _tied(layer, n, device)
    if ann or tied or not fused:
        kept += n * layer.conv_out * DTYPE_BYTES  # max_pool2d's input
    if tied:
        c_in, h, w = layer.in_shape
        kept += (h * w) ** 2 * INDEX_BYTES + layer.out_shape[0] * c_in * (h * w) ** 2 * DTYPE_BYTES
        kept += n * c_in * h * w * DTYPE_BYTES if ann else 0  # the input's (position, channel) copy (SNN: its input)
    return kept


def _loss_bytes(kind: str, batch: int, steps: int, padded: bool) -> int:
    if kind == "ann":  # cross-entropy: log-softmax output, int64 targets, a 0-dim total weight
        return batch * N_CLASSES * DTYPE_BYTES + batch * LABEL_BYTES + DTYPE_BYTES
    if padded:  # N-MNIST: the [T, B, 1] step mask, the squared error's base [B, 10], each sample's steps [B]
        return (steps * batch + batch * N_CLASSES + batch) * DTYPE_BYTES
    return 2 * batch * N_CLASSES * DTYPE_BYTES  # MSE of the spike counts: counts and targets


def saved_bytes(
    spec: NetworkSpec | Mapping[str, Any], steps: int, *, device: str = "cpu", active_inputs: int | None = None
) -> dict[str, int]:
    """Predicted bytes autograd keeps for backward in one float32 training batch of ``spec.batch_size`` x ``steps``,
    per layer (:func:`layers`' names) and ``loss`` (module docstring). ``device``: its type (the CPU's tied-weight
    convolutions, skipped input features and float dropout masks); ``active_inputs``: the input features that are
    non-zero in some sample of the batch (spikebench's SNN, CPU, fully connected; None: all)."""
    spec = as_spec(spec)
    device = str(device).split(":")[0]
    ann, fused = spec.kind == "ann", spec.implementation != "snntorch"
    t, batch = (1 if ann else int(steps)), int(spec.batch_size)
    n, mask = t * batch, (1 if device == "cuda" else DTYPE_BYTES)  # dropout's mask: bool on CUDA, float on the CPU
    net = layers(spec)
    out: dict[str, int] = {}
    for i, layer in enumerate(net):
        n_in = math.prod(layer.in_shape)
        if i == 0:  # the network's input, kept by the first synapse
            active = active_inputs if fused and not ann and not layer.conv else None
            kept = _input_bytes(n, n_in, device, active)
        else:  # the previous layer's spikes (SNN; ANN: its ReLU output, counted there), or the dropped ones
            kept = n * n_in * DTYPE_BYTES if not ann or layer.dropout_in else 0
        kept += n * n_in * mask if layer.dropout_in and not ann else 0
        kept += _conv_bytes(layer, n, device, ann, fused) if layer.conv else 0
        if not ann:  # the membrane [T, B, ...] (spikebench) or U - threshold and a scalar per step (snnTorch)
            kept += n * layer.neurons * DTYPE_BYTES + (0 if fused else t * SNNTORCH_STEP_SCALAR_BYTES)
        elif i < len(net) - 1:  # the ReLU's output, and the mask of a dropout after it
            kept += n * layer.neurons * (DTYPE_BYTES + (mask if net[i + 1].dropout_in else 0))
        out[layer.name] = kept
    out[LOSS] = _loss_bytes(spec.kind, batch, t, spec.dataset == "nmnist")
    return out


def _input_bytes(n: int, features: int, device: str, active: int | None) -> int:
    """spikebench's SNN's first layer's input: the whole input, or on the CPU (fully connected layers: ``active``
    given) the active columns and their index where at most 90% are active (``active_input_linear``)."""
    if device != "cpu" or active is None or active > 0.9 * features:
        return n * features * DTYPE_BYTES
    return n * active * DTYPE_BYTES + active * INDEX_BYTES


def activation_bytes(spec: NetworkSpec | Mapping[str, Any], steps: int, device: str = "cpu") -> int:
    """The floor of one training batch's activations kept for backprop, input batch included: :func:`saved_bytes`
    with every input feature counted (float32)."""
    return sum(saved_bytes(spec, steps, device=device).values())


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
