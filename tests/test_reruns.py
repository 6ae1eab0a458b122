"""What reruns when: after a complete demo run, config and code changes plan exactly the
affected jobs (docs/reruns.md)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, snakemake_cmd
from spikebench.config import expand_runs, load_config

pytestmark = pytest.mark.slow

AGGREGATION = {"tables", "figures", "neuromorphic", "aggregate", "sweep_figures", "profile_summary", "all"}
#: Run ids of the demo (networks, sweep variants, seeds: spikebench.config.expand_runs).
DEMO_RUNS = expand_runs(load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"))
DATA_RULES = {"demo_mnist", "demo_cifar10", "demo_nmnist", "preprocess_nmnist", "split"}


def planned_jobs(workdir: Path, *overlays: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job `snakemake -n` plans with the demo config and `overlays`."""
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "2", "--resources", "gpu=1", "--configfile", "config.demo.yaml", *overlays),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    jobs = set()
    for block in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", out, re.M):
        wildcards = re.search(r"^\s+wildcards: (.*)$", block.group(2), re.M)
        jobs.add((block.group(1), wildcards.group(1).strip() if wildcards else ""))
    return jobs


@pytest.fixture
def finished_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished demo run (outputs, metadata and timestamps) that a test may change."""
    dest = tmp_path / "workflow"
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


def overlay(workdir: Path, changes: dict) -> str:
    path = workdir / "change.yaml"
    path.write_text(yaml.safe_dump(changes))
    return path.name


def network_jobs(network: str) -> set[tuple[str, str]]:
    """train and evaluate of every run of `network` (its seeds and sweep variants, or `network` if not in the demo),
    and the profile of its first run (rules/profile.smk profiles one run per configured network)."""
    runs = [run_id for run_id, run in DEMO_RUNS.items() if run["base"] == network] or [network]
    jobs = {(rule, f"network={run_id}") for run_id in runs for rule in ("train", "evaluate")}
    return jobs | {("profile", f"network={network}")}


def without_aggregation(jobs):
    return {job for job in jobs if job[0] not in AGGREGATION}


def test_nothing_changed_nothing_to_do(finished_copy):
    assert planned_jobs(finished_copy) == set()


@pytest.mark.parametrize("change", [{"lr": 5.0e-4}, {"epochs": 1}])
def test_one_networks_setting_reruns_that_network_only(finished_copy, change):
    jobs = planned_jobs(finished_copy, overlay(finished_copy, {"networks": {"exp1_ann": change}}))
    assert without_aggregation(jobs) == network_jobs("exp1_ann")
    assert {"tables", "figures"} <= {rule for rule, _ in jobs}


def test_nmnist_time_window_reruns_preprocessing_and_the_nmnist_network(finished_copy):
    jobs = planned_jobs(finished_copy, overlay(finished_copy, {"nmnist": {"time_window_us": 2000}}))
    assert without_aggregation(jobs) == {
        ("preprocess_nmnist", "split=train"),
        ("preprocess_nmnist", "split=test"),
    } | network_jobs("exp3_snn_nmnist")


def test_figure_style_reruns_only_figures(finished_copy):
    jobs = planned_jobs(finished_copy, overlay(finished_copy, {"figures": {"style": "ticks"}}))
    restyled = {"figures", "sweep_figures", "neuromorphic", "profile_summary", "all"}
    assert {rule for rule, _ in jobs} <= restyled and ("figures", "") in jobs


def test_energy_model_reruns_only_the_neuromorphic_estimate(finished_copy):
    jobs = planned_jobs(finished_copy, overlay(finished_copy, {"energy_model": {"name": "horowitz45_int8"}}))
    assert {rule for rule, _ in jobs} <= {"neuromorphic", "all"} and ("neuromorphic", "") in jobs


def test_seventh_network_adds_its_jobs_and_the_aggregation(finished_copy):
    demo = yaml.safe_load((finished_copy / "config.yaml").read_text())["networks"]["exp1_ann"]
    extra = {**demo, "hidden": [64], "epochs": 1}
    jobs = planned_jobs(finished_copy, overlay(finished_copy, {"networks": {"exp1_ann_small": extra}}))
    assert without_aggregation(jobs) == network_jobs("exp1_ann_small")
    assert not jobs & {("train", "network=exp1_ann"), ("evaluate", "network=exp1_ann")}


def test_code_change_in_one_architecture_reruns_only_its_networks(finished_copy):
    models = finished_copy / "spikebench" / "models" / "conv2.py"
    source = models.read_text()
    marker = '    """Experiment 3: 12C5-MP2-32C5-MP2-800-10 (no padding), LIF after each layer."""\n'
    assert marker in source
    models.write_text(source.replace(marker, marker + "    # a change to experiment 3's network\n"))
    jobs = planned_jobs(finished_copy)
    assert without_aggregation(jobs) == set().union(*(network_jobs(n) for n in ("exp3_snn_mnist", "exp3_snn_nmnist")))


def test_training_code_change_reruns_every_training_job(finished_copy):
    training = finished_copy / "spikebench" / "training.py"
    training.write_text(training.read_text() + "\n# a change to the training loop\n")
    jobs = planned_jobs(finished_copy)
    trained = {wildcards for rule, wildcards in jobs if rule == "train"}
    assert len(trained) == len(DEMO_RUNS) and not {rule for rule, _ in jobs} & DATA_RULES


def test_cpu_kernel_change_reruns_the_snns_only(finished_copy):
    kernel = finished_copy / "spikebench" / "kernels" / "event_conv.py"
    kernel.write_text(kernel.read_text() + "\n# a change to the event-driven convolution\n")
    jobs = planned_jobs(finished_copy)
    snns = ("exp1_snn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist")
    assert without_aggregation(jobs) == set().union(*(network_jobs(n) for n in snns))
