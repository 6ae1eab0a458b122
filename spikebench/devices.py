"""Choosing the device of a job, with one exclusive lock per GPU so that concurrent jobs use different GPUs.

Snakemake counts ``resources: gpu=1`` but does not say *which* GPU a job gets. ``select_device`` therefore takes
an exclusive, non-blocking ``fcntl.flock`` on ``lock_dir/gpu-<uuid>.lock`` (the GPU's UUID when torch reports it,
else its index) and holds it for the lifetime of the returned :class:`DeviceLease`; the next job tries the next
GPU. ``lock_dir`` defaults to :func:`default_lock_dir`. When every GPU is taken it logs that and retries every
``poll_s`` seconds. The kernel releases a lock when its process dies, so a killed job never leaves a GPU blocked.

``requested``: ``auto`` (a free GPU if torch sees one, else the CPU, with a log line saying why), ``cpu``
(the CPU, nothing probed), ``cuda`` (a free GPU; an error if there is none) or ``cuda:N`` (torch's index N,
relative to ``CUDA_VISIBLE_DEVICES``; waits while another job holds it).

``auto`` never falls back to the CPU silently: when torch sees no GPU, :mod:`spikebench.gpu_probe` looks for one
that torch cannot use (NVML, ``/dev/nvidia<N>``, ``nvidia-smi``). If there is one, typically a torch wheel built
for a newer CUDA than the driver supports, or a CPU-only torch, :class:`CudaMismatchError` names the driver, its
CUDA version, torch's version and CUDA build and the remedy (the matching torch wheel, or ``device: cpu``);
``$SPIKEBENCH_ALLOW_CPU_FALLBACK=1`` makes ``auto`` fall back with a warning instead. ``CUDA_VISIBLE_DEVICES``
set to ``""`` or ``-1`` hides every GPU on purpose: ``auto`` then takes the CPU without probing.

:func:`apply_numerics` sets what the device computes with, for every job explicitly: the config's
``precision`` (both TF32 flags, the float32 matmul precision, bf16 autocast via :func:`autocast`),
``cudnn_benchmark`` and ``lif_backend``; :func:`numeric_settings` is the record of them (with the torch and
numba thread counts) that each job stores with its hardware.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from spikebench import gpu_probe

_LOG = logging.getLogger("spikebench.devices")


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine."""


class CudaMismatchError(DeviceUnavailableError):
    """This machine has an NVIDIA GPU but torch cannot use CUDA (a CPU-only torch, or a torch built for a newer
    CUDA than the driver supports); the message names the versions found and the remedy."""


class DeviceLease:
    """The device of a job and, for a GPU, the lock that reserves it (released by ``release`` or ``with``)."""

    def __init__(
        self, device: torch.device, gpu_index: int | None = None, lock_path: Path | None = None, fd: int | None = None
    ) -> None:
        self.device, self.gpu_index, self.lock_path, self._fd = device, gpu_index, lock_path, fd

    def release(self) -> None:
        """Give the GPU back (idempotent)."""
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DeviceLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DeviceLease(device={self.device}, gpu_index={self.gpu_index}, lock={self.lock_path})"


def visible_gpu_ids() -> list[str]:
    """One identifier per GPU torch can see (its UUID when available, else its index), in torch's order."""
    if not torch.cuda.is_available():
        return []
    ids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        ids.append(str(uuid) if uuid is not None else str(i))
    return ids


def _lock_name(gpu_id: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", gpu_id) + ".lock"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def default_lock_dir() -> Path:
    """``$SPIKEBENCH_LOCK_DIR`` or ``<tmp>/spikebench-gpu-locks``: machine-local, shared by all jobs there."""
    return Path(os.environ.get("SPIKEBENCH_LOCK_DIR") or Path(tempfile.gettempdir()) / "spikebench-gpu-locks")


def _candidates(requested: str, ids: list[str], visible: str) -> list[int]:
    """The indices of the GPUs ``requested`` (``cuda`` or ``auto``: every one; ``cuda:N``: N, which must exist)."""
    if requested.startswith("cuda:"):
        index = int(requested.split(":")[1])
        if index >= len(ids):
            raise DeviceUnavailableError(
                f"device {requested!r} requested but torch sees {len(ids)} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={visible}; indices are relative to it)"
            )
        return [index]
    return list(range(len(ids)))


def _lock_first_free(
    ids: list[str], candidates: list[int], lock_dir: Path, visible: str, injected: bool, log: logging.Logger
) -> DeviceLease | None:
    """The lease of the first of ``candidates`` whose lock is free (made torch's current device unless the
    ``ids`` were injected), or None when every one is held."""
    for index in candidates:
        path = lock_dir / _lock_name(ids[index])
        fd = _try_lock(path)
        if fd is not None:
            if not injected:
                torch.cuda.set_device(index)
            log.info(
                "device: cuda:%d (GPU %s; %d visible, CUDA_VISIBLE_DEVICES=%s; lock %s)",
                index,
                ids[index],
                len(ids),
                visible,
                path,
            )
            return DeviceLease(torch.device(f"cuda:{index}"), index, path, fd)
    return None


def _gpus_hidden(visible_env: str | None) -> bool:
    """``CUDA_VISIBLE_DEVICES`` set to hide every GPU on purpose: empty, or a negative first entry (CUDA stops
    at the first invalid entry)."""
    if visible_env is None:
        return False
    first = visible_env.split(",")[0].strip()
    return first == "" or re.fullmatch(r"-\d+", first) is not None


def _cpu_fallback_allowed() -> bool:
    return os.environ.get(gpu_probe.ALLOW_CPU_FALLBACK_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _without_torch_gpu(requested: str, visible: str, log: logging.Logger) -> DeviceLease:
    """torch sees no GPU: the CPU for ``auto`` where no NVIDIA GPU is visible either (or CUDA_VISIBLE_DEVICES
    hides them); :class:`CudaMismatchError` where one is; :class:`DeviceUnavailableError` for ``cuda`` without."""
    cpu = DeviceLease(torch.device("cpu"))
    if _gpus_hidden(os.environ.get("CUDA_VISIBLE_DEVICES")):
        if requested == "auto":
            log.info("no CUDA GPU visible (CUDA_VISIBLE_DEVICES=%s): running on the CPU (it hides every GPU)", visible)
            return cpu
        raise DeviceUnavailableError(
            f"device {requested!r} requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES={visible} hides every "
            f"GPU; torch {torch.__version__}, CUDA build {torch.version.cuda}); unset it, or use device: auto or cpu"
        )
    evidence = gpu_probe.nvidia_gpu_evidence()
    if evidence.found:
        message = gpu_probe.cuda_mismatch_message(requested, evidence, visible, gpu_probe.torch_cuda_failure())
        if requested == "auto" and _cpu_fallback_allowed():
            log.warning("%s\n%s is set: running on the CPU", message, gpu_probe.ALLOW_CPU_FALLBACK_ENV)
            return cpu
        raise CudaMismatchError(message)
    if requested == "auto":
        log.info(
            "no CUDA GPU visible (CUDA_VISIBLE_DEVICES=%s) and no NVIDIA GPU on this machine (%s): running on the CPU",
            visible,
            evidence.describe(),
        )
        return cpu
    raise DeviceUnavailableError(
        f"device {requested!r} requested but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES={visible}, "
        f"torch {torch.__version__}, CUDA build {torch.version.cuda}; {evidence.describe()}); use device: auto or cpu"
    )


def select_device(
    requested: str,
    lock_dir: Path | None = None,
    log: logging.Logger | None = None,
    *,
    gpu_ids: Sequence[str] | None = None,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
) -> DeviceLease:
    """Reserve the device of a job (see the module docstring).

    ``gpu_ids`` overrides the GPUs torch reports (tests use it to check the locking without a GPU; ``[]``: torch
    sees none, and the probes of :func:`gpu_probe.nvidia_gpu_evidence` still run);
    ``timeout_s`` bounds the wait for a free GPU (``None``: wait for ever) and raises ``TimeoutError``.
    """
    log = log or _LOG
    requested = str(requested).strip().lower()
    if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+", requested):
        raise ValueError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if requested == "cpu":
        log.info("device: cpu (requested)")
        return DeviceLease(torch.device("cpu"))
    injected = gpu_ids is not None
    ids = list(gpu_ids) if injected else visible_gpu_ids()
    if not ids:
        return _without_torch_gpu(requested, visible, log)
    candidates = _candidates(requested, ids, visible)
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    start, waiting = time.monotonic(), False
    while True:
        lease = _lock_first_free(ids, candidates, lock_dir, visible, injected, log)
        if lease is not None:
            return lease
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            raise TimeoutError(
                f"no free GPU among {[ids[i] for i in candidates]} after {timeout_s:g} s (locks in {lock_dir})"
            )
        if not waiting:
            log.info(
                "all requested GPUs (%s) are in use by other jobs (locks in %s): waiting, retrying every %g s",
                ", ".join(f"cuda:{i}" for i in candidates),
                lock_dir,
                poll_s,
            )
            waiting = True
        time.sleep(poll_s)


# --------------------------------------------------------------------------------------------------
# Numerics: precision, cuDNN autotuning and the LIF backend, set explicitly for every job
# --------------------------------------------------------------------------------------------------
#: Config key ``precision``: what each value sets. PyTorch's own defaults differ between cuDNN convolutions
#: (TF32 allowed) and matrix products (FP32), which would give an SNN whose layer runs as a matrix product and
#: its CNN whose layer is a convolution different arithmetic; every job therefore sets both flags.
PRECISIONS = {
    "fp32": {"allow_tf32": False, "matmul_precision": "highest", "autocast_dtype": None},
    "tf32": {"allow_tf32": True, "matmul_precision": "high", "autocast_dtype": None},
    "bf16": {"allow_tf32": False, "matmul_precision": "highest", "autocast_dtype": torch.bfloat16},
}


def apply_numerics(precision: str = "fp32", cudnn_benchmark: bool = True, lif_backend: str = "auto") -> dict:
    """Set the precision flags, ``cudnn.benchmark`` and the LIF backend for this process; returns
    :func:`numeric_settings` (what is now in force). Raises ``ValueError`` naming the config key on a bad value."""
    if precision not in PRECISIONS:
        raise ValueError(f"config key 'precision': {precision!r} is not one of {', '.join(PRECISIONS)}")
    from spikebench import models

    try:
        models.set_lif_backend(lif_backend)
    except ValueError as exc:
        raise ValueError(f"config key 'lif_backend': {exc}") from None
    chosen = PRECISIONS[precision]
    torch.backends.cuda.matmul.allow_tf32 = chosen["allow_tf32"]
    torch.backends.cudnn.allow_tf32 = chosen["allow_tf32"]
    torch.set_float32_matmul_precision(chosen["matmul_precision"])
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    global _PRECISION
    _PRECISION = precision
    return numeric_settings()


_PRECISION = "fp32"


def autocast(device: torch.device | str):
    """The forward pass's context: ``torch.autocast`` to bfloat16 under precision bf16, else a no-op."""
    import contextlib

    dtype = PRECISIONS[_PRECISION]["autocast_dtype"]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def numeric_settings() -> dict:
    """What governs a job's arithmetic and CPU use now (recorded with the hardware of every job)."""
    from spikebench import models
    from spikebench.kernels import thread_counts

    return {
        "precision": _PRECISION,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "autocast_dtype": str(PRECISIONS[_PRECISION]["autocast_dtype"] or "none").replace("torch.", ""),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        **models.backend_record(),  # lif_backend asked for, lif_backend_used (what ran), the fallback reason
        "cpu_kernels": models.lif.CPU_KERNELS,
        **thread_counts(),
    }
