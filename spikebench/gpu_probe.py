"""Whether this machine has an NVIDIA GPU that torch cannot use, and what to tell the user then.

``device: auto`` takes the CPU only where there is no NVIDIA GPU at all (:mod:`spikebench.devices`): where torch sees
none, :func:`nvidia_gpu_evidence` asks NVML (``pynvml``), the device files ``/dev/nvidia<N>`` and ``nvidia-smi``.
If one is there, typically a torch wheel built for a newer CUDA than the driver supports, or a CPU-only torch,
:func:`cuda_mismatch_message` names the driver, its CUDA version, torch's version and CUDA build and the remedy.
Every probe reports what it read and never raises; tests replace them by name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

# An NVIDIA GPU that torch cannot use: the probes behind auto's refusal to fall back to the CPU silently.
#: ``1`` (or true/yes/on): ``device: auto`` falls back to the CPU with a warning, not :class:`CudaMismatchError`.
ALLOW_CPU_FALLBACK_ENV = "SPIKEBENCH_ALLOW_CPU_FALLBACK"
PYTORCH_GET_STARTED = "https://pytorch.org/get-started/locally/"
#: The torch wheel variant suggested for a driver of each CUDA major version (CUDA minor-version
#: compatibility: a wheel built for any 12.x runs on a driver for 12.0 or newer).
WHEEL_FOR_DRIVER_MAJOR = {11: "cu118", 12: "cu126", 13: "cu130"}
_NVIDIA_SMI_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class GpuProbe:
    """What one probe (``source``: NVML, /dev or nvidia-smi) found of an NVIDIA GPU: ``found``, ``detail`` (what
    it found, or why nothing) and the driver's version and CUDA version where it read them."""

    source: str
    found: bool
    detail: str
    driver_version: str | None = None
    cuda_version: str | None = None


@dataclass(frozen=True)
class GpuEvidence:
    """The probes' findings together (:func:`nvidia_gpu_evidence`); ``found``: any probe found a GPU."""

    probes: tuple[GpuProbe, ...]

    @property
    def found(self) -> bool:
        return any(p.found for p in self.probes)

    @property
    def driver_version(self) -> str | None:
        return next((p.driver_version for p in self.probes if p.driver_version), None)

    @property
    def cuda_version(self) -> str | None:
        return next((p.cuda_version for p in self.probes if p.cuda_version), None)

    def describe(self) -> str:
        return "; ".join(f"{p.source}: {p.detail}" for p in self.probes)


def cuda_version_text(version: int) -> str:
    """NVML's CUDA version number as ``major.minor``: 12040 -> ``"12.4"``, 13000 -> ``"13.0"``."""
    version = int(version)
    return f"{version // 1000}.{version % 1000 // 10}"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _quiet(call, default=None):
    try:
        return call()
    except Exception:  # noqa: BLE001 - a probe reports what it could read, never raises
        return default


def probe_nvml() -> GpuProbe:
    """The GPUs NVML lists (``pynvml``, PyPI nvidia-ml-py), the driver's version and the newest CUDA it supports.
    Never raises: no library, no driver or a failing call is "nothing from NVML", with the reason."""
    try:
        import pynvml as nvml
    except Exception as exc:  # noqa: BLE001
        return GpuProbe("NVML", False, f"pynvml (PyPI nvidia-ml-py) cannot be imported ({_error(exc)})")
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no libnvidia-ml, no driver loaded, ...
        return GpuProbe("NVML", False, f"not available ({_error(exc)})")
    try:
        driver = _quiet(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        cuda = _quiet(lambda: cuda_version_text(nvml.nvmlSystemGetCudaDriverVersion()))
        if cuda is None:
            cuda = _quiet(lambda: cuda_version_text(nvml.nvmlSystemGetCudaDriverVersion_v2()))
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            return GpuProbe("NVML", False, f"cannot count the GPUs ({_error(exc)})", driver, cuda)
        if count < 1:
            return GpuProbe("NVML", False, "lists no GPU", driver, cuda)
        names = [
            _quiet(lambda i=i: _text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i)))) or f"GPU {i}"
            for i in range(count)
        ]
        return GpuProbe("NVML", True, f"{count} GPU(s): {', '.join(names)}", driver, cuda)
    except Exception as exc:  # noqa: BLE001
        return GpuProbe("NVML", False, f"failed ({_error(exc)})")
    finally:
        _quiet(nvml.nvmlShutdown)


def probe_device_files(dev_dir: str | Path = "/dev") -> GpuProbe:
    """The NVIDIA GPU device files ``<dev_dir>/nvidia<N>`` (not nvidiactl or nvidia-uvm). Never raises."""
    try:
        files = sorted(str(p) for p in Path(dev_dir).glob("nvidia[0-9]*"))
    except Exception as exc:  # noqa: BLE001
        return GpuProbe("/dev", False, f"{dev_dir} cannot be listed ({_error(exc)})")
    if not files:
        return GpuProbe("/dev", False, f"no {Path(dev_dir) / 'nvidia[0-9]*'}")
    return GpuProbe("/dev", True, ", ".join(files))


_SMI_DRIVER = re.compile(r"Driver Version:\s*([0-9][0-9.]*)")
_SMI_CUDA = re.compile(r"CUDA Version:\s*([0-9]+\.[0-9]+)")
# a GPU's row: "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |" (PCI bus id after the name)
_SMI_GPU = re.compile(r"^\|\s+\d+\s+(.+?)\s+(?:On|Off)\s+\|\s+[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d", re.M)


def parse_nvidia_smi(text: str) -> dict[str, object]:
    """``driver_version``, ``cuda_version`` (the newest CUDA the driver supports; None where absent) and ``gpus``
    (the names in its table, as nvidia-smi prints them, possibly cut short) from plain ``nvidia-smi`` output."""
    driver, cuda = _SMI_DRIVER.search(text), _SMI_CUDA.search(text)
    return {
        "driver_version": driver.group(1) if driver else None,
        "cuda_version": cuda.group(1) if cuda else None,
        "gpus": [name.strip() for name in _SMI_GPU.findall(text)],
    }


def probe_nvidia_smi(run: bool = True) -> GpuProbe:
    """``nvidia-smi`` on PATH, and (``run``) what it reports. Found where it is on PATH, unless it says there is
    no device: one that fails (say, it cannot talk to the driver) is a GPU machine whose driver is broken.
    Never raises."""
    path = _quiet(lambda: shutil.which("nvidia-smi"))
    if path is None:
        return GpuProbe("nvidia-smi", False, "not on PATH")
    if not run:
        return GpuProbe("nvidia-smi", True, f"{path} (not run: NVML answered)")
    try:
        done = subprocess.run([path], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False)
    except Exception as exc:  # noqa: BLE001 - not executable, hung, ...
        return GpuProbe("nvidia-smi", True, f"{path} did not run ({_error(exc)})")
    output = f"{done.stdout or ''}\n{done.stderr or ''}"
    parsed = parse_nvidia_smi(output)
    versions = (parsed["driver_version"], parsed["cuda_version"])
    if "No devices were found" in output:
        return GpuProbe("nvidia-smi", False, f"{path} reports no devices", *versions)
    if done.returncode != 0:
        said = " ".join(output.split())[:300] or "no output"
        return GpuProbe("nvidia-smi", True, f"{path} exited with status {done.returncode}: {said}", *versions)
    gpus = parsed["gpus"]
    return GpuProbe("nvidia-smi", True, f"{path} lists {', '.join(gpus) if gpus else 'a GPU table'}", *versions)


def nvidia_gpu_evidence() -> GpuEvidence:
    """Whether this machine has an NVIDIA GPU, whether or not torch can use it: NVML, the device files and
    nvidia-smi (run only where NVML did not give the driver's versions). Never raises."""
    nvml = probe_nvml()
    files = probe_device_files()
    smi = probe_nvidia_smi(run=not (nvml.driver_version and nvml.cuda_version))
    return GpuEvidence((nvml, files, smi))


def torch_cuda_failure() -> str | None:
    """torch's own reason why it cannot use CUDA (its CUDA initialisation's error), None where CUDA initialises."""
    if torch.version.cuda is None:
        return "torch was compiled without CUDA"
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - RuntimeError or AssertionError, by torch version
        return " ".join(str(exc).split())[:400] or type(exc).__name__
    return None


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def suggested_wheel(driver_cuda: str | None) -> str | None:
    """The torch wheel variant (``cu126``, ...) for a driver supporting CUDA ``driver_cuda`` (``"12.4"``); None
    where that is unknown, or older than any variant."""
    version = _version_tuple(driver_cuda)
    if version is None:
        return None
    if version[0] > max(WHEEL_FOR_DRIVER_MAJOR):
        return WHEEL_FOR_DRIVER_MAJOR[max(WHEEL_FOR_DRIVER_MAJOR)]
    return WHEEL_FOR_DRIVER_MAJOR.get(version[0])


def cuda_mismatch_message(requested: str, evidence: GpuEvidence, visible: str, torch_failure: str | None) -> str:
    """The error where an NVIDIA GPU is visible but torch cannot use CUDA: what was found, why and the remedy."""
    build, driver_cuda = torch.version.cuda, evidence.cuda_version
    build_v, driver_v = _version_tuple(build), _version_tuple(driver_cuda)
    torch_build = "a CPU-only build (torch.version.cuda is None)" if build is None else f"built for CUDA {build}"
    lines = [
        f"device {requested!r}: this machine has an NVIDIA GPU but torch cannot use CUDA"
        + (", and spikebench does not fall back to the CPU without being told." if requested == "auto" else "."),
        f"Found: NVIDIA driver {evidence.driver_version or '(version unknown)'}, supporting CUDA up to "
        f"{driver_cuda or '(unknown)'}; torch {torch.__version__}, {torch_build}; CUDA_VISIBLE_DEVICES={visible}.",
        f"GPU evidence: {evidence.describe()}.",
    ]
    if torch_failure:
        lines.append(f"torch's CUDA initialisation says: {torch_failure}")
    if build is None:
        lines.append("Why: this torch is a CPU-only build, which cannot use any GPU.")
    elif build_v and driver_v and build_v[0] > driver_v[0]:
        lines.append(
            f"Why: torch's CUDA {build} needs a driver that supports CUDA {build_v[0]}.x; this driver supports up to "
            f"{driver_cuda}, too old for this torch wheel (pip's default torch is built for a recent CUDA)."
        )
    elif build_v and driver_v:
        lines.append(
            f"Why: the driver's CUDA {driver_cuda} can run torch's CUDA {build}, so the cause is elsewhere (see "
            "torch's message; CUDA_VISIBLE_DEVICES, the permissions of /dev/nvidia*, or a driver updated "
            "without a reboot)."
        )
    else:
        lines.append("Why: unknown; compare the 'CUDA Version' in `nvidia-smi`'s header with torch's CUDA build.")
    wheel = suggested_wheel(driver_cuda)
    if build_v and driver_v and build_v[0] <= driver_v[0]:
        remedy = "Remedy: remove that cause (this torch's CUDA build suits the driver)"
    elif driver_v and wheel is None:
        remedy = f"Remedy: update the NVIDIA driver (its CUDA {driver_cuda} is older than any current torch wheel)"
    else:
        which = (
            f"{wheel} for this CUDA {driver_cuda} driver"
            if wheel
            else "cu126 for a CUDA 12.x driver, cu118 for 11.x, cu130 for 13.x: `nvidia-smi` shows its CUDA Version"
        )
        remedy = (
            f"Remedy: install the torch wheel variant that matches the driver ({which}): `pip uninstall -y torch "
            "torchvision && pip install torch torchvision --index-url "
            f"https://download.pytorch.org/whl/{wheel or 'cu126'}`"
            f" (each release's variants: {PYTORCH_GET_STARTED})"
        )
        if build_v and driver_v and build_v > driver_v:
            remedy += f", or update the NVIDIA driver to one that supports CUDA {build}"
    remedy += "; or set `device: cpu` in the config (or `--config device=cpu`) to run on the CPU knowingly"
    if requested == "auto":
        remedy += f"; or set {ALLOW_CPU_FALLBACK_ENV}=1 to let device: auto fall back to the CPU with a warning"
    lines.append(remedy + ".")
    return "\n".join(lines)
