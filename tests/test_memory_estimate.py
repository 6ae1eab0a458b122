"""The size check before allocating (spikebench.memory_estimate, spikebench.oom.refuse_if_too_large): a run too large
for the device's free memory is recorded as status oom with its estimate, and nothing is allocated."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from spikebench import memory_estimate, oom
from spikebench.config import load_config

PROJECT = Path(__file__).resolve().parents[1]
GIB, MIB = 2**30, 2**20


@pytest.fixture(scope="module")
def networks() -> dict:
    return load_config(PROJECT / "config.yaml")["networks"]


def test_the_estimate_counts_every_layer_for_every_step_and_sample(networks):
    spec = networks["exp1_snn"]  # 784-256-256-10, batch 128, 25 steps
    # input spikes; each layer's membrane; the spikes of the hidden layers (the next synapse keeps them), not the
    # output's (the loss keeps their counts: 128 x 10, and the targets)
    per_step_and_sample = 784 + (256 + 256 + 10) + (256 + 256)
    loss = 2 * 128 * 10 * 4
    assert memory_estimate.activation_bytes(spec, 25) == 128 * 25 * per_step_and_sample * 4 + loss
    # the ANN: input and the hidden ReLUs' outputs; the loss its log-softmax, int64 targets and a 0-dim weight
    ann_loss = 128 * 10 * 4 + 128 * 8 + 4
    assert memory_estimate.activation_bytes(networks["exp1_ann"], 1) == 128 * (784 + 256 + 256) * 4 + ann_loss
    # exp3's conv2 on 32x32 MNIST: 12 x 14 x 14 and 32 x 5 x 5 pooled maps (spikes, membrane, int64 arg-max)
    assert memory_estimate.layer_neurons(networks["exp3_snn_mnist"]) == [
        ("conv1", 12 * 14 * 14, True),
        ("conv2", 32 * 5 * 5, True),
        ("fc1", 10, False),
    ]
    # per pooled neuron: the int64 arg-max (2 floats' worth), the membrane, the spikes the next layer keeps
    assert memory_estimate.activation_bytes(networks["exp3_snn_mnist"], 25) == (
        128 * 25 * (32 * 32 + 4 * (12 * 14 * 14 + 32 * 5 * 5) + 10) * 4 + loss
    )
    assert memory_estimate.image_dataset_bytes("mnist", 60000) == 60000 * (784 + 8)


@pytest.mark.parametrize(
    "network, steps, low_mib, high_mib",
    [
        ("exp1_ann", None, 0.1, 5),
        ("exp1_snn", None, 16, 64),  # batch 128 x 25 steps: a few tens of MiB
        ("exp2_cnn", None, 20, 200),
        ("exp2_snn", None, 400, 2000),
        ("exp3_snn_mnist", None, 80, 400),
        ("exp3_snn_nmnist", 310, 1000, 6000),  # 1 ms frames: ~310 per recording
    ],
)
def test_the_six_study_networks_estimate_plausible_sizes(networks, network, steps, low_mib, high_mib):
    steps = memory_estimate.time_steps(networks[network], steps)
    estimate = memory_estimate.estimate(networks[network], memory_estimate.image_dataset_bytes("mnist", 60000), steps)
    assert low_mib < estimate["activation_estimate_mib"] < high_mib
    assert estimate["dataset_estimate_mib"] == pytest.approx(60000 * 792 / MIB)
    assert estimate["memory_estimate_mib"] == pytest.approx(
        estimate["activation_estimate_mib"] + estimate["dataset_estimate_mib"]
    )
    assert estimate["time_steps"] == steps and estimate["batch_size"] == 128


def test_an_nmnist_estimate_reads_the_cells_and_the_longest_recording_from_the_files(tmp_path, networks):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample": [0] * 700 + [2] * 300, "cell": list(range(1000))}), tmp_path / "frames.parquet")
    pq.write_table(pa.table({"sample": [0, 1, 2], "n_frames": [290, 312, 305]}), tmp_path / "samples.parquet")
    size, longest = memory_estimate.nmnist_dataset(tmp_path / "frames.parquet", tmp_path / "samples.parquet")
    assert (size, longest) == (1000 * (4 + 2) + 3 * 3 * 8, 312)
    with pytest.raises(ValueError, match="frames"):
        memory_estimate.time_steps(networks["exp3_snn_nmnist"])


def test_free_memory_comes_from_psutil_on_the_cpu_and_mem_get_info_on_cuda(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GIB))
    assert memory_estimate.free_memory("cpu") == (8 * GIB, "psutil.virtual_memory().available")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * GIB, 80 * GIB))
    assert memory_estimate.free_memory("cuda:0") == (3 * GIB, "torch.cuda.mem_get_info")
    assert memory_estimate.free_memory("meta")[0] is None


def _fail_if_called(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called: the run was allocated")

    return fail


def test_a_run_too_large_for_the_free_memory_is_oom_with_its_estimate_and_nothing_is_allocated(
    tmp_path, demo_mnist_job, networks, monkeypatch
):
    import psutil

    from spikebench import training
    from spikebench.data import device as device_data
    from spikebench.jobs import evaluate_job, train_job
    from spikebench.results import read_epochs, read_test

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GIB))  # an 8 GiB machine
    monkeypatch.setattr(device_data, "load_split_data", _fail_if_called("load_split_data"))
    monkeypatch.setattr(training, "train_network", _fail_if_called("train_network"))
    # 128 x 23000 x (784 + 1034) x 4 B (+ the loss's 10 KiB) = 19.9 GiB (saved_bytes: input, spikes, membranes)
    spec = {**networks["exp1_snn"], "num_steps": 23000}
    activation_mib = (128 * 23000 * (784 + 1034) * 4 + 2 * 128 * 10 * 4) / MIB
    assert activation_mib > 2 * 8 * 1024  # more than twice the 8 GiB machine's memory
    out, log = tmp_path / "big", logging.getLogger("spikebench")
    telemetry = {"enabled": False, "interval_s": 1.0, "idle_s": 0}
    outputs = {"weights": out / "weights.pt", "epochs": out / "epochs.parquet", "telemetry": out / "telemetry.parquet"}
    train_job(
        "big",
        spec,
        inputs={"split": str(demo_mnist_job["split"])},
        outputs=outputs,
        data_root=demo_mnist_job["root"],
        seed=0,
        device="cpu",
        telemetry=telemetry,
        checkpoint=out / "checkpoint.pt",
        log=log,
        data_source="demo",
    )
    epochs = read_epochs(outputs["epochs"])
    row = epochs.iloc[0]
    assert list(epochs["status"]) == ["oom"] and row["epoch"] == 0 and bool(row["refused_before_allocating"])
    assert row["activation_estimate_mib"] == pytest.approx(activation_mib)
    n_train = 4500  # the demo's training digits (train + validation)
    assert row["dataset_estimate_mib"] == pytest.approx(n_train * (784 + 8) / MIB)
    assert row["memory_free_mib"] == 8 * 1024 and row["memory_free_source"] == "psutil.virtual_memory().available"
    assert "needs at least 20" in row["error"] and "8192 MiB free on cpu" in row["error"]
    assert epochs["train_acc"].isna().all() and epochs.attrs["hardware"]["device"] == "cpu"
    assert oom.trained_status(outputs["weights"])["memory_estimate_mib"] == pytest.approx(row["memory_estimate_mib"])
    assert outputs["telemetry"].is_file()

    test_outputs = {"test": out / "test.json", "telemetry": out / "telemetry_test.parquet"}
    evaluate_job(
        "big",
        spec,
        inputs={"weights": str(outputs["weights"])},
        outputs=test_outputs,
        data_root=demo_mnist_job["root"],
        which="last",
        seed=0,
        device="cpu",
        telemetry=telemetry,
        log=log,
        data_source="demo",
    )
    test = read_test(test_outputs["test"])
    assert test["status"] == "oom" and test["accuracy"] is None
    assert test["oom"]["memory_estimate_mib"] == pytest.approx(row["memory_estimate_mib"])


def test_a_run_that_fits_is_not_refused(demo_mnist_job, networks, monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GIB))
    inputs = {"split": str(demo_mnist_job["split"])}
    assert oom.size_check(oom.NetworkSpec.from_config(networks["exp1_snn"], "exp1_snn"), inputs, "cpu") is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (20 * MIB, 80 * GIB))  # a full GPU
    record = oom.size_check(oom.NetworkSpec.from_config(networks["exp1_snn"], "exp1_snn"), inputs, "cuda:0")
    assert record["status"] == "oom" and record["memory_free_source"] == "torch.cuda.mem_get_info"
    assert "20 MiB free on cuda:0" in record["error"]
