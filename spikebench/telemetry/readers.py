"""The sources a telemetry sample is read from: NVML for the job's GPU, the job's process on the CPU, RAPL.

Each reader fills its columns of one sample row (a list in :data:`~spikebench.telemetry.sidecar.SAMPLE_SCHEMA`
order) and appends what failed to ``errors``: a reading that is unavailable stays None, never 0.
:class:`RaplReader` sums the CPU package energy counters (wraparound undone); ``_CpuReader`` records the
process's CPU utilisation and resident memory; ``_NvmlReader`` the GPU the job uses, found by UUID
(:mod:`spikebench.hardware`), dropping a query the GPU answers NotSupported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from spikebench import hardware
from spikebench.hardware import MIB
from spikebench.telemetry.sidecar import _IX

RAPL_ROOT = Path("/sys/class/powercap")
CPU_WINDOW_S = 0.05
"""Shortest wall-time window over which ``cpu_util_pct`` is computed (s)."""


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
            (
                "nvmlDeviceGetPowerUsage",
                lambda r: r.__setitem__(_IX["power_w"], nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ),
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
        uuid = hardware._torch_gpu_uuid(torch_index)
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
        index = hardware._nvml_index_guess(torch_index)
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
