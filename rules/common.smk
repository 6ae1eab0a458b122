# Helpers shared by every stage: config validation, paths, input functions, the final targets.
import os
import sys

# The package of this checkout is what every job imports (also inside cluster jobs and conda envs).
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
)


envvars:
    "PYTHONPATH",

from spikebench.config import validate_config
from spikebench.data import catalog

# Stops the run before any job starts, naming every offending key.
validate_config(config, source="configuration (config.yaml and any --configfile overlays)")

DATA = config["data"]["root"]
RESULTS = config["results"]
NETWORKS = list(config["networks"])
DEMO = config["data"]["source"] == "demo"


wildcard_constraints:
    network="|".join(NETWORKS),
    split="train|test",
    dataset="|".join(catalog.DATASETS),


def spec(wildcards):
    """The config entry of one network: all of its settings reach its jobs through params."""
    return config["networks"][wildcards.network]


def network_dataset(wildcards):
    return config["networks"][wildcards.network]["dataset"]


def dataset_inputs(dataset, split):
    """Raw files (and for N-MNIST the preprocessed frames) a job on `dataset`/`split` reads."""
    if dataset == "nmnist":
        return catalog.nmnist_frames(RESULTS, split)
    return {"raw": catalog.raw_files(dataset, DATA)}


def split_inputs(wildcards):
    """The training set's raw files: the split depends on its size only (not on preprocessing)."""
    if wildcards.dataset == "nmnist":
        return [catalog.nmnist_folder(DATA, "train")]
    return catalog.raw_files(wildcards.dataset, DATA)


def train_inputs(wildcards):
    dataset = network_dataset(wildcards)
    return {
        **dataset_inputs(dataset, "train"),
        "split": catalog.split_file(RESULTS, dataset),
    }


def test_inputs(wildcards):
    return {
        **dataset_inputs(network_dataset(wildcards), "test"),
        "weights": f"{RESULTS}/{wildcards.network}/weights.pt",
    }


def all_targets():
    """What `snakemake` builds by default: every network trained and evaluated."""
    targets = []
    for network in NETWORKS:
        targets += [
            f"{RESULTS}/{network}/epochs.parquet",
            f"{RESULTS}/{network}/test.json",
        ]
    return targets
