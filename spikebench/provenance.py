"""Which package code each job depends on, as a digest that Snakemake tracks through `params:`.

Snakemake reruns a job when its `script:` changes, but not when package code it imports changes.
The train and evaluate rules therefore carry a `code` param: a SHA-256 over the files of exactly the
model code a network runs plus the modules every training or evaluation job runs. The `spikebench.models`
package is laid out for this (one file per concern, see its docstring): every network hashes the common
files (base, build, losses), its kind's (ANN: `ann.py`; spikebench SNN: `snn.py`, `lif.py` and the numba CPU
kernels in `spikebench/kernels/`, plus `convpool.py` for the conv architectures), its architecture's builder
(`fc.py`, `conv5.py`, `conv2.py`; the conv ones also `tied_conv.py`). An SNN with `implementation: snntorch` is
built from spikebench's SNN (shapes, initial weights, the padded loss) but runs none of its LIF forward or
kernels: it hashes `snntorch_twin.py` instead of the kernels and `convpool.py`. Editing `conv2.py` reruns the
experiment-3 networks (both implementations) and nothing else; editing `training.py` reruns every train (and
evaluate) job.

The digest also covers the schema's defaults of the network settings (``spikebench.spec`` fills them in for a
key an entry leaves out). Files are read as bytes, so building the DAG does not import torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from spikebench.spec import NetworkSpec, network_schema

PACKAGE = Path(__file__).resolve().parent

# Files of spikebench/ (relative to it) that the model code of every network runs.
COMMON_MODEL_FILES = (
    "models/__init__.py",
    "models/base.py",
    "models/build.py",
    "models/losses.py",
    "data/catalog.py",
    "spec.py",
)
KIND_FILES = {
    "ann": ("models/ann.py",),
    "snn": (
        "models/snn.py",
        "models/lif.py",
        "kernels/__init__.py",
        "kernels/lif.py",
        "kernels/lif_triton.py",
        "kernels/event_conv.py",
    ),
}
ARCHITECTURE_FILES = {
    "fc": ("models/fc.py",),
    "conv5": ("models/conv5.py", "models/tied_conv.py"),
    "conv2": ("models/conv2.py", "models/tied_conv.py"),
}
# SNN convolutions run conv + max-pool through models/convpool.py (spikebench's implementation only).
SNN_CONV_FILES = ("models/convpool.py", "kernels/event_conv.py")
# `implementation: snntorch` replaces KIND_FILES["snn"] (and SNN_CONV_FILES): spikebench's SNN and Leaky
# classes give it its shapes and parameters, snntorch_twin.py runs it.
IMPLEMENTATION_FILES = {"snntorch": ("models/snn.py", "models/lif.py", "models/snntorch_twin.py")}
# Whole modules each stage's jobs run (besides the model code above).
STAGE_MODULES = {
    "train": (
        "training.py",
        "implementation.py",
        "data/device.py",
        "devices.py",
        "oom.py",
        "memory_estimate.py",
        "saved_memory.py",
    ),
    "evaluate": (
        "evaluation.py",
        "opcounts.py",
        "training.py",
        "implementation.py",
        "data/device.py",
        "devices.py",
        "oom.py",
    ),
}


def code_key(spec: NetworkSpec | dict) -> tuple[str, str, str]:
    """(kind, architecture, implementation) of a spec or of a config entry (implementation: the schema's default
    when absent): all that decides which files :func:`code_digest` hashes for a stage."""
    if isinstance(spec, NetworkSpec):
        return spec.kind, spec.architecture, spec.implementation
    return spec["kind"], spec["architecture"], spec.get("implementation", network_defaults()["implementation"])


def network_defaults() -> dict:
    """The schema's defaults of the network settings (what spikebench.spec fills in for an absent key)."""
    return {key: value["default"] for key, value in network_schema()["properties"].items() if "default" in value}


def model_files(spec: NetworkSpec | dict) -> list[str]:
    """The files of spikebench/ that the network of `spec` (a run's spec or its config entry, as
    ``rules/common.smk`` passes it) is built and trained with (sorted, no repeats)."""
    kind, architecture, implementation = code_key(spec)
    files = [*COMMON_MODEL_FILES, *ARCHITECTURE_FILES[architecture]]
    if implementation in IMPLEMENTATION_FILES:
        files += IMPLEMENTATION_FILES[implementation]
    else:
        files += KIND_FILES[kind]
        if kind == "snn" and architecture != "fc":
            files += SNN_CONV_FILES
    return sorted(set(files))


def code_digest(spec: NetworkSpec | dict, stage: str) -> str:
    """SHA-256 of the code a `stage` ("train" or "evaluate") job of this network runs."""
    digest = hashlib.sha256()
    for module in (*model_files(spec), *STAGE_MODULES[stage]):
        path = PACKAGE / module
        if not path.is_file():
            raise FileNotFoundError(f"{path}: listed in spikebench/provenance.py but missing (update the list)")
        digest.update(f"{module}\n".encode() + path.read_bytes())
    # A changed default of the schema changes what an entry without that key computes.
    digest.update(json.dumps(network_defaults(), sort_keys=True).encode())
    return digest.hexdigest()
