"""Training one network: ``train_network`` (one readable loop, in the spirit of airbench/nanoGPT).

The training and validation sets live on the device (``spikebench.data.device``); an epoch is a random
permutation split into batches (no DataLoader, no per-sample Python). Adam with the configured ``lr``; ANN/CNN
cross-entropy, SNN MSE spike-count loss (``spikebench.models``; network, loss, prediction and rate coding come
from ``spikebench.implementation``, which picks spikebench's or snnTorch's code by the setting ``implementation``).
Every epoch appends one row to the epochs table
and saves a checkpoint; the final outputs (weights, epochs Parquet) are written atomically and the checkpoint
is then deleted.

Epochs table (one row per epoch): network, epoch (1-based), train_loss, train_acc, val_loss, val_acc
(accuracies as fractions), train_time_s, val_time_s (each clock read after the telemetry boundary call and a
CUDA synchronisation: they time only their phase), epoch_time_s (their sum), train_samples_per_s,
val_samples_per_s, peak_memory_mib with memory_source (``torch_cuda_max_allocated``: the largest of the train
and val phases' peaks, resident data included; ``process_max_rss``: the process's peak resident set size so
far, which cannot be reset and so never decreases), activation_peak_mib (training phase's peak allocation minus
the allocation at its start), reserved_peak_mib (torch's reserved peak, train and val) and memory_null_reason
(why those two are null: on the CPU), dataset_mib (resident training and validation tensors), device, the
run's saved_for_backward_mib (what autograd keeps for backward in one training batch, measured in the warm-up;
``spikebench.saved_memory``) with its layers (JSON), its null reason and the model's prediction
(saved_for_backward_predicted_mib, ``spikebench.memory_estimate.saved_bytes``), the same on every row, plus the
telemetry hook's ``epoch_summary`` columns. Before the first epoch of a process, ``warmup_steps`` untimed steps
run and every state is restored after them (:func:`warm_up`).

Random numbers, all derived from ``seed``: the global torch RNG (seeded before the network is built) draws the
Kaiming initialisation and the dropout masks; a CPU ``torch.Generator`` shuffles; a generator on the device
draws the rate-coding spikes (training and validation). The checkpoint stores all three states, so a resumed
run draws the same numbers as an uninterrupted one.

Determinism. On the CPU, the same seed, torch and numba builds and thread count give bitwise identical weights
and epochs tables (timing, speed and memory columns aside), also across a kill and resume (tested). On a GPU, results
are
reproducible only to float rounding: cuDNN chooses convolution algorithms per run and some of them
(notably weight-gradient kernels) accumulate with atomics, so the order of float additions, and after many
steps the weights, can differ between runs. ``deterministic=True`` calls
``torch.use_deterministic_algorithms(True, warn_only=True)`` (slower; set ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
before CUDA starts), which makes cuDNN use deterministic algorithms and warns about any op without one. A
resumed GPU run restores the same RNG states and continues correctly, but is not promised bitwise equal to an
uninterrupted one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import resource
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spikebench import atomic
from spikebench.data.device import DeviceDataset
from spikebench.devices import autocast
from spikebench.implementation import encode_batch, implementation_of
from spikebench.saved_memory import COLUMNS, measure_step, unmeasured
from spikebench.spec import NetworkSpec, as_spec
from spikebench.telemetry import NullTelemetry

_LOG = logging.getLogger("spikebench.training")

#: Columns of the epochs table that depend on the machine's speed, not on the computation.
TIMING_COLUMNS = (
    "train_time_s",
    "val_time_s",
    "epoch_time_s",
    "train_samples_per_s",
    "val_samples_per_s",
    "peak_memory_mib",
    "memory_source",
    "activation_peak_mib",
    "reserved_peak_mib",
    "memory_null_reason",
    "device",
)


class CheckpointError(RuntimeError):
    """A checkpoint file that exists but cannot be used."""


# --------------------------------------------------------------------------------------------------
# Small helpers shared with evaluation
# --------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that timers measure finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only; the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, source): CUDA peak allocated since the last reset, or the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch_cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "process_max_rss"


def _cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def fingerprint(
    spec: NetworkSpec, seed: int, train: DeviceDataset, val: DeviceDataset | None, device: torch.device
) -> str:
    """Hash of everything that makes a checkpoint reusable: settings, seed, dataset sizes and labels, device."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "spec": spec.to_dict(),
                "seed": int(seed),
                "n_train": len(train),
                "n_val": len(val) if val is not None else 0,
                "device_type": device.type,
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for data in (train, val):
        if data is not None:
            h.update(data.labels.detach().to("cpu", torch.int64).numpy().tobytes())
    return h.hexdigest()


def run_batches(
    net: torch.nn.Module,
    spec: NetworkSpec,
    data: DeviceDataset,
    batch_size: int,
    generator: torch.Generator | None,
    *,
    want_predictions: bool = False,
    counter=None,
) -> tuple[float, float, torch.Tensor | None]:
    """Loss and accuracy of ``net`` (eval mode, no grad) over ``data`` in order; predictions on request.

    ``counter``: a :class:`spikebench.opcounts.OperationCounter` told each batch's real time steps."""
    net.eval()
    spec = as_spec(spec)
    impl = implementation_of(spec)
    device = data.labels.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    preds = []
    with torch.no_grad():
        for idx in torch.arange(len(data), device=device).split(batch_size):
            x, n_steps = encode_batch(spec, data, idx, generator)
            y = data.labels[idx]
            if counter is not None:
                counter.begin_batch(n_steps, len(idx), x.shape[0])
            with autocast(device):
                out = net(x)
            loss_sum += impl.loss(spec, out, y, n_steps).double() * len(idx)
            pred = impl.predict(spec, out, n_steps)
            correct += (pred == y).sum()
            if want_predictions:
                preds.append(pred)
    n = max(len(data), 1)
    return loss_sum.item() / n, correct.item() / n, (torch.cat(preds) if want_predictions else None)


def _load_checkpoint(path: Path, expected: str, log: logging.Logger) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        ok = (
            isinstance(ckpt, dict) and {"fingerprint", "epoch", "state_dict", "optimizer", "rng", "rows"} <= ckpt.keys()
        )
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file is unusable
        # Only the type of torch.load's error: its text advises weights_only=False, i.e. running the file's code.
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to start this network's training afresh"
        ) from None
    if not ok:
        raise CheckpointError(
            f"checkpoint {path} is not a spikebench training checkpoint; "
            f"delete it to start this network's training afresh"
        )
    if ckpt["fingerprint"] != expected:
        log.warning(
            "checkpoint %s was made with other settings, seed, data or device type: starting afresh "
            "(it is replaced after the first epoch)",
            path,
        )
        return None
    return ckpt


# --------------------------------------------------------------------------------------------------
# Memory and warm-up
# --------------------------------------------------------------------------------------------------
def dataset_mib(*datasets: DeviceDataset | None) -> float:
    """Resident size of the datasets' tensors (each storage counted once), MiB."""
    seen: dict[tuple[str, int], int] = {}

    def visit(obj: Any, depth: int) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[(str(obj.device), storage.data_ptr())] = storage.nbytes()
        elif depth < 2 and hasattr(obj, "__dict__") and not isinstance(obj, type):
            for value in vars(obj).values():
                visit(value, depth + 1)

    for data in datasets:
        if data is not None:
            visit(data, 0)
    return sum(seen.values()) / 2**20


CPU_MEMORY_REASON = (
    "CPU: no caching allocator (no reserved memory), and the process's peak resident set size "
    "(peak_memory_mib) cannot be reset per phase, so no activation peak"
)


def memory_columns(
    device: torch.device, train_start_mib: float | None, train_peak_mib: float | None, reserved_peak_mib: float | None
) -> dict:
    """``activation_peak_mib`` (training phase's peak allocation minus the allocation at its start),
    ``reserved_peak_mib`` (torch's reserved peak) and ``memory_null_reason`` (why they are null)."""
    if device.type != "cuda":
        return {"activation_peak_mib": None, "reserved_peak_mib": None, "memory_null_reason": CPU_MEMORY_REASON}
    return {
        "activation_peak_mib": train_peak_mib - train_start_mib,
        "reserved_peak_mib": reserved_peak_mib,
        "memory_null_reason": None,
    }


def _cuda_mib(fn_name: str, device: torch.device) -> float | None:
    return getattr(torch.cuda, fn_name)(device) / 2**20 if device.type == "cuda" else None


def _rng_states(device: torch.device, *generators: torch.Generator) -> dict:
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "generators": [g.get_state() for g in generators],
    }


def _set_rng_states(states: dict, device: torch.device, *generators: torch.Generator) -> None:
    torch.set_rng_state(states["torch_cpu"])
    if device.type == "cuda" and states.get("torch_cuda") is not None:
        torch.cuda.set_rng_state(states["torch_cuda"], device)
    for g, state in zip(generators, states["generators"]):
        g.set_state(state)


def warm_up(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: NetworkSpec,
    train: DeviceDataset,
    val: DeviceDataset | None,
    steps: int,
    generators: tuple[torch.Generator, ...],
    device: torch.device,
    measure: bool = True,
) -> dict:
    """``steps`` untimed training steps and one validation batch on full-size batches (cuBLAS/cuDNN set-up,
    lazy kernel loading and allocator growth happen here, not in epoch 1), then the weights, optimiser state
    and every random state (global CPU/CUDA, ``generators``) are put back as they were: the run goes on
    bitwise as without the warm-up (tested on the CPU).

    ``measure``: the first step also counts what autograd saves for backward (one batch of the run's batch size,
    :func:`spikebench.saved_memory.measure_step`); with ``steps`` 0 that step runs alone, restored the same way.
    Returns its record ({} where nothing was measured)."""
    if steps <= 0 and not measure:
        return {}
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt_state, rng = copy.deepcopy(optimizer.state_dict()), _rng_states(device, *generators)
    batch_size, record = spec.batch_size, {}
    idx = torch.arange(min(batch_size, len(train)), device=device)
    net.train()
    for k in range(max(steps, 1)):
        x, n_steps = encode_batch(spec, train, idx, generators[-1])
        y = train.labels[idx]
        if k == 0 and measure:
            record = measure_step(net, spec, x, lambda: train_step(net, optimizer, spec, x, y, n_steps))  # noqa: B023
        else:
            train_step(net, optimizer, spec, x, y, n_steps)
    if val is not None and steps > 0:
        run_batches(net, spec, _Head(val, batch_size), batch_size, generators[-1])
    synchronize(device)
    optimizer.zero_grad(set_to_none=True)
    net.load_state_dict(weights)
    optimizer.load_state_dict(opt_state)
    _set_rng_states(rng, device, *generators)
    return record


def _per_run(rows: list[dict], measured: dict) -> dict:
    """The saved-for-backward columns of every row of the run: measured by this process's warm-up, or, resumed,
    the first process's (the checkpoint's rows), so that a resumed run records what an uninterrupted one does."""
    if not rows:
        return measured
    if "saved_for_backward_mib" not in rows[0]:
        return unmeasured("resumed from a checkpoint written without the measurement")
    return {k: rows[0].get(k) for k in COLUMNS}


class _Head:
    """The first ``n`` samples of a dataset (one validation batch for the warm-up)."""

    def __init__(self, data: DeviceDataset, n: int) -> None:
        self.data, self.n = data, min(n, len(data))
        self.labels = data.labels[: self.n]

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: torch.Tensor):
        return self.data.batch(idx)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def train_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: NetworkSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    n_steps: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on one batch (the timed epochs and the warm-up run this same code); (loss, output)."""
    with autocast(x.device):  # precision bf16: torch.autocast; else nothing
        out = net(x)
        loss = implementation_of(spec).loss(spec, out, y, n_steps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, out


def _train_epoch(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: NetworkSpec,
    train: DeviceDataset,
    shuffle_gen: torch.Generator,
    spike_gen: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over the training set in a fresh random order; (mean loss, accuracy)."""
    impl, batch_size, n_train = implementation_of(spec), spec.batch_size, len(train)
    net.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    order = torch.randperm(n_train, generator=shuffle_gen).to(device)
    for idx in order.split(batch_size):
        x, n_steps = encode_batch(spec, train, idx, spike_gen)
        y = train.labels[idx]
        loss, out = train_step(net, optimizer, spec, x, y, n_steps)
        loss_sum += loss.detach().double() * len(idx)
        correct += (impl.predict(spec, out.detach(), n_steps) == y).sum()
        # Let go of this batch before the next one is encoded: on the CPU its input frames' and output's pooled
        # buffers (spikebench.buffers) then serve the next batch instead of being held beside it.
        del x, out, loss
    return loss_sum.item() / n_train, correct.item() / n_train


def _run_epoch(net, optimizer, spec, train, val, gens, device, epoch, telemetry) -> dict:
    """Train and validate one epoch; the timing and memory columns of its row.

    Each clock is read after the telemetry boundary call that opens its phase and after a device
    synchronisation, so ``train_time_s`` and ``val_time_s`` time only their phase, and
    ``epoch_time_s`` is their sum."""
    shuffle_gen, spike_gen = gens
    reset_peak_memory(device)
    telemetry.phase("train", epoch)
    synchronize(device)
    start_mib = _cuda_mib("memory_allocated", device)
    t0 = time.perf_counter()
    train_loss, train_acc = _train_epoch(net, optimizer, spec, train, shuffle_gen, spike_gen, device)
    synchronize(device)
    t1 = time.perf_counter()
    memory_mib, memory_source = peak_memory(device)  # read before telemetry.phase resets CUDA's peak
    reserved_mib = _cuda_mib("max_memory_reserved", device)
    memory = memory_columns(device, start_mib, memory_mib, reserved_mib)
    val_loss = val_acc = math.nan
    val_time = 0.0
    if val is not None:
        telemetry.phase("val", epoch)
        synchronize(device)
        t2 = time.perf_counter()
        val_loss, val_acc, _ = run_batches(net, spec, val, spec.batch_size, spike_gen)
        synchronize(device)
        val_time = time.perf_counter() - t2
        memory_mib = max(memory_mib, peak_memory(device)[0])
        if reserved_mib is not None:
            memory["reserved_peak_mib"] = max(reserved_mib, _cuda_mib("max_memory_reserved", device))
    telemetry.phase("idle", None)
    return {
        "train_loss": train_loss,
        "train_acc": train_acc,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "train_time_s": t1 - t0,
        "val_time_s": val_time if val is not None else math.nan,
        "epoch_time_s": (t1 - t0) + val_time,
        "train_samples_per_s": len(train) / (t1 - t0),
        "val_samples_per_s": (len(val) / val_time) if val is not None and val_time > 0 else math.nan,
        "peak_memory_mib": memory_mib,
        "memory_source": memory_source,
        **memory,
    }


def _checkpoint_rng(device: torch.device, shuffle_gen: torch.Generator, spike_gen: torch.Generator) -> dict:
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "shuffle": shuffle_gen.get_state(),
        "spikes": spike_gen.get_state(),
    }


def _restore(
    ckpt: dict,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    shuffle_gen: torch.Generator,
    spike_gen: torch.Generator,
) -> None:
    """Weights, optimiser and the random states of a checkpoint, so training goes on as if never stopped."""
    net.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch_cpu"])
    if device.type == "cuda" and ckpt["rng"].get("torch_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng"]["torch_cuda"], device)
    shuffle_gen.set_state(ckpt["rng"]["shuffle"])
    spike_gen.set_state(ckpt["rng"]["spikes"])


def make_optimizer(net: torch.nn.Module, spec: NetworkSpec, device: torch.device) -> torch.optim.Optimizer:
    """The run's optimiser: Adam at its lr; fused=True on CUDA (one kernel for the whole update instead of several
    per parameter tensor). Training and the profile job build it here alike."""
    return torch.optim.Adam(net.parameters(), lr=spec.lr, fused=True if device.type == "cuda" else None)


def _fresh_run(spec: NetworkSpec, device: torch.device, seed: int):
    """The network, its Adam optimiser and the two generators, all from ``seed``."""
    torch.manual_seed(seed)  # initialisation and dropout (global RNG)
    net = implementation_of(spec).build(spec).to(device)
    optimizer = make_optimizer(net, spec, device)
    shuffle_gen = torch.Generator().manual_seed(seed)  # batch order (CPU)
    spike_gen = torch.Generator(device=device).manual_seed(seed + 1)  # rate-coding spikes (device)
    return net, optimizer, (shuffle_gen, spike_gen)


def _log_epoch(log: logging.Logger, network_id: str, n_epochs: int, row: dict) -> None:
    log.info(
        "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s, %.0f samples/s, "
        "peak %.0f MiB (%s)",
        network_id,
        row["epoch"],
        n_epochs,
        row["train_loss"],
        row["train_acc"],
        row["val_loss"],
        row["val_acc"],
        row["epoch_time_s"],
        row["train_samples_per_s"],
        row["peak_memory_mib"],
        row["memory_source"],
    )


def _resume(
    checkpoint_path: Path,
    expected: str,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    gens: tuple,
    network_id: str,
    n_epochs: int,
    telemetry,
    log: logging.Logger,
) -> tuple[list[dict], dict, int]:
    """``(rows, best, first_epoch)``: restored from the checkpoint of the same settings, seed, data and
    device type (``expected``) into ``net``, ``optimizer`` and the generators, if there is one; else a fresh start."""
    ckpt = _load_checkpoint(checkpoint_path, expected, log)
    if ckpt is None:
        return [], {"val_acc": -math.inf, "epoch": None, "state_dict": None}, 1
    _restore(ckpt, net, optimizer, device, *gens)
    rows, best, first_epoch = list(ckpt["rows"]), dict(ckpt["best"]), int(ckpt["epoch"]) + 1
    log.info(
        "%s: resuming from checkpoint %s after epoch %d of %d", network_id, checkpoint_path, first_epoch - 1, n_epochs
    )
    telemetry.resume(first_epoch - 1, expected)
    return rows, best, first_epoch


def _save_checkpoint(
    checkpoint_path: Path,
    expected: str,
    network_id: str,
    epoch: int,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    gens: tuple,
    rows: list[dict],
    best: dict,
) -> None:
    """The state after ``epoch`` (weights, optimizer, RNG, the rows and best so far), atomically."""
    checkpoint = {
        "fingerprint": expected,
        "network": network_id,
        "epoch": epoch,
        "state_dict": _cpu_state(net),
        "optimizer": optimizer.state_dict(),
        "rng": _checkpoint_rng(device, *gens),
        "rows": rows,
        "best": best,
    }
    atomic.save_torch(checkpoint, checkpoint_path)


def _write_outputs(
    spec: NetworkSpec,
    net: torch.nn.Module,
    rows: list[dict],
    best: dict,
    network_id: str,
    weights_out: Path,
    epochs_out: Path,
    checkpoint_path: Path,
    log: logging.Logger,
) -> pd.DataFrame:
    """The weights (final and best validation) and the epochs table, atomically; then the checkpoint goes."""
    table = pd.DataFrame(rows)
    weights = {
        "network": network_id,
        "spec": spec.to_dict(),
        "epoch": spec.epochs,
        "state_dict": _cpu_state(net),
        "best_val_state_dict": best["state_dict"],
        "best_val_epoch": best["epoch"],
    }
    atomic.save_torch(weights, weights_out)
    atomic.write_parquet(table, epochs_out)
    Path(checkpoint_path).unlink(missing_ok=True)
    log.info("%s: wrote %s and %s", network_id, weights_out, epochs_out)
    return table


def train_network(
    spec: NetworkSpec | dict,
    train: DeviceDataset,
    val: DeviceDataset | None,
    *,
    network_id: str,
    device: torch.device,
    seed: int,
    weights_out: Path,
    epochs_out: Path,
    checkpoint_path: Path,
    telemetry=None,
    log: logging.Logger | None = None,
    deterministic: bool = False,
    warmup_steps: int = 0,
) -> pd.DataFrame:
    """Train the network ``spec`` describes, resuming from ``checkpoint_path``; returns the epochs table.

    The data fit the network (checked when loaded, ``spikebench.data.device``). ``telemetry``: the hook
    (:class:`spikebench.telemetry.NullTelemetry` documents its calls; None: no telemetry). ``warmup_steps``:
    untimed steps before the first epoch of this process (:func:`warm_up`)."""
    spec, log = as_spec(spec, network_id), log or _LOG
    telemetry = telemetry if telemetry is not None else NullTelemetry()
    device, n_epochs = torch.device(device), spec.epochs
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    net, optimizer, gens = _fresh_run(spec, device, seed)

    # Resume from the checkpoint of the same settings, seed, data and device type, if any.
    expected = fingerprint(spec, seed, train, val, device)
    rows, best, first_epoch = _resume(
        checkpoint_path, expected, net, optimizer, device, gens, network_id, n_epochs, telemetry, log
    )
    measured = {}
    if first_epoch <= n_epochs:
        measured = warm_up(net, optimizer, spec, train, val, int(warmup_steps), gens, device, measure=not rows)
    per_run = _per_run(rows, measured)

    # The loop: train + validate, one row, keep the best validation weights, checkpoint.
    data_mib = dataset_mib(train, val)
    for epoch in range(first_epoch, n_epochs + 1):
        row = {
            "network": network_id,
            "epoch": epoch,
            **_run_epoch(net, optimizer, spec, train, val, gens, device, epoch, telemetry),
            "dataset_mib": data_mib,
            "device": str(device),
            **per_run,
        }
        row.update(telemetry.epoch_summary(epoch) or {})
        rows.append(row)
        if val is not None and row["val_acc"] > best["val_acc"]:
            best = {"val_acc": row["val_acc"], "epoch": epoch, "state_dict": _cpu_state(net)}
        _log_epoch(log, network_id, n_epochs, row)
        telemetry.epoch_done(epoch, expected)  # the samples so far, before the checkpoint that needs them
        _save_checkpoint(checkpoint_path, expected, network_id, epoch, net, optimizer, device, gens, rows, best)

    # Final outputs, atomically; then the checkpoint goes.
    return _write_outputs(spec, net, rows, best, network_id, weights_out, epochs_out, checkpoint_path, log)
