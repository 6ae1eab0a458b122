"""Tables I and II, the comparison with the study and the cost of spiking, from hand-made results.

`write_fake_run` writes per-network results with the columns the training and evaluation jobs
write (epochs.parquet, test.json, telemetry sidecars); test_figures and test_report reuse it.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spikebench import results

PROJECT = Path(__file__).resolve().parents[1]
SHARED_PAPER = PROJECT.parent / "shared" / "paper"

STUDY_NETWORKS = {
    "exp1_ann": {"experiment": 1, "dataset": "mnist", "kind": "ann", "architecture": "fc"},
    "exp1_snn": {"experiment": 1, "dataset": "mnist", "kind": "snn", "architecture": "fc"},
    "exp2_cnn": {"experiment": 2, "dataset": "cifar10", "kind": "ann", "architecture": "conv5"},
    "exp2_snn": {"experiment": 2, "dataset": "cifar10", "kind": "snn", "architecture": "conv5"},
    "exp3_snn_mnist": {"experiment": 3, "dataset": "mnist", "kind": "snn", "architecture": "conv2"},
    "exp3_snn_nmnist": {"experiment": 3, "dataset": "nmnist", "kind": "snn", "architecture": "conv2"},
}

# As spikebench.telemetry.hardware_info writes them.
GPU_HARDWARE = {
    "device": "cuda:0",
    "device_name": "NVIDIA H100 80GB HBM3",
    "gpu_uuid": "GPU-0000",
    "memory_total_mib": 81559.0,
    "driver_version": "550.54.15",
    "cuda_version": "12.4",
    "torch_version": "2.14.1",
    "snntorch_version": "0.9.4",
    "python_version": "3.11.9",
    "cpu_model": "AMD EPYC 9454",
    "cpu_count": 96,
    "ram_total_mib": 1031000.0,
    "host_name": "gpu-node-1",
    "platform": "Linux-6.8",
    "cuda_visible_devices": "3",
}
CPU_HARDWARE = {
    "device": "cpu",
    "device_name": "Intel Xeon",
    "memory_total_mib": 24000.0,
    "driver_version": None,
    "cuda_version": "12.4",
    "torch_version": "2.14.1",
    "snntorch_version": "0.9.4",
    "cpu_model": "Intel Xeon",
    "cpu_count": 2,
    "ram_total_mib": 24000.0,
    "host_name": "laptop",
    "platform": "Linux-6.1",
}
RAM_MIB = 24000.0
TELEMETRY_KINDS = ("nvml", "cpu", "rapl", "none")  # GPU; CPU without and with a RAPL counter; disabled
SIDECAR_COLUMNS = [
    "time_s",
    "timestamp",
    "phase",
    "epoch",
    "source",
    "power_w",
    "energy_counter_mj",
    "memory_used_mib",
    "memory_total_mib",
    "memory_used_pct",
    "gpu_util_pct",
    "memory_util_pct",
    "temperature_c",
    "sm_clock_mhz",
    "cpu_util_pct",
    "rss_mib",
    "cpu_energy_uj",
    "error",
]


def _write_parquet(df: pd.DataFrame, path: Path, hardware: dict) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"spikebench.hardware"] = json.dumps(hardware).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)


def _nulls(n: int, dtype: str = "Float64") -> pd.api.extensions.ExtensionArray:
    return pd.array([None] * n, dtype=dtype)


def make_epochs(network: str, n_epochs: int, telemetry: str, *, scale: float = 1.0) -> pd.DataFrame:
    """A plausible epochs table with the columns the train job writes, for one telemetry kind."""
    epoch = np.arange(1, n_epochs + 1)
    train_acc = 0.99 - 0.6 * np.exp(-epoch / 2) * min(scale, 1.5)
    val_acc = train_acc - 0.02 + 0.004 * np.sin(epoch)
    train_time = 8.0 * scale + 0.3 * np.cos(epoch)
    val_time = 1.0 * scale + 0.0 * epoch
    n_train, n_val = 48000, 12000
    gpu = telemetry == "nvml"
    power = (60.0 if gpu else 25.0) * scale + 2 * np.sin(epoch)
    memory = (4000.0 if gpu else 900.0) * scale + 10 * epoch
    total = 81559.0 if gpu else RAM_MIB
    df = pd.DataFrame(
        {
            "network": network,
            "epoch": epoch.astype(np.int64),
            "train_loss": 1 - train_acc,
            "train_acc": train_acc,
            "val_loss": 1 - val_acc,
            "val_acc": val_acc,
            "train_time_s": train_time,
            "val_time_s": val_time,
            "epoch_time_s": train_time + val_time,
            "train_samples_per_s": n_train / train_time,
            "val_samples_per_s": n_val / val_time,
            "n_train": n_train,
            "n_val": n_val,
            "peak_memory_mib": 300.0 * scale + epoch,
            "memory_source": "torch_cuda_max_allocated" if gpu else "process_max_rss",
            "device": "cuda:0" if gpu else "cpu",
            "avg_power_w": power,
            "energy_j": power * (train_time + val_time),
            "train_energy_j": power * train_time,
            "val_energy_j": power * val_time,
            "energy_source": {"nvml": "nvml_energy_counter", "rapl": "rapl"}.get(telemetry),
            "device_memory_avg_mib": memory,
            "device_memory_peak_mib": memory + 500,
            "device_memory_avg_pct": memory / total * 100,
            "device_memory_peak_pct": (memory + 500) / total * 100,
            "avg_gpu_util_pct": 80.0 + 0 * epoch,
            "avg_cpu_util_pct": 95.0 + 0 * epoch,
            "telemetry_source": "cpu" if telemetry == "rapl" else telemetry,
            "idle_power_w": (40.0 if gpu else 10.0) + 0 * epoch,
            "energy_above_idle_j": (power - (40.0 if gpu else 10.0)) * (train_time + val_time),
            "idle_null_reason": None,
            "activation_peak_mib": 200.0 * scale + epoch if gpu else _nulls(n_epochs),
            "dataset_mib": 180.0 + 0 * epoch,
            "memory_null_reason": None if gpu else "the CPU's peak allocation cannot be reset per phase",
        }
    )
    if not gpu:
        df["avg_gpu_util_pct"] = _nulls(n_epochs)
    if telemetry in ("cpu", "none"):
        for column in (
            "avg_power_w",
            "energy_j",
            "train_energy_j",
            "val_energy_j",
            "idle_power_w",
            "energy_above_idle_j",
        ):
            df[column] = _nulls(n_epochs)
        df["idle_null_reason"] = "no power reading on this machine (no NVML, RAPL not readable)"
        df["energy_source"] = _nulls(n_epochs, "string")
    if telemetry == "none":
        for column in (
            "device_memory_avg_mib",
            "device_memory_peak_mib",
            "device_memory_avg_pct",
            "device_memory_peak_pct",
            "avg_cpu_util_pct",
        ):
            df[column] = _nulls(n_epochs)
    return df


def make_telemetry(
    epochs: pd.DataFrame | None, telemetry: str, *, test_s: float | None = None, step: float = 0.1
) -> pd.DataFrame:
    """A telemetry sidecar following the epochs' phases (or a test phase of `test_s` seconds).

    As spikebench.telemetry samples: "nvml" fills the GPU columns; "cpu"/"rapl" the process's
    (memory_used_mib is its RSS, memory_used_pct its share of RAM, RAPL energy for "rapl");
    "none" has only the phase-boundary rows, every measurement null.
    """
    phases = (
        [("test", None, test_s)]
        if test_s is not None
        else [
            (phase, row.epoch, getattr(row, f"{phase}_time_s"))
            for row in epochs.itertuples()
            for phase in ("train", "val")
        ]
    )
    parts, t0 = [], 0.0
    for phase, epoch, duration in phases:
        t = (
            np.array([t0, t0 + duration])
            if telemetry == "none"
            else np.r_[np.arange(t0, t0 + duration, step), t0 + duration]
        )
        parts.append(pd.DataFrame({"time_s": t, "phase": phase, "epoch": epoch}))
        t0 += duration
    df = pd.concat(parts, ignore_index=True)
    n = len(df)
    rng = np.random.default_rng(0)
    source = {"nvml": "nvml", "none": "none"}.get(telemetry, "cpu")
    df["timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(df["time_s"], unit="s")
    df["phase"] = df["phase"].astype("string")
    df["epoch"] = df["epoch"].astype("Int64")
    df["source"] = pd.array([source] * n, dtype="string")
    for column in SIDECAR_COLUMNS[5:]:
        df[column] = _nulls(
            n,
            "Int64"
            if column in ("energy_counter_mj", "cpu_energy_uj")
            else "string"
            if column == "error"
            else "Float64",
        )
    busy = np.where(df["phase"] == "train", 1.0, 0.7)
    if telemetry == "nvml":
        power = 62.0 * busy + rng.normal(0, 2, n)
        df["power_w"] = pd.array(power, dtype="Float64")
        df["energy_counter_mj"] = pd.array(1_000_000 + np.cumsum(power * step * 1e3).astype(np.int64), dtype="Int64")
        memory = 4000 + 50 * np.minimum(df["time_s"].to_numpy(), 3)
        df["memory_used_mib"] = pd.array(memory, dtype="Float64")
        df["memory_total_mib"] = pd.array(np.full(n, 81559.0), dtype="Float64")
        df["memory_used_pct"] = pd.array(memory / 81559 * 100, dtype="Float64")
        df["gpu_util_pct"] = pd.array(80.0 * busy, dtype="Float64")
    if telemetry in ("nvml", "cpu", "rapl"):
        rss = 900 + 20 * np.minimum(df["time_s"].to_numpy(), 5)
        df["rss_mib"] = pd.array(rss, dtype="Float64")
        df["cpu_util_pct"] = pd.array(95 * busy + rng.normal(0, 1, n), dtype="Float64")
    if telemetry in ("cpu", "rapl"):
        df["memory_used_mib"] = df["rss_mib"]
        df["memory_total_mib"] = pd.array(np.full(n, RAM_MIB), dtype="Float64")
        df["memory_used_pct"] = pd.array(rss / RAM_MIB * 100, dtype="Float64")
    if telemetry == "rapl":
        watts = 25.0 * busy
        joules = np.r_[0.0, np.cumsum(watts[1:] * np.diff(df["time_s"].to_numpy()))]
        df["cpu_energy_uj"] = pd.array(5_000_000_000 + (joules * 1e6).astype(np.int64), dtype="Int64")
    return df[SIDECAR_COLUMNS]


def make_test(network: str, spec: dict, telemetry: str, *, accuracy: float = 0.97) -> dict:
    gpu = telemetry == "nvml"
    n_test = 10000
    energy = {"nvml": 63.0, "rapl": 30.0}.get(telemetry)
    memory_pct = {"nvml": 5.03, "cpu": 4.2, "rapl": 4.2}.get(telemetry)
    return {
        "network": network,
        "experiment": spec["experiment"],
        "dataset": spec["dataset"],
        "kind": spec["kind"],
        "weights": "last",
        "epoch_of_weights": 3,
        "n_test": n_test,
        "accuracy": accuracy,
        "precision_macro": accuracy - 0.001,
        "recall_macro": accuracy - 0.002,
        "f1_macro": accuracy - 0.0015,
        "per_class_recall": [accuracy] * 10,
        "per_class_precision": [accuracy] * 10,
        "confusion_matrix": [[0] * 10 for _ in range(10)],
        "test_time_s": 1.5,
        "test_samples_per_s": n_test / 1.5,
        "peak_memory_mib": 250.0,
        "memory_source": "torch_cuda_max_allocated" if gpu else "process_max_rss",
        "device": "cuda:0" if gpu else "cpu",
        "telemetry": {
            "avg_power_w": energy / 1.5 if energy else None,
            "energy_j": energy,
            "energy_source": {"nvml": "nvml_energy_counter", "rapl": "rapl"}.get(telemetry),
            "device_memory_avg_mib": memory_pct and memory_pct * 800,
            "device_memory_peak_mib": memory_pct and memory_pct * 820,
            "device_memory_avg_pct": memory_pct,
            "device_memory_peak_pct": memory_pct and memory_pct * 1.02,
            "avg_gpu_util_pct": 60.0 if gpu else None,
            "avg_cpu_util_pct": 20.0 if telemetry != "none" else None,
            "telemetry_source": "cpu" if telemetry == "rapl" else telemetry,
            "energy_per_sample_mj": energy / n_test * 1e3 if energy else None,
        },
        "hardware": GPU_HARDWARE if gpu else CPU_HARDWARE,
        "operations": make_operations(spec),
    }


def make_operations(spec: dict) -> dict:
    """Per-sample operation counts as the evaluate job writes them (test.json `operations`)."""
    snn = spec["kind"] == "snn"
    dense = 2.0e6 * (25 if snn else 1)
    return {
        "n_samples": 10000,
        "dense_ops_per_sample": dense,
        "effective_macs_per_sample": 0.0 if snn else 0.6 * dense,
        "effective_acs_per_sample": 0.1 * dense if snn else 0.0,
        "effective_ops_per_sample": 0.1 * dense if snn else 0.6 * dense,
        "membrane_updates_per_sample": 12750.0 if snn else None,
        "mean_firing_rate": 0.12 if snn else None,
        "activation_sparsity": 0.88 if snn else 0.4,
        "footprint_bytes": 1_000_000,
        "connection_sparsity": 0.0,
    }


def make_layers(network: str, spec: dict) -> pd.DataFrame:
    """Two layers of per-layer counts, with the columns of ``layers.parquet``."""
    snn = spec["kind"] == "snn"
    return pd.DataFrame(
        {
            "network": network,
            "kind": spec["kind"],
            "layer": [0, 1],
            "synapse": ["Linear", "Linear"],
            "shape": ["[256]", "[10]"],
            "neurons": [256, 10],
            "firing_rate": [0.15, 0.05] if snn else [None, None],
            "activation_sparsity": [0.85, 0.95] if snn else [0.4, 0.0],
            "dense_ops_per_sample": [1.9e6, 2.6e3],
            "effective_macs_per_sample": [0.0, 0.0] if snn else [1.1e6, 2.6e3],
            "effective_acs_per_sample": [1.9e5, 1.3e2] if snn else [0.0, 0.0],
        }
    )


def write_fake_run(
    results_dir: Path, networks: dict = STUDY_NETWORKS, telemetry: str = "nvml", n_epochs: int = 3
) -> Path:
    """Every result file of a run of `networks` under `results_dir`, as the train/evaluate jobs write them."""
    if telemetry not in TELEMETRY_KINDS:
        raise ValueError(f"telemetry must be one of {TELEMETRY_KINDS}")
    hardware = GPU_HARDWARE if telemetry == "nvml" else CPU_HARDWARE
    for i, (network, spec) in enumerate(networks.items()):
        folder = Path(results_dir) / network
        scale = 1.0 + (spec["kind"] == "snn") * (1 + i)
        epochs = make_epochs(network, n_epochs, telemetry, scale=scale)
        _write_parquet(epochs, folder / "epochs.parquet", hardware)
        _write_parquet(make_telemetry(epochs, telemetry), folder / "telemetry_train.parquet", hardware)
        _write_parquet(make_telemetry(None, telemetry, test_s=1.5), folder / "telemetry_test.parquet", hardware)
        (folder / "test.json").write_text(json.dumps(make_test(network, spec, telemetry, accuracy=0.9 + 0.01 * i)))
        make_layers(network, spec).to_parquet(folder / "layers.parquet", index=False)
    return Path(results_dir)


def table_outputs(folder: Path) -> dict[str, Path]:
    names = ("table1", "table2", "comparison", "cost", "hardware")
    outputs = {f"{n}_{ext}": folder / f"{n}.{ext}" for n in names for ext in ("csv", "html")}
    return {**outputs, "answer_rst": folder / "answer.rst"}  # the landing page's answer (rule tables)


# ---------------------------------------------------------------------------------------------


def hand_made_epochs() -> dict[str, pd.DataFrame]:
    """Three epochs of two networks, with numbers small enough to check by hand."""
    ann = make_epochs("exp1_ann", 3, "nvml")
    ann["train_acc"] = [0.90, 0.95, 0.97]
    ann["val_acc"] = [0.91, 0.96, 0.96]  # first best at epoch 2
    ann["epoch_time_s"] = [10.0, 20.0, 30.0]
    ann["device_memory_avg_pct"] = [10.0, 20.0, 40.0]
    ann["avg_power_w"] = [50.0, 60.0, 70.0]
    ann["energy_j"] = [500.0, 1200.0, 2100.0]
    ann["train_energy_j"] = [400.0, 1000.0, 1600.0]
    ann["n_train"] = [1000, 1000, 1000]
    ann["peak_memory_mib"] = [100.0, 120.0, 110.0]
    snn = make_epochs("exp1_snn", 3, "cpu")
    snn["train_acc"] = [0.50, 0.80, 0.70]
    snn["val_acc"] = [0.40, 0.60, 0.75]
    snn["epoch_time_s"] = [40.0, 40.0, 40.0]
    snn["peak_memory_mib"] = [900.0, 950.0, 940.0]
    snn["device_memory_avg_pct"] = [3.0, 4.0, 5.0]  # on a CPU: the process's RSS in % of RAM
    return {"exp1_ann": ann, "exp1_snn": snn}


def test_table1_recomputed_from_hand_made_epochs():
    t1 = results.table1(
        hand_made_epochs(), STUDY_NETWORKS, hardware={"exp1_ann": GPU_HARDWARE, "exp1_snn": CPU_HARDWARE}
    )
    assert list(t1.columns[: len(results.TABLE1_COLUMNS)]) == results.TABLE1_COLUMNS
    ann, snn = (t1.set_index("network").loc[n] for n in ("exp1_ann", "exp1_snn"))
    assert ann["highest_train_acc"] == pytest.approx(97.0)
    assert ann["highest_val_acc"] == pytest.approx(96.0)
    assert ann["epochs_to_best_val"] == 2
    assert ann["avg_epoch_time_s"] == pytest.approx(20.0)
    # time-weighted averages over the run: (10*10 + 20*20 + 40*30) / 60 and (50*10 + 60*20 + 70*30) / 60
    assert ann["avg_memory_pct"] == pytest.approx(1700 / 60)
    assert ann["avg_power_w"] == pytest.approx(3800 / 60)
    assert ann["energy_per_epoch_j"] == pytest.approx(3800 / 3)
    assert ann["energy_per_train_sample_mj"] == pytest.approx(3000 / 3000 * 1e3)
    assert ann["peak_memory_mib"] == 120.0
    assert "H100" in ann["hardware"] and "12.4" in ann["hardware"]
    assert snn["highest_train_acc"] == pytest.approx(80.0)
    assert snn["highest_val_acc"] == pytest.approx(75.0)
    assert snn["epochs_to_best_val"] == 3
    assert snn["avg_epoch_time_s"] == pytest.approx(40.0)
    assert snn["peak_memory_mib"] == 950.0
    for column in ("avg_power_w", "energy_per_epoch_j", "energy_per_train_sample_mj"):
        assert math.isnan(snn[column]), column  # not measured: empty, never 0
    assert snn["avg_memory_pct"] == pytest.approx(4.0)
    assert snn["telemetry_source"] == "cpu" and snn["device"] == "cpu"
    notes = results.explain_missing(t1)
    assert notes[(1, "avg_power_w")].startswith("no NVIDIA GPU (ran on cpu): power not measured")
    assert "resident memory in % of the machine's RAM" in notes[(1, "avg_memory_pct")]
    assert not any(i == 0 for i, _ in notes)  # the GPU run needs no footnote
    # beyond the study: energy above idle, activation memory, dataset; null with the job's own reason
    assert ann["activation_peak_mib"] == pytest.approx(203.0) and ann["dataset_mib"] == 180.0
    ann_epochs = hand_made_epochs()["exp1_ann"]
    assert ann["energy_above_idle_per_epoch_j"] == pytest.approx(ann_epochs["energy_above_idle_j"].mean())
    assert math.isnan(snn["energy_above_idle_per_epoch_j"]) and math.isnan(snn["activation_peak_mib"])
    assert (
        notes[(1, "energy_above_idle_per_epoch_j")] == "no power reading on this machine (no NVML, RAPL not readable)"
    )
    assert notes[(1, "activation_peak_mib")] == "the CPU's peak allocation cannot be reset per phase"


def test_cpu_power_from_rapl_is_kept_and_labelled():
    epochs = make_epochs("exp1_snn", 3, "rapl")
    t1 = results.table1({"exp1_snn": epochs}, STUDY_NETWORKS)
    assert t1.loc[0, "avg_power_w"] == pytest.approx(np.average(epochs["avg_power_w"], weights=epochs["epoch_time_s"]))
    assert t1.loc[0, "energy_source"] == "rapl"
    assert "CPU package power from RAPL" in results.explain_missing(t1)[(0, "avg_power_w")]


def test_table1_partial_telemetry_averages_measured_epochs_and_says_so():
    ann = hand_made_epochs()["exp1_ann"]
    ann["avg_power_w"] = pd.array([50.0, None, 70.0], dtype="Float64")
    ann["device_memory_avg_pct"] = pd.array([10.0, None, 40.0], dtype="Float64")
    t1 = results.table1({"exp1_ann": ann}, STUDY_NETWORKS)
    assert t1.loc[0, "avg_power_w"] == pytest.approx((50 * 10 + 70 * 30) / 40)
    notes = results.explain_missing(t1)
    assert "2 of 3 epochs" in notes[(0, "avg_power_w")]


def test_table2_from_test_results():
    tests = {n: make_test(n, STUDY_NETWORKS[n], t) for n, t in (("exp2_snn", "cpu"), ("exp2_cnn", "nvml"))}
    tests["exp2_cnn"].update(accuracy=0.6974, recall_macro=0.698, f1_macro=0.696, precision_macro=0.7, test_time_s=1.11)
    t2 = results.table2(tests, STUDY_NETWORKS)
    assert list(t2["network"]) == ["exp2_cnn", "exp2_snn"]  # the study's order, not the dict's
    assert list(t2.columns[: len(results.TABLE2_COLUMNS)]) == results.TABLE2_COLUMNS
    cnn, snn = (t2.set_index("network").loc[n] for n in ("exp2_cnn", "exp2_snn"))
    assert cnn["test_acc"] == pytest.approx(69.74)
    # macro recall, F1 and precision in %, the scale of accuracy
    assert (cnn["recall"], cnn["f1"], cnn["precision"], cnn["test_time_s"]) == pytest.approx((69.8, 69.6, 70.0, 1.11))
    assert cnn["avg_power_w"] == 42.0 and cnn["avg_memory_pct"] == 5.03
    assert cnn["energy_j"] == pytest.approx(63.0) and cnn["energy_per_test_sample_mj"] == pytest.approx(6.3)
    assert all(math.isnan(snn[c]) for c in ("avg_power_w", "energy_j", "energy_per_test_sample_mj"))
    assert snn["avg_memory_pct"] == 4.2
    # energy per sample is derived from the energy when the job did not store it
    tests["exp2_cnn"]["telemetry"]["energy_per_sample_mj"] = None
    assert results.table2(tests, STUDY_NETWORKS).loc[0, "energy_per_test_sample_mj"] == pytest.approx(6.3)


def test_paper_values_are_the_studys_tables():
    paper = results.load_paper_values()
    assert len(paper) == 72 and set(paper["table"]) == {"I", "II"}
    value = paper.set_index(["table", "network", "metric"])["value"]
    # spot checks against the article's Tables I and II
    assert value[("I", "exp1_ann", "avg_epoch_time_s")] == 9.39
    assert value[("I", "exp2_snn", "avg_power_w")] == 133.2
    assert value[("I", "exp2_cnn", "epochs_to_best_val")] == 7
    assert value[("I", "exp3_snn_nmnist", "avg_memory_pct")] == 82.4
    assert value[("II", "exp1_snn", "test_acc")] == 98.05
    assert value[("II", "exp3_snn_nmnist", "f1")] == pytest.approx(97.65)  # the study's 0.9765, in % as Table II
    assert value[("II", "exp2_snn", "test_time_s")] == 7.93
    row = paper[(paper["table"] == "I") & (paper["network"] == "exp2_snn") & (paper["metric"] == "avg_power_w")].iloc[0]
    assert row["source"] == "Table I, row 'SNN' of Experiment 2, column 'Average power consumption/W'"
    assert row["unit"] == "W" and "RTX 3060 Ti 8 GB" in row["hardware"]


def test_paper_values_match_the_shared_transcription():
    if not SHARED_PAPER.is_dir():
        pytest.skip(f"the study's transcribed tables not found at {SHARED_PAPER}")
    paper = results.load_paper_values().set_index(["table", "network", "metric"])
    for name, file in (("I", "study_table1.csv"), ("II", "study_table2.csv")):
        shared = pd.read_csv(SHARED_PAPER / file)
        metrics = [c for c in shared.columns if c not in ("experiment", "network", "paper_label")]
        for row in shared.to_dict("records"):
            for metric in metrics:
                got = paper.loc[(name, row["network"], metric)]
                scale = 100 if metric in results.reading.PERCENT_OF_FRACTION else 1  # recall, F1 shown in %
                assert got["value"] == pytest.approx(row[metric] * scale), (name, row["network"], metric)
                assert got["paper_label"] == row["paper_label"] and got["experiment"] == row["experiment"]
        assert paper.loc[name].index.get_level_values("network").unique().size == len(shared)


def _tables(tmp_path: Path, telemetry: str = "nvml"):
    write_fake_run(tmp_path / "results", telemetry=telemetry)
    epochs = {n: results.read_epochs(tmp_path / "results" / n / "epochs.parquet") for n in STUDY_NETWORKS}
    tests = {n: results.read_test(tmp_path / "results" / n / "test.json") for n in STUDY_NETWORKS}
    return results.table1(epochs, STUDY_NETWORKS), results.table2(tests, STUDY_NETWORKS)


def test_paper_comparison_puts_the_study_next_to_this_run(tmp_path):
    t1, t2 = _tables(tmp_path)
    comparison = results.paper_comparison(t1, t2, results.load_paper_values())
    assert len(comparison) == 72
    row = comparison[
        (comparison["table"] == "I") & (comparison["network"] == "exp2_snn") & (comparison["metric"] == "avg_power_w")
    ].iloc[0]
    run = t1.set_index("network").at["exp2_snn", "avg_power_w"]
    assert row["paper_value"] == 133.2 and row["run_value"] == pytest.approx(run)
    assert row["difference"] == pytest.approx(run - 133.2) and row["ratio"] == pytest.approx(run / 133.2)
    assert "Table I, row 'SNN' of Experiment 2" in row["paper_source"]
    assert "RTX 3060 Ti" in row["paper_hardware"] and "H100" in row["run_hardware"]
    row = comparison[
        (comparison["table"] == "II") & (comparison["network"] == "exp1_ann") & (comparison["metric"] == "test_acc")
    ].iloc[0]
    assert row["paper_value"] == 97.81 and row["run_value"] == pytest.approx(90.0)
    row = comparison[
        (comparison["table"] == "II") & (comparison["network"] == "exp3_snn_nmnist") & (comparison["metric"] == "f1")
    ].iloc[0]
    assert row["paper_value"] == pytest.approx(97.65) and row["run_value"] == pytest.approx((0.95 - 0.0015) * 100)


def test_paper_comparison_explains_unmeasured_and_absent_networks(tmp_path):
    t1, t2 = _tables(tmp_path, telemetry="cpu")
    t1, t2 = (
        t1[t1["network"] != "exp2_cnn"].reset_index(drop=True),
        t2[t2["network"] != "exp2_cnn"].reset_index(drop=True),
    )
    comparison = results.paper_comparison(t1, t2, results.load_paper_values()).set_index(["table", "network", "metric"])
    power = comparison.loc[("I", "exp1_snn", "avg_power_w")]
    assert math.isnan(power["run_value"]) and math.isnan(power["ratio"])
    assert "no NVIDIA GPU" in power["note"]
    assert comparison.loc[("II", "exp2_cnn", "test_acc")]["note"] == "network not in this run"
    assert comparison.loc[("II", "exp1_snn", "test_acc")]["note"] == ""


def test_cost_of_spiking_ratios_and_experiment_3(tmp_path):
    t1, _ = _tables(tmp_path)
    cost = results.cost_of_spiking(t1, results.load_paper_values(), STUDY_NETWORKS)
    by = cost.set_index(["experiment", "metric"])
    run = t1.set_index("network")
    row = by.loc[(1, "avg_epoch_time_s")]
    assert (row["numerator"], row["denominator"], row["comparison"]) == ("exp1_snn", "exp1_ann", "SNN / ANN")
    assert row["paper_ratio"] == pytest.approx(26.38 / 9.39)
    assert row["run_ratio"] == pytest.approx(
        run.at["exp1_snn", "avg_epoch_time_s"] / run.at["exp1_ann", "avg_epoch_time_s"]
    )
    row = by.loc[(2, "energy_per_epoch_j")]
    assert row["comparison"] == "SNN / CNN"
    assert row["paper_ratio"] == pytest.approx(133.2 * 81.15 / (58.5 * 6.42)) and "derived" in row["note"]
    assert by.loc[(2, "avg_memory_pct")]["paper_ratio"] == pytest.approx(39.3 / 16.2)
    assert math.isnan(by.loc[(2, "peak_memory_mib")]["paper_ratio"])
    assert by.loc[(2, "peak_memory_mib")]["run_ratio"] == pytest.approx(
        run.at["exp2_snn", "peak_memory_mib"] / run.at["exp2_cnn", "peak_memory_mib"]
    )
    row = by.loc[(3, "avg_epoch_time_s")]  # no ANN in experiment 3: N-MNIST SNN over MNIST SNN
    assert (row["numerator"], row["denominator"]) == ("exp3_snn_nmnist", "exp3_snn_mnist")
    assert row["comparison"] == "SNN: N-MNIST / SNN: MNIST" and "n/a" in row["note"]
    assert row["paper_ratio"] == pytest.approx(583.76 / 285.87)


def test_median_epoch_time_next_to_the_mean():
    """A slow first epoch (e.g. set-up) moves the mean, not the median; the cost table carries both."""
    epochs = hand_made_epochs()
    epochs["exp1_ann"]["epoch_time_s"] = [100.0, 10.0, 12.0]
    t1 = results.table1(epochs, STUDY_NETWORKS, hardware={"exp1_ann": GPU_HARDWARE, "exp1_snn": CPU_HARDWARE})
    ann = t1.set_index("network").loc["exp1_ann"]
    assert ann["avg_epoch_time_s"] == pytest.approx(122.0 / 3) and ann["median_epoch_time_s"] == 12.0
    assert results.UNITS["median_epoch_time_s"] == "s"
    cost = results.cost_of_spiking(t1, results.load_paper_values(), STUDY_NETWORKS).set_index(["experiment", "metric"])
    row = cost.loc[(1, "median_epoch_time_s")]
    assert row["run_ratio"] == pytest.approx(40.0 / 12.0) and math.isnan(row["paper_ratio"])
    assert "no median" in row["note"]


def test_write_tables_csv_and_html(tmp_path):
    write_fake_run(tmp_path / "results", telemetry="cpu")
    paths = {n: tmp_path / "results" / n for n in STUDY_NETWORKS}
    outputs = table_outputs(tmp_path / "tables")
    frames = results.write_tables(
        {n: p / "epochs.parquet" for n, p in paths.items()},
        {n: p / "test.json" for n, p in paths.items()},
        STUDY_NETWORKS,
        outputs,
        demo=True,
    )
    assert all(p.is_file() for p in outputs.values())
    assert not list((tmp_path / "tables").glob(".*"))  # no temporary files left behind
    t1 = pd.read_csv(outputs["table1_csv"])
    assert list(t1.columns[: len(results.TABLE1_COLUMNS)]) == results.TABLE1_COLUMNS and len(t1) == 6
    assert t1["avg_power_w"].isna().all() and (t1["data"] == "DEMO DATA").all()
    assert t1["notes"].str.contains("no NVIDIA GPU").all()
    assert t1["highest_val_acc"].to_numpy() == pytest.approx(frames["table1"]["highest_val_acc"].to_numpy(), rel=1e-5)
    page = outputs["table1_html"].read_text()
    parts = html_parts(page)
    assert "DEMO DATA" in page and all(len(rows) == 6 for _, rows in parts)  # every part: one row per network
    assert {label for header, _ in parts for label in header} >= {"highest validation accuracy (%)", "network"}
    assert 'class="missing"' in page and "no NVIDIA GPU (ran on cpu): power not measured" in page
    cost = pd.read_csv(outputs["cost_csv"])
    assert set(cost["experiment"]) == {1, 2, 3} and cost["run_ratio"].notna().any()
    comparison_page = outputs["comparison_html"].read_text()
    assert "RTX 3060 Ti" in comparison_page and "Table II, row &#x27;SNN: N-MNIST&#x27;" in comparison_page
    assert "Intel Xeon" in outputs["hardware_html"].read_text()


def html_parts(page: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each table of a rendered page: its header labels and its rows' cells (inner HTML)."""
    parts = []
    for table in re.findall(r"<table>(.*?)</table>", page, re.S):
        header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
        body = table.split("<tbody>")[1]
        rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("<tr>")[1:]]
        parts.append((header, rows))
    return parts


def test_missing_cells_are_empty_not_zero(tmp_path):
    t1, _ = _tables(tmp_path, telemetry="none")
    page = results.render_html(t1, title="t", notes=results.explain_missing(t1, telemetry_enabled=False))
    assert "telemetry disabled in the configuration" in page
    listed = re.findall(r'<li id="note-\d+"[^>]*><sup>\d+</sup> (.*?)</li>', page)
    assert listed and len(listed) == len(set(listed))  # each reason once, numbered
    assert "reason" not in " ".join(h for header, _ in html_parts(page) for h in header)  # no reason columns
    cells = {}
    for header, rows in html_parts(page):
        assert len(rows) == 6
        for i, label in enumerate(header):
            cells[label] = [row[i] for row in rows]
    for column in ("avg_memory_pct", "avg_power_w", "energy_per_epoch_j", "energy_per_train_sample_mj"):
        column_cells = cells[results.render.column_label(column)]
        assert all(cell.startswith("<sup>") for cell in column_cells), (column, column_cells)  # only the mark
    results.write_csv(t1, tmp_path / "t1.csv")
    first = (tmp_path / "t1.csv").read_text().splitlines()[1].split(",")
    header = (tmp_path / "t1.csv").read_text().splitlines()[0].split(",")
    assert first[header.index("avg_power_w")] == "" and first[header.index("energy_per_epoch_j")] == ""


def test_bad_inputs_name_the_file(tmp_path):
    write_fake_run(tmp_path, {"exp1_ann": STUDY_NETWORKS["exp1_ann"]})
    path = tmp_path / "exp1_ann" / "epochs.parquet"
    pq.write_table(pq.read_table(path).drop(["val_acc"]), path)
    with pytest.raises(results.ResultsInputError, match=r"epochs\.parquet.*val_acc"):
        results.read_epochs(path)
    with pytest.raises(FileNotFoundError, match="exp1_snn"):
        results.read_test(tmp_path / "exp1_snn" / "test.json")
    bad = tmp_path / "exp1_ann" / "test.json"
    bad.write_text(json.dumps({"network": "exp1_ann"}))
    with pytest.raises(results.ResultsInputError, match=r"test\.json.*accuracy"):
        results.read_test(bad)
    result = make_test("exp1_ann", STUDY_NETWORKS["exp1_ann"], "nvml")
    del result["telemetry"]["device_memory_avg_pct"]
    bad.write_text(json.dumps(result))
    with pytest.raises(results.ResultsInputError, match=r"test\.json.*device_memory_avg_pct"):
        results.read_test(bad)
    with pytest.raises(results.ResultsInputError, match="no config entry"):
        results.table1({"other": make_epochs("other", 2, "nvml")}, STUDY_NETWORKS)


def test_labels_and_hardware_descriptions():
    labels = {n: results.network_label(n, STUDY_NETWORKS) for n in STUDY_NETWORKS}
    assert labels == {
        "exp1_ann": "ANN",
        "exp1_snn": "SNN",
        "exp2_cnn": "CNN",
        "exp2_snn": "SNN",
        "exp3_snn_mnist": "SNN: MNIST",
        "exp3_snn_nmnist": "SNN: N-MNIST",
    }
    assert results.describe_hardware(GPU_HARDWARE) == (
        "1x NVIDIA H100 80GB HBM3 (80 GiB) as cuda:0; driver 550.54.15; CUDA 12.4; PyTorch 2.14.1; snnTorch 0.9.4; "
        "CPU AMD EPYC 9454 (96 cores); 1007 GiB RAM; host gpu-node-1; OS Linux-6.8"
    )
    # on a CPU, hardware_info's device_name is the CPU and CUDA the build's: neither is a GPU
    assert results.describe_hardware(CPU_HARDWARE) == (
        "no GPU (device cpu); PyTorch 2.14.1; snnTorch 0.9.4; CPU Intel Xeon (2 cores); 23 GiB RAM; host laptop; "
        "OS Linux-6.1"
    )
    assert results.describe_hardware({}) == "not recorded"


def _run_with_accuracy(tmp_path: Path, accuracies: dict[str, float], telemetry: str = "cpu") -> dict:
    """write_tables over a fake run whose networks have the given test accuracies (0..1)."""
    write_fake_run(tmp_path / "results", telemetry=telemetry)
    paths = {n: tmp_path / "results" / n for n in STUDY_NETWORKS}
    for network, accuracy in accuracies.items():
        test = json.loads((paths[network] / "test.json").read_text())
        test["accuracy"] = accuracy
        (paths[network] / "test.json").write_text(json.dumps(test))
    outputs = table_outputs(tmp_path / "tables")
    frames = results.write_tables(
        {n: p / "epochs.parquet" for n, p in paths.items()},
        {n: p / "test.json" for n, p in paths.items()},
        STUDY_NETWORKS,
        outputs,
        demo=True,
    )
    return {"frames": frames, "outputs": outputs}


def test_networks_that_did_not_learn_are_flagged_in_tables_and_cost(tmp_path):
    # exp2_snn at chance (10.8%), exp3_snn_mnist just below 2x chance, exp1_snn exactly at 2x chance (learned)
    run = _run_with_accuracy(tmp_path, {"exp2_snn": 0.108, "exp3_snn_mnist": 0.199, "exp1_snn": 0.20})
    frames, outputs = run["frames"], run["outputs"]
    assert results.not_learned(frames["table2"]) == pytest.approx({"exp2_snn": 10.8, "exp3_snn_mnist": 19.9})
    for name in ("table1", "table2"):
        page = outputs[f"{name}_html"].read_text()
        assert "did not learn: exp2_snn&#x27;s test accuracy 10.8% is within 2x of chance" in page
        assert "exp3_snn_mnist&#x27;s test accuracy 19.9%" in page and "exp1_snn&#x27;s test" not in page
        notes = pd.read_csv(outputs[f"{name}_csv"]).set_index("network")["notes"]
        assert "did not learn" in notes["exp2_snn"] and "did not learn" not in notes["exp1_snn"]
    cost = pd.read_csv(outputs["cost_csv"], keep_default_na=False)
    assert set(cost.loc[cost["experiment"] == 2, "not_learned"]) == {"exp2_snn"}
    assert set(cost.loc[cost["experiment"] == 3, "not_learned"]) == {"exp3_snn_mnist"}
    assert set(cost.loc[cost["experiment"] == 1, "not_learned"]) == {""}
    page = outputs["cost_html"].read_text()
    footnote = re.search(
        r"<td class=\"num\">[^<]*<sup><a href=\"#note-\w+\" title=\"[^\"]*did not learn: exp2_snn", page
    )
    assert footnote, "the ratio of a pair with a network that did not learn carries no footnote"


def test_cost_table_is_long_and_narrow_and_says_what_cpu_memory_measures(tmp_path):
    outputs = _run_with_accuracy(tmp_path, {})["outputs"]
    page = outputs["cost_html"].read_text()
    ((header, body),) = html_parts(page)  # narrow: one part
    assert header == ["exp.", "comparison", "metric", "this run", "study", "ratio, this run", "ratio, study"]
    assert len(body) == 3 * len(results.COST_METRICS)  # one row per experiment and metric
    assert "peak memory (MiB)" in page and "time per epoch (s)" in page
    rss = "process&#x27;s resident memory (RSS), mostly the runtime"
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    memory_rows = [r for r in rows if "memory (" in r]
    assert memory_rows and all(rss in r for r in memory_rows)
    assert not any(rss in r for r in rows if "time per epoch" in r)
    cost = pd.read_csv(outputs["cost_csv"])  # the CSV keeps every number in its own column
    assert {"run_numerator", "run_denominator", "run_ratio", "paper_ratio", "not_learned"} <= set(cost.columns)


def test_empty_energy_source_cells_have_a_footnote(tmp_path):
    outputs = _run_with_accuracy(tmp_path, {})["outputs"]
    t1 = pd.read_csv(outputs["table1_csv"])
    assert t1["energy_source"].isna().all()
    assert t1["notes"].str.contains("energy_source: no energy measured").all()
    page = outputs["table1_html"].read_text()
    assert "no energy measured (no NVML energy counter or power readings, no readable RAPL counter)" in page


def test_table1_says_which_lif_backend_ran_and_footnotes_a_fallback():
    """lif_backend_used (from the job's numerics) per row; where the Triton kernel fell back, the footnote says
    why; an ANN has none, and says so; results from before the record say 'not recorded'."""
    reason = "Triton LIF forward failed (RuntimeError: ptxas fatal: Unsupported .version 9.9); ran eager"
    frames = {n: make_epochs(n, 2, "nvml") for n in ("exp1_ann", "exp1_snn", "exp2_snn")}
    numerics = {
        "exp1_ann": {"lif_backend": "auto", "lif_backend_used": None, "lif_backend_used_null_reason": "no LIF layer"},
        "exp1_snn": {"lif_backend": "auto", "lif_backend_used": "eager", "lif_backend_fallback_reason": reason},
        "exp2_snn": {"lif_backend": "auto"},
    }
    hardware = {n: {"device": "cuda:0", "numerics": {"precision": "fp32", **v}} for n, v in numerics.items()}
    t1 = results.table1(frames, STUDY_NETWORKS, hardware)
    by = t1.set_index("network")
    assert by.loc["exp1_snn", "lif_backend_used"] == "eager" and pd.isna(by.loc["exp2_snn", "lif_backend_used"])
    notes = results.table_notes(t1, True, {})
    rows = {n: i for i, n in enumerate(t1["network"])}
    assert notes[(rows["exp1_snn"], "lif_backend_used")] == reason
    assert notes[(rows["exp1_ann"], "lif_backend_used")] == "no LIF layer"
    assert "not recorded" in notes[(rows["exp2_snn"], "lif_backend_used")]


def test_paper_comparison_forms_no_difference_or_ratio_of_unlike_quantities(tmp_path):
    """On the CPU this run's memory is % of RAM and its power the CPU package's: beside the study's % of GPU
    memory and GPU power they are other quantities, so the cells stay empty with the reason; on a GPU they are
    compared."""
    t1, t2 = _tables(tmp_path, telemetry="rapl")
    comparison = results.paper_comparison(t1, t2, results.load_paper_values()).set_index(["table", "network", "metric"])
    for table in ("I", "II"):
        memory = comparison.loc[(table, "exp1_snn", "avg_memory_pct")]
        assert memory["run_value"] > 0 and math.isnan(memory["difference"]) and math.isnan(memory["ratio"])
        assert "share of the machine's RAM" in memory["note"]
    power = comparison.loc[("I", "exp1_snn", "avg_power_w")]
    assert power["run_value"] > 0 and math.isnan(power["ratio"]) and "CPU package's (RAPL)" in power["note"]
    accuracy = comparison.loc[("II", "exp1_snn", "test_acc")]
    assert not math.isnan(accuracy["ratio"])  # accuracy is accuracy on any device
    t1, t2 = _tables(tmp_path / "gpu", telemetry="nvml")
    on_gpu = results.paper_comparison(t1, t2, results.load_paper_values()).set_index(["table", "network", "metric"])
    assert not math.isnan(on_gpu.loc[("I", "exp1_snn", "avg_memory_pct")]["ratio"])


def test_per_sample_costs_and_a_note_where_the_sample_counts_differ():
    """Experiment 3's demo trains 3200 MNIST vs 640 N-MNIST samples per epoch: per epoch the N-MNIST SNN looks
    cheaper, per sample it is not; the cost table has both, with the counts and a note on the per-epoch rows."""
    mnist, nmnist = make_epochs("exp3_snn_mnist", 2, "cpu"), make_epochs("exp3_snn_nmnist", 2, "cpu")
    mnist["n_train"], mnist["train_time_s"] = 3200, [3.2, 3.2]
    nmnist["n_train"], nmnist["train_time_s"] = 640, [2.24, 2.24]
    mnist["epoch_time_s"], nmnist["epoch_time_s"] = [4.0, 4.0], [2.8, 2.8]
    networks = {n: STUDY_NETWORKS[n] for n in ("exp3_snn_mnist", "exp3_snn_nmnist")}
    t1 = results.table1({"exp3_snn_mnist": mnist, "exp3_snn_nmnist": nmnist}, networks).set_index("network")
    assert t1.at["exp3_snn_mnist", "train_time_per_sample_ms"] == pytest.approx(1.0)
    assert t1.at["exp3_snn_nmnist", "train_time_per_sample_ms"] == pytest.approx(3.5)
    assert t1.at["exp3_snn_nmnist", "train_samples_per_epoch"] == 640
    cost = results.cost_of_spiking(t1.reset_index(), results.load_paper_values(), networks).set_index("metric")
    assert cost.at["avg_epoch_time_s", "run_ratio"] == pytest.approx(0.7)
    assert cost.at["train_time_per_sample_ms", "run_ratio"] == pytest.approx(3.5)
    assert (
        cost.at["train_time_per_sample_ms", "samples_numerator"],
        cost.at["avg_epoch_time_s", "samples_denominator"],
    ) == (
        640,
        3200,
    )
    assert "different samples per epoch (640 vs 3200)" in cost.at["avg_epoch_time_s", "note"]
    assert "compares different amounts of work" in cost.at["avg_epoch_time_s", "note"]
    paper = results.load_paper_values()
    study = paper[(paper["table"] == "I") & (paper["metric"] == "avg_epoch_time_s")].set_index("network")["value"]
    assert cost.at["train_time_per_sample_ms", "paper_ratio"] == pytest.approx(
        study["exp3_snn_nmnist"] / study["exp3_snn_mnist"]
    )
    assert "study ratio derived" in cost.at["train_time_per_sample_ms", "note"]


def test_table1_records_the_load_and_flags_times_of_an_overloaded_machine():
    """The 1-minute load at a job's start and end and its CPUs: where the load exceeded them, Table I's time
    cells say that other work shared the CPUs (the demo's exp1_snn epoch took 2.14 s and 0.93 s at loads 5.0
    and 4.5 on 2 CPUs)."""
    frames = {n: make_epochs(n, 2, "cpu") for n in ("exp1_ann", "exp1_snn")}
    hardware = {
        "exp1_ann": {"device": "cpu", "load_1min_start": 0.7, "load_1min_end": 1.2, "cpus_available": 2},
        "exp1_snn": {"device": "cpu", "load_1min_start": 4.5, "load_1min_end": 5.0, "cpus_available": 2},
    }
    t1 = results.table1(frames, STUDY_NETWORKS, hardware)
    by = t1.set_index("network")
    assert by.at["exp1_snn", "load_1min_max"] == 5.0 and by.at["exp1_snn", "cpus_available"] == 2
    notes = results.table_notes(t1, True, {})
    rows = {n: i for i, n in enumerate(t1["network"])}
    assert "load average reached 5.0 with 2 CPUs" in notes[(rows["exp1_snn"], "avg_epoch_time_s")]
    assert (rows["exp1_snn"], "train_time_per_sample_ms") in notes
    assert (rows["exp1_ann"], "avg_epoch_time_s") not in notes


def test_the_hardware_record_has_the_load_and_the_cpus():
    from spikebench.hardware import hardware_info, machine_load

    info = hardware_info("cpu")
    assert info["load_1min_start"] >= 0 and 1 <= info["cpus_available"] <= os.cpu_count()
    assert set(machine_load()) == {"load_1min", "cpus_available"}
