"""The network's layers as the profile names them, the forward hooks that mark them for the profiler, and the
arithmetic floor: each layer's matmul or convolution timed alone (:func:`arithmetic_floor`).

A *layer* is one synapse (Linear or Conv2d) with what follows it up to the next synapse: an SNN stage (synapse,
max-pool, LIF; both implementations), an ANN's Conv2d + MaxPool2d + ReLU or Linear (+ ReLU, dropout). Layers are
named by kind and position, ``conv1``, ``conv2``, ..., ``fc1``, ..., the same for an ANN and its SNN.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from spikebench.devices import autocast
from spikebench.profiling.events import LAYER_PREFIX, LIF_RANGE

#: Untimed calls of each layer's arithmetic before its timed repeats (kernel selection, allocator growth).
FLOOR_WARMUP = 1
#: Timed repeats stop once they took this long (seconds; at least one runs): the N-MNIST SNN's first
#: convolution at T*B = 3840 samples takes seconds per call on a CPU.
TIME_BUDGET_S = 3.0


@dataclass
class Layer:
    """One layer: its name, the modules whose forward hooks open and close its range, its synapse and LIF."""

    name: str
    first: nn.Module
    last: nn.Module
    synapse: nn.Module
    lif: nn.Module | None = None
    #: spikebench's SpikingStage: the synapse sees the stage input reshaped to [T*B, ...] (and flattened)
    stage: nn.Module | None = None


def _names(synapses: list[nn.Module]) -> list[str]:
    counts = {"conv": 0, "fc": 0}
    names = []
    for synapse in synapses:
        prefix = "conv" if isinstance(synapse, nn.Conv2d) else "fc"
        counts[prefix] += 1
        names.append(f"{prefix}{counts[prefix]}")
    return names


def network_layers(net: nn.Module) -> list[Layer]:
    """The layers of an spikebench ``SNN``, an snnTorch twin (``stages``) or an ``ANN`` (``layers``), in order."""
    from spikebench.models.snn import SpikingStage

    if hasattr(net, "stages"):
        stages = list(net.stages)
        names = _names([s.synapse for s in stages])
        return [
            Layer(name, s, s, s.synapse, s.lif, s if isinstance(s, SpikingStage) else None)
            for name, s in zip(names, stages)
        ]
    modules = list(net.layers)
    starts = [i for i, m in enumerate(modules) if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = _names([modules[i] for i in starts])
    bounds = [0, *starts[1:], len(modules)]  # leading modules (Flatten) join the first layer
    return [
        Layer(name, modules[lo], modules[hi - 1], modules[start])
        for name, start, lo, hi in zip(names, starts, bounds[:-1], bounds[1:])
    ]


class _Range:
    """A ``record_function`` range opened by one hook and closed by another (a stack: a twin's stage runs once
    per time step, each call its own range)."""

    def __init__(self, name: str) -> None:
        self.name, self.open = name, []

    def enter(self, module, args) -> None:
        ctx = torch.autograd.profiler.record_function(self.name)
        ctx.__enter__()
        self.open.append(ctx)

    def exit(self, module, args, output) -> None:
        if self.open:
            self.open.pop().__exit__(None, None, None)


@contextlib.contextmanager
def marked(layers: list[Layer]) -> Iterator[None]:
    """Forward hooks that open a range per layer (:data:`LAYER_PREFIX`) and per LIF module (:data:`LIF_RANGE`)."""
    handles = []
    try:
        for layer in layers:
            pairs = [(_Range(LAYER_PREFIX + layer.name), layer.first, layer.last)]
            if layer.lif is not None:
                pairs.append((_Range(LIF_RANGE), layer.lif, layer.lif))
            for rng, first, last in pairs:
                handles.append(first.register_forward_pre_hook(rng.enter))
                handles.append(last.register_forward_hook(rng.exit))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _stage_input(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What spikebench's SpikingStage gives its synapse: the input's T*B samples (flattened where it flattens)."""
    z = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    return z.reshape(z.shape[0], -1) if stage.flatten else z


def synapse_inputs(net: nn.Module, layers: list[Layer], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's synapse input for the network input ``x`` (one forward pass without gradients): for an SNN
    all T*B samples at once, as spikebench's layers see them (an snnTorch twin's T per-step inputs joined)."""
    seen: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    handles = []

    def capture(layer: Layer):
        def hook(module, args) -> None:
            z = _stage_input(module, args[0]) if layer.stage is not None else args[0]
            seen[layer.name].append(z.detach())

        return hook

    try:
        for layer in layers:
            handles.append((layer.stage or layer.synapse).register_forward_pre_hook(capture(layer)))
        with torch.no_grad(), autocast(x.device):
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(zs) if len(zs) > 1 else zs[0] for name, zs in seen.items() if zs}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_synapse(synapse: nn.Module, x: torch.Tensor, input_grad: bool, repeats: int) -> tuple[float, float, int]:
    """(forward s, backward s, repeats): medians over ``repeats`` synchronised calls of ``synapse(x)`` and of its
    backward (weight and bias gradients, and the input gradient with ``input_grad``), after :data:`FLOOR_WARMUP`
    untimed ones, fewer where they exceed :data:`TIME_BUDGET_S`. Gradients go to ``torch.autograd.grad``'s
    results: no parameter's ``.grad`` changes."""
    device = x.device
    x = x.detach().requires_grad_(input_grad)
    wrt = ([x] if input_grad else []) + [p for p in synapse.parameters() if p.requires_grad]
    with autocast(device):
        grad_out = torch.randn_like(synapse(x))
    forward, backward = [], []
    for i in range(FLOOR_WARMUP + max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device):
            out = synapse(x)
        _sync(device)
        t1 = time.perf_counter()
        torch.autograd.grad(out, wrt, grad_out)
        _sync(device)
        t2 = time.perf_counter()
        if i >= FLOOR_WARMUP:
            forward.append(t1 - t0)
            backward.append(t2 - t1)
            if sum(forward) + sum(backward) > TIME_BUDGET_S:
                break
    return statistics.median(forward), statistics.median(backward), len(forward)


def arithmetic_floor(net: nn.Module, x: torch.Tensor, *, repeats: int = 3) -> dict:
    """The arithmetic floor of one training step of ``net`` on the network input ``x``.

    Each layer's synapse (its matmul or convolution: what an ANN of the same shapes also computes) is timed
    alone at the shape it sees in the step (an SNN's T*B samples in one call), forward and backward (weight and
    bias gradients; the input gradient for every layer but the first, whose input is data), synchronised,
    median of ``repeats`` (fewer beyond :data:`TIME_BUDGET_S`; :func:`time_synapse`). Dense arithmetic: where
    spikebench's CPU kernels skip zeros (event-driven convolutions, the first Linear's never-active inputs) the
    layer's real time can be below it.

    Returns ``{"layers": {name: {forward_s, backward_s, floor_s, repeats, input_shape, input_grad}},
    "floor_s": total}``."""
    layers = network_layers(net)
    inputs = synapse_inputs(net, layers, x)
    out = {}
    for i, layer in enumerate(layers):
        z = inputs[layer.name]
        fwd, bwd, n = time_synapse(layer.synapse, z, i > 0, repeats)
        out[layer.name] = {
            "forward_s": fwd,
            "backward_s": bwd,
            "floor_s": fwd + bwd,
            "repeats": n,
            "input_shape": list(z.shape),
            "input_grad": i > 0,
        }
    return {"layers": out, "floor_s": sum(v["floor_s"] for v in out.values())}
