"""From torch.profiler's events to time per phase, layer and op kind (:func:`breakdown`).

The profiled step opens one ``record_function`` range per phase (:data:`PHASE_PREFIX`), one per layer
(:data:`LAYER_PREFIX`, opened and closed by forward hooks, :mod:`spikebench.profiling.layers`), one around each
LIF neuron module (:data:`LIF_RANGE`) and one around the loss (:data:`LOSS_RANGE`). Every event's *self* time
(its time minus its children's: CPU time on the CPU, CUDA kernel time on a GPU) goes to exactly one row, so a
phase's rows add up to the phase's range: its shares sum to 100%.

Op kind of an event, walking down the tree from its phase range: inside a *sticky* range or Function (a LIF
neuron, spikebench's fused ``LeakyFunction`` and its backward, the loss, the optimiser, the data preparation)
everything is that kind; otherwise the event's own name decides where it is recognised (aten ``mm``/``addmm``/
``convolution``/``mkldnn_convolution``, ``max_pool2d...``, ``relu``...), else it inherits its parent's kind
(the ``aten::empty`` inside ``ConvPoolFunction`` is convolution; the numba event-driven convolution runs as the
Function's self time, also convolution).

Backward. The autograd engine records each node as ``autograd::engine::evaluate_function: <Name>Backward`` with the
*sequence number* of the forward op that made the node; the forward op with that number (the last one recorded
with it: ops that make no node carry the number of the next node) gives the node its layer and, for a sticky
kind, its op kind (snnTorch's LIF is plain aten ops: their ``MulBackward0`` nodes are LIF by their forward op).
What this cannot attribute: ``AccumulateGrad`` nodes (the write of each parameter's ``.grad``, no forward op)
and the engine's own time between nodes go to layer ``(unattributed)``, op kind ``other``; a forward op that
ran outside every layer range (the SNN's input reshape) to ``(network)``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace

PHASE_PREFIX = "spikebench.phase:"
LAYER_PREFIX = "spikebench.layer:"
LIF_RANGE = "spikebench.lif"
LOSS_RANGE = "spikebench.loss"
ENGINE_PREFIX = "autograd::engine::evaluate_function"

#: The phases of one training step, in order: the batch's encoding (rate coding, N-MNIST densification), the
#: forward pass with the loss, the backward pass, the optimiser (``zero_grad`` and ``step``).
PHASES = ("data", "forward", "backward", "step")
#: The op kinds, in the order of the figure's stacks.
KINDS = (
    "matmul/conv",
    "LIF recurrence",
    "pooling",
    "ReLU/dropout",
    "loss",
    "optimiser",
    "data preparation",
    "other",
)
#: Layers that are no layer of the network.
DATA_LAYER, LOSS_LAYER, OPTIMISER_LAYER = "(data)", "(loss)", "(optimiser)"
NETWORK_LAYER, UNATTRIBUTED_LAYER = "(network)", "(unattributed)"

# (pattern of the lower-cased event name, op kind): everything inside such an event is of its kind.
_STICKY = (
    (re.compile(re.escape(LIF_RANGE) + "|leakyfunction"), "LIF recurrence"),
    (re.compile(re.escape(LOSS_RANGE)), "loss"),
    (re.compile(r"^optimizer\."), "optimiser"),
)
# (pattern, op kind): the event's own kind; its children inherit it unless they match one themselves.
_OWN = (
    (re.compile(r"max_?pool|avg_?pool|maxpool"), "pooling"),
    (re.compile(r"addmm|addmv|baddbmm|(^|[^a-z])b?mm(backward|$|[^a-z])|matmul|linear|conv|einsum"), "matmul/conv"),
    (re.compile(r"relu|threshold_backward|dropout|bernoulli"), "ReLU/dropout"),
    (re.compile(r"mse_loss|cross_entropy|nll_loss|log_softmax"), "loss"),
    (re.compile(r"_foreach_|_fused_adam|adam"), "optimiser"),
)
# Each phase's starting context: (layer, op kind, sticky).
_PHASE_CONTEXT = {
    "data": (DATA_LAYER, "data preparation", True),
    "forward": (NETWORK_LAYER, "other", False),
    "backward": (UNATTRIBUTED_LAYER, "other", False),
    "step": (OPTIMISER_LAYER, "optimiser", True),
}


@dataclass(frozen=True)
class Context:
    """Where an event sits: its phase, layer and op kind, and whether that kind holds for all inside it."""

    phase: str
    layer: str
    kind: str
    sticky: bool


def classify(name: str, ctx: Context) -> Context:
    """The context of an event named ``name`` inside ``ctx`` (see the module docstring)."""
    low = name.lower()
    if name.startswith(LAYER_PREFIX):
        ctx = replace(ctx, layer=name[len(LAYER_PREFIX) :])
    elif name == LOSS_RANGE:
        ctx = replace(ctx, layer=LOSS_LAYER)
    if ctx.sticky:
        return ctx
    for pattern, kind in _STICKY:
        if pattern.search(low):
            return replace(ctx, kind=kind, sticky=True)
    for pattern, kind in _OWN:
        if pattern.search(low):
            return replace(ctx, kind=kind)
    return ctx


def _self_time_us(event, cuda: bool) -> float:
    return float(event.self_device_time_total if cuda else event.self_cpu_time_total)


def _roots(events) -> list[tuple[str, object]]:
    """(phase, event) of every top-level event that opens a phase: the phase ranges, and the autograd engine's
    nodes where the engine runs on a thread of its own (CUDA); other top-level events (worker threads) lie
    inside the time of an op that is counted."""
    roots = []
    for event in events:
        # top level: no parent, or the range torch.profiler's schedule opens around each step
        if event.cpu_parent is not None and not event.cpu_parent.name.startswith("ProfilerStep"):
            continue
        if event.name.startswith(PHASE_PREFIX) and event.name[len(PHASE_PREFIX) :] in PHASES:
            roots.append((event.name[len(PHASE_PREFIX) :], event))
        elif event.name.startswith(ENGINE_PREFIX):
            roots.append(("backward", event))
    order = {phase: i for i, phase in enumerate(PHASES)}
    return sorted(roots, key=lambda item: (order[item[0]], item[1].time_range.start))


def breakdown(events, *, cuda: bool = False) -> dict[tuple[str, str, str], float]:
    """``{(phase, layer, op_kind): microseconds}`` of one profiled step's ``events`` (``prof.events()``):
    self CPU time, or with ``cuda`` self CUDA kernel time. The forward phase is walked before the backward one:
    the backward nodes take their layer from the forward op of the same sequence number."""
    times: dict[tuple[str, str, str], float] = defaultdict(float)
    forward_ops: dict[int, tuple[float, Context]] = {}
    for phase, root in _roots(events):
        layer, kind, sticky = _PHASE_CONTEXT[phase]
        stack = [(root, Context(phase, layer, kind, sticky))]
        while stack:
            event, parent = stack.pop()
            ctx = _context(event, parent, forward_ops)
            if phase == "forward" and event.sequence_nr >= 0:
                start = event.time_range.start
                if start >= forward_ops.get(event.sequence_nr, (-1.0, None))[0]:
                    forward_ops[event.sequence_nr] = (start, ctx)
            times[(ctx.phase, ctx.layer, ctx.kind)] += _self_time_us(event, cuda)
            stack.extend((child, ctx) for child in event.cpu_children)
    return dict(times)


def _context(event, parent: Context, forward_ops: dict[int, tuple[float, Context]]) -> Context:
    """The context of ``event`` under ``parent``; a backward node starts from its forward op's layer (and its
    kind where that is sticky)."""
    if parent.phase == "backward" and event.name.startswith(ENGINE_PREFIX):
        forward = forward_ops.get(event.sequence_nr)
        if forward is not None:
            fwd = forward[1]
            parent = replace(parent, layer=fwd.layer, kind=fwd.kind, sticky=fwd.sticky)
    return classify(event.name, parent)
