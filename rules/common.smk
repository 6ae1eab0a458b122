# Helpers shared by every stage: config validation, paths, input functions, the final targets.
import os
import sys

# The package of this checkout is what every job imports (also inside cluster jobs and conda envs).
sys.path.insert(0, workflow.basedir)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p)


envvars:
    "PYTHONPATH",


from spikebench.config import (
    ConfigError,
    add_implementation_twins,
    expand_runs,
    run_id_errors,
    run_id_pattern,
    validate_config,
)
from snakemake.logging import logger
from spikebench import provenance, results_lock
from spikebench.data import catalog

# The networks' twins of config `implementations` (`<id>_snntorch`) join config["networks"]; then the
# whole config is checked, which stops the run before any job starts, naming every offending key.
add_implementation_twins(config)
validate_config(config, source="configuration (config.yaml and any --configfile overlays)")

DATA = config["data"]["root"]
RESULTS = config["results"]
# Run ids: the networks, their sweep variants, each times its seeds (spikebench.config.expand_runs).
RUNS = expand_runs(config)
NETWORKS = list(RUNS)
# The run of each configured network that the study's tables and figures show (its first seed).
BASE_RUNS = {name: next(r for r, run in RUNS.items() if run["network"] == name) for name in config["networks"]}
DEMO = config["data"]["source"] == "demo"
# The folders of the results folder beside the runs' own <results>/<run id>/ (catalog: data; logs and
# benchmarks of every rule; rules/results_common.smk: tables, figures; rules/tracking.smk: tracking).
# tests/test_planning.py checks that this lists every folder the rules write directly under RESULTS.
RESULTS_FOLDERS = ("benchmarks", "data", "figures", "logs", "tables", "tracking")
# The `network` wildcard is a run id by its pattern (spikebench.config.run_id_pattern: no `/`, none of
# RESULTS_FOLDERS), not by a list of every id: Snakemake puts a constraint into every output pattern it
# substitutes, so a list made planning quadratic in the number of runs. Every run id must match it.
RUN_ID = run_id_pattern(RESULTS_FOLDERS)
if _bad_run_ids := run_id_errors(RUNS, RESULTS_FOLDERS):
    raise ConfigError("invalid configuration (networks, sweeps):\n  - " + "\n  - ".join(_bad_run_ids))


wildcard_constraints:
    network=RUN_ID,
    split="train|test",
    dataset="|".join(catalog.DATASETS),


def run_of(wildcards):
    """The run of a `network` wildcard. RUN_ID lets any id-like name through (a target such as
    <results>/exp1_ann-lr9/test.json, with no such variant): it is named here, not as a bare KeyError."""
    try:
        return RUNS[wildcards.network]
    except KeyError:
        raise ValueError(
            f"{wildcards.network!r} is not a run id of this configuration (its networks, their sweep variants "
            f"and seeds: {len(RUNS)} runs, e.g. {', '.join(list(RUNS)[:3])})"
        ) from None


def spec(wildcards):
    """The settings of one run (its network's config entry, a variant's swept value): all reach its jobs through params,
    where scripts/train.py and scripts/evaluate.py build its typed spikebench.spec.NetworkSpec once."""
    return run_of(wildcards)["spec"]


def run_seed(wildcards):
    """The training seed of one run: `seed`, or `seed + k` for its k-th repeat."""
    return run_of(wildcards)["seed"]


# Digests by (stage, kind, architecture, implementation), each computed once per Snakemake process: the
# files it hashes do not change while the workflow plans (a sweep of N variants of one network has one digest,
# not N file reads and hashes).
_CODE_DIGESTS = {}


def code(stage):
    """A digest of the package code a job of `stage` runs for this network (spikebench.provenance)."""

    def digest(wildcards):
        network = spec(wildcards)
        key = (stage, *provenance.code_key(network))
        if key not in _CODE_DIGESTS:
            _CODE_DIGESTS[key] = provenance.code_digest(network, stage)
        return _CODE_DIGESTS[key]

    return digest


def network_dataset(wildcards):
    return spec(wildcards)["dataset"]


def dataset_inputs(dataset, split):
    """What a job on `dataset`/`split` reads: the dataset's verified manifest (its files come through
    the data root in params and are never declared), for N-MNIST the preprocessed frames."""
    if dataset == "nmnist":
        return catalog.nmnist_frames(RESULTS, split)
    return {"manifest": catalog.manifest_file(RESULTS, dataset)}


def split_inputs(wildcards):
    """The dataset's manifest: the split depends on the training set only (not on preprocessing)."""
    return [catalog.manifest_file(RESULTS, wildcards.dataset)]


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
    """What `snakemake` builds by default: every network trained and evaluated, tables and figures."""
    targets = []
    for network in NETWORKS:
        targets += [
            f"{RESULTS}/{network}/epochs.parquet",
            f"{RESULTS}/{network}/test.json",
        ]
    targets += neuromorphic_targets()  # rules/results_common.smk, rule neuromorphic
    return (
        targets + results_targets() + aggregate_targets() + TRACKING_TARGETS + NIR_TARGETS + PROFILE_TARGETS
    )  # rules/results_common.smk, tracking.smk, nir.smk, profile.smk


# One run per results folder (spikebench.results_lock; Snakemake's own lock is per working directory): taken
# in the main Snakemake process when jobs are about to run (no dry run; job processes get --no-hooks), held
# until the run ends. A second run on the same results folder stops here, naming the run that holds it.
onstart:
    results_lock.hold(RESULTS, log=logger)


onsuccess:
    results_lock.let_go(RESULTS)


onerror:
    results_lock.let_go(RESULTS)
