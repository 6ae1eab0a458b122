"""A run that runs out of memory is a result, not a crash: what counts, what is recorded, what is written.

What counts as out of memory (:func:`is_out_of_memory`):

- ``torch.cuda.OutOfMemoryError`` (the CUDA caching allocator could not allocate);
- ``MemoryError`` (Python's own allocation failure);
- a ``RuntimeError`` from PyTorch's CPU allocator, whose message says ``DefaultCPUAllocator: can't
  allocate memory`` (what ``torch.empty`` raises on the CPU when the allocation fails).

Any other error still fails the job. An out-of-memory train job writes its declared outputs: the epochs
table as one row with ``status = oom``, the epoch it reached and ``memory_reached_mib`` (metrics null),
and a weights file that holds no weights, only the status (read back with ``weights_only=True``); its
evaluate job then writes ``test.json`` with ``status: oom`` and null metrics, and an empty telemetry
sidecar. A job that completes writes ``status = ok``. An evaluation that itself runs out of memory (the
test set goes through in batches, so it rarely does) is not caught: that job fails as before.

A train job first checks the size (:func:`refuse_if_too_large`, before any data is loaded): where one training
batch needs more memory than the device has free (``spikebench.memory_estimate``: activations kept for backprop
and the resident dataset, against psutil's available memory on the CPU, ``torch.cuda.mem_get_info`` on CUDA),
it writes the same ``status: oom`` outputs without allocating anything; the record holds the estimate
(``memory_estimate_mib``, ``activation_estimate_mib``, ``dataset_estimate_mib``), the free memory and its source
(``memory_free_mib``, ``memory_free_source``), ``epoch_reached`` 0 and ``refused_before_allocating: true``.

Tests force an out-of-memory error with the environment variable ``SPIKEBENCH_FAULT_OOM=<run id>:<n>``
(:func:`watch`): that run's training raises ``MemoryError`` when its epoch n starts. Nothing else
reads it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa

from spikebench import atomic
from spikebench.spec import NetworkSpec

OK, OOM = "ok", "oom"
FAULT_ENV = "SPIKEBENCH_FAULT_OOM"
CPU_ALLOCATOR_MESSAGE = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the allocation failures listed in the module docstring, False for any other error."""
    import torch

    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and CPU_ALLOCATOR_MESSAGE in str(exc)


def memory_reached(device) -> dict:
    """The most memory the job had reached when it failed: the device's peak allocation on CUDA, the
    process's peak resident set size on the CPU (MiB), and which of the two it is."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return {
            "memory_reached_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "memory_source": "torch.cuda.max_memory_allocated",
        }
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "memory_reached_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20,
        "memory_source": "peak RSS (getrusage)",
    }


def oom_record(exc: BaseException, device, epoch: int | None) -> dict:
    return {
        "status": OOM,
        "epoch_reached": epoch,
        "error": f"{type(exc).__name__}: {exc}"[:500],
        "device": str(device),
        **memory_reached(device),
    }


class WatchedTelemetry:
    """The job's telemetry hook, remembering the epoch that last started (``epoch``) and, for tests,
    raising ``MemoryError`` when training epoch ``fault_at`` starts."""

    def __init__(self, hook, fault_at: int | None = None) -> None:
        self._hook, self.fault_at, self.epoch = hook, fault_at, None

    def __getattr__(self, name):
        return getattr(self._hook, name)

    def phase(self, name: str, epoch: int | None = None) -> None:
        if epoch is not None:
            self.epoch = epoch
        if name == "train" and epoch is not None and epoch == self.fault_at:
            raise MemoryError(f"injected by {FAULT_ENV}={self.fault_at}")
        self._hook.phase(name, epoch)


def watch(hook, network_id: str, log: logging.Logger) -> WatchedTelemetry:
    """`hook` watched; with a fault injected when ``SPIKEBENCH_FAULT_OOM`` names this run."""
    run, _, at = os.environ.get(FAULT_ENV, "").rpartition(":")
    if run != network_id:
        return WatchedTelemetry(hook)
    log.warning("%s: an out-of-memory error is injected when epoch %s of %s starts", FAULT_ENV, at, run)
    return WatchedTelemetry(hook, int(at))


ESTIMATE_KEYS = (
    "memory_estimate_mib",
    "activation_estimate_mib",
    "dataset_estimate_mib",
    "memory_free_mib",
    "memory_free_source",
    "refused_before_allocating",
)


def _dataset_bytes(spec: NetworkSpec, inputs: dict) -> tuple[int, int | None]:
    """(resident bytes, N-MNIST's longest recording in frames) from the job's input files: the split file's
    rows (training + validation images, from its footer), the frames/samples pair (N-MNIST)."""
    import pyarrow.parquet as pq

    from spikebench import memory_estimate

    if spec.dataset == "nmnist":
        return memory_estimate.nmnist_dataset(inputs["frames"], inputs["samples"])
    n = pq.ParquetFile(inputs["split"]).metadata.num_rows
    return memory_estimate.image_dataset_bytes(spec.dataset, n), None


def size_check(spec: NetworkSpec, inputs: dict, device) -> dict | None:
    """The out-of-memory record of a run too large for ``device`` (module docstring), or None where it fits or
    the device has no free-memory figure."""
    from spikebench import memory_estimate

    dataset_bytes, frames = _dataset_bytes(spec, inputs)
    estimate = memory_estimate.estimate(spec, dataset_bytes, memory_estimate.time_steps(spec, frames))
    free, source = memory_estimate.free_memory(device)
    if free is None or estimate["memory_estimate_mib"] * memory_estimate.MIB <= free:
        return None
    error = (
        f"MemoryEstimate: one training batch (batch {estimate['batch_size']} x {estimate['time_steps']} time steps) "
        f"needs at least {estimate['memory_estimate_mib']:.0f} MiB ({estimate['activation_estimate_mib']:.0f} MiB "
        f"of activations kept for backprop + {estimate['dataset_estimate_mib']:.0f} MiB of dataset), more than "
        f"the {free / memory_estimate.MIB:.0f} MiB free on {device} ({source}); nothing was allocated"
    )
    return {
        "status": OOM,
        "epoch_reached": 0,
        "error": error,
        "device": str(device),
        **memory_reached(device),
        **{k: estimate[k] for k in ("memory_estimate_mib", "activation_estimate_mib", "dataset_estimate_mib")},
        "memory_free_mib": free / memory_estimate.MIB,
        "memory_free_source": source,
        "refused_before_allocating": True,
    }


def refuse_if_too_large(
    spec: NetworkSpec, network_id: str, inputs: dict, outputs: dict, device, hardware: dict, log: logging.Logger
) -> bool:
    """The train job's size check before it loads anything (:func:`size_check`): True when the run is too large,
    its ``status: oom`` outputs written (weights, epochs table, an empty telemetry sidecar, with the hardware)."""
    from spikebench.telemetry.sidecar import add_parquet_metadata

    record = size_check(spec, inputs, device)
    if record is None:
        return False
    log.error("%s: recorded as status oom before allocating, the workflow goes on", record["error"])
    write_train_oom(outputs, network_id, spec, record, device)
    write_empty_telemetry(outputs["telemetry"])
    meta = {"spikebench.hardware": hardware, "spikebench.network": network_id, "spikebench.spec": spec.to_dict()}
    add_parquet_metadata(outputs["epochs"], meta, {"status": OOM})
    add_parquet_metadata(outputs["telemetry"], meta)
    return True


def write_empty_telemetry(path: str | Path) -> None:
    """A telemetry sidecar with its columns and no samples (a phase that never ran)."""
    from spikebench.results import TELEMETRY_COLUMNS

    empty = pa.table(
        {c: pa.array([], pa.string() if c in ("phase", "source") else pa.float64()) for c in TELEMETRY_COLUMNS}
    )
    atomic.write_parquet(empty, Path(path))


def write_train_oom(outputs: dict, network_id: str, spec: NetworkSpec, record: dict, device) -> None:
    """The declared outputs of a train job that ran out of memory (weights and epochs; the sidecar is the sampler's)."""
    from spikebench.results import EPOCH_COLUMNS

    atomic.save_torch(
        {"network": network_id, "spec": spec.to_dict(), "status": OOM, "oom": json.dumps(record)},
        Path(outputs["weights"]),
    )
    row = {column: None for column in EPOCH_COLUMNS}
    row.update(
        network=network_id,
        epoch=record["epoch_reached"],
        device=str(device),
        peak_memory_mib=record["memory_reached_mib"],
        memory_source=record["memory_source"],
        memory_reached_mib=record["memory_reached_mib"],
        error=record["error"],
        **{key: record[key] for key in ESTIMATE_KEYS if key in record},
    )
    frame = pd.DataFrame([row]).astype(
        {
            c: "float64"
            for c in (
                "train_acc",
                "val_acc",
                "epoch_time_s",
                "avg_power_w",
                "energy_j",
                "train_energy_j",
                "device_memory_avg_pct",
                "n_train",
            )
        }
    )
    atomic.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), Path(outputs["epochs"]))


def trained_status(weights: str | Path) -> dict | None:
    """The out-of-memory record of a weights file written by :func:`write_train_oom`, or None for real weights."""
    import torch

    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable file is load_weights' to report, with its advice
        return None
    if isinstance(saved, dict) and saved.get("status") == OOM:
        return json.loads(saved["oom"])
    return None


def write_test_oom(outputs: dict, network_id: str, record: dict) -> None:
    """test.json with ``status: oom`` and null metrics, and an empty telemetry sidecar."""
    from spikebench.results import TEST_KEYS, TEST_TELEMETRY_KEYS

    result = {key: None for key in TEST_KEYS}
    result.update(
        network=network_id,
        device=record["device"],
        status=OOM,
        oom=record,
        peak_memory_mib=record["memory_reached_mib"],
        telemetry={key: None for key in TEST_TELEMETRY_KEYS},
    )
    write_empty_telemetry(outputs["telemetry"])
    atomic.write_json(result, outputs["test"])
