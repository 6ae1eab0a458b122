"""Experiment tracking: each backend's offline/local mode, read back with the backend's own reader.

The result files are the realistic ones of `test_results.write_fake_run` (the columns, nulls and
hardware metadata the train/evaluate jobs write); every check compares what the tracker holds
with what those files hold.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from spikebench import tracking
from spikebench.config import ConfigError, expand_runs, load_config, validate_config
from spikebench.results import read_epochs, read_test

sys.path.insert(0, str(Path(__file__).parent))
from test_results import STUDY_NETWORKS, write_fake_run  # noqa: E402

from conftest import PROJECT, copy_workflow, snakemake_cmd  # noqa: E402

LOG = logging.getLogger("spikebench.test")
NETWORK = "exp1_snn"
SPEC = {**STUDY_NETWORKS[NETWORK], "epochs": 3, "lr": 1e-3}


def fake_results(tmp_path: Path, telemetry: str = "nvml") -> Path:
    return write_fake_run(tmp_path / "results", {NETWORK: STUDY_NETWORKS[NETWORK]}, telemetry=telemetry)


def track(results: Path, backend: str, stage: str, **extra) -> dict:
    settings = {"backend": backend, "project": "spikebench-test", "mlflow_uri": None, **extra}
    result = results / NETWORK / tracking.STAGES[stage]
    output = Path(tracking.record_path(results / "tracking", backend, NETWORK, 0, stage))
    record = tracking.track_job(
        NETWORK,
        SPEC,
        stage,
        result=result,
        output=output,
        tracking=settings,
        folder=results / "tracking",
        seed=0,
        log=LOG,
    )
    assert json.loads(output.read_text()) == json.loads(json.dumps(record, default=str))
    return record


def expected_epochs(results: Path) -> pd.DataFrame:
    return read_epochs(results / NETWORK / "epochs.parquet")


# ---------------------------------------------------------------------------------------------
# Settings and errors


def test_settings_defaults_live_in_the_schema():
    config = load_config(PROJECT / "config.yaml")
    assert tracking.settings(config) == {"backend": "none", "project": "spikebench", "mlflow_uri": None}
    assert tracking.settings(load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"))["backend"] == "none"
    without = {k: v for k, v in config.items() if k != "tracking"}
    validate_config(without)  # optional: older configs stay valid
    assert tracking.settings(without) == tracking.settings(config)
    assert tracking.settings({"tracking": {"backend": "mlflow"}})["project"] == "spikebench"


def test_bad_backend_is_a_config_error_naming_the_key():
    config = load_config(PROJECT / "config.yaml")
    with pytest.raises(ConfigError, match=r"tracking\.backend"):
        validate_config({**config, "tracking": {"backend": "neptune"}})
    with pytest.raises(ConfigError, match=r"tracking.*mlfow_uri"):
        validate_config({**config, "tracking": {"backend": "mlflow", "mlfow_uri": "x"}})


def test_missing_backend_package_names_the_key_and_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(tracking.BACKEND_MODULES, "wandb", ("wandb_is_not_installed_here",))
    settings = {"backend": "wandb", "project": "p", "mlflow_uri": None}
    expected = r"tracking\.backend.*wandb_is_not_installed_here.*pip install -e \"\.\[wandb\]\""
    with pytest.raises(tracking.TrackingError, match=expected):
        tracking.check_installed(settings)
    with pytest.raises(tracking.TrackingError, match=expected):
        track(fake_results(tmp_path), "wandb", "train")
    tracking.check_installed({**settings, "backend": "none"})


def test_null_tracker_logs_nothing_and_names_the_run(tmp_path):
    results = fake_results(tmp_path)
    record = track(results, "none", "train")
    assert record["run"] == "exp1_snn-seed0-train"
    assert record["tags"] == {
        "network": NETWORK,
        "experiment": "1",
        "implementation": "spikebench",
        "kind": "snn",
        "dataset": "mnist",
        "job": "train",
        "hardware": "NVIDIA H100 80GB HBM3",
        "device": "cuda:0",
    }
    assert record["logged"]["epochs"] == [1, 2, 3]
    assert sorted(p.name for p in (results / "tracking").iterdir()) == ["runs"]


def test_the_record_is_written_through_the_atomic_writer(tmp_path, monkeypatch):
    from spikebench import atomic

    written = []
    real = atomic.write_text
    monkeypatch.setattr(atomic, "write_text", lambda text, path: written.append(Path(path)) or real(text, path))
    results = fake_results(tmp_path)
    track(results, "none", "evaluate")
    output = Path(tracking.record_path(results / "tracking", "none", NETWORK, 0, "evaluate"))
    assert written == [output]
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_metrics_leave_out_what_was_not_measured(tmp_path):
    results = fake_results(tmp_path, telemetry="cpu")  # no power or energy on this CPU
    rows = expected_epochs(results).to_dict("records")
    metrics = tracking.epoch_metrics(rows[0])
    assert "energy_j" not in metrics and "avg_power_w" not in metrics and "avg_gpu_util_pct" not in metrics
    assert metrics["val_acc"] == rows[0]["val_acc"] and metrics["epoch_time_s"] == rows[0]["epoch_time_s"]
    assert "epoch" not in metrics and "device" not in metrics
    test = tracking.summary_metrics(read_test(results / NETWORK / "test.json"))
    assert "test_energy_j" not in test and test["test_device_memory_avg_pct"] == 4.2
    assert test["test_time_s"] == 1.5 and "test_per_class_recall" not in test


# ---------------------------------------------------------------------------------------------
# TensorBoard


def _tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_run_holds_every_epoch_and_the_test_metrics(tmp_path):
    pytest.importorskip(
        "tensorboard", reason='the tensorboard extra is not installed (pip install -e ".[tensorboard]")'
    )
    results = fake_results(tmp_path)
    epochs = expected_epochs(results)
    for _ in range(2):  # logged twice: the run is replaced, its curves are not doubled
        record = track(results, "tensorboard", "train")
    log_dir = results / "tracking" / "tensorboard" / "exp1_snn-seed0-train"
    assert Path(record["log_dir"]) == log_dir
    scalars = _tensorboard_scalars(log_dir)
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "energy_j", "avg_power_w"):
        assert [s for s, _ in scalars[column]] == [1, 2, 3]
        assert [v for _, v in scalars[column]] == pytest.approx(epochs[column].astype(float).tolist(), rel=1e-6)
    assert set(record["logged"]["metrics"]) == set(scalars)

    track(results, "tensorboard", "evaluate")
    test = read_test(results / NETWORK / "test.json")
    scalars = _tensorboard_scalars(results / "tracking" / "tensorboard" / "exp1_snn-seed0-evaluate")
    assert scalars["test_accuracy"] == [(0, pytest.approx(test["accuracy"]))]
    assert scalars["test_f1_macro"] == [(0, pytest.approx(test["f1_macro"]))]
    assert scalars["test_energy_j"] == [(0, pytest.approx(test["telemetry"]["energy_j"]))]
    assert scalars["test_energy_per_sample_mj"] == [(0, pytest.approx(test["telemetry"]["energy_per_sample_mj"]))]


# ---------------------------------------------------------------------------------------------
# MLflow


def test_mlflow_local_database_holds_metric_history_and_tags(tmp_path):
    pytest.importorskip("mlflow", reason='the mlflow extra is not installed (pip install -e ".[mlflow]")')
    from mlflow.tracking import MlflowClient

    results = fake_results(tmp_path)
    epochs = expected_epochs(results)
    train = track(results, "mlflow", "train")
    evaluate = track(results, "mlflow", "evaluate")
    assert train["tracking_uri"] == f"sqlite:///{results}/tracking/mlflow.db"
    client = MlflowClient(tracking_uri=train["tracking_uri"])
    run = client.get_run(train["run_id"])
    assert run.info.run_name == "exp1_snn-seed0-train" and run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in ("experiment", "implementation", "kind", "dataset", "job", "hardware")} == {
        "experiment": "1",
        "implementation": "spikebench",
        "kind": "snn",
        "dataset": "mnist",
        "job": "train",
        "hardware": "NVIDIA H100 80GB HBM3",
    }
    assert run.data.params["network.lr"] == "0.001" and run.data.params["seed"] == "0"
    for column in ("train_loss", "val_acc", "epoch_time_s", "energy_j", "device_memory_avg_pct"):
        history = sorted(client.get_metric_history(train["run_id"], column), key=lambda m: m.step)
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == pytest.approx(epochs[column].astype(float).tolist())
    test = read_test(results / NETWORK / "test.json")
    metrics = client.get_run(evaluate["run_id"]).data.metrics
    assert metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert metrics["test_avg_power_w"] == pytest.approx(test["telemetry"]["avg_power_w"])
    experiment = client.get_experiment_by_name("spikebench-test")
    assert {r.info.run_name for r in client.search_runs([experiment.experiment_id])} == {
        "exp1_snn-seed0-train",
        "exp1_snn-seed0-evaluate",
    }


# ---------------------------------------------------------------------------------------------
# Weights & Biases


def _wandb_records(run_dir: Path) -> list:
    """The records of an offline run's .wandb file, parsed with wandb's own protobuf Record.

    The file is a LevelDB-style log (wandb's former `datastore` reader, which recent wandb no
    longer ships in Python): a 7-byte header, then 32 KiB blocks of chunks, each with a
    crc32/length/type header (1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _wandb_run(run_dir: Path) -> tuple[object, list[dict], dict]:
    """The run record, the history rows and the final summary of an offline run."""
    run, history, summary = None, [], {}
    for record in _wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({"/".join(u.nested_key) or u.key: json.loads(u.value_json) for u in record.summary.update})
    return run, history, summary


def test_wandb_offline_run_holds_every_epoch_and_the_test_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='the wandb extra is not installed (pip install -e ".[wandb]")')
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_NAME", "WANDB_TAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    results = fake_results(tmp_path)
    epochs = expected_epochs(results)
    train = track(results, "wandb", "train")
    assert train["mode"] == "offline" and train["url"] is None
    run_dir = Path(train["run_dir"])
    assert run_dir.parent == results / "tracking" / "wandb" and run_dir.name.startswith("offline-run-")
    run, history, _ = _wandb_run(run_dir)
    assert run.display_name == "exp1_snn-seed0-train" and run.project == "spikebench-test"
    assert {
        "experiment:1",
        "implementation:spikebench",
        "kind:snn",
        "dataset:mnist",
        "job:train",
        "hardware:NVIDIA H100 80GB HBM3",
    } <= set(run.tags)
    assert [row["_step"] for row in history] == [1, 2, 3]
    for column in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "energy_j"):
        assert [row[column] for row in history] == pytest.approx(epochs[column].astype(float).tolist())

    evaluate = track(results, "wandb", "evaluate")
    test = read_test(results / NETWORK / "test.json")
    _, _, summary = _wandb_run(Path(evaluate["run_dir"]))
    assert summary["test_accuracy"] == pytest.approx(test["accuracy"])
    assert summary["test_energy_per_sample_mj"] == pytest.approx(test["telemetry"]["energy_per_sample_mj"])


def test_wandb_mode_set_by_the_user_is_kept(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason='the wandb extra is not installed (pip install -e ".[wandb]")')
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    results = fake_results(tmp_path)
    record = track(results, "wandb", "train")
    assert record["mode"] == "disabled"
    assert not list((results / "tracking" / "wandb").glob("*run-*"))


# ---------------------------------------------------------------------------------------------
# The track rule


@pytest.mark.slow
def test_track_rule_logs_finished_results_without_rerunning_them(tmp_path):
    """With tracking on, the `track` jobs read the results in place; train/evaluate are not needed."""
    pytest.importorskip(
        "tensorboard", reason='the tensorboard extra is not installed (pip install -e ".[tensorboard]")'
    )
    workdir = copy_workflow(tmp_path / "workflow")
    results = write_fake_run(workdir / "results-demo", {NETWORK: STUDY_NETWORKS[NETWORK]})
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    (workdir / "tracking.yaml").write_text("tracking: {backend: tensorboard}\n")
    targets = [f"results-demo/tracking/runs/tensorboard/exp1_snn-seed0-{stage}.json" for stage in ("train", "evaluate")]
    run = subprocess.run(
        snakemake_cmd(
            *targets, "--cores", "1", "--allowed-rules", "track", "--configfile", "config.demo.yaml", "tracking.yaml"
        ),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert {p: p.read_bytes() for p in before} == before  # no result file changed
    for stage in ("train", "evaluate"):
        record = json.loads((workdir / targets[stage == "evaluate"]).read_text())
        assert record["run"] == f"exp1_snn-seed0-{stage}" and record["tags"]["implementation"] == "spikebench"
        assert (workdir / record["log_dir"]).is_dir()
    assert (workdir / "results-demo/logs/track/exp1_snn-train.log").is_file()


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_missing_backend_stops_the_workflow_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "tracking.yaml").write_text("tracking: {backend: wandb}\n")
    # The Snakefile puts its folder first on sys.path: a stub package there hides the real wandb.
    stub = workdir / "sitecustomize_hide"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'wandb':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{stub}"}
    run = subprocess.run(
        snakemake_cmd("-n", "--configfile", "config.demo.yaml", "tracking.yaml"),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "tracking.backend" in out and 'pip install -e ".[wandb]"' in out, out[-3000:]


@pytest.mark.slow
def test_turning_tracking_on_after_a_run_plans_only_track_jobs(demo_run, tmp_path):
    """A finished demo run: tracking on plans one `track` job per train/evaluate job and nothing else."""
    import shutil

    from test_reruns import planned_jobs

    workdir = tmp_path / "workflow"
    shutil.copytree(demo_run, workdir, symlinks=True)
    (workdir / "tracking.yaml").write_text("tracking: {backend: tensorboard}\n")
    runs = expand_runs(load_config(workdir / "config.yaml", workdir / "config.demo.yaml"))  # seeds, variants too
    expected = {("track", f"network={n}, stage={stage}") for n in runs for stage in tracking.STAGES}
    assert planned_jobs(workdir, "tracking.yaml") == expected | {("all", "")}


# ---------------------------------------------------------------------------------------------
# Local means local: no telemetry, no network, nothing written outside the results folder

# Run in a fresh interpreter with an empty HOME: every Python-level connection or host lookup is refused
# and recorded, and the environment W&B's separate wandb-core process starts with is recorded.
ISOLATED_TRACKING = r"""
import json, os, socket, subprocess, sys
from pathlib import Path

attempts = []
real_connect = socket.socket.connect


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        attempts.append(f"connect {address!r}")
        raise OSError("network blocked by the test")
    return real_connect(self, address)  # AF_UNIX: wandb talks to wandb-core this way


def lookup(name):
    def refuse(*args, **kwargs):
        attempts.append(f"{name} {args[:1]!r}")
        raise socket.gaierror(f"{name} blocked by the test")
    return refuse


socket.socket.connect = connect
socket.getaddrinfo, socket.gethostbyname = lookup("getaddrinfo"), lookup("gethostbyname")
core_env = []


class Popen(subprocess.Popen):
    def __init__(self, args, *rest, **kwargs):
        if "wandb-core" in str(args):
            env = kwargs.get("env") or os.environ
            core_env.append({k: v for k, v in env.items() if k.startswith(("WANDB_", "XDG_", "HOME"))})
        super().__init__(args, *rest, **kwargs)


subprocess.Popen = Popen
from test_tracking import fake_results, track

out = {}
for backend in ("tensorboard", "mlflow", "wandb"):
    results = fake_results(Path(sys.argv[1]) / backend)
    records = [track(results, backend, stage) for stage in ("train", "evaluate")]
    home = sorted(str(p) for p in Path(os.environ["HOME"]).rglob("*"))
    out[backend] = {"attempts": list(attempts), "home": home, "core_env": list(core_env), "results": str(results)}
    attempts.clear(), core_env.clear()
out["leaked"] = [k for k in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "WANDB_MODE", "WANDB_DIR") if k in os.environ]
print("RESULT " + json.dumps(out, default=str))
"""

# Variables under which MLflow switches its telemetry off by itself (CI, pytest): a job has none of them.
CI_VARIABLES = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS")


@pytest.mark.slow  # a subprocess job: three trackers in a fresh interpreter (~20 s)
def test_trackers_contact_nothing_and_write_nothing_outside_the_results(tmp_path):
    for backend in ("wandb", "mlflow", "tensorboard"):
        pytest.importorskip(backend, reason=f'the {backend} extra is not installed (pip install -e ".[{backend}]")')
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in CI_VARIABLES and not k.startswith(("WANDB_", "MLFLOW_", "XDG_", "DO_NOT_TRACK"))
    }
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([str(PROJECT / "tests"), str(PROJECT)]))
    run = subprocess.run(
        [sys.executable, "-c", ISOLATED_TRACKING, str(tmp_path / "runs")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    out = json.loads(run.stdout.split("RESULT ", 1)[1])
    assert out.pop("leaked") == []  # set for each run only
    for backend, seen in out.items():
        assert seen["attempts"] == [], f"{backend} tried the network: {seen['attempts']}"
        assert seen["home"] == [], f"{backend} wrote to $HOME: {seen['home']}"
    (core,) = {json.dumps(e, sort_keys=True) for e in out["wandb"]["core_env"]}  # wandb-core, started once per run
    core = json.loads(core)
    assert core["WANDB_MODE"] == "offline" and core["WANDB_ERROR_REPORTING"] == "false"
    tracking_folder = Path(out["wandb"]["results"]) / "tracking"
    assert core["WANDB_CACHE_DIR"] == str(tracking_folder / "wandb" / "cache")
    assert list(tracking_folder.rglob("core-debug-*.log"))  # wandb-core's own log, under the results


def test_the_offline_environment_is_set_for_the_run_only(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    env = tracking.offline_environment("wandb", tmp_path / "tracking")
    assert env["WANDB_MODE"] == "offline" and env["WANDB_ERROR_REPORTING"] == "false"
    folders = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")
    assert all(Path(env[k]).is_relative_to(tmp_path / "tracking") for k in folders)
    assert tracking.offline_environment("mlflow", tmp_path)["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert tracking.offline_environment("tensorboard", tmp_path) == {}
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's own choice is kept
    assert tracking.offline_environment("wandb", tmp_path)["WANDB_MODE"] == "online"
    seen = {}
    with tracking.open_run(
        {"backend": "none", "project": "p", "mlflow_uri": None}, folder=tmp_path, name="n", tags={}, config={}
    ):
        seen.update(os.environ)
    assert "MLFLOW_DISABLE_TELEMETRY" not in seen  # backend none: nothing set
