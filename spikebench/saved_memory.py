"""What autograd keeps for backward in one training batch, measured: ``saved_for_backward_mib`` and its layers.

Every tensor that an autograd node saves for its backward pass goes through the pack hook of
``torch.autograd.graph.saved_tensors_hooks``; :class:`SavedTensorMeter` counts each one's storage once (keyed by
device and ``untyped_storage().data_ptr()``: a view and its base, e.g. a reshaped spike train that two ops save,
share one storage and count once, at the storage's full ``nbytes()``). The network's parameters are not counted:
autograd saves references to them (a Linear keeps its weight for the input gradient), but they are resident anyway,
and the weights' gradients, the optimiser state, the dataset and the allocator's overhead are not what this
counts either. A weight's cast copy under autocast (precision bf16) is counted: it lives only for the batch.
A storage counts only while autograd holds it: the pack hook hands autograd the storage and view (no reference to
the tensor, so no cycle through a saved output's own node) and the count is read when backward starts, so what a
graph dropped before backward saved (snnTorch's detached reset term) is not in it. A tensor in a pooled CPU buffer
(``spikebench.buffers``) counts at its own size, not at the pool buffer's rounded-up size.

Custom autograd Functions go through the hooks only for the tensors they pass to ``ctx.save_for_backward``. Those
of spikebench's SNNs do so for every tensor they keep (``LeakyFunction``: the membrane; ``ConvPoolFunction``:
input, weight and the pool's arg-max; snnTorch's ``ATan`` surrogate: its input); their other ``ctx`` attributes
are Python scalars, the memory format and the conv size, no tensors. A Function that stashed a tensor as a plain
``ctx`` attribute would be missed by this count; :func:`ctx_tensor_attributes` checks for that (tested).

Per layer. Forward pre/post hooks on the network's top-level layers say which layer runs when a tensor is saved;
the layers are named as :func:`spikebench.memory_estimate.layer_neurons` names them (``fc1``, ``conv1``, ...; an
ANN's ReLU, max-pool, flatten and dropout belong to the synapse they follow, a leading flatten to the first).
A storage counts for the first layer that saves it (an SNN layer's spikes are saved by the next layer's synapse,
so they count there, as its input). What is saved outside every layer, the loss's inputs, goes to ``loss``.

The measurement runs in the untimed warm-up (:func:`spikebench.training.warm_up`), on one batch of the run's batch
size; on CUDA it sits beside ``activation_peak_mib`` (the allocator's peak over the training phase), which is a
different quantity: the peak also holds the backward pass's and the kernels' temporaries and the gradients.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from spikebench.devices import autocast
from spikebench.memory_estimate import layer_neurons, saved_bytes
from spikebench.spec import as_spec

MIB = 2**20
#: The bucket of what is saved outside every layer of the network (the loss and its targets).
OUTSIDE = "loss"


def top_layers(net: nn.Module, names: list[str]) -> list[tuple[str, nn.Module]]:
    """(layer name, module) of the network's top-level layers: an SNN's stages (spikebench's and the snnTorch twin's)
    one to one with ``names``; an ANN's Sequential, each module under the name of the synapse (Linear/Conv2d) it
    belongs to (the one it follows; a leading flatten, the first)."""
    if hasattr(net, "stages"):
        return list(zip(names, net.stages, strict=True))
    synapses = [isinstance(module, (nn.Linear, nn.Conv2d)) for module in net.layers]
    if sum(synapses) != len(names):
        raise ValueError(f"{type(net).__name__}: {sum(synapses)} synapses, but layers {names}")
    out, k = [], 0
    for module, synapse in zip(net.layers, synapses):
        k += synapse
        out.append((names[max(k, 1) - 1], module))
    return out


class _Saved:
    """What the pack hook hands autograd instead of the tensor: its storage and view, no reference to the tensor
    itself (a saved output would otherwise form a cycle with its own node, which keeps a dropped graph alive). It
    lives exactly as long as autograd keeps it (its node's backward ran, or its graph was dropped) and tells the
    meter when it goes; unpacking rebuilds the same view of the same storage."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: SavedTensorMeter, key: tuple[str, int]) -> None:
        self.storage, self.offset, self.dtype = tensor.untyped_storage(), tensor.storage_offset(), tensor.dtype
        self.size, self.stride = tensor.size(), tensor.stride()
        self.meter, self.key = meter, key

    def tensor(self) -> torch.Tensor:
        out = torch.empty(0, dtype=self.dtype, device=self.storage.device)
        return out.set_(self.storage, self.offset, self.size, self.stride)

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Counts the storages autograd keeps for backward while it is active (``with meter.active(): ...``).

    A storage counts while some autograd node still holds it: what a graph that is dropped before backward saved
    (snnTorch's reset term, a detached spike) is not kept for backward, and its address may be reused. The
    figure is read when backward starts (the first unpack): everything the forward pass and the loss saved."""

    def __init__(self, net: nn.Module, names: list[str]) -> None:
        self.net, self.layers = net, top_layers(net, names)
        self.names = list(dict.fromkeys(name for name, _ in self.layers))
        self.params = {_key(p) for p in net.parameters()}
        self.live: dict[tuple[str, int], list] = {}  # storage -> [holders, bytes, layer]
        self.at_backward: dict[str, int] | None = None
        self.current: str | None = None

    def _pack(self, tensor: torch.Tensor) -> Any:
        key = _key(tensor)
        if key in self.params:
            return tensor
        entry = self.live.setdefault(key, [0, tensor.untyped_storage().nbytes(), self.current or OUTSIDE])
        entry[0] += 1
        return _Saved(tensor, self, key)

    def _unpack(self, saved: Any) -> torch.Tensor:
        if not isinstance(saved, _Saved):
            return saved
        if self.at_backward is None:
            self.at_backward = self.kept()
        return saved.tensor()

    def _release(self, key: tuple[str, int]) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] <= 0:
                del self.live[key]

    def kept(self) -> dict[str, int]:
        """Bytes per layer of the storages autograd holds now."""
        out: dict[str, int] = {}
        for _, nbytes, layer in self.live.values():
            out[layer] = out.get(layer, 0) + nbytes
        return out

    def _enter(self, name: str):
        def hook(module, args):
            self.current = name

        return hook

    def _leave(self, module, args, output) -> None:
        self.current = None

    @contextmanager
    def active(self) -> Iterator[SavedTensorMeter]:
        handles = []
        for name, module in self.layers:
            handles.append(module.register_forward_pre_hook(self._enter(name)))
            handles.append(module.register_forward_hook(self._leave))
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                yield self
        finally:
            for handle in handles:
                handle.remove()
            self.current = None

    def record(self) -> dict[str, Any]:
        """``saved_for_backward_mib`` and ``saved_for_backward_layers_mib`` (JSON: layer -> MiB, ``loss`` last), as
        backward found them; null with the reason where no backward ran under the meter."""
        if self.at_backward is None:
            return unmeasured("no backward pass ran while the saved tensors were counted")
        layers = {name: self.at_backward.get(name, 0) / MIB for name in [*self.names, OUTSIDE]}
        return {
            "saved_for_backward_mib": sum(self.at_backward.values()) / MIB,
            "saved_for_backward_layers_mib": json.dumps(layers),
            "saved_for_backward_null_reason": None,
        }


def _key(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def unmeasured(reason: str) -> dict[str, Any]:
    """The record where nothing was measured (nor predicted): null figures, with the reason."""
    return {
        "saved_for_backward_mib": None,
        "saved_for_backward_layers_mib": None,
        "saved_for_backward_null_reason": reason,
        "saved_for_backward_predicted_mib": None,
        "saved_for_backward_predicted_null_reason": reason,
    }


#: The per-run columns of the epochs table that :func:`measure_step` fills (every row of a run the same).
COLUMNS = (
    "saved_for_backward_mib",
    "saved_for_backward_layers_mib",
    "saved_for_backward_null_reason",
    "saved_for_backward_predicted_mib",
    "saved_for_backward_predicted_null_reason",
)


def measure_step(net: nn.Module, spec, x: torch.Tensor, step: Callable[[], Any]) -> dict[str, Any]:
    """Run ``step()`` (one training step on the input batch ``x``) with the saved tensors counted; the measured
    record (:meth:`SavedTensorMeter.record`) and the model's prediction for the same batch (:func:`predicted`)."""
    meter = SavedTensorMeter(net, [name for name, _, _ in layer_neurons(spec)])
    with meter.active():
        step()
    return {**meter.record(), **predicted(spec, x)}


def predicted(spec, x: torch.Tensor) -> dict[str, Any]:
    """``saved_for_backward_predicted_mib``: :func:`spikebench.memory_estimate.saved_bytes` for the batch ``x``
    (its time steps; on the CPU, for spikebench's fully connected SNN, its input features that are non-zero in some
    sample); null with the reason under precision bf16, which the float32 model does not cover."""
    spec = as_spec(spec)
    if isinstance(autocast(x.device), torch.autocast):
        return {
            "saved_for_backward_predicted_mib": None,
            "saved_for_backward_predicted_null_reason": "precision bf16: the model of saved tensors is float32's",
        }
    steps = int(x.shape[0]) if spec.kind == "snn" else 1
    active = None
    if spec.kind == "snn" and spec.architecture == "fc" and x.device.type == "cpu":
        active = int(x.reshape(-1, math.prod(spec.input_shape)).ne(0).any(0).sum())
    total = sum(saved_bytes(spec, steps, device=x.device.type, active_inputs=active).values())
    return {"saved_for_backward_predicted_mib": total / MIB, "saved_for_backward_predicted_null_reason": None}


def ctx_tensor_attributes(function: type[torch.autograd.Function], *args) -> list[str]:
    """The ``ctx`` attributes holding tensors after ``function``'s forward on ``args`` (the ones the hooks would
    miss), found by running it under a graph; [] for every custom Function of spikebench's networks (tested)."""
    found: list[str] = []

    class Probe(function):  # type: ignore[misc, valid-type]
        @staticmethod
        def backward(ctx, *grads):
            found.extend(k for k, v in vars(ctx).items() if isinstance(v, torch.Tensor))
            return function.backward(ctx, *grads)

    out = Probe.apply(*args)
    first = out[0] if isinstance(out, tuple) else out
    first.sum().backward()
    return found
