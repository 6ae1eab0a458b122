"""The workflow's plan: the full paper run and the demo list the jobs the study needs."""

import re
import subprocess

from conftest import snakemake_cmd


def job_counts(workflow_dir, *args) -> dict[str, int]:
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", *args), cwd=workflow_dir, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stdout + run.stderr
    table = run.stdout.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_full_paper_run_plans_every_job(workflow_dir):
    counts = job_counts(workflow_dir)
    for rule in ("download_mnist", "download_cifar10", "download_nmnist"):
        assert counts[rule] == 1
    assert counts["preprocess_nmnist"] == 2  # train and test
    assert counts["split"] == 3  # mnist, cifar10, nmnist
    assert counts["train"] == 6 and counts["evaluate"] == 6
    assert not any(rule.startswith("demo_") for rule in counts)


def test_demo_plans_demo_data_instead_of_downloads(workflow_dir):
    counts = job_counts(workflow_dir, "--configfile", "config.demo.yaml")
    assert counts["demo_mnist"] == counts["demo_cifar10"] == counts["demo_nmnist"] == 1
    assert not any(rule.startswith("download_") for rule in counts)
    assert counts["train"] == 6 and counts["evaluate"] == 6
