"""Which package code each job depends on, as a digest that Snakemake tracks through `params:`.

Snakemake reruns a job when its `script:` changes, but not when package code it imports changes.
The train and evaluate rules therefore carry a `code` param: a SHA-256 over the source of exactly
the model code a network uses (its architecture's builder in `spikebench/models.py`, the ANN or
the SNN classes, the fused LIF for SNNs, the loss; for SNNs also the numba CPU kernels in
`spikebench/kernels/`; for `implementation: snntorch` `spikebench/models_snntorch.py` instead of the LIF and
the kernels) plus the modules every training or evaluation job runs. Editing `build_conv2` reruns the experiment-3 networks (both implementations) and nothing else; editing
`training.py` reruns every train (and evaluate) job.

The source is read with `ast` from the files, so building the DAG does not import torch.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MODELS = PACKAGE / "models.py"

# models.py names every network uses, then those of each kind and each architecture.
COMMON_MODEL_CODE = ("input_shape", "_Network", "_require", "build_network", "kaiming_init_", "network_loss", "predict")
KIND_CODE = {
    "ann": ("ANN",),
    "snn": ("SNN", "SpikingStage", "active_input_linear", "_use_cpu_kernels", "Leaky", "LeakyFunction",
            "ConvPoolFunction", "conv_pool", "_lif_compiled", "lif_recurrence", "lif_recurrence_backward",
            "_compiled",
            "step_mask", "spike_counts", "spike_count_loss"),
}
ARCHITECTURE_CODE = {
    "fc": ("build_fc",),
    "conv5": ("build_conv5", "_conv_stack", "_conv_out", "Conv2d", "tied_weights_pay", "_tap_index",
              "tied_conv2d"),
    "conv2": ("build_conv2", "_conv_stack", "_conv_out", "Conv2d", "tied_weights_pay", "_tap_index",
              "tied_conv2d"),
}
# Whole modules the model code of each kind runs (the SNNs' numba CPU kernels).
KIND_MODULES = {
    "ann": (),
    "snn": ("kernels/__init__.py", "kernels/lif.py", "kernels/event_conv.py"),
}
# An SNN with `implementation: snntorch` is built from spikebench's SNN (shapes, initial weights, the loss of
# padded N-MNIST batches) but runs none of its LIF or kernel code: models_snntorch.py instead (these replace
# KIND_CODE / KIND_MODULES for it).
IMPLEMENTATION_CODE = {"snntorch": ("SNN", "SpikingStage", "Leaky", "step_mask", "spike_counts", "spike_count_loss")}
IMPLEMENTATION_MODULES = {"snntorch": ("models_snntorch.py",)}
# Whole modules each stage's jobs run (besides the model code above).
STAGE_MODULES = {
    "train": ("training.py", "implementation.py", "data/device.py", "devices.py", "oom.py"),
    "evaluate": ("evaluation.py", "opcounts.py", "training.py", "implementation.py", "data/device.py", "devices.py",
                 "oom.py"),
}


@functools.cache
def _definitions(path: Path) -> dict[str, str]:
    """Top-level function/class name -> its source text (decorators included)."""
    text = path.read_text()
    tree = ast.parse(text)
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = ast.get_source_segment(text, node, padded=True) or ""
            for decorator in node.decorator_list:
                out[node.name] = ast.get_source_segment(text, decorator) + "\n" + out[node.name]
    return out


def _implementation(spec: dict) -> str:
    return spec.get("implementation", "spikebench")


def model_code_names(spec: dict) -> list[str]:
    """The models.py definitions the network of `spec` is built and trained with."""
    kind_code = IMPLEMENTATION_CODE.get(_implementation(spec), KIND_CODE[spec["kind"]])
    names = [*COMMON_MODEL_CODE, *kind_code, *ARCHITECTURE_CODE[spec["architecture"]]]
    return sorted(set(names))


def code_digest(spec: dict, stage: str) -> str:
    """SHA-256 of the code a `stage` ("train" or "evaluate") job of this network runs."""
    definitions = _definitions(MODELS)
    digest = hashlib.sha256()
    for name in model_code_names(spec):
        if name not in definitions:
            raise KeyError(f"{MODELS}: no top-level definition {name!r} (update spikebench/provenance.py)")
        digest.update(f"{name}\n{definitions[name]}\n".encode())
    kind_modules = IMPLEMENTATION_MODULES.get(_implementation(spec), KIND_MODULES[spec["kind"]])
    for module in (*kind_modules, *STAGE_MODULES[stage]):
        digest.update(f"{module}\n".encode() + (PACKAGE / module).read_bytes())
    return digest.hexdigest()
