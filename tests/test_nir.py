"""NIR export (spikebench.nir_export, rule nir_export): the graphs read back give spikebench's output spikes.

The exact graph (network.nir) is run through nirtorch with NIR's nodes stepped by forward Euler; the portable one
(network_lif.nir) through snnTorch's own NIR import. Spikes are compared for equality. Membranes are not: the
graph's reader adds the reset to the synaptic current before adding the leaked membrane (nirtorch sums a node's
inputs first), spikebench after it, so membranes may differ in the last bit (~1e-7) and a spike could only differ
where a membrane lies within that rounding of the threshold; on these batches none does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import PROJECT, snakemake_cmd
from spikebench.config import expand_runs, load_config
from spikebench.data.device import rate_code
from spikebench.models import build_network
from spikebench.spec import NetworkSpec

nir = pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from spikebench import nir_export  # noqa: E402 - after the skips: the tests need nir and nirtorch

NETWORKS = yaml.safe_load((PROJECT / "config.yaml").read_text())["networks"]


def spike_batch(spec: dict, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """Rate-coded input spikes [T, B, C, H, W] of MNIST-like images (about 60% of the pixels zero)."""
    g = torch.Generator().manual_seed(seed)
    shape = NetworkSpec.from_config(spec, "x").input_shape
    images = torch.rand((batch, *shape), generator=g) * (torch.rand((batch, *shape), generator=g) > 0.6)
    return rate_code(images, spec["num_steps"], g)


def exp1(seed: int = 0, **change) -> tuple[dict, torch.nn.Module]:
    spec = {**NETWORKS["exp1_snn"], **change}
    torch.manual_seed(seed)
    return spec, build_network(spec, "exp1_snn").eval()


def round_trip(graph, tmp_path: Path, name: str = "network.nir"):
    """``graph`` written to a file and read back."""
    path = tmp_path / name
    nir_export.write(graph, path)
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    return nir.read(path)


def test_exact_graph_gives_spikebench_spikes(tmp_path):
    """exp1_snn (784-256-256-10) exported, written, read back and run by nirtorch: the same output spikes as
    spikebench's own forward on a test batch, its hidden layers firing and resetting."""
    spec, net = exp1()
    x = spike_batch(spec)
    graph = round_trip(nir_export.to_nir(net), tmp_path)
    with torch.no_grad():
        expected = net(x)
        hidden = net.stages[0](x.reshape(*x.shape[:2], -1))[0]
        got = nir_export.from_nir(graph)(x)
    assert got.shape == expected.shape == (spec["num_steps"], 8, 10)
    assert torch.equal(got, expected)
    assert expected.sum() > 0 and (hidden.sum(0) >= 2).any()  # neurons fire more than once: the reset matters
    assert graph.metadata["network"] == "exp1_snn" and graph.metadata["neuron"] == "exact"


def test_exact_graph_nodes_are_nirs_with_spikebench_parameters(tmp_path):
    """Each layer: Affine (weights and bias bitwise), LI with 1 - DT/tau = beta and DT r/tau = 1, Threshold at the
    threshold, the reset a Scale(-threshold) on a recurrent edge back into the LI."""
    spec, net = exp1(beta=0.9, threshold=0.5)
    graph = round_trip(nir_export.to_nir(net), tmp_path)
    for i, stage in enumerate(net.stages, start=1):
        affine, li = graph.nodes[f"synapse{i}"], graph.nodes[f"membrane{i}"]
        assert isinstance(affine, nir.Affine) and isinstance(li, nir.LI)
        assert np.array_equal(affine.weight, stage.synapse.weight.detach().numpy())
        assert np.array_equal(affine.bias, stage.synapse.bias.detach().numpy())
        assert np.all((1 - nir_export.DT / li.tau).astype(np.float32) == np.float32(0.9))
        assert np.allclose(li.r * nir_export.DT / li.tau, 1.0, rtol=1e-12) and np.all(li.v_leak == 0)
        assert np.all(graph.nodes[f"spike{i}"].threshold == 0.5)
        assert np.all(graph.nodes[f"reset{i}"].scale == -0.5)
        assert {(f"spike{i}", f"reset{i}"), (f"reset{i}", f"membrane{i}")} <= set(graph.edges)
    assert graph.nodes["input"].input_type["input"].tolist() == [784]


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_no_leak_and_no_memory(tmp_path, beta):
    """beta = 1 (no leak: NIR's I / IF) and beta = 0 (tau = DT) round-trip too."""
    spec, net = exp1(beta=beta, hidden=[64], num_steps=6)
    x = spike_batch(spec, batch=4)
    graph = round_trip(nir_export.to_nir(net), tmp_path)
    assert isinstance(graph.nodes["membrane1"], nir.I if beta == 1.0 else nir.LI)
    with torch.no_grad():
        assert torch.equal(nir_export.from_nir(graph)(x), net(x))


def test_snntorch_twin_exports_the_same_network(tmp_path):
    """exp1_snn's snnTorch twin (snntorch.Leaky, subtract reset, delayed) exports to the same graph semantics."""
    from spikebench.models.snntorch_twin import build_snntorch_network

    spec = {**NETWORKS["exp1_snn"], "implementation": "snntorch"}
    torch.manual_seed(1)
    twin = build_snntorch_network(NetworkSpec.from_config(spec, "exp1_snn_snntorch")).eval()
    x = spike_batch(spec, seed=1)
    with torch.no_grad():
        assert torch.equal(nir_export.from_nir(round_trip(nir_export.to_nir(twin), tmp_path))(x), twin(x))


def test_portable_graph_through_snntorchs_import(tmp_path):
    """network_lif.nir read by snnTorch's import_from_nir: Leaky with spikebench's beta and threshold (reset to zero,
    as NIR's LIF defines it, the same spikes as NIR's LIF stepped by forward Euler); given back spikebench's reset
    (snntorch_subtract_reset), it gives spikebench's output spikes."""
    import_nir = pytest.importorskip("snntorch.import_nir")
    import snntorch
    import snntorch.utils

    spec, net = exp1()
    x = spike_batch(spec)
    graph = round_trip(nir_export.to_nir(net, "lif"), tmp_path, "network_lif.nir")
    assert [type(n).__name__ for n in graph.nodes.values()].count("LIF") == 3

    def run(module):
        snntorch.utils.reset(module)
        with torch.no_grad():
            return torch.stack([module(x[t].flatten(1))[0] for t in range(x.shape[0])])

    imported = import_nir.import_from_nir(graph)
    leaky = [m for m in imported.modules() if isinstance(m, snntorch.Leaky)]
    assert len(leaky) == 3
    for m in leaky:
        assert m.reset_mechanism == "zero" and not m.reset_delay
        assert torch.all(m.beta == torch.tensor(0.8, dtype=torch.float32)) and float(m.threshold) == 1.0
    with torch.no_grad():
        expected, nir_lif = net(x), nir_export.from_nir(graph)(x)
    assert torch.equal(run(imported), nir_lif)
    assert not torch.equal(nir_lif, expected)  # NIR's reset is not spikebench's
    assert torch.equal(run(nir_export.snntorch_subtract_reset(imported)), expected)


def test_conv_snns_and_anns_are_not_exported():
    """The conv SNNs pool their currents with a 2x2 max-pool, which NIR cannot represent: no graph, and the
    export says why; ANNs are not exported."""
    for name in ("exp3_snn_mnist", "exp3_snn_nmnist", "exp2_snn"):
        assert "max-pool" in nir_export.not_exportable(NetworkSpec.from_config(NETWORKS[name], name))
    torch.manual_seed(0)
    with pytest.raises(nir_export.NIRExportError, match="max-pool"):
        nir_export.to_nir(build_network(NETWORKS["exp3_snn_mnist"], "exp3_snn_mnist"))
    assert "only SNNs" in nir_export.not_exportable(NetworkSpec.from_config(NETWORKS["exp1_ann"], "exp1_ann"))
    assert nir_export.not_exportable(NetworkSpec.from_config(NETWORKS["exp1_snn"], "exp1_snn")) is None


def test_targets_are_the_fully_connected_snn_runs_only_when_enabled():
    config = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")
    runs = expand_runs(config)
    assert nir_export.targets(config, "r", runs) == []
    config["nir"] = {"enabled": True}
    found = nir_export.targets(config, "r", runs)
    fc_snns = [r for r, run in runs.items() if run["spec"]["kind"] == "snn" and run["spec"]["architecture"] == "fc"]
    assert sorted(found) == sorted(f"r/{r}/{f}" for r in fc_snns for f in ("network.nir", "network_lif.nir"))
    assert {"exp1_snn", "exp1_snn_snntorch", "exp1_snn-num_steps2-seed1"} <= {p.split("/")[1] for p in found}


def test_export_job_writes_both_graphs_from_a_weights_file(tmp_path):
    """Rule nir_export's job: the weights file's network, both graphs, written atomically, logged."""
    import logging

    spec, net = exp1(seed=3)
    weights = tmp_path / "weights.pt"
    torch.save({"network": "exp1_snn", "spec": spec, "state_dict": net.state_dict(), "epoch": 2}, weights)
    outputs = {k: str(tmp_path / "out" / f) for k, f in nir_export.FILES.items()}
    nir_export.export_job(
        "exp1_snn", NetworkSpec.from_config(spec, "exp1_snn"), weights, outputs, "last", logging.getLogger("t")
    )
    x = spike_batch(spec, seed=3)
    graph = nir.read(outputs["exact"])
    assert graph.metadata["epoch"] == 2 and graph.metadata["weights"] == "last"
    with torch.no_grad():
        assert torch.equal(nir_export.from_nir(outputs["exact"])(x), net(x))
    assert isinstance(nir.read(outputs["lif"]).nodes["lif1"], nir.LIF)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["network.nir", "network_lif.nir"]


def test_code_digest_follows_the_code_the_export_runs(tmp_path, monkeypatch):
    """Editing this module or the network's builder changes an export job's digest; another builder does not."""
    from spikebench import provenance

    copy = tmp_path / "spikebench"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    spec = NETWORKS["exp1_snn"]
    before = nir_export.code_digest(spec)
    (copy / "models" / "conv2.py").write_text("# edited\n", encoding="utf-8")
    assert nir_export.code_digest(spec) == before
    for edited in ("nir_export.py", "models/fc.py"):
        (copy / edited).write_text("# edited\n", encoding="utf-8")
        assert nir_export.code_digest(spec) != before
        before = nir_export.code_digest(spec)


def test_a_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(nir_export, "MODULES", ("nir", "no_such_package_for_nir"))
    with pytest.raises(ModuleNotFoundError, match=r"no_such_package_for_nir.*pip install -e \"\.\[nir\]\""):
        nir_export.check_installed()


def test_building_the_dag_imports_no_torch():
    """What rules/nir.smk calls while Snakemake parses the workflow imports no torch, nir or nirtorch."""
    code = (
        "import sys; from spikebench import nir_export as n; "
        "n.enabled({}); n.code_digest({'kind': 'snn', 'architecture': 'fc'}); n.missing_modules(); "
        "print(sorted(m for m in ('torch', 'nir', 'nirtorch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the workflow: turning the export on plans the export jobs and nothing else -----------------------


def planned_jobs(workdir: Path, *configfiles: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job `snakemake -n` plans with the demo config and `configfiles`."""
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "2", "--resources", "gpu=1", "--configfile", "config.demo.yaml", *configfiles),
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


def nir_jobs() -> set[tuple[str, str]]:
    config = {**load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"), "nir": {"enabled": True}}
    runs = {p.split("/")[1] for p in nir_export.targets(config, "r", expand_runs(config))}
    return {("nir_export", f"network={r}") for r in runs}


def nir_overlay(workdir: Path) -> str:
    (workdir / "nir.yaml").write_text("nir: {enabled: true}\n")
    return "nir.yaml"


@pytest.mark.slow
def test_turning_the_export_on_adds_only_export_jobs(workflow_dir):
    """From nothing: the plan with nir.enabled is the plan without it plus one nir_export job per fully connected
    SNN run."""
    before = planned_jobs(workflow_dir)
    after = planned_jobs(workflow_dir, nir_overlay(workflow_dir))
    assert after - before == nir_jobs() and before <= after


@pytest.mark.slow
def test_after_a_finished_demo_run_the_export_retrains_nothing(demo_run, tmp_path):
    """After the finished demo workflow, turning nir.enabled on plans the nir_export jobs and nothing else
    (no train, evaluate or aggregation job: the graphs are no input of any other rule)."""
    workdir = tmp_path / "workflow"
    shutil.copytree(demo_run, workdir, symlinks=True)
    jobs = planned_jobs(workdir, nir_overlay(workdir))
    assert jobs - {("all", "")} == nir_jobs()
