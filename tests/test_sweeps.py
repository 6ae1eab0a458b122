"""Sweeps, repeats and out-of-memory runs (README "Exploring the cost"): run ids, validation, the
`status: oom` record of a run that runs out of memory, and the confidence intervals of repeats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from spikebench.config import ConfigError, expand_runs, load_config, merge, validate_config

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_config() -> dict:
    return load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")


def _with(config: dict, overlay: dict) -> dict:
    out = merge(config, overlay)
    validate_config(out)
    return out


def test_without_sweeps_or_repeats_the_run_ids_are_the_network_ids(demo_config):
    base = merge(demo_config, {"sweeps": {}, "repeats": 1})
    base["networks"] = {n: {k: v for k, v in s.items() if k != "repeats"} for n, s in base["networks"].items()}
    runs = expand_runs(base)
    assert list(runs) == list(base["networks"])
    assert all(r["spec"] == base["networks"][n] and r["seed"] == base["seed"] for n, r in runs.items())


def test_a_variant_copies_every_setting_of_its_base_and_replaces_one(demo_config):
    config = merge(demo_config, {"sweeps": {"t": {"networks": ["exp1_snn"], "num_steps": [3, 7]}}})
    config["networks"]["exp1_snn"]["some_new_setting"] = "kept"   # e.g. another helper's `implementation`
    runs = expand_runs(config)
    variant = runs["exp1_snn-num_steps3"]
    assert variant["spec"] == {**config["networks"]["exp1_snn"], "num_steps": 3}
    assert (variant["base"], variant["setting"], variant["value"]) == ("exp1_snn", "num_steps", 3)
    assert "exp1_snn-num_steps7" in runs


def test_repeats_give_one_run_per_seed_and_a_networks_own_repeats_win(demo_config):
    config = _with(demo_config, {"seed": 5, "repeats": 2, "networks": {"exp2_cnn": {"repeats": 1}}})
    runs = expand_runs(config)
    assert [runs[f"exp1_ann-seed{k}"]["seed"] for k in (5, 6)] == [5, 6]
    assert "exp2_cnn" in runs and "exp2_cnn-seed5" not in runs
    assert all("repeats" not in r["spec"] for r in runs.values())


@pytest.mark.parametrize("sweep, message", [
    ({"networks": ["nope"], "num_steps": [5]}, "unknown network 'nope'"),
    ({"networks": ["exp1_snn"], "kind": ["ann"]}, "'sweeps.s.kind': not a setting a sweep can vary"),
    ({"networks": ["exp1_snn"], "num_steps": [0]}, "variant exp1_snn-num_steps0: 0 is less than the minimum"),
    ({"networks": ["exp2_cnn"], "input_size": [8]}, "variant exp2_cnn-input_size8: .*too small"),
])
def test_a_bad_sweep_is_named(demo_config, sweep, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(merge(demo_config, {"sweeps": {"s": sweep}}))


# ---- a run that runs out of memory -----------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_mnist_job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from spikebench.data.demo import make_demo_mnist
    from spikebench.data.split import make_split, write_split

    root = tmp_path_factory.mktemp("job") / "data"
    n_train = len(make_demo_mnist(root, n_test=500, seed=0)["train"][1])
    split = root.parent / "split_mnist.parquet"
    write_split(make_split(n_train, 0.2, 42), split, "mnist", n_train, 0.2, 42)
    return {"root": root, "split": split}


def test_an_allocation_failure_is_recorded_as_oom_and_its_evaluation_too(tmp_path, demo_mnist_job, demo_config,
                                                                         monkeypatch):
    """A real failed CPU allocation in epoch 2: train and evaluate both write their outputs, status oom."""
    from spikebench import training
    from spikebench.jobs import evaluate_job, train_job
    from spikebench.results import read_epochs, read_test

    real_epoch = training._run_epoch

    def epoch_that_cannot_allocate(net, optimizer, spec, train, val, gens, device, epoch, telemetry):
        if epoch < 2:
            return real_epoch(net, optimizer, spec, train, val, gens, device, epoch, telemetry)
        telemetry.phase("train", epoch)
        torch.empty(1 << 60, dtype=torch.uint8)       # far more than any machine has: the allocator fails

    monkeypatch.setattr(training, "_run_epoch", epoch_that_cannot_allocate)
    spec = {**demo_config["networks"]["exp1_ann"], "epochs": 3}
    out, log = tmp_path / "exp1_ann", logging.getLogger("spikebench")
    telemetry = {"enabled": False, "interval_s": 1.0, "idle_s": 0}
    train_job("exp1_ann", spec, inputs={"split": str(demo_mnist_job["split"])},
              outputs={"weights": out / "weights.pt", "epochs": out / "epochs.parquet",
                       "telemetry": out / "telemetry_train.parquet"},
              data_root=demo_mnist_job["root"], seed=0, device="cpu", telemetry=telemetry,
              checkpoint=out / "checkpoint.pt", log=log, data_source="demo")
    epochs = read_epochs(out / "epochs.parquet")
    assert list(epochs["status"]) == ["oom"] and list(epochs["epoch"]) == [2]
    assert epochs["train_acc"].isna().all() and epochs["memory_reached_mib"].iloc[0] > 0
    assert "DefaultCPUAllocator" in epochs["error"].iloc[0]
    evaluate_job("exp1_ann", spec, inputs={"weights": str(out / "weights.pt")},
                 outputs={"test": out / "test.json", "telemetry": out / "telemetry_test.parquet"},
                 data_root=demo_mnist_job["root"], which="last", seed=0, device="cpu", telemetry=telemetry,
                 log=log, data_source="demo")
    test = read_test(out / "test.json")
    assert test["status"] == "oom" and test["accuracy"] is None and test["f1_macro"] is None
    assert (out / "telemetry_test.parquet").is_file()


def test_other_errors_are_not_out_of_memory():
    from spikebench.oom import is_out_of_memory

    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))
