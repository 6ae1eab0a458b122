"""The workflow's plan: the full paper run and the demo list the jobs the study needs."""

import re
import subprocess

import pytest

from conftest import PROJECT, snakemake_cmd
from spikebench.config import expand_runs, load_config

#: Run ids of the demo (networks, sweep variants, seeds: spikebench.config.expand_runs).
DEMO_RUNS = expand_runs(load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"))
#: The configured networks of the demo (the six and the snnTorch twin of config `implementations`).
DEMO_NETWORKS = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")["networks"]


def job_counts(workflow_dir, *args) -> dict[str, int]:
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", *args), cwd=workflow_dir, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stdout + run.stderr
    table = run.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_full_paper_run_plans_every_job(workflow_dir):
    counts = job_counts(workflow_dir)
    for rule in ("download_mnist", "download_cifar10", "download_nmnist"):
        assert counts[rule] == 1
    assert counts["preprocess_nmnist"] == 2  # train and test
    assert counts["split"] == 3  # mnist, cifar10, nmnist
    assert counts["train"] == 10 and counts["evaluate"] == 10  # six networks + the four SNNs' snnTorch twins
    assert not any(rule.startswith("demo_") for rule in counts)


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_demo_plans_demo_data_instead_of_downloads(workflow_dir):
    counts = job_counts(workflow_dir, "--configfile", "config.demo.yaml")
    assert counts["demo_mnist"] == counts["demo_cifar10"] == counts["demo_nmnist"] == 1
    assert not any(rule.startswith("download_") for rule in counts)
    # the networks (with the snnTorch twin of config `implementations`), exp1's second seed and exp1_snn's
    # time-step sweep (config.demo.yaml)
    assert counts["train"] == counts["evaluate"] == len(DEMO_RUNS)


@pytest.mark.slow
def test_demo_trains_and_evaluates_all_six_networks(demo_run):
    """The demo runs end to end: six trained and tested networks (and the SNNs' snnTorch twins), tables and
    figures, all labelled demo."""
    import json

    import pandas as pd

    results = demo_run / "results-demo"
    tests = {p.parent.name: json.loads(p.read_text()) for p in results.glob("*/test.json")}
    assert (
        set(tests)
        == set(DEMO_RUNS)
        >= {"exp1_ann", "exp1_snn", "exp2_cnn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist"}
    )
    for network, result in tests.items():
        epochs = pd.read_parquet(results / network / "epochs.parquet")
        assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
        assert result["n_test"] > 0 and sum(map(sum, result["confusion_matrix"])) == result["n_test"]
    # clearly better than chance (10%) on the demo MNIST
    assert tests["exp1_ann"]["accuracy"] > 0.6
    assert tests["exp1_snn"]["accuracy"] > 0.6
    assert tests["exp3_snn_mnist"]["accuracy"] > 0.3
    # every demo network learns: test accuracy at least 2x chance (exp2_snn included, see config.demo.yaml)
    assert all(r["accuracy"] >= 0.2 for r in tests.values()), {n: r["accuracy"] for n, r in tests.items()}
    assert tests["exp1_snn_snntorch"]["accuracy"] > 0.6  # the study's code path learns too
    table1 = pd.read_csv(results / "tables" / "table1.csv")
    assert (table1["data"] == "DEMO DATA").all() and len(table1) == len(DEMO_NETWORKS)
    assert set(table1.loc[table1["network"].str.endswith("_snntorch"), "implementation"]) == {"snntorch"}
    assert (demo_run / "data-demo" / "DEMO_DATA.txt").exists()
    # operation counts of every network and the neuromorphic estimate (docs/operations.md)
    for network, result in tests.items():
        ops = result["operations"]
        assert (
            ops["n_samples"] == result["n_test"] and 0 < ops["effective_ops_per_sample"] < ops["dense_ops_per_sample"]
        )
        assert len(pd.read_parquet(results / network / "layers.parquet")) >= 3
    assert (results / "tables" / "neuromorphic.csv").read_text().count("DEMO DATA") == len(DEMO_NETWORKS)
    assert (results / "figures" / "neuromorphic.svg").stat().st_size > 10_000
