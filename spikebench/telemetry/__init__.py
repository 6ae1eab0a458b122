"""Telemetry sidecar: hardware power, energy, memory and utilisation of a training or test job.

A :class:`TelemetrySampler` runs a background daemon thread next to the job and records one
sample every ``interval_s`` seconds, plus one sample at every phase boundary, into a table
(:data:`SAMPLE_SCHEMA`) written as a Parquet sidecar. :func:`summarize` reduces that table to
per-phase / per-epoch figures; it is a pure function, so the arithmetic is testable exactly.

Sources (the ``source`` column):

``nvml``
    The job runs on an NVIDIA GPU: NVML (``pynvml``, PyPI ``nvidia-ml-py``) for *the GPU the job
    uses*, found by UUID (``torch.cuda.get_device_properties(i).uuid``) because
    ``CUDA_VISIBLE_DEVICES`` renumbers devices; by index only when the UUID is unavailable (logged).
    NVML memory is device-wide (all processes on the GPU and the CUDA context included); the job's
    own tensors are in ``torch_peak_allocated_mib``. On many recent GPUs the NVML power reading is
    a ~1 s moving average, so energy comes from the GPU's total-energy counter when it has one and
    from power integrated over time otherwise; the summaries say which (``energy_source``); that
    energy is the GPU board's only. The host-side columns (``cpu_util_pct``, ``rss_mib``,
    ``cpu_energy_uj``) are recorded as on the ``cpu`` path; ``torch_peak_allocated_mib`` is set on
    the sample that closes a phase (PyTorch's peak allocated memory of this process since the
    phase began, ``torch.cuda.max_memory_allocated``) and null on the other samples and on CPU.
``cpu``
    No CUDA device (or NVML unusable): the job's own process. ``cpu_util_pct`` is the process's
    CPU time (user + system, all its threads, not DataLoader worker processes) over wall time, in %
    of ONE core summed over cores like ``top`` (can exceed 100), over a window of at least
    :data:`CPU_WINDOW_S` (null until that much time has passed).
    ``memory_used_mib`` is the resident set size, ``memory_total_mib`` the machine's RAM, so
    ``memory_used_pct`` is RSS as % of RAM. ``cpu_energy_uj`` is the CPU package energy from Linux
    powercap RAPL (package domains summed, counter wraparound undone, so differences between
    samples are energies) when readable (often root-only), else null.
``none``
    Telemetry disabled: no thread; only the phase-boundary rows, every measurement null.

Never an invented value: anything unavailable is null (pandas NA), never 0. An NVML read that
fails mid-run yields nulls for that sample with the message in ``error`` (logged once per
distinct error) and sampling goes on.

Summaries (:func:`summarize`): averages are **time-weighted** (trapezoids over consecutive samples
of the same phase interval), because boundary samples make the sampling non-uniform; when the
selection spans no time (a single sample) they fall back to the plain mean. Energy is the counter
difference between the first and last sample of each phase interval (samples are taken exactly
at both ends of every phase), summed over intervals; otherwise trapezoidal integration of
``power_w``. ``avg_power_w`` is ``energy_j / duration_s`` whenever the energy is known (exactly
the time-weighted mean power when integrated), else the time-weighted mean of ``power_w``.
With an idle power (:meth:`TelemetrySampler.measure_idle`, sampled before the job's work),
``energy_above_idle_j`` is the energy minus idle power times duration; an NVML energy over an
interval shorter than :data:`MIN_RELIABLE_ENERGY_S` is flagged (``energy_reliable`` False).

Resume: :meth:`TelemetrySampler.write` with ``through_epoch`` writes a partial sidecar after each
epoch; :meth:`TelemetrySampler.restore` puts its finished epochs in front of a resumed run's
samples (metadata ``resumed_epochs``), so the final sidecar covers the whole training.

The package, one concern a module: :mod:`~spikebench.telemetry.sidecar` (the table schema, reading and
writing the sidecar), :mod:`~spikebench.telemetry.summary` (the pure per-phase summary),
:mod:`~spikebench.telemetry.readers` (NVML, process CPU and RAPL readers), :mod:`~spikebench.telemetry.sampler`
(the sampling thread, the null hook, the SIGTERM handler). The hardware record of a job
(``hardware_info``, ``gpu_state``) is in :mod:`spikebench.hardware`, beside device selection.
"""

from spikebench.telemetry.readers import CPU_WINDOW_S, RAPL_ROOT, RaplReader
from spikebench.telemetry.sampler import JOIN_TIMEOUT_S, NullTelemetry, TelemetrySampler, install_sigterm_handler
from spikebench.telemetry.sidecar import (
    METADATA_KEY,
    PHASES,
    SAMPLE_SCHEMA,
    SOURCES,
    add_parquet_metadata,
    empty_samples,
    finish_telemetry,
    read_samples,
    sidecar_metadata,
    write_sidecar,
)
from spikebench.telemetry.summary import ENERGY_SOURCES, MIN_RELIABLE_ENERGY_S, SUMMARY_KEYS, summarize

__all__ = [
    "CPU_WINDOW_S",
    "ENERGY_SOURCES",
    "JOIN_TIMEOUT_S",
    "METADATA_KEY",
    "MIN_RELIABLE_ENERGY_S",
    "NullTelemetry",
    "PHASES",
    "RAPL_ROOT",
    "RaplReader",
    "SAMPLE_SCHEMA",
    "SOURCES",
    "SUMMARY_KEYS",
    "TelemetrySampler",
    "add_parquet_metadata",
    "empty_samples",
    "finish_telemetry",
    "install_sigterm_handler",
    "read_samples",
    "sidecar_metadata",
    "summarize",
    "write_sidecar",
]
