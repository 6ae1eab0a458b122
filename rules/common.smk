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
from spikebench import provenance
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


def code(stage):
    """A digest of the package code a job of `stage` runs for this network (spikebench.provenance)."""
    return lambda wildcards: provenance.code_digest(spec(wildcards), stage)


def network_dataset(wildcards):
    return config["networks"][wildcards.network]["dataset"]


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
    return targets + results_targets() + TRACKING_TARGETS  # rules/tracking.smk


# ---- results stage: tables and figures, with their places in the report

# Relative to the working directory, so that a moved or copied workflow does not rerun `tables`.
PAPER_VALUES = os.path.relpath(os.path.join(workflow.basedir, "spikebench", "paper_values.csv"))
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"
# name: (report category, caption, title in the report)
TABLE_ITEMS = {
    "table1": ("Summary", "table1", "Table I: training and validation"),
    "table2": ("Summary", "table2", "Table II: test"),
    "hardware": ("Summary", "hardware", "Hardware and software of this run"),
    "comparison": ("Paper comparison", "comparison", "The study's Tables I and II next to this run"),
    "cost": ("Paper comparison", "cost", "The cost of spiking, this run and the study"),
}
SUMMARY_FIGURES = {
    "energy_per_epoch": "Energy per epoch, all networks",
    "accuracy_vs_energy": "Test accuracy vs energy and time per test sample",
}


def results_networks():
    """What the results rules need of each network: its experiment, dataset, kind, architecture, implementation."""
    keys = ("experiment", "dataset", "kind", "architecture", "implementation")
    return {n: {k: config["networks"][n][k] for k in keys if k in config["networks"][n]} for n in NETWORKS}


def results_experiments():
    return sorted({int(config["networks"][n]["experiment"]) for n in NETWORKS})


def _caption(name):
    return f"../report/{name}.rst"


def experiment_caption(experiment):
    specific = os.path.join(workflow.basedir, "report", f"experiment{experiment}.rst")
    return _caption(f"experiment{experiment}") if os.path.exists(specific) else _caption("experiment")


def table_outputs():
    outputs = {}
    for name, (category, caption, title) in TABLE_ITEMS.items():
        for ext, fmt in (("html", "HTML (shown)"), ("csv", "CSV (download)")):
            outputs[f"{name}_{ext}"] = report(
                f"{TABLES}/{name}.{ext}",
                category=category,
                subcategory="Tables",
                labels={"item": title, "format": fmt},
                caption=_caption(caption),
            )
    return outputs


def figure_outputs():
    outputs = {}
    for experiment in results_experiments():
        name = f"experiment{experiment}"
        outputs[f"{name}_png"] = f"{FIGURES}/{name}.png"
        outputs[f"{name}_svg"] = report(
            f"{FIGURES}/{name}.svg",
            category=f"Experiment {experiment}",
            subcategory="Figures",
            labels={"item": f"Experiment {experiment}: panels A-D", "format": "SVG"},
            caption=experiment_caption(experiment),
        )
    for name, title in SUMMARY_FIGURES.items():
        outputs[f"{name}_png"] = f"{FIGURES}/{name}.png"
        outputs[f"{name}_svg"] = report(
            f"{FIGURES}/{name}.svg",
            category="Summary",
            subcategory="Figures",
            labels={"item": title, "format": "SVG"},
            caption=_caption(name),
        )
    return outputs


def results_targets():
    """Every table (CSV + HTML) and figure (PNG + SVG): add these to `all_targets()`."""
    names = list(TABLE_ITEMS)
    targets = [f"{TABLES}/{name}.{ext}" for name in names for ext in ("csv", "html")]
    figures = [f"experiment{e}" for e in results_experiments()] + list(SUMMARY_FIGURES)
    targets += [f"{FIGURES}/{name}.{ext}" for name in figures for ext in ("png", "svg")]
    return targets


def per_network(name):
    return [f"{RESULTS}/{network}/{name}" for network in NETWORKS]
