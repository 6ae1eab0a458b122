"""benchmarks/count_launches.py: kernel launches per training batch on the CUDA path (counted on the meta device),
for every network: with the Triton LIF kernel an SNN's count no longer grows with its time steps, and each study
SNN stays within 2x its ANN's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "benchmarks"))

import count_launches  # noqa: E402

from spikebench import models  # noqa: E402
from spikebench.config import load_config  # noqa: E402


@pytest.fixture(scope="module")
def networks():
    return load_config(PROJECT / "config.yaml")["networks"]


@pytest.fixture(scope="module")
def rows(networks):
    return {(r["network"], r["lif_backend"]): r for r in count_launches.count_all(networks)}


def test_every_network_is_counted_and_the_snns_ran_the_triton_kernel(rows):
    assert {name for name, _ in rows} == set(count_launches.NETWORKS)
    for (name, backend), row in rows.items():
        assert row["aten_launches"] > 0, name
        if row["kind"] == "snn":
            assert row["lif_backend_used"] == backend  # no fallback: the kernel path itself was counted
            n_lif = 3 if name in ("exp1_snn", "exp3_snn_mnist", "exp3_snn_nmnist") else 7
            assert row["triton_launches"] == (2 * n_lif if backend == "triton" else 0)  # forward + backward


@pytest.mark.parametrize(("snn", "ann"), [("exp1_snn", "exp1_ann"), ("exp2_snn", "exp2_cnn")])
def test_a_study_snn_launches_at_most_twice_its_anns_kernels(rows, snn, ann):
    assert rows[(snn, "triton")]["launches"] <= 2 * rows[(ann, None)]["launches"]
    assert rows[(snn, "eager")]["launches"] > 10 * rows[(ann, None)]["launches"]  # the loop it replaces


def test_with_the_kernel_the_count_does_not_grow_with_time_steps(networks):
    counts = {
        (backend, t): count_launches.count_training_step("exp1_snn", networks["exp1_snn"], backend, t)["launches"]
        for backend in ("triton", "eager")
        for t in (5, 25)
    }
    assert counts[("triton", 5)] == counts[("triton", 25)]
    per_step = (counts[("eager", 25)] - counts[("eager", 5)]) / 20
    assert per_step >= 3 * 5  # three LIF layers, ~5 forward + backward ops per time step each


def test_counting_leaves_the_process_as_it_was(networks):
    import torch

    before = (models.lif.LIF_BACKEND, torch.is_autocast_enabled)
    count_launches.count_training_step("exp1_snn", networks["exp1_snn"], "triton", 3)
    assert (models.lif.LIF_BACKEND, torch.is_autocast_enabled) == before
