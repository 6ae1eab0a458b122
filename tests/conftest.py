import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPIKEBENCH_SHARED_DATA", PROJECT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real, unmodified test data beside the project (``../shared/data``), or a clean skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (expected ../shared/data beside the project)")
    return SHARED_DATA


WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "envs",
    "report",
    "profiles",
    "config.yaml",
    "config.demo.yaml",
    "spikebench",
)


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow (and the package) in `dest`, so a test's runs leave the checkout alone."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = PROJECT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "workflow")


def snakemake_cmd(*args: str) -> list[str]:
    """`snakemake` of the running interpreter's environment."""
    import sys

    return [sys.executable, "-m", "snakemake", *args]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole demo workflow, run once per test session in a copy of the workflow.

    Returns the copy's folder; results are in `<copy>/results-demo`. Tests must not modify it
    (copy it first if they need to rerun things).
    """
    import subprocess

    workdir = copy_workflow(tmp_path_factory.mktemp("demo") / "workflow")
    run = subprocess.run(
        snakemake_cmd("--cores", "2", "--resources", "gpu=1", "--configfile", "config.demo.yaml"),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    (workdir / "snakemake-demo.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    return workdir


@pytest.fixture(scope="module")
def demo_mnist_job(tmp_path_factory) -> dict:
    """What rule train gives train_job on the demo MNIST: its data root and a split of its 4500 training digits."""
    from spikebench.data.demo import make_demo_mnist
    from spikebench.data.split import make_split, write_split

    root = tmp_path_factory.mktemp("job") / "data"
    n_train = len(make_demo_mnist(root, n_test=500, seed=0)["train"][1])
    split = root.parent / "split_mnist.parquet"
    write_split(make_split(n_train, 0.2, 42), split, "mnist", n_train, 0.2, 42)
    return {"root": root, "split": split}
