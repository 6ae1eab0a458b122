"""The hardware and software a job runs on, beside :mod:`spikebench.devices` (which picks the device).

:func:`hardware_info` is the record each job stores with its results (device, GPU model and UUID, driver,
CUDA / cuDNN / torch / snnTorch versions, CPU, RAM, host, the GPU's clocks and power limits at the start);
:func:`gpu_state` reads the GPU's clocks, power limits, persistence mode and temperature from NVML (MLPerf
asks them recorded, at the start and at the end of a job). Best effort: anything unavailable is None, and
the GPU state says why in ``null_reasons``.

The GPU of a job is found in NVML by its UUID (``torch.cuda.get_device_properties(i).uuid``), because
``CUDA_VISIBLE_DEVICES`` renumbers devices; by index only when the UUID is unavailable. The telemetry
sampler's NVML reader (:mod:`spikebench.telemetry.readers`) uses the same helpers. Torch and NVML are
imported only when a function needs them.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    import torch

__all__ = ["GPU_STATE_KEYS", "gpu_state", "hardware_info"]

MIB = 2.0**20


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
    "sm_clock_mhz",
    "memory_clock_mhz",
    "applications_sm_clock_mhz",
    "applications_memory_clock_mhz",
    "power_limit_w",
    "enforced_power_limit_w",
    "persistence_mode",
    "temperature_c",
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
        handle = _safe(lambda candidate=candidate: nvml.nvmlDeviceGetHandleByUUID(candidate))
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
    ``null_reasons`` (key -> why it is None, for the GPU state), ``load_1min_start`` and ``cpus_available``
    (:func:`machine_load`). ``extra``: further entries merged in last (e.g. the precision and thread settings a
    job applies).
    """
    info = _hardware_info(device, nvml)
    state = info.pop("_gpu_state")
    reasons = state.pop("null_reasons", {})
    state["temperature_start_c"] = state.pop("temperature_c")
    if "temperature_c" in reasons:
        reasons["temperature_start_c"] = reasons.pop("temperature_c")
    info.update(state, **_torch_flags(), null_reasons=reasons)
    info.update({f"{k}_start" if k == "load_1min" else k: v for k, v in machine_load().items()})
    info.update(extra or {})
    return info


def machine_load() -> dict[str, Any]:
    """The machine's 1-minute load average and the CPUs this process may run on (``sched_getaffinity``: a job's
    cgroup or SLURM allocation, not the machine's cores), recorded at a job's start and end: a time measured
    while the load exceeded the CPUs was shared with other work (``spikebench.results`` footnotes it)."""
    load = _safe(lambda: float(os.getloadavg()[0]))
    cpus = _safe(lambda: len(os.sched_getaffinity(0))) or _safe(os.cpu_count)
    return {"load_1min": load, "cpus_available": cpus}


def _hardware_info(device: torch.device | str, nvml: Any = None) -> dict[str, Any]:
    """:func:`hardware_info` before its GPU state is flattened (in ``_gpu_state``)."""
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
    return _nvml_hardware(info, device, index, nvml)


def _nvml_hardware(info: dict[str, Any], device: torch.device, index: int, nvml: Any = None) -> dict[str, Any]:
    """``info`` of a CUDA job completed from NVML: driver version, the device name and memory torch did not
    give, and the GPU state (``_gpu_state``) of the job's GPU (found by UUID, else by index)."""
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
