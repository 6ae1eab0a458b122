"""Training one network: ``train_network`` (one readable loop, in the spirit of airbench/nanoGPT).

The training and validation sets live on the device (``spikebench.data.device``); an epoch is a random
permutation split into batches (no DataLoader, no per-sample Python). Adam with the configured ``lr``; ANN/CNN
cross-entropy, SNN MSE spike-count loss (``spikebench.models``). Every epoch appends one row to the epochs table
and saves a checkpoint; the final outputs (weights, epochs Parquet) are written atomically and the checkpoint
is then deleted.

Epochs table (one row per epoch): network, epoch (1-based), train_loss, train_acc, val_loss, val_acc
(accuracies as fractions), train_time_s, val_time_s, epoch_time_s (CUDA synchronised before each timer read),
train_samples_per_s, val_samples_per_s, peak_memory_mib with memory_source (``torch_cuda_max_allocated``: the
largest of the train and val phases' peaks, resident data included; ``process_max_rss``: the process's peak
resident set size so far, which cannot be reset and so never decreases), device, plus the telemetry hook's
``epoch_summary`` columns.

Random numbers, all derived from ``seed``: the global torch RNG (seeded before the network is built) draws the
Kaiming initialisation and the dropout masks; a CPU ``torch.Generator`` shuffles; a generator on the device
draws the rate-coding spikes (training and validation). The checkpoint stores all three states, so a resumed
run draws the same numbers as an uninterrupted one.

Determinism. On the CPU, the same seed, torch and numba builds and thread count give bitwise identical weights
and epochs tables (timing, speed and memory columns aside), also across a kill and resume (tested). On a GPU, results are
reproducible only to float rounding: cuDNN chooses convolution algorithms per run and some of them
(notably weight-gradient kernels) accumulate with atomics, so the order of float additions, and after many
steps the weights, can differ between runs. ``deterministic=True`` calls
``torch.use_deterministic_algorithms(True, warn_only=True)`` (slower; set ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
before CUDA starts), which makes cuDNN use deterministic algorithms and warns about any op without one. A
resumed GPU run restores the same RNG states and continues correctly, but is not promised bitwise equal to an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from spikebench.data.device import DeviceDataset, check_fits, encode_batch
from spikebench.devices import autocast
from spikebench.models import build_network, network_loss, predict

_LOG = logging.getLogger("spikebench.training")

#: Columns of the epochs table that depend on the machine's speed, not on the computation.
TIMING_COLUMNS = ("train_time_s", "val_time_s", "epoch_time_s", "train_samples_per_s", "val_samples_per_s",
                  "peak_memory_mib", "memory_source", "device")


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 160 characters (torch.load's messages run long)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def _cpu_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def fingerprint(spec: dict, seed: int, train: DeviceDataset, val: DeviceDataset | None,
                device: torch.device) -> str:
    """Hash of everything that makes a checkpoint reusable: settings, seed, dataset sizes and labels, device."""
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec, "seed": int(seed), "n_train": len(train),
                         "n_val": len(val) if val is not None else 0, "device_type": device.type},
                        sort_keys=True, default=str).encode())
    for data in (train, val):
        if data is not None:
            h.update(data.labels.detach().to("cpu", torch.int64).numpy().tobytes())
    return h.hexdigest()


def run_batches(net: torch.nn.Module, spec: dict, data: DeviceDataset, batch_size: int,
                generator: torch.Generator | None, *, want_predictions: bool = False
                ) -> tuple[float, float, torch.Tensor | None]:
    """Loss and accuracy of ``net`` (eval mode, no grad) over ``data`` in order; predictions on request."""
    net.eval()
    device = data.labels.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    preds = []
    with torch.no_grad():
        for idx in torch.arange(len(data), device=device).split(batch_size):
            x, n_steps = encode_batch(spec, data, idx, generator)
            y = data.labels[idx]
            with autocast(device):
                out = net(x)
            loss_sum += network_loss(spec["kind"], out, y, n_steps, spec).double() * len(idx)
            pred = predict(spec["kind"], out, n_steps)
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
        ok = isinstance(ckpt, dict) and {"fingerprint", "epoch", "state_dict", "optimizer", "rng", "rows"} <= ckpt.keys()
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file is unusable
        raise CheckpointError(f"checkpoint {path} is unreadable ({short_error(exc)}); "
                              f"delete it to start this network's training afresh") from exc
    if not ok:
        raise CheckpointError(f"checkpoint {path} is not a spikebench training checkpoint; "
                              f"delete it to start this network's training afresh")
    if ckpt["fingerprint"] != expected:
        log.warning("checkpoint %s was made with other settings, seed, data or device type: starting afresh "
                    "(it is replaced after the first epoch)", path)
        return None
    return ckpt


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def train_network(spec: dict, train: DeviceDataset, val: DeviceDataset | None, *, network_id: str,
                  device: torch.device, seed: int, weights_out: Path, epochs_out: Path, checkpoint_path: Path,
                  telemetry=None, log: logging.Logger | None = None, deterministic: bool = False) -> pd.DataFrame:
    """Train the network ``spec`` describes, resuming from ``checkpoint_path``; returns the epochs table."""
    log = log or _LOG
    device = torch.device(device)
    kind, batch_size, n_epochs = spec["kind"], int(spec["batch_size"]), int(spec["epochs"])
    check_fits(spec, train, network_id)
    if val is not None:
        check_fits(spec, val, network_id)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    # Network, optimiser and the three random streams, all from `seed`.
    torch.manual_seed(seed)                       # initialisation and dropout (global RNG)
    net = build_network(spec, network_id).to(device)
    # fused=True on CUDA: one kernel for the whole update instead of several per parameter tensor.
    optimizer = torch.optim.Adam(net.parameters(), lr=float(spec["lr"]), fused=True if device.type == "cuda" else None)
    shuffle_gen = torch.Generator().manual_seed(seed)                   # batch order (CPU)
    spike_gen = torch.Generator(device=device).manual_seed(seed + 1)    # rate-coding spikes (device)

    rows: list[dict] = []
    best = {"val_acc": -math.inf, "epoch": None, "state_dict": None}
    first_epoch = 1
    expected = fingerprint(spec, seed, train, val, device)
    ckpt = _load_checkpoint(checkpoint_path, expected, log)
    if ckpt is not None:
        net.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch_cpu"])
        if device.type == "cuda" and ckpt["rng"].get("torch_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["torch_cuda"], device)
        shuffle_gen.set_state(ckpt["rng"]["shuffle"])
        spike_gen.set_state(ckpt["rng"]["spikes"])
        rows, best = list(ckpt["rows"]), dict(ckpt["best"])
        first_epoch = int(ckpt["epoch"]) + 1
        log.info("%s: resuming from checkpoint %s after epoch %d of %d", network_id, checkpoint_path,
                 first_epoch - 1, n_epochs)

    n_train = len(train)
    for epoch in range(first_epoch, n_epochs + 1):
        reset_peak_memory(device)
        # ---- training phase
        if telemetry is not None:
            telemetry.phase("train", epoch)
        synchronize(device)
        t0 = time.perf_counter()
        net.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        order = torch.randperm(n_train, generator=shuffle_gen).to(device)
        for idx in order.split(batch_size):
            x, n_steps = encode_batch(spec, train, idx, spike_gen)
            y = train.labels[idx]
            with autocast(device):                # precision bf16: torch.autocast; else nothing
                out = net(x)
                loss = network_loss(kind, out, y, n_steps, spec)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach().double() * len(idx)
            correct += (predict(kind, out.detach(), n_steps) == y).sum()
        train_loss, train_acc = loss_sum.item() / n_train, correct.item() / n_train
        synchronize(device)
        t1 = time.perf_counter()
        memory_mib, memory_source = peak_memory(device)   # read before telemetry.phase resets CUDA's peak
        # ---- validation phase
        if val is not None:
            if telemetry is not None:
                telemetry.phase("val", epoch)
            val_loss, val_acc, _ = run_batches(net, spec, val, batch_size, spike_gen)
            synchronize(device)
            memory_mib = max(memory_mib, peak_memory(device)[0])
        else:
            val_loss = val_acc = math.nan
        t2 = time.perf_counter()
        if telemetry is not None:
            telemetry.phase("idle", None)
        row = {
            "network": network_id, "epoch": epoch,
            "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
            "train_time_s": t1 - t0, "val_time_s": t2 - t1, "epoch_time_s": t2 - t0,
            "train_samples_per_s": n_train / (t1 - t0),
            "val_samples_per_s": (len(val) / (t2 - t1)) if val is not None and t2 > t1 else math.nan,
            "peak_memory_mib": memory_mib, "memory_source": memory_source, "device": str(device),
        }
        if telemetry is not None:
            row.update(telemetry.epoch_summary(epoch) or {})
        rows.append(row)
        if val is not None and val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "epoch": epoch, "state_dict": _cpu_state(net)}
        log.info("%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s, %.0f samples/s, "
                 "peak %.0f MiB (%s)", network_id, epoch, n_epochs, train_loss, train_acc, val_loss, val_acc,
                 t2 - t0, row["train_samples_per_s"], memory_mib, memory_source)
        _atomic_torch_save({
            "fingerprint": expected, "network": network_id, "epoch": epoch,
            "state_dict": _cpu_state(net), "optimizer": optimizer.state_dict(),
            "rng": {"torch_cpu": torch.get_rng_state(),
                    "torch_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "shuffle": shuffle_gen.get_state(), "spikes": spike_gen.get_state()},
            "rows": rows, "best": best,
        }, checkpoint_path)

    table = pd.DataFrame(rows)
    _atomic_torch_save({"network": network_id, "spec": spec, "epoch": n_epochs, "state_dict": _cpu_state(net),
                        "best_val_state_dict": best["state_dict"], "best_val_epoch": best["epoch"]},
                       weights_out)
    _atomic_parquet(table, epochs_out)
    Path(checkpoint_path).unlink(missing_ok=True)
    log.info("%s: wrote %s and %s", network_id, weights_out, epochs_out)
    return table
