"""The demo workflow submitted to a real single-node SLURM with two (fake) GPUs.

The cluster comes from ../shared/slurm (Debian's slurmctld/slurmd/munge, started by up.sh and
stopped by PID by down.sh). `.ci/run` installs the packages; where they are missing or the
daemons cannot start (not root, no shared recipe) the test skips and says why.
"""

import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import PROJECT, SHARED_DATA, copy_workflow, snakemake_cmd
from spikebench.config import expand_runs, load_config

pytestmark = pytest.mark.slow

RECIPE = SHARED_DATA.parent / "slurm"
DETERMINISTIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "n_train", "n_val"]


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM packages not installed (missing {', '.join(missing)}); .ci/run installs them")
    if not (RECIPE / "up.sh").exists():
        pytest.skip(f"SLURM recipe not found at {RECIPE}")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")
    up = subprocess.run(
        ["bash", str(RECIPE / "up.sh")],
        env={**os.environ, "FAKE_GPUS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if up.returncode != 0 or "idle" not in up.stdout:
        subprocess.run(["bash", str(RECIPE / "down.sh")], capture_output=True, timeout=60)
        pytest.skip(f"could not start the SLURM daemons: {(up.stdout + up.stderr)[-1500:]}")
    yield
    subprocess.run(["bash", str(RECIPE / "down.sh")], capture_output=True, timeout=60)


def test_demo_workflow_on_slurm_matches_local_run(slurm_cluster, demo_run, tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    shutil.copytree(PROJECT / "tests" / "slurm-profile", workdir / "slurm-profile")
    run = subprocess.run(
        [
            "timeout",
            "-k",
            "10",
            "1500",
            *snakemake_cmd("--workflow-profile", "slurm-profile", "--configfile", "config.demo.yaml"),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    out = run.stdout + run.stderr
    (tmp_path / "snakemake-slurm.log").write_text(out)
    assert run.returncode == 0, out[-6000:]

    local, cluster = demo_run / "results-demo", workdir / "results-demo"
    networks = sorted(p.parent.name for p in local.glob("*/test.json"))
    assert networks == sorted(expand_runs(load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")))
    for network in networks:
        # every train/evaluate job was submitted to SLURM (the plugin deletes successful jobs' logs)
        for rule in ("train", "evaluate"):
            assert re.search(rf"submitted with SLURM jobid \d+ \(log: \S*/rule_{rule}/{network}/", out), (
                f"{rule} {network} was not submitted to SLURM"
            )
        # ... ran inside its SLURM job, saw the GPU SLURM gave it, and fell back to the CPU cleanly
        # (no driver behind the fake GPUs)
        result = json.loads((cluster / network / "test.json").read_text())
        job = result["hardware"]
        assert job["slurm_job_id"], f"{network}: evaluate did not run inside a SLURM job"
        assert job["cuda_visible_devices"] in {"0", "1"}, job
        assert result["device"] == "cpu"
        train_log = (cluster / "logs" / "train" / f"{network}.log").read_text()
        assert re.search(r"CUDA_VISIBLE_DEVICES=[01], SLURM_JOB_ID=\d+", train_log), train_log[:2000]
        assert "running on the CPU" in train_log

        # deterministic outputs equal the local run's
        pd.testing.assert_frame_equal(
            pd.read_parquet(cluster / network / "epochs.parquet")[DETERMINISTIC_COLUMNS],
            pd.read_parquet(local / network / "epochs.parquet")[DETERMINISTIC_COLUMNS],
        )
        local_result = json.loads((local / network / "test.json").read_text())
        assert result["confusion_matrix"] == local_result["confusion_matrix"]
    for name in ("split_mnist.parquet", "split_cifar10.parquet", "nmnist_train_frames.parquet"):
        assert pd.read_parquet(cluster / "data" / name).equals(pd.read_parquet(local / "data" / name))
