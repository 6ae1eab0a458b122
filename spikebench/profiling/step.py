"""One training step, profiled (:func:`profile_step`), timed (:func:`time_steps`) and set beside its arithmetic
floor: the whole table of a network (:func:`profile_network`).

The step is :func:`spikebench.training.train_step` with the batch's encoding in front of it
(:func:`spikebench.implementation.encode_batch`, as ``_train_epoch`` calls it), split into the phases of
:data:`~spikebench.profiling.events.PHASES` by ``record_function`` ranges: the same calls in the same order
(the same loss and weights, tested), only marked.

Clocks. ``step_ms`` is the median wall time of ``repeats`` unprofiled steps, each between two device
synchronisations, after ``warmup_steps`` untimed ones; ``profiled_step_ms`` the wall time of the one profiled
step (after one profiled warm-up step that is dropped: the profiler's start-up), so ``profiler_overhead_pct`` is
what the profiler added to it (the profile's milliseconds include it: read its shares, and its times as an upper
bound; one profiled step against a median, so on a busy machine it can come out negative). Before every step
the weights are put back as they were (outside the timed part); the optimiser keeps its moments from the
warm-up, as in the middle of a training.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from spikebench.devices import autocast
from spikebench.implementation import encode_batch, implementation_of
from spikebench.profiling.events import LOSS_RANGE, PHASE_PREFIX, PHASES, breakdown
from spikebench.profiling.layers import TIME_BUDGET_S, _sync, arithmetic_floor, marked, network_layers
from spikebench.spec import NetworkSpec, as_spec

#: Columns of the profile table, in order (docs/profile.md describes them).
COLUMNS = (
    "network",
    "kind",
    "implementation",
    "device",
    "phase",
    "layer",
    "op_kind",
    "part",
    "time_ms",
    "share_pct",
    "time_source",
    "floor_forward_ms",
    "floor_backward_ms",
    "floor_input_shape",
    "floor_repeats",
    "batch_size",
    "time_steps",
    "step_ms",
    "profiled_step_ms",
    "profiler_overhead_pct",
    "floor_ms",
    "step_over_floor",
    "arithmetic_pct",
    "spiking_pct",
    "repeats",
    "null_reason",
)


def _range(name: str, on: bool):
    return torch.autograd.profiler.record_function(name) if on else contextlib.nullcontext()


def training_step(net, optimizer, spec: NetworkSpec, data, idx: torch.Tensor, generator, *, ranges: bool = False):
    """Encode the batch ``idx`` of ``data``, then :func:`spikebench.training.train_step`'s calls, each phase in a
    profiler range with ``ranges``; the loss."""
    impl = implementation_of(spec)
    with _range(PHASE_PREFIX + "data", ranges):
        x, n_steps = encode_batch(spec, data, idx, generator)
        y = data.labels[idx]
    with _range(PHASE_PREFIX + "forward", ranges):
        with autocast(x.device):
            out = net(x)
            with _range(LOSS_RANGE, ranges):
                loss = impl.loss(spec, out, y, n_steps)
    with _range(PHASE_PREFIX + "step", ranges):
        optimizer.zero_grad(set_to_none=True)
    with _range(PHASE_PREFIX + "backward", ranges):
        loss.backward()
    with _range(PHASE_PREFIX + "step", ranges):
        optimizer.step()
    return loss


def _part(op_kind: str, kind: str) -> str:
    """``arithmetic`` (matmul/conv: what an ANN of the same shapes also computes), ``spiking`` (the LIF
    recurrence; an SNN's input encoding: rate coding, N-MNIST's densification to frames) or ``other``."""
    if op_kind == "matmul/conv":
        return "arithmetic"
    if op_kind == "LIF recurrence" or (op_kind == "data preparation" and kind == "snn"):
        return "spiking"
    return "other"


def profile_step(net, optimizer, spec: NetworkSpec | dict, data, idx: torch.Tensor, generator) -> pd.DataFrame:
    """One training step under ``torch.profiler`` (CPU activity; and CUDA on a GPU, whose kernel time is then the
    table's time): rows ``phase, layer, op_kind, part, time_ms, share_pct`` (share of its phase: each phase's
    shares sum to 100), ``time_source``; ``attrs["profiled_step_ms"]``: the step's wall time under the profiler.
    The weights are put back after it (and after the profiler's own warm-up step before it)."""
    spec = as_spec(spec)
    device = data.labels.device
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    net.train()
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # The profiler's first step carries its own start-up (tens of ms on the CPU): a warm-up step is profiled
    # and dropped (schedule warmup=1), the second one is the profile.
    schedule = torch.profiler.schedule(wait=0, warmup=1, active=1, repeat=1)
    traces = []
    ready = traces.append  # called with the profiler once its active step ends
    with marked(network_layers(net)), profile(activities=activities, schedule=schedule, on_trace_ready=ready) as prof:
        for _ in range(2):
            net.load_state_dict(weights)
            _sync(device)
            t0 = time.perf_counter()
            training_step(net, optimizer, spec, data, idx, generator, ranges=True)
            _sync(device)
            wall_ms = 1000.0 * (time.perf_counter() - t0)
            prof.step()
    net.load_state_dict(weights)
    times = breakdown(traces[-1].events(), cuda=cuda)
    rows = [
        {"phase": phase, "layer": layer, "op_kind": kind, "part": _part(kind, spec.kind), "time_ms": us / 1000.0}
        for (phase, layer, kind), us in times.items()
    ]
    table = pd.DataFrame(rows, columns=["phase", "layer", "op_kind", "part", "time_ms"])
    totals = table.groupby("phase")["time_ms"].transform("sum")
    table["share_pct"] = 100.0 * table["time_ms"] / totals.where(totals > 0)
    table["time_source"] = "cuda_kernel_self_time" if cuda else "cpu_self_time"
    order = {phase: i for i, phase in enumerate(PHASES)}
    table = table.sort_values(["phase", "layer", "op_kind"], key=lambda c: c.map(order) if c.name == "phase" else c)
    table = table.reset_index(drop=True)
    table.attrs["profiled_step_ms"] = wall_ms
    return table


def time_steps(net, optimizer, spec, data, idx, generator, weights: dict, repeats: int) -> tuple[float, int]:
    """(median wall time s, repeats) of ``repeats`` unprofiled steps, each synchronised, each from ``weights``;
    fewer once they took :data:`~spikebench.profiling.layers.TIME_BUDGET_S` (at least one)."""
    times = []
    for _ in range(max(1, repeats)):
        net.load_state_dict(weights)
        _sync(data.labels.device)
        t0 = time.perf_counter()
        training_step(net, optimizer, spec, data, idx, generator)
        _sync(data.labels.device)
        times.append(time.perf_counter() - t0)
        if sum(times) > TIME_BUDGET_S:
            break
    net.load_state_dict(weights)
    return statistics.median(times), len(times)


def _floor_rows(floor: dict) -> pd.DataFrame:
    total_ms = 1000.0 * floor["floor_s"]
    rows = [
        {
            "phase": "floor",
            "layer": name,
            "op_kind": "matmul/conv",
            "part": "arithmetic",
            "time_ms": 1000.0 * layer["floor_s"],
            "share_pct": 100.0 * layer["floor_s"] / floor["floor_s"] if floor["floor_s"] > 0 else None,
            "time_source": "wall_clock_median",
            "floor_forward_ms": 1000.0 * layer["forward_s"],
            "floor_backward_ms": 1000.0 * layer["backward_s"],
            "floor_input_shape": "x".join(str(n) for n in layer["input_shape"]),
            "floor_repeats": layer["repeats"],
        }
        for name, layer in floor["layers"].items()
    ]
    table = pd.DataFrame(rows)
    table.attrs["floor_ms"] = total_ms
    return table


def _network_columns(profiled: pd.DataFrame, step_s: float, floor_ms: float) -> dict:
    step_ms = 1000.0 * step_s
    wall = profiled.attrs["profiled_step_ms"]
    total = profiled["time_ms"].sum()
    share = profiled.groupby("part")["time_ms"].sum() / total * 100.0 if total > 0 else None
    return {
        "step_ms": step_ms,
        "profiled_step_ms": wall,
        "profiler_overhead_pct": 100.0 * (wall - step_ms) / step_ms,
        "floor_ms": floor_ms,
        "step_over_floor": step_ms / floor_ms if floor_ms > 0 else None,
        "arithmetic_pct": float(share.get("arithmetic", 0.0)) if share is not None else None,
        "spiking_pct": float(share.get("spiking", 0.0)) if share is not None else None,
    }


def profile_network(
    net, optimizer, spec: NetworkSpec | dict, data, *, seed: int = 0, repeats: int = 3, warmup_steps: int = 1
) -> pd.DataFrame:
    """The profile table of one network (:data:`COLUMNS`): one profiled training step on the first
    ``batch_size`` samples of ``data`` (:func:`profile_step`), the median unprofiled step time
    (:func:`time_steps`) and the arithmetic floor of the same batch
    (:func:`spikebench.profiling.layers.arithmetic_floor`), all after ``warmup_steps`` untimed steps; the weights
    are those of ``net`` before the call, and are put back after it."""
    spec = as_spec(spec)
    device = data.labels.device
    idx = torch.arange(min(spec.batch_size, len(data)), device=device)
    generator = torch.Generator(device=device).manual_seed(seed + 1)  # rate-coding spikes, as training's
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.train()
    for _ in range(max(0, warmup_steps)):
        training_step(net, optimizer, spec, data, idx, generator)
        net.load_state_dict(weights)
    profiled = profile_step(net, optimizer, spec, data, idx, generator)
    step_s, step_repeats = time_steps(net, optimizer, spec, data, idx, generator, weights, repeats)
    x, _ = encode_batch(spec, data, idx, generator)
    floor = _floor_rows(arithmetic_floor(net, x, repeats=repeats))
    table = pd.concat([profiled, floor], ignore_index=True)
    columns = _network_columns(profiled, step_s, floor.attrs["floor_ms"])
    impl = implementation_of(spec).name
    table = table.assign(
        network=spec.name,
        kind=spec.kind,
        implementation=impl,
        device=str(device),
        batch_size=len(idx),
        time_steps=int(x.shape[0]) if spec.kind == "snn" else None,
        repeats=step_repeats,
        null_reason=None,
        **columns,
    )
    return table.reindex(columns=list(COLUMNS))
