"""Experiment tracking: each train and evaluate job's results as one run of W&B, TensorBoard or MLflow.

Tracking happens after the fact. The `track` rule (rules/tracking.smk) runs a short local job once
a network's `train` (or `evaluate`) job has finished: it reads what that job wrote, the epochs
table (one row per epoch: losses, accuracies, times, memory, power, energy) or `test.json` (test
metrics and the test phase's telemetry summary), and logs it as one run named
``<network>-seed<seed>-<train|evaluate>``, tagged with experiment, implementation, kind, dataset,
job and hardware. So turning tracking on, or changing its backend, trains nothing again and
changes no result file, and a run can be logged again at any time.

One small interface: :func:`open_run` is a context manager that yields a tracker with
``log_epoch(step, metrics)`` and ``log_summary(metrics)``; leaving it closes the run (as failed
when an exception leaves it). Backend ``none`` yields :class:`NullTracker`, so callers have no
branches. Where the runs go (``<results>`` is the config key ``results``):

- ``wandb``: offline (``WANDB_MODE=offline`` unless the user set WANDB_MODE), in
  ``<results>/tracking/wandb/offline-run-*``; upload later with ``wandb sync``.
- ``tensorboard``: event files in ``<results>/tracking/tensorboard/<run>`` (replaced when the run
  is logged again, so curves are never doubled); ``tensorboard --logdir <results>/tracking/tensorboard``.
- ``mlflow``: ``tracking.mlflow_uri``, by default the local database
  ``sqlite:///<results>/tracking/mlflow.db`` (MLflow's file store ``./mlruns`` is deprecated);
  ``mlflow ui --backend-store-uri sqlite:///<results>/tracking/mlflow.db``.

Values that were not measured (null in the result files) are not logged, never logged as 0.

Local means local (:func:`offline_environment`): spikebench, not the user, switches the trackers' telemetry and
network off and points their cache, config and log folders into ``<results>/tracking``, for the duration of
the run only. MLflow gets ``MLFLOW_DISABLE_TELEMETRY`` and ``DO_NOT_TRACK`` before it is first imported
(otherwise ``import mlflow`` writes ``~/.config/mlflow/telemetry.json`` and looks up its telemetry host); W&B
gets ``WANDB_ERROR_REPORTING=false`` (otherwise its wandb-core process looks up its API host, even offline),
``WANDB_DISABLE_GIT``/``WANDB_DISABLE_CODE`` and ``WANDB_DIR``, ``WANDB_CACHE_DIR`` (where wandb-core writes its
``core-debug-*.log``, otherwise ``~/.cache/wandb/logs``), ``WANDB_CONFIG_DIR``, ``WANDB_DATA_DIR`` and
``WANDB_ARTIFACT_DIR`` under ``<results>/tracking/wandb``. Only ``WANDB_MODE`` set by the user is kept (``online``
is how to ask for uploads). TensorBoard contacts nothing and writes nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from spikebench.atomic import write_json

BACKENDS = ("none", "wandb", "tensorboard", "mlflow")
IMPLEMENTATION = "spikebench"
# The modules each backend needs; the extra `.[<backend>]` of pyproject.toml installs them.
BACKEND_MODULES = {"wandb": ("wandb",), "tensorboard": ("tensorboard",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}
STAGES = {"train": "epochs.parquet", "evaluate": "test.json"}


class TrackingError(RuntimeError):
    """Tracking cannot start: the message names the config key and how to recover."""


# ---------------------------------------------------------------------------------------------
# Settings


def settings(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict:
    """The config's ``tracking`` mapping with the schema's defaults filled in (defaults live in the schema)."""
    if schema is None:
        from spikebench.config import load_schema

        schema = load_schema()
    properties = schema["properties"]["tracking"]["properties"]
    given = config.get("tracking") or {}
    return {key: given.get(key, spec.get("default")) for key, spec in properties.items()}


def missing_modules(backend: str) -> list[str]:
    """The modules of `backend` that cannot be imported here."""

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    return [m for m in BACKEND_MODULES.get(backend, ()) if absent(m)]


def check_installed(tracking: Mapping[str, Any]) -> None:
    """Raise :class:`TrackingError` naming the key and the extra to install when the backend's packages are absent."""
    backend = tracking["backend"]
    if backend not in BACKENDS:
        raise TrackingError(f"config key 'tracking.backend': {backend!r} is not one of {', '.join(BACKENDS)}")
    missing = missing_modules(backend)
    if missing:
        raise TrackingError(
            f"config key 'tracking.backend' is {backend!r}, but the Python package(s) {', '.join(missing)} "
            f'are not installed. Install them with: pip install -e ".[{backend}]" '
            f"(or set tracking.backend: none)"
        )


def run_name(network: str, seed: int, stage: str) -> str:
    return f"{network}-seed{int(seed)}-{stage}"


def record_path(folder: str | Path, backend: str, network: str, seed: int, stage: str) -> str:
    """Where the track job of one train/evaluate job writes its record: ``<folder>/runs/<backend>/<run>.json``."""
    return f"{folder}/runs/{backend}/{run_name(network, seed, stage)}.json"


def targets(tracking: Mapping[str, Any], folder: str | Path, networks, seed: int) -> list[str]:
    """The records of every tracked job (none when the backend is ``none``)."""
    if tracking["backend"] == "none":
        return []
    return [record_path(folder, tracking["backend"], n, seed, stage) for n in networks for stage in STAGES]


def hardware_name(hardware: Mapping[str, Any] | None) -> str:
    """The device a job ran on, by name (the GPU's, or the CPU model), from its hardware record."""
    hardware = hardware or {}
    return str(hardware.get("device_name") or hardware.get("cpu_model") or hardware.get("device") or "unknown")


def run_tags(network: str, spec: Mapping[str, Any], stage: str, hardware: Mapping[str, Any] | None) -> dict[str, str]:
    return {
        "network": network,
        "experiment": str(spec.get("experiment")),
        "implementation": IMPLEMENTATION,
        "kind": str(spec.get("kind")),
        "dataset": str(spec.get("dataset")),
        "job": stage,
        "hardware": hardware_name(hardware),
        "device": str((hardware or {}).get("device")),
    }


# ---------------------------------------------------------------------------------------------
# What is logged


def _number(value: Any) -> float | None:
    """A finite number as float; None for null, NaN, text, booleans and anything else."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def numeric(values: Mapping[str, Any], prefix: str = "", skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The finite numbers of a mapping (keys prefixed); null/NaN (not measured), text and lists are left out."""
    out = {}
    for key, value in values.items():
        number = _number(value)
        if key not in skip and number is not None:
            out[f"{prefix}{key}"] = number
    return out


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """One epochs-table row as metrics: every measured number but the epoch (the step) and constant sizes."""
    return numeric(row, skip=("epoch", "n_train", "n_val"))


def summary_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """test.json's numbers as ``test_<key>`` (``test_time_s`` as is), its telemetry summary's as ``test_<key>`` too."""
    metrics = numeric(result, prefix="test_", skip=("experiment", "epoch_of_weights"))
    metrics = {k.replace("test_test_", "test_"): v for k, v in metrics.items()}
    metrics.update(numeric(result.get("telemetry") or {}, prefix="test_"))
    return metrics


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level with dotted keys (for MLflow params and TensorBoard text)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# Local only: the trackers' telemetry and network off, their folders under <results>/tracking


def offline_environment(backend: str, folder: str | Path) -> dict[str, str]:
    """The environment variables ``backend`` runs with (module docstring); ``folder`` is ``<results>/tracking``."""
    if backend == "mlflow":
        return {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if backend != "wandb":
        return {}
    root = Path(folder).resolve()
    return {
        "WANDB_MODE": os.environ.get("WANDB_MODE") or "offline",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(root),
        "WANDB_CACHE_DIR": str(root / "wandb" / "cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb" / "config"),
        "WANDB_DATA_DIR": str(root / "wandb" / "data"),
        "WANDB_ARTIFACT_DIR": str(root / "wandb" / "artifacts"),
    }


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the duration of the block, then as it was."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------
# Trackers: log_epoch(step, metrics), log_summary(metrics), close(status) -> where the run went


class NullTracker:
    """Backend ``none``: logs nothing."""

    backend = "none"

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> dict:
        return {}


class WandbTracker:
    """A W&B run, offline unless WANDB_MODE says otherwise; files under ``<folder>/wandb``."""

    backend = "wandb"

    def __init__(self, folder: Path, project: str, name: str, tags: Mapping[str, str], config: Mapping) -> None:
        import wandb

        self.mode = os.environ.get("WANDB_MODE") or "offline"
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            name=name,
            dir=str(folder),
            mode=self.mode,
            group=f"experiment{tags['experiment']}",
            job_type=tags["job"],
            tags=[f"{key}:{value}"[:64] for key, value in tags.items()],
            config={**config, "tags": dict(tags)},
            settings=wandb.Settings(console="off", x_disable_stats=True, save_code=False, disable_git=True),
        )

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=int(step))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.run.summary.update(dict(metrics))

    def close(self, status: str = "FINISHED") -> dict:
        run_dir = str(Path(self.run.dir).parent)
        where = {"run_id": self.run.id, "mode": self.mode, "run_dir": run_dir, "url": self.run.url}
        if self.mode == "offline":
            where["upload_with"] = f"wandb sync {run_dir}"
        import wandb

        self.run.finish(exit_code=0 if status == "FINISHED" else 1)
        # finish() can return before wandb's service has written the run's .wandb file;
        # teardown() waits for it (a track job has no other W&B run).
        wandb.teardown()
        return where


class TensorBoardTracker:
    """Event files of one run in ``<folder>/tensorboard/<name>``, replaced when the run is logged again."""

    backend = "tensorboard"

    def __init__(self, folder: Path, name: str, tags: Mapping[str, str], config: Mapping) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = folder / "tensorboard" / name
        if self.log_dir.exists():
            shutil.rmtree(self.log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.writer.add_text("run/tags", _markdown_table(tags), 0)
        self.writer.add_text("run/config", _markdown_table(flat(config)), 0)

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, int(step))

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.log_epoch(0, metrics)

    def close(self, status: str = "FINISHED") -> dict:
        self.writer.close()
        return {"log_dir": str(self.log_dir)}


def _markdown_table(values: Mapping[str, Any]) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in values.items())


class MlflowTracker:
    """An MLflow run in experiment ``project`` of the tracking URI."""

    backend = "mlflow"

    def __init__(
        self, uri: str, project: str, name: str, tags: Mapping[str, str], config: Mapping, artifacts: Path | None = None
    ) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.uri, self.client = uri, MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(
                project, artifact_location=artifacts.resolve().as_uri() if artifacts else None
            )
        )
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=dict(tags)).info.run_id
        self.experiment_id = experiment_id
        params = [Param(k, str(v)[:500]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(step)) for k, v in metrics.items()])

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        self.log_epoch(0, metrics)

    def close(self, status: str = "FINISHED") -> dict:
        self.client.set_terminated(self.run_id, status)
        return {"run_id": self.run_id, "experiment_id": self.experiment_id, "tracking_uri": self.uri}


def mlflow_uri(tracking: Mapping[str, Any], folder: str | Path) -> str:
    """``tracking.mlflow_uri``, or the local database ``sqlite:///<folder>/mlflow.db`` (a relative path)."""
    return tracking.get("mlflow_uri") or f"sqlite:///{Path(folder) / 'mlflow.db'}"


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """Concurrent jobs take turns on a local MLflow database (SQLite would refuse concurrent schema set-up)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def open_run(
    tracking: Mapping[str, Any],
    *,
    folder: str | Path,
    name: str,
    tags: Mapping[str, str],
    config: Mapping,
) -> Iterator[Any]:
    """One run of the configured tracker (``tracking`` as :func:`settings` returns it), closed on exit.

    ``folder`` (``<results>/tracking``) holds the local runs. After the block, ``tracker.where``
    says where the run went (run id, folder, URI).
    """
    check_installed(tracking)
    backend, folder = tracking["backend"], Path(folder)
    with contextlib.ExitStack() as stack:
        # Before the backend is imported: MLflow reads its telemetry switch on `import mlflow`.
        stack.enter_context(environment(offline_environment(backend, folder)))
        if backend == "none":
            tracker: Any = NullTracker()
        elif backend == "wandb":
            tracker = WandbTracker(folder, tracking["project"], name, tags, config)
        elif backend == "tensorboard":
            tracker = TensorBoardTracker(folder, name, tags, config)
        else:
            import mlflow.tracking  # noqa: F401  (imported before waiting for the lock)

            uri = mlflow_uri(tracking, folder)
            stack.enter_context(_sqlite_lock(uri))
            artifacts = folder / "mlartifacts" if not tracking.get("mlflow_uri") else None
            tracker = MlflowTracker(uri, tracking["project"], name, tags, config, artifacts)
        try:
            yield tracker
        except BaseException:
            tracker.close("FAILED")
            raise
        tracker.where = tracker.close("FINISHED")


# ---------------------------------------------------------------------------------------------
# The track job


def track_job(
    network: str,
    spec: Mapping[str, Any],
    stage: str,
    *,
    result: str | Path,
    output: str | Path,
    tracking: Mapping[str, Any],
    folder: str | Path,
    seed: int,
    log: Any,
) -> dict:
    """Rule track: log one finished job's results (``result``: epochs.parquet or test.json) as one run.

    ``folder`` is ``<results>/tracking``. Writes ``output``, a JSON record of the run (name,
    tags, backend, where it went, what was logged).
    """
    from spikebench.results import read_epochs, read_test

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    check_installed(tracking)
    if stage == "train":
        epochs = read_epochs(result)
        hardware, steps, summary = epochs.attrs.get("hardware", {}), epochs.to_dict("records"), {}
    else:
        test = read_test(result)
        hardware, steps, summary = test.get("hardware") or {}, [], summary_metrics(test)
    name, tags = run_name(network, seed, stage), run_tags(network, spec, stage, hardware)
    config = {"network": dict(spec), "seed": int(seed), "results_file": str(result)}
    if stage == "evaluate":
        config.update(weights=test.get("weights"), epoch_of_weights=test.get("epoch_of_weights"))
    logged: dict[str, list] = {"epochs": [], "metrics": []}
    with open_run(tracking, folder=folder, name=name, tags=tags, config=config) as tracker:
        for row in steps:
            metrics = epoch_metrics(row)
            tracker.log_epoch(int(row["epoch"]), metrics)
            logged["epochs"].append(int(row["epoch"]))
            logged["metrics"] = sorted(set(logged["metrics"]) | set(metrics))
        if summary:
            tracker.log_summary(summary)
            logged["metrics"] = sorted(summary)
    record = {"backend": tracking["backend"], "run": name, "tags": tags, "logged": logged, **tracker.where}
    write_json(record, output)
    log.info("%s: logged %s to %s (%s)", name, result, tracking["backend"], json.dumps(tracker.where))
    return record
