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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd
import psutil

if TYPE_CHECKING:
    import torch

__all__ = [
    "CPU_WINDOW_S",
    "ENERGY_SOURCES",
    "PHASES",
    "MIN_RELIABLE_ENERGY_S",
    "NullTelemetry",
    "SAMPLE_SCHEMA",
    "SUMMARY_KEYS",
    "RaplReader",
    "TelemetrySampler",
    "empty_samples",
    "hardware_info",
    "install_sigterm_handler",
    "gpu_state",
    "read_samples",
    "sidecar_metadata",
    "summarize",
]

PHASES: tuple[str, ...] = ("train", "val", "test", "idle")
SOURCES: tuple[str, ...] = ("nvml", "cpu", "none")
ENERGY_SOURCES: tuple[str, ...] = ("nvml_energy_counter", "nvml_power_integrated", "rapl")
RAPL_ROOT = Path("/sys/class/powercap")
CPU_WINDOW_S = 0.05
"""Shortest wall-time window over which ``cpu_util_pct`` is computed (s)."""
MIN_RELIABLE_ENERGY_S = 1.0
"""Shortest phase interval whose NVML energy is reported as reliable (s): the energy counter updates
every ~100 ms and the power reading is a ~1 s moving average (Zeus's measurement notes)."""
JOIN_TIMEOUT_S = 5.0
"""How long :meth:`TelemetrySampler.stop` waits for the sampling thread (s)."""
METADATA_KEY = b"spikebench.telemetry"
MIB = 2.0**20

SAMPLE_SCHEMA: dict[str, str] = {
    "time_s": "float64",  # monotonic seconds since start()
    "timestamp": "datetime64[ns, UTC]",
    "phase": "string",  # train | val | test | idle
    "epoch": "Int64",
    "source": "string",  # nvml | cpu | none
    "power_w": "Float64",
    "energy_counter_mj": "Int64",  # NVML total-energy counter (mJ since driver load)
    "memory_used_mib": "Float64",
    "memory_total_mib": "Float64",
    "memory_used_pct": "Float64",
    "gpu_util_pct": "Float64",
    "memory_util_pct": "Float64",
    "temperature_c": "Float64",
    "sm_clock_mhz": "Float64",
    "cpu_util_pct": "Float64",
    "rss_mib": "Float64",
    "cpu_energy_uj": "Int64",  # RAPL package energy, unwrapped counter (µJ)
    "torch_peak_allocated_mib": "Float64",  # on phase-closing samples: peak since the phase began
    "error": "string",
}
"""Columns of the telemetry table and their pandas dtypes (nullable: NA where unavailable)."""

_COLUMNS = tuple(SAMPLE_SCHEMA)
_IX = {name: i for i, name in enumerate(_COLUMNS)}

SUMMARY_KEYS: tuple[str, ...] = (
    "avg_power_w",
    "energy_j",
    "energy_source",
    "avg_memory_mib",
    "peak_memory_mib",
    "avg_memory_pct",
    "peak_memory_pct",
    "avg_gpu_util_pct",
    "avg_cpu_util_pct",
    "torch_peak_allocated_mib",
    "telemetry_source",
    "n_samples",
    "duration_s",
    "idle_power_w",
    "energy_above_idle_j",
    "energy_reliable",
    "energy_unreliable_reason",
)
"""Keys of :func:`summarize`'s result (``epoch_summary`` adds ``train_energy_j``, ``val_energy_j``,
``train_energy_above_idle_j``, ``val_energy_above_idle_j``)."""


# --------------------------------------------------------------------------- table helpers


def empty_samples() -> pd.DataFrame:
    """An empty telemetry table with the right columns and dtypes."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in SAMPLE_SCHEMA.items()})


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    """Build the typed telemetry table from raw sample rows (wall time as float seconds)."""
    if not rows:
        return empty_samples()
    columns = list(zip(*rows))  # column-wise, keeping Python ints exact (no float round trip)
    out: dict[str, pd.Series] = {}
    for (name, dtype), values in zip(SAMPLE_SCHEMA.items(), columns):
        if name == "timestamp":
            stamps = pd.to_datetime(np.asarray(values, dtype="float64"), unit="s", utc=True)
            out[name] = pd.Series(stamps).astype(dtype)
        elif name == "time_s":
            out[name] = pd.Series(np.asarray(values, dtype="float64"))
        else:
            out[name] = pd.Series(values, dtype="object").astype(dtype)
    return pd.DataFrame(out)


def _rows_of(df: pd.DataFrame) -> list[list[Any]]:
    """The raw sample rows of a telemetry table (inverse of :func:`_frame`; NA as None)."""
    if df.empty:
        return []
    columns = []
    for name in _COLUMNS:
        col = df[name]
        if name == "timestamp":
            columns.append([t.timestamp() for t in col])
        elif name == "time_s":
            columns.append(col.astype("float64").tolist())
        else:
            columns.append([None if v is pd.NA else v for v in col.astype(object).where(col.notna(), None)])
    return [list(row) for row in zip(*columns)]


def read_samples(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a telemetry sidecar written by :meth:`TelemetrySampler.write`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"telemetry sidecar not found: {path}")
    df = pd.read_parquet(path)
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a telemetry sidecar, missing columns {missing}")
    return df[list(_COLUMNS)].astype(SAMPLE_SCHEMA)


def sidecar_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sampler settings and phase boundaries stored in a sidecar's Parquet metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(Path(path)).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- summaries


def _num(values: pd.Series) -> np.ndarray:
    """A nullable numeric column as float64 with NaN for NA."""
    return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _scalar(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize(samples: pd.DataFrame, phases: str | Iterable[str], epoch: int | None = None,
              idle_power_w: float | None = None) -> dict[str, Any]:
    """Summarise the samples of the given phase(s), optionally of one epoch only.

    ``phases`` is a phase name or several (e.g. ``("train", "val")``); ``epoch=None`` selects every
    epoch. A *phase interval* is a contiguous run of samples with the same (phase, epoch); energy
    and durations are summed over intervals, never across the gap between two intervals. Rows are
    taken in ``time_s`` order (a stable sort: rows with equal times keep their table order).
    ``energy_above_idle_j`` is ``energy_j - idle_power_w * duration_s`` (None without an idle power).
    An NVML energy of a selection with an interval shorter than :data:`MIN_RELIABLE_ENERGY_S` has
    ``energy_reliable`` False and the reason in ``energy_unreliable_reason`` (None without energy).
    Returns the :data:`SUMMARY_KEYS` with plain Python values (``None`` where unavailable).
    """
    missing = [c for c in _COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"summarize: samples table lacks columns {missing} (expected SAMPLE_SCHEMA)")
    wanted = (phases,) if isinstance(phases, str) else tuple(phases)
    unknown = sorted(set(wanted) - set(PHASES))
    if unknown:
        raise ValueError(f"summarize: unknown phase(s) {unknown}; expected some of {PHASES}")

    df = samples.sort_values("time_s", kind="stable").reset_index(drop=True)
    phase = df["phase"].astype("string").fillna("").to_numpy(dtype=object)
    ep = df["epoch"].astype("Int64").fillna(-1).to_numpy(dtype="int64")
    change = np.ones(len(df), dtype=bool)
    if len(df) > 1:
        change[1:] = (phase[1:] != phase[:-1]) | (ep[1:] != ep[:-1])
    segment = np.cumsum(change)

    mask = np.isin(phase, wanted)
    if epoch is not None:
        mask &= ep == int(epoch)
    sel = df.loc[mask].reset_index(drop=True)
    seg = segment[mask]
    result: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    result["n_samples"] = len(sel)
    if sel.empty:
        return result

    t = sel["time_s"].to_numpy(dtype="float64")
    pair = np.zeros(len(sel), dtype=bool)  # row i closes the pair (i-1, i) inside one interval
    pair[1:] = seg[1:] == seg[:-1]
    dt = np.zeros(len(sel))
    dt[1:] = np.diff(t)
    duration = float(dt[pair].sum())
    first = np.ones(len(sel), dtype=bool)
    first[1:] = ~pair[1:]
    last = np.ones(len(sel), dtype=bool)
    last[:-1] = ~pair[1:]

    def pair_means(x: np.ndarray) -> np.ndarray:
        mid = np.full(len(x), np.nan)
        mid[1:] = (x[1:] + x[:-1]) / 2.0
        return mid

    def time_avg(column: str) -> float | None:
        x = _num(sel[column])
        mid = pair_means(x)
        ok = pair & ~np.isnan(mid)
        weight = dt[ok].sum()
        if weight > 0:
            return _scalar(float((mid[ok] * dt[ok]).sum() / weight))
        finite = x[~np.isnan(x)]
        return _scalar(float(finite.mean())) if finite.size else None

    def peak(column: str) -> float | None:
        x = _num(sel[column])
        return _scalar(float(np.nanmax(x))) if (~np.isnan(x)).any() else None

    def counter_energy(column: str, joules_per_unit: float) -> float | None:
        c = sel[column].astype("Int64")
        start, end = c[first], c[last]
        if start.isna().any() or end.isna().any():
            return None
        diff = end.to_numpy(dtype="int64") - start.to_numpy(dtype="int64")
        if (diff < 0).any():  # counter reset (driver reload): not a usable difference
            return None
        return float(diff.sum()) * joules_per_unit

    def integrated_energy(column: str) -> float | None:
        x = _num(sel[column])
        if np.isnan(x).all():
            return None
        mid = pair_means(x)
        if np.isnan(mid[pair]).any():  # a gap in the readings: the integral would be incomplete
            return None
        return float((mid[pair] * dt[pair]).sum())

    sources = sorted(set(sel["source"].dropna().astype(str)))
    energy: float | None = None
    energy_source: str | None = None
    if sources == ["nvml"]:
        energy = counter_energy("energy_counter_mj", 1e-3)
        if energy is not None:
            energy_source = "nvml_energy_counter"
        else:
            energy = integrated_energy("power_w")
            energy_source = "nvml_power_integrated" if energy is not None else None
    elif sources == ["cpu"]:
        energy = counter_energy("cpu_energy_uj", 1e-6)
        energy_source = "rapl" if energy is not None else None

    if energy is not None and duration > 0:
        avg_power = energy / duration
    else:
        avg_power = time_avg("power_w")

    result.update(_energy_quality(energy, energy_source, duration, idle_power_w, dt, pair, seg))
    result.update(
        avg_power_w=_scalar(avg_power) if avg_power is not None else None,
        energy_j=energy,
        energy_source=energy_source,
        avg_memory_mib=time_avg("memory_used_mib"),
        peak_memory_mib=peak("memory_used_mib"),
        avg_memory_pct=time_avg("memory_used_pct"),
        peak_memory_pct=peak("memory_used_pct"),
        avg_gpu_util_pct=time_avg("gpu_util_pct"),
        avg_cpu_util_pct=time_avg("cpu_util_pct"),
        torch_peak_allocated_mib=peak("torch_peak_allocated_mib"),
        telemetry_source="+".join(sources) if sources else None,
        duration_s=duration,
    )
    return result


def _energy_quality(energy: float | None, energy_source: str | None, duration: float, idle_power_w: float | None,
                    dt: np.ndarray, pair: np.ndarray, seg: np.ndarray) -> dict[str, Any]:
    """``idle_power_w``, ``energy_above_idle_j``, ``energy_reliable`` and its reason for :func:`summarize`."""
    idle = _scalar(idle_power_w) if idle_power_w is not None else None
    out: dict[str, Any] = {"idle_power_w": idle, "energy_above_idle_j": None, "energy_reliable": None,
                           "energy_unreliable_reason": None}
    if energy is None:
        return out
    if idle is not None:
        out["energy_above_idle_j"] = energy - idle * duration
    out["energy_reliable"] = True
    if energy_source is not None and energy_source.startswith("nvml"):
        _, index = np.unique(seg, return_inverse=True)
        shortest = float(np.bincount(index, weights=np.where(pair, dt, 0.0)).min())
        if shortest < MIN_RELIABLE_ENERGY_S:
            out["energy_reliable"] = False
            out["energy_unreliable_reason"] = (
                f"a phase interval of {shortest:.3g} s is shorter than {MIN_RELIABLE_ENERGY_S:g} s: NVML's energy "
                "counter updates every ~100 ms and its power reading is a ~1 s average"
            )
    return out


# --------------------------------------------------------------------------- readers


class RaplReader:
    """CPU package energy from Linux powercap RAPL, summed over package domains.

    Only top-level ``intel-rapl:N`` domains whose ``name`` starts with ``package`` are used (not
    sub-domains such as core/dram, not ``psys``, not the duplicate ``intel-rapl-mmio``). ``read()``
    returns an unwrapped cumulative counter in µJ (wraparound undone with ``max_energy_range_uj``),
    or ``None`` when unavailable (``available`` is False when no package counter is readable).
    """

    _DOMAIN = re.compile(r"^intel-rapl:\d+$")

    def __init__(self, root: str | os.PathLike[str] = RAPL_ROOT) -> None:
        self.root = Path(root)
        self.domains: list[Path] = []
        self._ranges: list[int] = []
        self._last: list[int] = []
        self._total = 0
        self.available = False
        try:
            candidates = sorted(p for p in self.root.iterdir() if self._DOMAIN.match(p.name))
        except OSError:
            return
        for domain in candidates:
            name_file = domain / "name"
            try:
                name = name_file.read_text().strip()
            except OSError:
                name = "package"  # unnamed top-level domain: a package on every kernel seen
            if name.startswith("package"):
                self.domains.append(domain)
        if not self.domains:
            return
        try:
            self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
            self._last = self._raw()
        except (OSError, ValueError):
            return
        self._total = sum(self._last)
        self.available = True

    def _raw(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def read(self) -> int | None:
        """Current cumulative package energy (µJ), or None; raises OSError if it became unreadable."""
        if not self.available:
            return None
        raw = self._raw()
        delta = 0
        for now, before, span in zip(raw, self._last, self._ranges):
            delta += now - before if now >= before else now + span - before
        self._last = raw
        self._total += delta
        return self._total


class _CpuReader:
    """Process CPU utilisation, resident memory, machine RAM and RAPL energy.

    CPU time is ``time.process_time()`` (CLOCK_PROCESS_CPUTIME_ID: user + system of all the
    process's threads, ns resolution); RSS comes from ``/proc/self/statm`` through a file kept
    open (psutil where there is no /proc): a sample costs microseconds, not a psutil round trip.
    """

    def __init__(self, rapl_root: str | os.PathLike[str]) -> None:
        self.ram_total_mib = psutil.virtual_memory().total / MIB
        self.rapl = RaplReader(rapl_root)
        self._history: deque[tuple[float, float]] = deque()
        self._page_mib = os.sysconf("SC_PAGE_SIZE") / MIB if hasattr(os, "sysconf") else 4096 / MIB
        self._process = psutil.Process()
        try:
            self._statm: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self._statm = None

    def _rss_mib(self) -> float:
        if self._statm is not None:
            return int(os.pread(self._statm, 128, 0).split()[1]) * self._page_mib
        return self._process.memory_info().rss / MIB

    def read(self, row: list[Any], now: float, errors: list[str], as_memory: bool) -> None:
        cpu = time.process_time()
        history = self._history
        while len(history) >= 2 and now - history[1][0] >= CPU_WINDOW_S:
            history.popleft()
        if history and now - history[0][0] >= CPU_WINDOW_S:
            t_ref, cpu_ref = history[0]
            row[_IX["cpu_util_pct"]] = max(0.0, (cpu - cpu_ref) / (now - t_ref) * 100.0)
        history.append((now, cpu))
        try:
            rss = self._rss_mib()
        except (psutil.Error, OSError, ValueError, IndexError) as exc:
            errors.append(f"rss: {exc}")
        else:
            row[_IX["rss_mib"]] = rss
            if as_memory:
                row[_IX["memory_used_mib"]] = rss
                row[_IX["memory_total_mib"]] = self.ram_total_mib
                row[_IX["memory_used_pct"]] = rss / self.ram_total_mib * 100.0
        if self.rapl.available:
            try:
                row[_IX["cpu_energy_uj"]] = self.rapl.read()
            except (OSError, ValueError) as exc:
                errors.append(f"rapl: {exc}")

    def close(self) -> None:
        if self._statm is not None:
            with contextlib.suppress(OSError):
                os.close(self._statm)
            self._statm = None


def _parse_device(device: torch.device | str) -> tuple[str, int | None]:
    """(type, index) of a torch device or its string form, without importing torch."""
    if isinstance(device, str):
        match = re.fullmatch(r"\s*([a-z_]+)(?::(\d+))?\s*", device)
        if match is None:
            raise ValueError(f"telemetry device must look like 'cpu', 'cuda' or 'cuda:1', got {device!r}")
        return match.group(1), int(match.group(2)) if match.group(2) is not None else None
    kind = getattr(device, "type", None)
    if not isinstance(kind, str):
        raise TypeError(f"telemetry device must be a torch.device or a string, got {device!r}")
    index = getattr(device, "index", None)
    return kind, None if index is None else int(index)


def _torch_gpu_uuid(index: int) -> str | None:
    """PyTorch's UUID of CUDA device ``index`` (bare, without NVML's ``GPU-`` prefix), or None."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        text = str(torch.cuda.get_device_properties(index).uuid).strip()
        return text or None
    except Exception:  # noqa: BLE001 - best effort: old torch, no driver, ...
        return None


def _nvml_index_guess(torch_index: int) -> int:
    """The NVML index of torch's CUDA device ``torch_index`` when no UUID is known."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if torch_index < len(entries) and entries[torch_index].isdigit():
            return int(entries[torch_index])
    return torch_index


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _NvmlReader:
    """NVML readings of the GPU a job uses (mapped by UUID, else by index)."""

    def __init__(self, nvml: Any, torch_index: int, log: logging.Logger, log_once: Callable[[str, str], None]) -> None:
        self.nvml = nvml
        self.log = log
        self._log_once = log_once
        nvml.nvmlInit()
        try:
            self.handle, self.mapping, self.uuid, self.index = self._resolve(torch_index)
        except BaseException:
            self._shutdown_quietly()
            raise
        temp_sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        sm_clock = getattr(nvml, "NVML_CLOCK_SM", 1)
        h = self.handle
        # (NVML function, reader filling the row); a function answering NotSupported is dropped.
        self.fields: list[tuple[str, Callable[[list[Any]], None]]] = [
            ("nvmlDeviceGetPowerUsage", lambda r: r.__setitem__(_IX["power_w"], nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)),
            (
                "nvmlDeviceGetTotalEnergyConsumption",
                lambda r: r.__setitem__(_IX["energy_counter_mj"], int(nvml.nvmlDeviceGetTotalEnergyConsumption(h))),
            ),
            ("nvmlDeviceGetMemoryInfo", self._memory),
            ("nvmlDeviceGetUtilizationRates", self._utilization),
            (
                "nvmlDeviceGetTemperature",
                lambda r: r.__setitem__(_IX["temperature_c"], float(nvml.nvmlDeviceGetTemperature(h, temp_sensor))),
            ),
            (
                "nvmlDeviceGetClockInfo",
                lambda r: r.__setitem__(_IX["sm_clock_mhz"], float(nvml.nvmlDeviceGetClockInfo(h, sm_clock))),
            ),
        ]

    def _resolve(self, torch_index: int) -> tuple[Any, str, str | None, int | None]:
        nvml = self.nvml
        uuid = _torch_gpu_uuid(torch_index)
        if uuid:
            candidates = [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"]
            for candidate in candidates:
                try:
                    handle = nvml.nvmlDeviceGetHandleByUUID(candidate)
                except nvml.NVMLError:
                    continue
                self.log.info("telemetry: NVML device of cuda:%d found by UUID %s", torch_index, candidate)
                return handle, "uuid", candidate, None
            self.log.warning(
                "telemetry: NVML knows no device with UUID %s (cuda:%d); falling back to the index", uuid, torch_index
            )
        index = _nvml_index_guess(torch_index)
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self.log.warning(
            "telemetry: GPU UUID of cuda:%d unavailable; sampling NVML device index %d "
            "(from CUDA_VISIBLE_DEVICES=%r; may be another GPU unless CUDA_DEVICE_ORDER=PCI_BUS_ID)",
            torch_index,
            index,
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return handle, "index", None, index

    def _memory(self, row: list[Any]) -> None:
        info = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        used, total = info.used / MIB, info.total / MIB
        row[_IX["memory_used_mib"]] = used
        row[_IX["memory_total_mib"]] = total
        row[_IX["memory_used_pct"]] = used / total * 100.0 if total > 0 else None

    def _utilization(self, row: list[Any]) -> None:
        rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        row[_IX["gpu_util_pct"]] = float(rates.gpu)
        row[_IX["memory_util_pct"]] = float(rates.memory)

    def _not_supported(self, exc: BaseException) -> bool:
        cls = getattr(self.nvml, "NVMLError_NotSupported", None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
        return getattr(exc, "value", None) == getattr(self.nvml, "NVML_ERROR_NOT_SUPPORTED", 3)

    def read(self, row: list[Any], errors: list[str]) -> None:
        dropped: list[int] = []
        for i, (name, fill) in enumerate(self.fields):
            try:
                fill(row)
            except Exception as exc:  # noqa: BLE001 - NVMLError or a broken binding: record, go on
                if isinstance(exc, self.nvml.NVMLError) and self._not_supported(exc):
                    dropped.append(i)
                    self.log.info("telemetry: %s not supported on this GPU; its column stays null", name)
                    continue
                message = str(exc) or type(exc).__name__
                errors.append(f"{name}: {message}")
                self._log_once(message, name)
        for i in reversed(dropped):
            del self.fields[i]

    def _shutdown_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()

    def close(self) -> None:
        self._shutdown_quietly()


# --------------------------------------------------------------------------- sampler


class TelemetrySampler:
    """Background sampler of a job's hardware telemetry; a context manager.

    >>> with TelemetrySampler(device, interval_s=0.1) as telemetry:   # doctest: +SKIP
    ...     telemetry.phase("train", epoch=0); train_one_epoch()
    ...     telemetry.phase("val", epoch=0); validate()
    ...     telemetry.phase("idle"); row.update(telemetry.epoch_summary(0))
    >>> telemetry.write("results/exp1_snn/telemetry.parquet")          # doctest: +SKIP

    ``start()`` and ``stop()`` are idempotent; a stopped sampler cannot be restarted. ``stop()``
    always signals and joins the thread (bounded by :data:`JOIN_TIMEOUT_S`), also when the code
    inside the ``with`` raises (call :func:`install_sigterm_handler` so SIGTERM does too).
    Every :meth:`phase` call samples at the boundary: a closing sample of the old phase and an
    opening sample of the new one, so every phase has >= 2 samples spanning it exactly.
    """

    def __init__(
        self,
        device: torch.device | str,
        interval_s: float = 0.1,
        enabled: bool = True,
        log: logging.Logger | None = None,
        nvml: Any = None,
        *,
        rapl_root: str | os.PathLike[str] = RAPL_ROOT,
    ) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"telemetry interval_s must be a positive number of seconds, got {interval_s!r}")
        self.device_type, self.device_index = _parse_device(device)
        self.device = self.device_type if self.device_index is None else f"{self.device_type}:{self.device_index}"
        self.interval_s = float(interval_s)
        self.enabled = bool(enabled)
        self.log = log if log is not None else logging.getLogger(__name__)
        self._nvml_module = nvml
        self._rapl_root = rapl_root
        self.source: str | None = None
        self.info: dict[str, Any] = {
            "device": self.device,
            "interval_s": self.interval_s,
            "enabled": self.enabled,
        }
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._state = "new"
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: list[list[Any]] = []
        self._boundaries: list[dict[str, Any]] = []
        self._phase: tuple[str, int | None] = ("idle", None)
        self._logged: set[str] = set()
        self._t0 = 0.0
        self._cpu: _CpuReader | None = None
        self._nvml: _NvmlReader | None = None
        self._torch_cuda = False
        self.idle: dict[str, Any] = {"idle_power_w": None, "idle_s": None, "idle_energy_source": None,
                                     "idle_null_reason": "idle power not measured (telemetry.idle_s: 0)"}

    # ---- lifecycle

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._state == "running"

    @property
    def thread(self) -> threading.Thread | None:
        """The sampling thread (None when disabled or not started)."""
        return self._thread

    @property
    def current_phase(self) -> tuple[str, int | None]:
        """The (phase, epoch) new samples are attributed to."""
        return self._phase

    def start(self) -> Self:
        """Open the telemetry sources, take the first sample and start the thread (idempotent)."""
        with self._state_lock:
            if self._state == "running":
                return self
            if self._state != "new":
                raise RuntimeError("TelemetrySampler was stopped; create a new one to sample again")
            try:
                self._t0 = time.monotonic()
                if not self.enabled:
                    self.source = "none"
                else:
                    self._cpu = _CpuReader(self._rapl_root)
                    self.source = "cpu"
                    if self.device_type == "cuda":
                        import torch  # only CUDA jobs need it here; they have imported it already

                        self._torch_cuda = torch.cuda.is_available()
                        self._open_nvml()
                self.info.update(source=self.source, rapl_available=bool(self._cpu and self._cpu.rapl.available))
                self._state = "running"
                with self._lock:
                    self._sample_locked(torch_peak=False)
                    start = self._rows[-1][_IX["time_s"]]
                    self._boundaries.append({"phase": "idle", "epoch": None, "start_s": start, "end_s": None})
                if self.enabled:
                    self._thread = threading.Thread(target=self._run, name="spikebench-telemetry", daemon=True)
                    self._thread.start()
            except BaseException:  # e.g. SIGTERM while starting: __exit__ will not run, so undo here
                self._abort_start()
                raise
        return self

    def _abort_start(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
        if self._nvml is not None:
            self._nvml.close()
        if self._cpu is not None:
            self._cpu.close()
        self._state = "stopped"

    def _open_nvml(self) -> None:
        import torch

        index = self.device_index
        if index is None:
            index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        nvml = self._nvml_module
        try:
            if nvml is None:
                import pynvml as nvml  # optional: only for CUDA devices
            self._nvml = _NvmlReader(nvml, index, self.log, self._log_once)
        except Exception as exc:  # noqa: BLE001 - no driver, no library, no device: degrade to cpu
            self.log.warning("telemetry: NVML unavailable for %s (%s); recording the CPU-side source instead", self.device, exc)
            self._nvml = None
            return
        self.source = "nvml"
        self.info.update(nvml_mapping=self._nvml.mapping, gpu_uuid=self._nvml.uuid, nvml_index=self._nvml.index)

    def stop(self) -> None:
        """Stop sampling: signal and join the thread, take a closing sample (idempotent)."""
        with self._state_lock:
            if self._state != "running":
                if self._state == "new":
                    self._state = "stopped"
                return
            self._state = "stopping"
        self._stop_event.set()
        thread_done = True
        try:
            if self._thread is not None:
                self._thread.join(JOIN_TIMEOUT_S)
                if self._thread.is_alive():
                    thread_done = False
                    self.log.warning(
                        "telemetry: sampling thread did not stop within %.1f s (daemon, left behind)", JOIN_TIMEOUT_S
                    )
            if thread_done and self._lock.acquire(timeout=JOIN_TIMEOUT_S):
                try:
                    self._sample_locked(torch_peak=True)
                    self._boundaries[-1]["end_s"] = self._rows[-1][_IX["time_s"]]
                finally:
                    self._lock.release()
        finally:
            if self._nvml is not None:
                self._nvml.close()
            if self._cpu is not None and thread_done:
                self._cpu.close()
            self._state = "stopped"

    def _run(self) -> None:
        interval = self.interval_s
        deadline = time.monotonic() + interval
        while not self._stop_event.wait(max(0.0, deadline - time.monotonic())):
            try:
                with self._lock:
                    self._sample_locked(torch_peak=False)
            except Exception as exc:  # noqa: BLE001 - the sidecar must never kill the job
                self._log_once(f"{type(exc).__name__}: {exc}", "sampler")
            deadline += interval
            now = time.monotonic()
            if deadline < now:  # fell behind (suspended, overloaded): skip the missed ticks
                deadline = now + interval

    # ---- sampling

    def _log_once(self, message: str, where: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            self.log.warning(
                "telemetry: %s failed (%s); recording nulls for it, and not logging this error again", where, message
            )

    def _sample_locked(self, torch_peak: bool) -> None:
        """Take one sample (self._lock held)."""
        now = time.monotonic()
        row: list[Any] = [None] * len(_COLUMNS)
        row[_IX["time_s"]] = now - self._t0
        row[_IX["timestamp"]] = time.time()
        row[_IX["phase"]], row[_IX["epoch"]] = self._phase
        row[_IX["source"]] = self.source
        errors: list[str] = []
        if self._nvml is not None:
            self._nvml.read(row, errors)
        if self._cpu is not None:
            self._cpu.read(row, now, errors, as_memory=self._nvml is None)
        if torch_peak and self._torch_cuda:
            row[_IX["torch_peak_allocated_mib"]] = self._torch_peak_mib()
        row[_IX["error"]] = "; ".join(errors) if errors else None
        self._rows.append(row)

    def _torch_peak_mib(self) -> float | None:
        import torch

        try:
            if not torch.cuda.is_initialized():
                return None  # the job has not touched CUDA: no allocator statistics exist
            return torch.cuda.max_memory_allocated(self.device) / MIB
        except Exception as exc:  # noqa: BLE001
            self._log_once(str(exc), "torch.cuda.max_memory_allocated")
            return None

    def _reset_torch_peak(self) -> None:
        if self._torch_cuda:
            import torch

            try:
                if torch.cuda.is_initialized():
                    torch.cuda.reset_peak_memory_stats(self.device)
            except Exception as exc:  # noqa: BLE001
                self._log_once(str(exc), "torch.cuda.reset_peak_memory_stats")

    def phase(self, name: str, epoch: int | None = None) -> None:
        """Mark the start of phase ``name`` (train/val/test/idle) of ``epoch`` (None outside epochs).

        Samples at the boundary (closing the old phase, opening the new one) and resets PyTorch's
        peak-allocated statistics so the phase's own peak is recorded.
        """
        if name not in PHASES:
            raise ValueError(f"telemetry phase must be one of {PHASES}, got {name!r}")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer))):
            raise ValueError(f"telemetry epoch must be an int or None, got {epoch!r}")
        if self._state != "running":
            raise RuntimeError("TelemetrySampler.phase() called before start() or after stop()")
        epoch = None if epoch is None else int(epoch)
        with self._lock:
            self._sample_locked(torch_peak=True)
            self._boundaries[-1]["end_s"] = self._rows[-1][_IX["time_s"]]
            self._phase = (name, epoch)
            self._reset_torch_peak()
            self._sample_locked(torch_peak=False)
            start = self._rows[-1][_IX["time_s"]]
            self._boundaries.append({"phase": name, "epoch": epoch, "start_s": start, "end_s": None})

    def measure_idle(self, seconds: float) -> dict[str, Any]:
        """Sample ``seconds`` of the idle device (call while nothing runs) and keep its mean power.

        The result (also in ``self.idle`` and the sidecar's metadata ``idle``): ``idle_power_w``,
        ``idle_s``, ``idle_energy_source``, and ``idle_null_reason`` when it could not be measured
        (telemetry disabled, no power or energy reading); later summaries report energy above it.
        """
        if self._state != "running" or self.source == "none":
            reason = "telemetry disabled"
        elif self._nvml is None and not (self._cpu is not None and self._cpu.rapl.available):
            reason = "no power or energy reading on this device (CPU path without readable RAPL counters)"
        elif seconds <= 0:
            reason = "idle power not measured (telemetry.idle_s: 0)"
        else:
            reason = None
        if reason is None:
            if self._phase != ("idle", None):
                self.phase("idle", None)
            with self._lock:
                self._sample_locked(torch_peak=False)
                start = self._rows[-1][_IX["time_s"]]
            time.sleep(seconds)
            with self._lock:
                self._sample_locked(torch_peak=False)
                end = self._rows[-1][_IX["time_s"]]
            df = self.samples()
            window = summarize(df[(df["time_s"] >= start) & (df["time_s"] <= end)], "idle")
            if window["avg_power_w"] is None:
                reason = "no power or energy reading during the idle window"
            self.idle = {"idle_power_w": window["avg_power_w"], "idle_s": window["duration_s"],
                         "idle_energy_source": window["energy_source"], "idle_null_reason": reason,
                         "start_s": start, "end_s": end}
        else:
            self.idle = {"idle_power_w": None, "idle_s": None, "idle_energy_source": None, "idle_null_reason": reason}
        self.info["idle"] = self.idle
        return dict(self.idle)

    def restore(self, path: str | os.PathLike[str], through_epoch: int, key: str | None = None) -> list[int]:
        """Put the samples of epochs ``1..through_epoch`` of an earlier, killed run of this job (the
        partial sidecar at ``path``) in front of this run's samples; returns the epochs restored.

        This run's times are shifted to follow the earlier ones by the wall time between them, so
        ``time_s`` stays increasing across the resume. Metadata ``resumed_epochs`` lists the epochs
        whose samples come from an earlier process, ``resumes`` each resume (after which epoch, at
        which ``time_s``). A missing or unreadable partial sidecar, or one whose metadata
        ``checkpoint_key`` is not ``key``, restores nothing (logged).
        """
        try:
            prior, meta = read_samples(path), sidecar_metadata(path)
        except (OSError, ValueError) as exc:
            self.log.warning("telemetry: samples of the epochs before the resume are lost (%s)", exc)
            return []
        if key is not None and meta.get("checkpoint_key") != key:
            self.log.warning("telemetry: partial sidecar %s belongs to another checkpoint; samples of the epochs "
                             "before the resume are lost", path)
            return []
        ends = [b["end_s"] for b in meta.get("phases", [])
                if b.get("epoch") is not None and b["epoch"] <= through_epoch and b.get("end_s") is not None]
        cut = max(ends, default=-math.inf)
        prior = prior[prior["time_s"] <= cut]
        epochs = sorted({int(e) for e in prior["epoch"].dropna()})
        if epochs != list(range(1, through_epoch + 1)):
            self.log.warning("telemetry: the partial sidecar %s holds epochs %s of the %d before the resume",
                             path, epochs, through_epoch)
        boundaries = [b for b in meta.get("phases", []) if b.get("end_s") is not None and b["end_s"] <= cut]
        with self._lock:
            if not prior.empty and self._rows:
                gap = max(self._rows[0][_IX["timestamp"]] - prior["timestamp"].iloc[-1].timestamp(), 0.0)
                shift = float(prior["time_s"].iloc[-1]) + gap - self._rows[0][_IX["time_s"]] + 1e-6
                self._shift_locked(shift)
            else:
                shift = 0.0
            self._rows[:0] = _rows_of(prior)
            self._boundaries[:0] = boundaries
            self.info["resumed_epochs"] = epochs
            self.info["resumes"] = [*meta.get("resumes", []), {"after_epoch": int(through_epoch), "time_s": shift}]
        return epochs

    def _shift_locked(self, shift: float) -> None:
        self._t0 -= shift
        for row in self._rows:
            row[_IX["time_s"]] += shift
        for b in self._boundaries:
            for key in ("start_s", "end_s"):
                if b[key] is not None:
                    b[key] += shift
        for key in ("start_s", "end_s"):
            if self.idle.get(key) is not None:
                self.idle[key] += shift

    def _checkpoint(self, phases: tuple[str, ...], epoch: int | None) -> None:
        """Sample now if the current phase is being summarised, so it is covered up to now."""
        name, current_epoch = self._phase
        if self._state == "running" and name in phases and (epoch is None or current_epoch == epoch):
            with self._lock:
                self._sample_locked(torch_peak=True)

    # ---- results

    def samples(self) -> pd.DataFrame:
        """The telemetry table so far (:data:`SAMPLE_SCHEMA`)."""
        with self._lock:
            rows = list(self._rows)
        return _frame(rows)

    def phases(self) -> pd.DataFrame:
        """Phase intervals: phase, epoch, start_s, end_s: times of the opening and closing samples
        (seconds since start; end NA while the phase is open)."""
        with self._lock:
            records = [dict(b) for b in self._boundaries]
        return pd.DataFrame(
            {
                "phase": pd.Series([b["phase"] for b in records], dtype="string"),
                "epoch": pd.Series([b["epoch"] for b in records], dtype="object").astype("Int64"),
                "start_s": pd.Series([b["start_s"] for b in records], dtype="object").astype("Float64"),
                "end_s": pd.Series([b["end_s"] for b in records], dtype="object").astype("Float64"),
            }
        )

    def phase_summary(self, phase: str, epoch: int | None = None) -> dict[str, Any]:
        """:func:`summarize` of one phase (all epochs when ``epoch`` is None)."""
        self._checkpoint((phase,), epoch)
        return summarize(self.samples(), phase, epoch, self.idle["idle_power_w"])

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        """:func:`summarize` of the train and val phases of ``epoch`` together, plus
        ``train_energy_j`` and ``val_energy_j``."""
        self._checkpoint(("train", "val"), epoch)
        df = self.samples()
        idle = self.idle["idle_power_w"]
        out = summarize(df, ("train", "val"), epoch, idle)
        for phase in ("train", "val"):
            part = summarize(df, phase, epoch, idle)
            out[f"{phase}_energy_j"] = part["energy_j"]
            out[f"{phase}_energy_above_idle_j"] = part["energy_above_idle_j"]
        return out

    def write(self, path: str | os.PathLike[str], **extra_info: Any) -> Path:
        """Write the table to Parquet atomically (temporary file + rename); returns the path.
        ``extra_info`` goes into the metadata beside the sampler settings and phase boundaries."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(self.samples(), preserve_index=False)
        with self._lock:
            info = dict(self.info, **extra_info, phases=[dict(b) for b in self._boundaries])
        meta = dict(table.schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(info, default=str).encode()
        table = table.replace_schema_metadata(meta)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


class NullTelemetry:
    """The telemetry hook of a training or test run without a sampler: every call does nothing.

    The hook protocol :func:`spikebench.training.train_network` calls: ``phase(name, epoch)`` at
    each phase boundary, ``epoch_summary(epoch)`` (columns for the epochs table),
    ``epoch_done(epoch, key)`` after each epoch, just before its checkpoint is saved (keep the
    samples so far across a kill), ``resume(through_epoch, key)`` after a checkpoint was loaded.
    """

    def phase(self, name: str, epoch: int | None = None) -> None:
        return None

    def epoch_summary(self, epoch: int) -> dict[str, Any]:
        return {}

    def phase_summary(self, phase: str, epoch: int | None = None) -> dict[str, Any]:
        return {}

    def epoch_done(self, epoch: int, key: str | None = None) -> None:
        return None

    def resume(self, through_epoch: int, key: str | None = None) -> None:
        return None


# --------------------------------------------------------------------------- signals


def install_sigterm_handler() -> Any:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, so ``with`` blocks (and the
    sampler's ``stop()``) unwind as on an exception. Call from the main thread of a job script;
    returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_sigterm_handler() must be called from the main thread")

    def _raise_system_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, _raise_system_exit)


# --------------------------------------------------------------------------- hardware


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception:  # noqa: BLE001 - best effort
        return None
    return value if value not in ("", None) else None


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return platform.processor() or None


def _package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


GPU_STATE_KEYS: tuple[str, ...] = (
    "sm_clock_mhz", "memory_clock_mhz", "applications_sm_clock_mhz", "applications_memory_clock_mhz",
    "power_limit_w", "enforced_power_limit_w", "persistence_mode", "temperature_c",
)
"""Keys of :func:`gpu_state` besides ``null_reasons``."""


def _nvml_queries(nvml: Any, handle: Any) -> dict[str, Callable[[], Any]]:
    sm, mem = getattr(nvml, "NVML_CLOCK_SM", 1), getattr(nvml, "NVML_CLOCK_MEM", 2)
    return {
        "sm_clock_mhz": lambda: float(nvml.nvmlDeviceGetClockInfo(handle, sm)),
        "memory_clock_mhz": lambda: float(nvml.nvmlDeviceGetClockInfo(handle, mem)),
        "applications_sm_clock_mhz": lambda: float(nvml.nvmlDeviceGetApplicationsClock(handle, sm)),
        "applications_memory_clock_mhz": lambda: float(nvml.nvmlDeviceGetApplicationsClock(handle, mem)),
        "power_limit_w": lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
        "enforced_power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        "persistence_mode": lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle)),
        "temperature_c": lambda: float(nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
    }


def _nvml_handle(nvml: Any, index: int, uuid: str | None) -> Any:
    """NVML handle of torch's CUDA device ``index``: by UUID (torch's is bare), else by index."""
    candidates = [] if not uuid else [uuid] if uuid.startswith(("GPU-", "MIG-")) else [f"GPU-{uuid}", f"MIG-{uuid}"]
    for candidate in candidates:
        handle = _safe(lambda: nvml.nvmlDeviceGetHandleByUUID(candidate))
        if handle is not None:
            return handle
    return nvml.nvmlDeviceGetHandleByIndex(_nvml_index_guess(index))


def gpu_state(device: torch.device | str, nvml: Any = None, handle: Any = None) -> dict[str, Any]:
    """Clocks (current and application), power limits, persistence mode and temperature of the
    job's GPU from NVML, as MLPerf asks them recorded. Every :data:`GPU_STATE_KEYS` is present;
    one that could not be read is None with the reason in ``null_reasons``. ``handle``: an NVML
    handle already open (the caller initialised NVML); otherwise NVML is opened and shut here."""
    out: dict[str, Any] = dict.fromkeys(GPU_STATE_KEYS)
    kind, index = _parse_device(device if isinstance(device, str) else str(device))

    if kind != "cuda":
        return _null_state(f"no GPU: the job runs on {kind}")
    opened = False
    try:
        if handle is None:
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
            opened = True
            handle = _nvml_handle(nvml, index or 0, _torch_gpu_uuid(index or 0))
    except Exception as exc:  # noqa: BLE001 - no library, no driver, no device
        if opened:
            _safe(nvml.nvmlShutdown)
        return _null_state(f"NVML unavailable: {type(exc).__name__}: {exc}")
    reasons: dict[str, str] = {}
    try:
        for key, query in _nvml_queries(nvml, handle).items():
            try:
                out[key] = query()
            except Exception as exc:  # noqa: BLE001 - NotSupported on this GPU, no permission, ...
                reasons[key] = f"NVML: {type(exc).__name__}: {exc}"
    finally:
        if opened:
            _safe(nvml.nvmlShutdown)
    return {**out, "null_reasons": reasons}


def _null_state(reason: str) -> dict[str, Any]:
    return {**dict.fromkeys(GPU_STATE_KEYS), "null_reasons": dict.fromkeys(GPU_STATE_KEYS, reason)}


def _torch_flags() -> dict[str, Any]:
    import torch

    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
    }


def hardware_info(device: torch.device | str, nvml: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hardware and software a job runs on (best effort: anything unavailable is None).

    Keys: device, device_name, gpu_uuid, memory_total_mib (the device's memory: GPU memory on
    CUDA, RAM otherwise), driver_version, cuda_version (PyTorch's build), cudnn_version,
    torch_version, snntorch_version, python_version, cpu_model, cpu_count, ram_total_mib,
    host_name, platform, cuda_visible_devices, cudnn_benchmark, cudnn_deterministic, the
    :func:`gpu_state` keys at the job's start (``temperature_c`` as ``temperature_start_c``) and
    ``null_reasons`` (key -> why it is None, for the GPU state). ``extra``: further entries merged
    in last (e.g. the precision and thread settings a job applies).
    """
    info = _hardware_info(device, nvml)
    state = info.pop("_gpu_state")
    reasons = state.pop("null_reasons", {})
    state["temperature_start_c"] = state.pop("temperature_c")
    if "temperature_c" in reasons:
        reasons["temperature_start_c"] = reasons.pop("temperature_c")
    info.update(state, **_torch_flags(), null_reasons=reasons)
    info.update(extra or {})
    return info


def _hardware_info(device: torch.device | str, nvml: Any = None) -> dict[str, Any]:
    import torch

    device = torch.device(device)
    cpu_model = _cpu_model()
    ram_mib = _safe(lambda: psutil.virtual_memory().total / MIB)
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": cpu_model if device.type == "cpu" else None,
        "gpu_uuid": None,
        "memory_total_mib": ram_mib if device.type == "cpu" else None,
        "driver_version": None,
        "cuda_version": _safe(lambda: torch.version.cuda),
        "cudnn_version": _safe(lambda: torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None),
        "torch_version": torch.__version__,
        "snntorch_version": _package_version("snntorch"),
        "python_version": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "ram_total_mib": ram_mib,
        "host_name": _safe(socket.gethostname),
        "platform": _safe(platform.platform),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    info["_gpu_state"] = _null_state(f"no GPU: the job runs on {device.type}")
    if device.type != "cuda":
        return info
    index = device.index if device.index is not None else (_safe(torch.cuda.current_device) or 0)
    if torch.cuda.is_available():
        props = _safe(lambda: torch.cuda.get_device_properties(index))
        if props is not None:
            info["device_name"] = _safe(lambda: props.name)
            info["memory_total_mib"] = _safe(lambda: props.total_memory / MIB)
    uuid = _torch_gpu_uuid(index)
    if uuid:
        info["gpu_uuid"] = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            info["_gpu_state"] = _null_state("NVML unavailable: pynvml (PyPI nvidia-ml-py) is not installed")
            return info
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001
        info["_gpu_state"] = _null_state(f"NVML unavailable: {type(exc).__name__}: {exc}")
        return info
    try:
        info["driver_version"] = _safe(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        handle = None
        if info["gpu_uuid"]:
            handle = _safe(lambda: nvml.nvmlDeviceGetHandleByUUID(info["gpu_uuid"]))
        if handle is None:
            handle = _safe(lambda: nvml.nvmlDeviceGetHandleByIndex(_nvml_index_guess(index)))
        if handle is not None:
            if info["device_name"] is None:
                info["device_name"] = _safe(lambda: _text(nvml.nvmlDeviceGetName(handle)))
            if info["memory_total_mib"] is None:
                info["memory_total_mib"] = _safe(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total / MIB)
            info["_gpu_state"] = gpu_state(device, nvml, handle)
        else:
            info["_gpu_state"] = _null_state(f"NVML has no device for {device} (UUID {info['gpu_uuid']})")
    finally:
        _safe(nvml.nvmlShutdown)
    return info
