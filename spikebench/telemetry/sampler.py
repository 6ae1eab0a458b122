"""The telemetry sampler: a background thread beside a job, and the null object used without one.

A :class:`TelemetrySampler` records one sample every ``interval_s`` seconds, plus one at every phase
boundary, through the readers of :mod:`spikebench.telemetry.readers`; it summarises phases and epochs with
:func:`~spikebench.telemetry.summary.summarize` and writes the sidecar with
:func:`~spikebench.telemetry.sidecar.write_sidecar`. :class:`NullTelemetry` is the hook of a run without a
sampler; :func:`install_sigterm_handler` makes SIGTERM unwind a job so the sampler always stops.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from spikebench.hardware import MIB, _parse_device
from spikebench.telemetry.readers import RAPL_ROOT, _CpuReader, _NvmlReader
from spikebench.telemetry.sidecar import (
    _COLUMNS,
    _IX,
    PHASES,
    _frame,
    _rows_of,
    read_samples,
    sidecar_metadata,
    write_sidecar,
)
from spikebench.telemetry.summary import summarize

if TYPE_CHECKING:
    import torch

LOGGER = "spikebench.telemetry"
"""The logger the sampler logs to by default (the package's: job logs keep naming it as before)."""
JOIN_TIMEOUT_S = 5.0
"""How long :meth:`TelemetrySampler.stop` waits for the sampling thread (s)."""


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
        self.log = log if log is not None else logging.getLogger(LOGGER)
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
        self.idle: dict[str, Any] = {
            "idle_power_w": None,
            "idle_s": None,
            "idle_energy_source": None,
            "idle_null_reason": "idle power not measured (telemetry.idle_s: 0)",
        }

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
            self.log.warning(
                "telemetry: NVML unavailable for %s (%s); recording the CPU-side source instead", self.device, exc
            )
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
            self.idle = {
                "idle_power_w": window["avg_power_w"],
                "idle_s": window["duration_s"],
                "idle_energy_source": window["energy_source"],
                "idle_null_reason": reason,
                "start_s": start,
                "end_s": end,
            }
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
            self.log.warning(
                "telemetry: partial sidecar %s belongs to another checkpoint; samples of the epochs "
                "before the resume are lost",
                path,
            )
            return []
        ends = [
            b["end_s"]
            for b in meta.get("phases", [])
            if b.get("epoch") is not None and b["epoch"] <= through_epoch and b.get("end_s") is not None
        ]
        cut = max(ends, default=-math.inf)
        prior = prior[prior["time_s"] <= cut]
        epochs = sorted({int(e) for e in prior["epoch"].dropna()})
        if epochs != list(range(1, through_epoch + 1)):
            self.log.warning(
                "telemetry: the partial sidecar %s holds epochs %s of the %d before the resume",
                path,
                epochs,
                through_epoch,
            )
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
        """Write the table to Parquet atomically (:func:`~spikebench.telemetry.sidecar.write_sidecar`); returns the
        path.
        ``extra_info`` goes into the metadata beside the sampler settings and phase boundaries."""
        samples = self.samples()
        with self._lock:
            info = dict(self.info, **extra_info, phases=[dict(b) for b in self._boundaries])
        return write_sidecar(samples, info, path)


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
