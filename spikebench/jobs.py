"""What one Snakemake job does, from its rule's input/params/output to the stage functions.

The scripts in `scripts/` call these functions with the `snakemake` object's fields and nothing
else, so a job can be run (and tested) without Snakemake. Each job logs to its rule's `log:`
file and to stderr; an exception is logged with its traceback before it propagates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from spikebench import atomic, oom
from spikebench.spec import NetworkSpec, as_spec
from spikebench.telemetry.sidecar import (
    add_parquet_metadata as _add_parquet_metadata,
    finish_telemetry as _finish_telemetry,
)

LOGGER_NAME = "spikebench"


@contextlib.contextmanager
def job_logging(log_path: str | Path) -> Iterator[logging.Logger]:
    """Log to `log_path` (the rule's log file) and stderr for the duration of one job."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(LOGGER_NAME)
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(fmt)
        log.addHandler(handler)
    start = time.perf_counter()
    try:
        yield log
        log.info("done in %.1f s", time.perf_counter() - start)
    except BaseException as exc:
        log.exception("job failed: %s", exc)
        raise
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def job_environment() -> dict:
    """Where this job runs: the GPUs the scheduler exposed and the SLURM job, if any."""
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_job_gpus": os.environ.get("SLURM_JOB_GPUS"),
    }


def _describe_job(network_id: str, device, log: logging.Logger) -> dict:
    """Hardware and scheduler facts of this job, logged and returned for its results files."""
    from spikebench.hardware import hardware_info

    hardware = {**hardware_info(device), **job_environment()}
    env = job_environment()
    log.info(
        "network %s on %s (CUDA_VISIBLE_DEVICES=%s, SLURM_JOB_ID=%s)",
        network_id,
        device,
        env["cuda_visible_devices"],
        env["slurm_job_id"],
    )
    log.info("hardware: %s", json.dumps(hardware, default=str))
    return hardware


def _apply_numerics(numerics: dict | None, log: logging.Logger) -> dict:
    """Set the config's precision, cudnn_benchmark and lif_backend (``spikebench.devices.apply_numerics``) for
    this job, explicitly (never PyTorch's defaults), and log them."""
    from spikebench.devices import apply_numerics

    settings = apply_numerics(**(numerics or {}))
    log.info("numerics: %s", json.dumps(settings, default=str))
    return settings


def _numerics_after_run() -> dict:
    """The numeric settings at the end of the job: numba's thread count exists once its first kernel ran."""
    from spikebench.devices import numeric_settings

    return numeric_settings()


def demo_job(dataset: str, root: str | Path, demo: dict, manifest: str | Path) -> None:
    """Rules demo_*: make only the missing files of one demo dataset (config `data.demo`), write its manifest."""
    from spikebench.data import demo as demo_data
    from spikebench.data.manifest import write_manifest

    log = logging.getLogger(LOGGER_NAME)
    seed = int(demo.get("seed", 0))
    keys = {
        "mnist": ("mnist_test",),
        "cifar10": ("cifar10_train", "cifar10_test"),
        "nmnist": ("mnist_test", "nmnist_train", "nmnist_test"),
    }.get(dataset, ())
    extra: dict = {"demo": {key: demo[key] for key in ("seed", *keys) if key in demo}}  # this dataset's settings only
    if dataset == "mnist":
        files = demo_data.ensure_demo_mnist(root, n_test=int(demo.get("mnist_test", 1000)), seed=seed)
    elif dataset == "cifar10":
        n_train, n_test = int(demo.get("cifar10_train", 5000)), int(demo.get("cifar10_test", 1000))
        files = demo_data.ensure_demo_cifar10(root, n_train=n_train, n_test=n_test, seed=seed)
    elif dataset == "nmnist":
        from spikebench.data.mnist import load_mnist

        digits = {}
        for split, key, default in (("train", "nmnist_train", 1000), ("test", "nmnist_test", 200)):
            images, labels = load_mnist(root, split)  # the demo MNIST, verified by rule demo_mnist
            n = min(int(demo.get(key, default)), len(labels))
            digits[split] = (images[:n], labels[:n])
        body = demo_data.ensure_demo_nmnist(root, digits, seed=seed)
        files, extra = body["files"], {**extra, "splits": body["splits"]}
    else:
        raise ValueError(f"no demo data for dataset {dataset!r}")
    write_manifest(manifest, dataset=dataset, root=root, source="demo", files=files, extra=extra)
    log.info("demo %s verified under %s (DEMO DATA, not the real dataset); manifest %s", dataset, root, manifest)


def download_job(dataset: str, root: str | Path, manifest: str | Path) -> None:
    """Rules download_*: verify the dataset under `root`, fetch only what is missing, write its manifest."""
    from spikebench.data.manifest import write_manifest

    extra: dict = {}
    if dataset == "mnist":
        from spikebench.data.mnist import download_mnist

        files = download_mnist(root)
    elif dataset == "cifar10":
        from spikebench.data.cifar10 import download_cifar10

        files = download_cifar10(root)
    elif dataset == "nmnist":
        from spikebench.data.nmnist_download import download_nmnist

        body = download_nmnist(root)
        files, extra = body["files"], {"splits": body["splits"]}
    else:
        raise ValueError(f"no download for dataset {dataset!r}")
    write_manifest(manifest, dataset=dataset, root=root, source="download", files=files, extra=extra)
    logging.getLogger(LOGGER_NAME).info("%s verified under %s; manifest %s", dataset, root, manifest)


def verify_md5(data_source: str, manifest: str | Path | None = None) -> bool | dict[str, str]:
    """How a job checks dataset files before reading them (`data.source`): the real datasets (`download`) against
    the libraries' md5 (True); the demo's stand-ins against the md5s its demo rule recorded in the dataset's
    manifest (spikebench.data.manifest.expected_md5s), so a changed stand-in is refused like a damaged download;
    without a manifest (False) they are read unverified. CIFAR-10's pickles are never unpickled either way
    (spikebench.data.cifar_pickle)."""
    if data_source != "demo":
        return True
    if manifest is None:
        return False
    from spikebench.data.manifest import expected_md5s

    return expected_md5s(manifest)


def training_set_size(
    dataset: str, root: str | Path, *, data_source: str = "download", manifest: str | Path | None = None
) -> int:
    """Number of samples in the official training set of `dataset`, read from its files."""
    if dataset == "mnist":
        from spikebench.data.catalog import MNIST_FILES, MNIST_RAW
        from spikebench.data.mnist import read_idx

        return len(read_idx(Path(root) / MNIST_RAW / MNIST_FILES["train"][1]))
    if dataset == "cifar10":
        from spikebench.data.cifar10 import load_cifar10

        return len(load_cifar10(root, "train", verify_md5=verify_md5(data_source, manifest))[1])
    if dataset == "nmnist":
        from spikebench.data.catalog import nmnist_folder

        return sum(1 for _ in Path(nmnist_folder(root, "train")).glob("*/*.bin"))
    raise ValueError(f"unknown dataset {dataset!r}")


def split_job(
    dataset: str,
    root: str | Path,
    output: str | Path,
    *,
    val_fraction: float,
    seed: int,
    data_source: str = "download",
    manifest: str | Path | None = None,
) -> None:
    """Rule split: a seeded random train/validation split of the training set of `dataset`."""
    from spikebench.data.split import make_split, write_split

    n = training_set_size(dataset, root, data_source=data_source, manifest=manifest)
    split = make_split(n, val_fraction, seed)
    write_split(split, output, dataset=dataset, n=n, val_fraction=val_fraction, seed=seed)
    logging.getLogger(LOGGER_NAME).info(
        "%s: %d training samples -> %d train / %d validation (seed %d)",
        dataset,
        n,
        int((split["subset"] == "train").sum()),
        int((split["subset"] == "val").sum()),
        seed,
    )


def _nmnist_files(inputs: dict) -> dict | None:
    if "frames" in inputs:
        return {"frames": inputs["frames"], "samples": inputs["samples"]}
    return None


# Telemetry summary keys as they appear in the epochs table and test.json: the device-memory
# figures get a `device_memory_` prefix so that they cannot be confused with `peak_memory_mib`,
# PyTorch's own peak allocation (process peak RSS on the CPU) that training records itself.
TELEMETRY_COLUMNS = {
    "avg_memory_mib": "device_memory_avg_mib",
    "peak_memory_mib": "device_memory_peak_mib",
    "avg_memory_pct": "device_memory_avg_pct",
    "peak_memory_pct": "device_memory_peak_pct",
    "n_samples": "telemetry_n_samples",
    "duration_s": "telemetry_duration_s",
}


def telemetry_columns(summary: dict) -> dict:
    return {TELEMETRY_COLUMNS.get(key, key): value for key, value in (summary or {}).items()}


class JobTelemetry:
    """The sampler as training and evaluation see it: phases in, summaries with table names out.

    With ``partial``, a Parquet path beside the checkpoint (not a declared output), the samples so
    far are written there after every epoch (:meth:`epoch_done`, before the checkpoint is saved)
    and put back in front of the new samples when training resumes (:meth:`resume`), so the final
    sidecar (:meth:`write`) covers every epoch of a killed and resumed run."""

    def __init__(self, sampler, partial: str | Path | None = None) -> None:
        self.sampler = sampler
        self.partial = Path(partial) if partial is not None else None

    def phase(self, name: str, epoch: int | None = None) -> None:
        self.sampler.phase(name, epoch)

    def epoch_summary(self, epoch: int) -> dict:
        return {**telemetry_columns(self.sampler.epoch_summary(epoch)), **self._idle_reason()}

    def phase_summary(self, phase: str, epoch: int | None = None) -> dict:
        return {**telemetry_columns(self.sampler.phase_summary(phase, epoch)), **self._idle_reason()}

    def _idle_reason(self) -> dict:
        """Why ``idle_power_w`` (and so ``energy_above_idle_j``) is null, beside them."""
        return {"idle_null_reason": self.sampler.idle.get("idle_null_reason")}

    def epoch_done(self, epoch: int, key: str | None = None) -> None:
        if self.partial is not None:
            try:
                self.sampler.write(self.partial, through_epoch=int(epoch), checkpoint_key=key)
            except OSError as exc:
                raise atomic.write_error(self.partial, exc) from exc

    def resume(self, through_epoch: int, key: str | None = None) -> None:
        if self.partial is not None:
            self.sampler.restore(self.partial, through_epoch, key)

    def write(self, path: str | Path) -> None:
        """Stop the sampler and write the whole run's sidecar to ``path`` (the partial file stays until
        :meth:`discard_partial`, called once the job has succeeded, so a failed run keeps it)."""
        self.sampler.stop()
        self.sampler.write(path)

    def discard_partial(self) -> None:
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)


def train_job(
    network_id: str,
    spec: NetworkSpec | dict,
    *,
    inputs: dict,
    outputs: dict,
    data_root: str | Path,
    seed: int,
    device: str,
    telemetry: dict,
    checkpoint: str | Path,
    log: logging.Logger,
    data_source: str = "download",
    numerics: dict | None = None,
) -> None:
    """Rule train: pick the device, load the data onto it (checked to fit the network), train with a telemetry
    sidecar; a training that runs out of memory writes ``status: oom`` outputs (spikebench.oom)."""
    from spikebench.data.device import load_split_data
    from spikebench.devices import select_device
    from spikebench.telemetry import install_sigterm_handler

    spec = as_spec(spec, network_id)
    install_sigterm_handler()
    with select_device(device, log=log) as lease:
        hardware = _start_job(network_id, lease.device, numerics, log)
        if oom.refuse_if_too_large(spec, network_id, inputs, outputs, lease.device, hardware, log):
            return  # too large for the device: status oom recorded before anything was allocated
        train, val = load_split_data(
            spec,
            Path(data_root),
            Path(inputs["split"]),
            _nmnist_files(inputs),
            lease.device,
            verify_md5=verify_md5(data_source, inputs.get("manifest")),
        )
        log.info("%d training / %d validation samples resident on %s", len(train), len(val), lease.device)
        sampler = _sampler(lease.device, telemetry, log)
        hook = oom.watch(JobTelemetry(sampler, partial=Path(checkpoint).with_name(PARTIAL_TELEMETRY)), network_id, log)
        with sampler:
            _measure_idle(sampler, telemetry, log)
            record = _train_or_oom(
                spec, train, val, hook, network_id, lease.device, seed, outputs, checkpoint, telemetry, log
            )
            _finish_telemetry(hook, outputs["telemetry"], log)
        _end_job(hardware, lease.device)
        _add_train_metadata(outputs, hardware, network_id, spec, train, val, record)
        hook.discard_partial()


def _train_or_oom(
    spec: NetworkSpec,
    train,
    val,
    hook,
    network_id: str,
    device,
    seed: int,
    outputs: dict,
    checkpoint: str | Path,
    telemetry: dict,
    log: logging.Logger,
) -> dict | None:
    """Train (:func:`spikebench.training.train_network`) with the telemetry ``hook``: None when it finished; the
    out-of-memory record when it ran out of memory (its ``status: oom`` outputs written). Any other error ends the
    telemetry sidecar as failed and propagates."""
    from spikebench.training import train_network

    try:
        train_network(
            spec,
            train,
            val,
            network_id=network_id,
            device=device,
            seed=seed,
            weights_out=Path(outputs["weights"]),
            epochs_out=Path(outputs["epochs"]),
            checkpoint_path=Path(checkpoint),
            telemetry=hook,
            log=log,
            warmup_steps=int(telemetry.get("warmup_steps", WARMUP_STEPS)),
        )
    except BaseException as exc:
        record = _out_of_memory(exc, device, hook.epoch, log)
        if record is None:
            _finish_telemetry(hook, outputs["telemetry"], log, failed=exc)
            raise
        oom.write_train_oom(outputs, network_id, spec, record, device)
        return record
    return None


def _add_train_metadata(
    outputs: dict, hardware: dict, network_id: str, spec: NetworkSpec, train, val, record: dict | None
) -> None:
    """The hardware, network and settings into the epochs table's and the telemetry sidecar's Parquet metadata; the
    epochs table also gets the sample counts and the status (ok, or oom when ``record`` is an out-of-memory record)."""
    meta = {"spikebench.hardware": hardware, "spikebench.network": network_id, "spikebench.spec": spec.to_dict()}
    _add_parquet_metadata(
        outputs["epochs"],
        meta,
        {"n_train": len(train), "n_val": len(val), "status": oom.OK if record is None else oom.OOM},
    )
    _add_parquet_metadata(outputs["telemetry"], meta)


def _start_job(network_id: str, device, numerics: dict | None, log: logging.Logger) -> dict:
    """The job's hardware record (logged), with the numeric settings it applies (:func:`_apply_numerics`)."""
    hardware = _describe_job(network_id, device, log)
    hardware["numerics"] = _apply_numerics(numerics, log)
    return hardware


def _sampler(device, telemetry: dict, log: logging.Logger):
    from spikebench.telemetry import TelemetrySampler

    return TelemetrySampler(device, interval_s=telemetry["interval_s"], enabled=telemetry["enabled"], log=log)


def _end_job(hardware: dict, device) -> None:
    """The GPU temperature at the end (:func:`_end_state`), the machine's load and the numeric settings after the
    run."""
    from spikebench.hardware import machine_load

    _end_state(hardware, device)
    hardware["load_1min_end"] = machine_load()["load_1min"]
    hardware["numerics"] = _numerics_after_run()


def _out_of_memory(exc: BaseException, device, epoch: int | None, log: logging.Logger) -> dict | None:
    """The out-of-memory record of `exc` (spikebench.oom), or None when it is any other error."""
    if not oom.is_out_of_memory(exc):
        return None
    record = oom.oom_record(exc, device, epoch)
    log.error(
        "out of memory (%s); memory reached %.0f MiB (%s): recorded as status oom, the workflow goes on",
        record["error"],
        record["memory_reached_mib"],
        record["memory_source"],
    )
    return record


PARTIAL_TELEMETRY = "telemetry_train.partial.parquet"
"""The samples of a training's finished epochs, beside its checkpoint (not a declared output)."""
WARMUP_STEPS = 3
IDLE_S = 5.0
"""Defaults of ``telemetry.warmup_steps`` and ``telemetry.idle_s`` (as in the config schema)."""


def _measure_idle(sampler, telemetry: dict, log: logging.Logger) -> None:
    idle = sampler.measure_idle(float(telemetry.get("idle_s", IDLE_S)))
    if idle["idle_power_w"] is None:
        log.info("idle power not measured: %s; energy_above_idle_j stays null", idle["idle_null_reason"])
    else:
        log.info("idle power %.1f W over %.1f s (%s)", idle["idle_power_w"], idle["idle_s"], idle["idle_energy_source"])


def _end_state(hardware: dict, device) -> None:
    """Add the GPU temperature at the job's end (and why it is null) to its hardware record."""
    from spikebench.hardware import gpu_state

    state = gpu_state(str(device))
    hardware["temperature_end_c"] = state["temperature_c"]
    reason = state["null_reasons"].get("temperature_c")
    if reason is not None:
        hardware.setdefault("null_reasons", {})["temperature_end_c"] = reason


def evaluate_job(
    network_id: str,
    spec: NetworkSpec | dict,
    *,
    inputs: dict,
    outputs: dict,
    data_root: str | Path,
    which: str,
    seed: int,
    device: str,
    telemetry: dict,
    log: logging.Logger,
    data_source: str = "download",
    numerics: dict | None = None,
) -> None:
    """Rule evaluate: the official test set through the chosen weights, with telemetry.

    A training that ran out of memory has no weights: its test result is ``status: oom`` too (spikebench.oom)."""
    from spikebench.data.device import load_test_data
    from spikebench.devices import select_device
    from spikebench.evaluation import evaluate_network
    from spikebench.telemetry import install_sigterm_handler

    spec = as_spec(spec, network_id)
    trained = oom.trained_status(inputs["weights"])
    if trained is not None:
        _write_untrained_outputs(outputs, network_id, spec, trained, log)
        return
    install_sigterm_handler()
    with select_device(device, log=log) as lease:
        hardware = _start_job(network_id, lease.device, numerics, log)
        md5 = verify_md5(data_source, inputs.get("manifest"))
        test = load_test_data(spec, Path(data_root), _nmnist_files(inputs), lease.device, verify_md5=md5)
        log.info("network %s: %d test samples on %s", network_id, len(test), lease.device)
        sampler = _sampler(lease.device, telemetry, log)
        hook = JobTelemetry(sampler)
        with sampler:
            _measure_idle(sampler, telemetry, log)
            try:
                result = evaluate_network(
                    Path(inputs["weights"]),
                    spec,
                    test,
                    network_id=network_id,
                    device=lease.device,
                    which=which,
                    seed=seed,
                    telemetry=hook,
                    log=log,
                )
            except BaseException as exc:
                _finish_telemetry(hook, outputs["telemetry"], log, failed=exc)
                raise
            _finish_telemetry(hook, outputs["telemetry"], log)
        _end_job(hardware, lease.device)
        _write_test_outputs(result, hardware, outputs, network_id, spec, log)


def _write_untrained_outputs(
    outputs: dict, network_id: str, spec: NetworkSpec, trained: dict, log: logging.Logger
) -> None:
    """The ``status: oom`` test outputs of a network whose training ran out of memory (``trained``: its record)."""
    from spikebench.opcounts import write_layers

    log.warning(
        "%s: its training ran out of memory (%s); test result recorded as status oom", network_id, trained["error"]
    )
    oom.write_test_oom(outputs, network_id, trained)
    if "layers" in outputs:  # no operations counted: an empty per-layer table
        write_layers([], outputs["layers"], network=network_id, kind=spec.kind)


def _write_test_outputs(
    result: dict, hardware: dict, outputs: dict, network_id: str, spec: NetworkSpec, log: logging.Logger
) -> None:
    """test.json (``result`` with the hardware record, energy per sample and ``status: ok``), the per-layer table
    and the telemetry sidecar's Parquet metadata."""
    from spikebench.opcounts import write_layers

    result["hardware"] = hardware
    _energy_per_sample(result)
    _add_parquet_metadata(outputs["telemetry"], {"spikebench.hardware": hardware, "spikebench.network": network_id})
    write_layers(result.pop("layer_operations"), outputs["layers"], network=network_id, kind=spec.kind)
    result["status"] = oom.OK
    atomic.write_json(result, outputs["test"])
    log.info("test accuracy %.4f, macro F1 %.4f", result["accuracy"], result["f1_macro"])


def _energy_per_sample(result: dict) -> None:
    """Add the test set's energy per sample (mJ, total and above idle) to ``result["telemetry"]`` (null where
    the energy is)."""
    summary = result.get("telemetry")
    if summary is None:
        return
    for energy_key, key in (
        ("energy_j", "energy_per_sample_mj"),
        ("energy_above_idle_j", "energy_above_idle_per_sample_mj"),
    ):
        energy_j = summary.get(energy_key)
        summary[key] = None if energy_j is None else 1000.0 * energy_j / result["n_test"]
