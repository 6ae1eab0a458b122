"""Operation counts of a network on the test set (activation sparsity, synaptic operations, footprint).

Counted exactly, from the tensors the evaluation computes (forward hooks that read a layer's input and output;
nothing is written back, so predictions do not change), on every test sample, with NeuroBench's definitions
(``neurobench`` 2.3.0, ``metrics/utils/layers/macs.py``, ``metrics/workload/*``, ``metrics/static/*``):

- **synaptic operations** of a Linear or Conv2d layer: the products (weight != 0) x (input != 0) that its
  computation contains, the bias not counted. Counted as **effective ACs** when the layer's input holds only
  0 and 1 (spikes: an accumulate per connection carrying a spike), else as **effective MACs** (ANN layers,
  an SNN's first layer fed with event-count frames). NeuroBench also takes -1 as a spike; spikebench's inputs
  are never negative. **Dense** ops count every connection at every time step
  (all weights and inputs taken as 1), what a dense implementation executes. A convolution counts each
  kernel tap that reaches the input: products with the zero padding are not counted; max-pooling costs nothing.
- **activation sparsity**: zero activations / activations, over the neurons of the activation layers (LIF
  layers of an SNN; ReLUs of an ANN: the fraction of zero ReLU outputs), time steps and samples.
- **firing rate** (SNN): spikes per neuron per time step.
- **membrane updates** (SNN): neurons x time steps (each LIF neuron integrates once per step). NeuroBench's
  ``MembraneUpdates`` counts something else (steps where the reset changed a membrane, plus the first step), so
  it is not compared.
- **footprint**: bytes of parameters and buffers; **connection sparsity**: zero weights / weights of the
  Linear and Conv2d layers.

For N-MNIST (batches padded at the end) only the steps t < n_steps[b] of each sample are counted: padding is
an artefact of batching, not of the network. Differences from NeuroBench's per-step snnTorch run: NeuroBench
decides ACs vs MACs per call (one time step of one batch), spikebench per batch over all its steps; an SNN's
inner layers see spikes only, so only its first layer can differ, and only for inputs that are binary at some
steps and not at others.

The energy model that turns these counts into joules is :mod:`spikebench.energy`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFINITIONS = (
    "NeuroBench 2.3.0 definitions: synaptic ops = products (weight != 0) x (input != 0), bias not "
    "counted; ACs where a layer's input is binary (spikes), MACs otherwise; conv taps on padding not "
    "counted; pooling free; N-MNIST padding steps not counted"
)


# --------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------
class _Layer:
    """Device-side running counts of one weight layer (and the activation that follows it).

    Nothing here reads a value back to the host during the run (no GPU sync per batch); :meth:`row` does, once.
    """

    def __init__(self, index: int, synapse: nn.Module, spiking: bool) -> None:
        self.index, self.synapse, self.spiking = index, synapse, spiking
        self.nz_ac = None  # [features...] non-zero inputs per input position, batches counted as ACs
        self.nz_mac = None  # ... batches counted as MACs
        self.in_shape: tuple[int, ...] | None = None
        self.neurons: int | None = None
        self.out_nz = None  # non-zero activations (spikes)
        self.sparse: bool | None = None  # first-layer input counted from its non-zero positions (CPU)

    def add_input(self, x: torch.Tensor, n_lead: int, mask: torch.Tensor | None, ops: str) -> None:
        """Count the non-zero inputs of ``x [lead..., features...]`` (``n_lead`` leading dims; ``mask`` [T, B]: the
        real steps) as ``ops``: "ac" (``x`` holds spikes, 0/1), "mac", or "check" (ACs if every value is 0 or 1)."""
        rows = x.reshape(math.prod(x.shape[:n_lead]), -1)
        weights = _row_weights(rows, mask)
        if self.nz_ac is None:
            self.in_shape = tuple(x.shape[n_lead:])
            self.nz_ac = torch.zeros(rows.shape[1], dtype=torch.float64, device=x.device)
            self.nz_mac = torch.zeros_like(self.nz_ac)
        if ops == "ac":  # spikes: the sum of each column is its number of non-zeros
            self.nz_ac += (weights @ rows.float()).squeeze(0)
        elif ops == "mac":
            self.nz_mac += (weights @ (rows != 0).float()).squeeze(0)
        else:
            counts, binary, self.sparse = _nonzero_counts(rows, weights, self.sparse)
            self.nz_ac += torch.where(binary, counts, 0.0)
            self.nz_mac += torch.where(binary, 0.0, counts)

    def add_output(self, out: torch.Tensor, n_lead: int, mask: torch.Tensor | None, count: bool = True) -> None:
        """Count the non-zero outputs (``count`` False: only note the layer's size; the spikes are counted as the
        next layer's input, see :meth:`OperationCounter.layer_rows`)."""
        self.neurons = math.prod(out.shape[n_lead:])
        if not count:
            return
        rows = out.reshape(math.prod(out.shape[:n_lead]), -1)
        if self.spiking:
            nz = (_row_weights(rows, mask) @ rows.float()).double().sum()
        else:
            nz = torch.count_nonzero(rows)
        self.out_nz = nz if self.out_nz is None else self.out_nz + nz

    def _ops(self, counts: torch.Tensor, ones_weights: bool) -> int:
        """Products (weight != 0) x (input != 0) summed over the inputs whose non-zero counts are ``counts``
        (``ones_weights``: every weight counts)."""
        w = self.synapse.weight.detach().cpu()
        w = torch.ones_like(w, dtype=torch.float64) if ones_weights else (w != 0).double()
        counts = counts.detach().cpu().double()  # integers: exact in float64 up to 2**53
        if isinstance(self.synapse, nn.Conv2d):
            out = F.conv2d(
                counts.reshape(1, *self.in_shape),
                w,
                None,
                self.synapse.stride,
                self.synapse.padding,
                self.synapse.dilation,
                self.synapse.groups,
            )
            return int(round(out.sum().item()))
        return int(round((w.sum(0) * counts.reshape(-1)).sum().item()))

    def row(self, n_samples: int, total_steps: int) -> dict[str, Any]:
        """The per-layer counts (``total_steps``: real sample-steps; ANN: samples). Ints exact; per sample floats."""
        syn = self.synapse
        kind = "conv" if isinstance(syn, nn.Conv2d) else "linear"
        shape = (
            f"{syn.in_channels}->{syn.out_channels} {syn.kernel_size[0]}x{syn.kernel_size[1]} pad {syn.padding[0]}"
            if kind == "conv"
            else f"{syn.in_features}->{syn.out_features}"
        )
        seen = self.in_shape is not None
        macs = self._ops(self.nz_mac, False) if seen else 0
        acs = self._ops(self.nz_ac, False) if seen else 0
        dense = self._ops(torch.full(self.in_shape, total_steps), True) if seen else 0
        out_nz = int(round(self.out_nz.item())) if self.out_nz is not None else None
        activations = self.neurons * total_steps if out_nz is not None else None
        per = 1.0 / max(n_samples, 1)
        sparsity = 1.0 - out_nz / activations if activations else None
        if self.neurons is not None:
            neurons = self.neurons
        else:  # an ANN's output layer: no activation after it
            neurons = syn.out_channels if kind == "conv" else syn.out_features
        return {
            "layer": self.index,
            "synapse": kind,
            "shape": shape,
            "neurons": neurons,
            "time_steps_per_sample": total_steps * per if self.spiking else 1.0,
            "activations": activations,
            "nonzero_activations": out_nz,
            "spikes_per_sample": out_nz * per if self.spiking and out_nz is not None else None,
            "firing_rate": out_nz / activations if self.spiking and activations else None,
            "activation_sparsity": sparsity,
            "zero_relu_fraction": sparsity if not self.spiking else None,
            "dense_ops_per_sample": dense * per,
            "effective_macs_per_sample": macs * per,
            "effective_acs_per_sample": acs * per,
            "membrane_updates_per_sample": neurons * total_steps * per if self.spiking else None,
            "parameters": sum(p.numel() for p in syn.parameters()),
            "footprint_bytes": _footprint(syn),
            "connection_sparsity": int((syn.weight == 0).sum().item()) / syn.weight.numel(),
        }


def _row_weights(rows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[1, N]`` float32: 1 for the rows (sample-steps) that count, 0 for padding. Column sums of 0/1 values as
    ``weights @ rows`` (a matrix-vector product, several times faster than a boolean reduction on the CPU) are
    exact in float32 up to 2**24 rows per batch; they are accumulated in float64."""
    if mask is None:
        return rows.new_ones(1, rows.shape[0], dtype=torch.float32)
    return mask.reshape(1, -1).float()


#: On the CPU a first-layer input with fewer non-zeros than this fraction is counted from its non-zero positions
#: (N-MNIST frames, ~0.5%); denser ones (rate-coded images, 13-50%) by matrix-vector products.
SPARSE_COUNT_DENSITY = 0.02


def _nonzero_counts(
    rows: torch.Tensor, weights: torch.Tensor, sparse: bool | None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Non-zeros per column of ``rows [N, F]`` (float64 [F], rows weighted by ``weights``), whether every value
    is 0 or 1 (a bool tensor), and whether the input is sparse (``sparse``: decided on an earlier batch, None: now).
    On a GPU without reading anything back to the host; on the CPU a sparse input (N-MNIST frames) is counted
    from its non-zero positions, a dense one by matrix-vector products."""
    if rows.device.type != "cpu":
        indicator = (rows != 0).float()
        return (weights @ indicator).squeeze(0).double(), (indicator == rows).all(), False
    nnz = None
    if sparse is None:
        nnz = int(torch.count_nonzero(rows))
        sparse = nnz <= SPARSE_COUNT_DENSITY * rows.numel()
    if sparse:
        flat = rows.reshape(-1)
        where = flat.nonzero().squeeze(1)
        binary = bool((flat[where] == 1).all())
        counts = torch.bincount(
            where % rows.shape[1], weights=weights[0, where // rows.shape[1]].double(), minlength=rows.shape[1]
        )
        return counts, torch.tensor(binary), sparse
    nnz = int(torch.count_nonzero(rows)) if nnz is None else nnz
    binary = int(torch.count_nonzero(rows == 1)) == nnz
    counts = weights @ (rows.float() if binary else (rows != 0).float())
    return counts.squeeze(0).double(), torch.tensor(binary), sparse


def _footprint(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


class OperationCounter:
    """Forward hooks on an ``SNN``'s stages or an ``ANN``'s Linear/Conv2d/ReLU modules that count operations.

    Use as a context manager around the evaluation; call :meth:`begin_batch` with each batch's ``n_steps``
    (None: all steps are real) before its forward pass. The hooks only read tensors.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net, self.kind = net, net.kind
        self.layers: list[_Layer] = []
        self.handles: list[Any] = []
        self.mask: torch.Tensor | None = None
        self.n_samples = 0
        self.total_steps = 0  # sum over samples of their (real) time steps
        self.padded_steps: list[torch.Tensor] = []
        self._steps: list[int] = []  # per layer: time steps seen in this batch (a per-step network's calls)
        if self.kind == "snn":
            # spikebench's stages see all time steps at once; the snnTorch twin's stages one step per call
            per_step = getattr(net, "implementation", "spikebench") == "snntorch"
            for i, stage in enumerate(net.stages):
                layer = _Layer(i, stage.synapse, spiking=True)
                self.layers.append(layer)
                hook = self._step_hook(layer) if per_step else self._stage_hook(layer)
                self.handles.append(stage.register_forward_hook(hook))
            self._steps = [0] * len(self.layers)
        else:
            self._hook_ann(net.layers)

    def _hook_ann(self, seq: nn.Sequential) -> None:
        for module in seq:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                layer = _Layer(len(self.layers), module, spiking=False)
                self.layers.append(layer)
                # ANN layers count MACs (NeuroBench would count ACs for a batch whose inputs are all 0/1/-1)
                self.handles.append(
                    module.register_forward_pre_hook(
                        lambda m, args, layer=layer: layer.add_input(args[0], 1, None, "mac")
                    )
                )
            elif isinstance(module, nn.ReLU) and self.layers:
                layer = self.layers[-1]
                self.handles.append(
                    module.register_forward_hook(lambda m, a, out, layer=layer: layer.add_output(out, 1, None))
                )

    def _stage_hook(self, layer: _Layer):
        def hook(stage: nn.Module, args: tuple, output: tuple) -> None:
            x, spk = args[0], output[0]  # [T, B, ...]
            if stage.flatten:
                x = x.reshape(x.shape[0], x.shape[1], -1)
            layer.add_input(x, 2, self.mask, "check" if layer.index == 0 else "ac")  # inner layers get spikes
            layer.add_output(spk, 2, self.mask, count=layer.index == len(self.layers) - 1)

        return hook

    def _step_hook(self, layer: _Layer):
        """The same counts for a stage called once per time step (``x [B, ...]``): step t of the batch's mask."""

        def hook(stage: nn.Module, args: tuple, output: tuple) -> None:
            step = self._steps[layer.index]
            self._steps[layer.index] += 1
            x, spk = args[0], output[0]  # [B, ...]
            if stage.flatten:
                x = x.flatten(1)
            mask = self.mask[step : step + 1] if self.mask is not None else None
            layer.add_input(x.unsqueeze(0), 2, mask, "check" if layer.index == 0 else "ac")
            layer.add_output(spk.unsqueeze(0), 2, mask, count=layer.index == len(self.layers) - 1)

        return hook

    def begin_batch(self, n_steps: torch.Tensor | None, batch: int, total_steps: int = 1) -> None:
        """Before each forward pass: ``n_steps [B]`` of a padded batch (else None), its size and T."""
        self._steps = [0] * len(self.layers)
        self.n_samples += batch
        if self.kind != "snn":
            self.total_steps += batch
            return
        if n_steps is None:
            self.mask = None
            self.total_steps += batch * total_steps
        else:
            from spikebench.models import step_mask

            self.mask = step_mask(n_steps, total_steps)
            self.padded_steps.append(n_steps.sum())  # summed at the end: no host sync per batch

    def __enter__(self) -> OperationCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def layer_rows(self) -> list[dict[str, Any]]:
        """One dict of counts per weight layer, in order (reads the device counts: call after the run)."""
        self.total_steps += sum(int(s.item()) for s in self.padded_steps)
        self.padded_steps.clear()
        if self.kind == "snn":
            # an SNN layer's spikes are the next layer's whole input (same steps counted): its non-zeros
            for layer, following in zip(self.layers[:-1], self.layers[1:]):
                if following.nz_ac is not None:
                    layer.out_nz = following.nz_ac.sum() + following.nz_mac.sum()
        return [layer.row(self.n_samples, self.total_steps) for layer in self.layers]

    def summary(self, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The network's totals per test sample (test.json ``operations``)."""
        rows = self.layer_rows() if rows is None else rows
        return summarize(rows, self.net, self.kind, self.n_samples, self.total_steps)


def summarize(
    rows: list[dict[str, Any]], net: nn.Module, kind: str, n_samples: int, total_steps: int
) -> dict[str, Any]:
    """Network totals of the per-layer ``rows``."""

    def total(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return float(sum(values)) if values else None

    acts = [r for r in rows if r["activations"]]
    n_act = sum(r["activations"] for r in acts)
    n_nz = sum(r["nonzero_activations"] for r in acts)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    n_weights = sum(w.numel() for w in weights)
    return {
        "n_samples": n_samples,
        "time_steps_per_sample": total_steps / max(n_samples, 1) if kind == "snn" else 1.0,
        "dense_ops_per_sample": total("dense_ops_per_sample"),
        "effective_macs_per_sample": total("effective_macs_per_sample"),
        "effective_acs_per_sample": total("effective_acs_per_sample"),
        "effective_ops_per_sample": total("effective_macs_per_sample") + total("effective_acs_per_sample"),
        "membrane_updates_per_sample": total("membrane_updates_per_sample"),
        "spikes_per_sample": total("spikes_per_sample"),
        "activation_sparsity": 1.0 - n_nz / n_act if n_act else None,
        "mean_firing_rate": n_nz / n_act if kind == "snn" and n_act else None,
        "footprint_bytes": _footprint(net),
        "parameters": sum(p.numel() for p in net.parameters()),
        "connection_sparsity": sum(int((w == 0).sum().item()) for w in weights) / n_weights if n_weights else None,
        "definitions": DEFINITIONS,
    }


#: Columns of ``layers.parquet``, in order (units: counts per sample unless named otherwise).
LAYER_COLUMNS = (
    "network",
    "kind",
    "layer",
    "synapse",
    "shape",
    "neurons",
    "time_steps_per_sample",
    "activations",
    "nonzero_activations",
    "spikes_per_sample",
    "firing_rate",
    "activation_sparsity",
    "zero_relu_fraction",
    "dense_ops_per_sample",
    "effective_macs_per_sample",
    "effective_acs_per_sample",
    "membrane_updates_per_sample",
    "parameters",
    "footprint_bytes",
    "connection_sparsity",
)


INT_COLUMNS = ("neurons", "activations", "nonzero_activations", "parameters", "footprint_bytes")


def write_layers(rows: list[dict[str, Any]], path, *, network: str, kind: str) -> None:
    """The per-layer counts as ``layers.parquet`` (written to a temporary name, then renamed)."""
    from pathlib import Path

    import pandas as pd

    from spikebench import atomic

    table = pd.DataFrame([{"network": network, "kind": kind, **row} for row in rows], columns=list(LAYER_COLUMNS))
    for column in LAYER_COLUMNS[5:]:  # numbers; None (not applicable) -> null, never 0
        table[column] = table[column].astype("Int64" if column in INT_COLUMNS else "float64")
    atomic.write_parquet(table, Path(path))
