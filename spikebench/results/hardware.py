"""What a run ran on: one line per hardware JSON (:func:`describe_hardware`) and the hardware table of
the report (:func:`hardware_table`, one row per network and phase)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from spikebench.results.cells import as_number


def _picker(hardware: Mapping[str, Any]) -> Callable[..., Any]:
    """A look-up over the hardware JSON's keys (any case): the first of the given keys with a plain value."""
    hw = {str(k).lower(): v for k, v in hardware.items()}

    def pick(*keys: str) -> Any:
        for key in keys:
            value = hw.get(key)
            if value not in (None, "", [], {}) and not isinstance(value, (dict, list)):
                return value
        return None

    return pick


def _labelled(pick: Callable[..., Any], fields: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    """``"<label> <value>"`` for each field with a recorded value."""
    parts = []
    for label, keys in fields:
        value = pick(*keys)
        if value is not None:
            parts.append(f"{label} {value}")
    return parts


def _gpu_parts(pick: Callable[..., Any]) -> list[str]:
    """The GPU (name, memory, device), driver and CUDA; or "no GPU" with the device."""
    device = str(pick("device") or "")
    gpu_name = pick("gpu_name", "gpu", "cuda_device_name") or (
        pick("device_name", "name") if device.startswith("cuda") else None
    )
    if gpu_name is None:
        return [f"no GPU (device {device or 'unknown'})"]
    label = f"1x {gpu_name}"
    memory = as_number(pick("gpu_memory_total_mib", "memory_total_mib", "gpu_memory_mib"))
    if not math.isnan(memory):
        label += f" ({memory / 1024:.0f} GiB)"
    return [label + (f" as {device}" if device else "")] + _labelled(
        pick,
        (
            ("driver", ("driver_version", "driver", "nvidia_driver")),
            ("CUDA", ("cuda_version", "cuda", "torch_cuda")),
        ),
    )


def _host_parts(pick: Callable[..., Any]) -> list[str]:
    """CPU (with its cores), RAM, host name and OS, where recorded."""
    parts = []
    cpu = pick("cpu_model", "cpu", "processor")
    if cpu is not None:
        cores = pick("cpu_count", "cpu_cores")
        parts.append(f"CPU {cpu}" + (f" ({cores} cores)" if cores is not None else ""))
    ram = as_number(pick("ram_total_mib"))
    if not math.isnan(ram):
        parts.append(f"{ram / 1024:.0f} GiB RAM")
    return parts + _labelled(pick, (("host", ("host_name", "host", "hostname", "node")), ("OS", ("platform", "os"))))


def _numerics_parts(hardware: Mapping[str, Any]) -> list[str]:
    """The arithmetic both networks used (``spikebench.devices.numeric_settings``), where recorded."""
    numerics = hardware.get("numerics") if isinstance(hardware.get("numerics"), Mapping) else {}
    if not numerics.get("precision"):
        return []
    return [
        f"precision {numerics['precision']}, cudnn.benchmark {numerics.get('cudnn_benchmark')}, "
        f"LIF {numerics.get('lif_backend')}, threads torch {numerics.get('torch_threads')} / "
        f"numba {numerics.get('numba_threads')}"
    ]


def describe_hardware(hardware: Mapping[str, Any] | None) -> str:
    """One line naming the GPU (or "no GPU"), driver, CUDA, PyTorch, CPU, RAM and host of a hardware JSON.

    Reads the keys of ``spikebench.telemetry.hardware_info`` (device, device_name, memory_total_mib,
    driver_version, cuda_version, torch_version, snntorch_version, cpu_model, cpu_count,
    ram_total_mib, host_name, platform); a few other spellings are accepted.
    """
    if not hardware:
        return "not recorded"
    pick = _picker(hardware)
    software = _labelled(
        pick, (("PyTorch", ("torch_version", "torch")), ("snnTorch", ("snntorch_version", "snntorch")))
    )
    return "; ".join(_gpu_parts(pick) + software + _host_parts(pick) + _numerics_parts(hardware))


def hardware_table(t1: pd.DataFrame, t2: pd.DataFrame) -> pd.DataFrame:
    """What each network ran on, for training (Table I) and test (Table II)."""
    a = t1[["experiment", "network", "device", "telemetry_source", "hardware"]].assign(phase="training and validation")
    b = t2[["experiment", "network", "device", "telemetry_source", "hardware"]].assign(phase="test")
    out = pd.concat([a, b], ignore_index=True)
    out = out.sort_values(["experiment", "network", "phase"], ascending=[True, True, False], kind="stable")
    return out[["experiment", "network", "phase", "device", "telemetry_source", "hardware"]].reset_index(drop=True)
