"""Where the time goes (spikebench.profiling, rules/profile.smk): one profiled training step per network, its
rows by phase, layer and op kind, and the arithmetic floor beside it; on tiny networks and real data (the demo's
MNIST digits and CIFAR-10 stand-in; the real N-MNIST recordings of ../shared/data, skipped when absent)."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import PROJECT, snakemake_cmd
from spikebench import atomic
from spikebench.config import expand_runs, load_config
from spikebench.implementation import encode_batch, implementation_of
from spikebench.profiling import COLUMNS, KINDS, PHASES, arithmetic_floor, network_layers, profile_network
from spikebench.profiling.events import Context, classify
from spikebench.profiling.step import training_step
from spikebench.spec import as_spec
from spikebench.training import train_step

DEMO_RUNS = expand_runs(load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"))
#: The demo networks, shrunk further so that each profile takes about a second on two CPU cores.
TINY = {
    "exp1_ann": {"hidden": [64, 32], "batch_size": 32},
    "exp1_snn": {"hidden": [64, 32], "batch_size": 16, "num_steps": 4},
    "exp1_snn_snntorch": {"hidden": [64, 32], "batch_size": 16, "num_steps": 4},
    "exp2_cnn": {"channels": [4, 4, 8, 8, 8], "fc": 16, "batch_size": 16},
    "exp3_snn_mnist": {"channels": [4, 8], "batch_size": 8, "num_steps": 4},
    "exp3_snn_nmnist": {"channels": [4, 8], "batch_size": 4},
}


def tiny_spec(name: str):
    return as_spec({**DEMO_RUNS[name]["spec"], **TINY[name]}, name)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> dict:
    """The demo's real MNIST test digits and its CIFAR-10 stand-in, on the CPU, as rule profile loads them."""
    from spikebench.data.demo import make_demo_cifar10, make_demo_mnist
    from spikebench.data.device import load_test_data

    root = tmp_path_factory.mktemp("profile_data")
    make_demo_mnist(root, n_test=100, seed=0)
    make_demo_cifar10(root, n_train=10, n_test=40, seed=0)
    cpu = torch.device("cpu")
    return {
        "root": root,
        "mnist": load_test_data(tiny_spec("exp1_ann"), root, None, cpu),
        "mnist32": load_test_data(tiny_spec("exp3_snn_mnist"), root, None, cpu),  # input_size 32: resized
        "cifar10": load_test_data(tiny_spec("exp2_cnn"), root, None, cpu, verify_md5=False),
    }


@pytest.fixture(scope="module")
def nmnist_frames(shared_data, tmp_path_factory) -> dict:
    """Twelve real N-MNIST Test recordings, preprocessed with the demo's 10 ms frames."""
    from spikebench.data.nmnist import preprocess_split

    files = sorted((shared_data / "nmnist").glob("Test/[0-9]/*.bin"))[:12]
    if not files:
        pytest.skip("no N-MNIST recordings in ../shared/data/nmnist")
    root = tmp_path_factory.mktemp("nmnist") / "NMNIST" / "Test"
    for f in files:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, root / f.parent.name / f.name)
    out = root.parents[1]
    frames, samples = out / "test_frames.parquet", out / "test_samples.parquet"
    preprocess_split(root, frames, samples, 10000, 10000)
    return {"frames": frames, "samples": samples}


def _data(name: str, image_data, nmnist_frames=None):
    if name == "exp3_snn_nmnist":
        from spikebench.data.device import load_test_data

        return load_test_data(tiny_spec(name), Path("."), nmnist_frames, torch.device("cpu"))
    if name.startswith("exp2"):
        return image_data["cifar10"]
    return image_data["mnist32" if name == "exp3_snn_mnist" else "mnist"]


def _profile(name: str, data) -> tuple[pd.DataFrame, list[str]]:
    spec = tiny_spec(name)
    torch.manual_seed(0)
    net = implementation_of(spec).build(spec)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    table = profile_network(net, optimizer, spec, data, repeats=5, warmup_steps=1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "weights not put back"
    return table, [layer.name for layer in network_layers(net)]


def check_table(table: pd.DataFrame, layers: list[str], kind: str, pooling: bool | None, dense: bool = True) -> None:
    """The house checks of one network's profile table. ``dense``: the step runs dense arithmetic only, so the
    floor lies below the step time (spikebench's event-driven CPU convolutions can beat the dense floor)."""
    assert list(table.columns) == list(COLUMNS)
    assert set(table["phase"]) == {*PHASES, "floor"}
    assert set(table["op_kind"]) <= set(KINDS)
    for phase, share in table.groupby("phase")["share_pct"].sum().items():
        assert share == pytest.approx(100.0, abs=1e-6), phase
    assert (table["time_ms"] >= 0).all()
    kinds = {phase: set(rows["op_kind"]) for phase, rows in table.groupby("phase")}
    assert {"matmul/conv", "loss"} <= kinds["forward"]
    assert "matmul/conv" in kinds["backward"]
    assert kinds["step"] == {"optimiser"} and kinds["data"] == {"data preparation"}
    lif = "LIF recurrence"
    assert (lif in kinds["forward"] and lif in kinds["backward"]) == (kind == "snn")
    assert lif not in kinds["forward"] | kinds["backward"] or kind == "snn"
    if pooling is not None:  # None: an SNN's conv + max-pool, fused in one event-driven kernel on sparse inputs
        assert ("pooling" in kinds["forward"]) == pooling
    # every layer of the network, and only those (besides the parenthesised non-layers), in each pass and the floor
    for phase in ("forward", "backward", "floor"):
        named = {layer for layer in table.loc[table["phase"] == phase, "layer"] if not layer.startswith("(")}
        assert named == set(layers), phase
    first = table.iloc[0]
    assert first["floor_ms"] > 0 and first["step_ms"] > 0
    if dense:
        assert first["floor_ms"] < first["step_ms"]
    assert first["step_over_floor"] == pytest.approx(first["step_ms"] / first["floor_ms"])
    assert table["null_reason"].isna().all()


@pytest.mark.parametrize(
    "name, kind, pooling, kernels",
    [
        ("exp1_snn", "snn", False, True),
        ("exp1_ann", "ann", False, True),
        ("exp2_cnn", "ann", True, True),
        ("exp3_snn_mnist", "snn", True, False),  # the dense conv + max-pool (numba kernels off)
        ("exp3_snn_mnist", "snn", None, True),  # event-driven conv + max-pool: one kernel, below the dense floor
    ],
)
def test_profile_table_of_fc_and_conv_snns_and_anns(image_data, monkeypatch, name, kind, pooling, kernels):
    from spikebench.models import lif

    monkeypatch.setattr(lif, "CPU_KERNELS", kernels)
    table, layers = _profile(name, _data(name, image_data))
    check_table(table, layers, kind, pooling, dense=kernels is False or "conv" not in layers[0])
    floor = table[table["phase"] == "floor"]
    assert (floor["floor_forward_ms"] > 0).all() and (floor["floor_backward_ms"] > 0).all()
    if kind == "snn":  # the floor sees T*B samples, as spikebench's layers do
        spec = tiny_spec(name)
        assert floor["floor_input_shape"].iloc[0].startswith(f"{spec.num_steps * spec.batch_size}x")
        assert table["spiking_pct"].iloc[0] > 0
    else:
        assert table["spiking_pct"].iloc[0] == 0


def test_profile_of_the_nmnist_frame_path(image_data, nmnist_frames):
    data = _data("exp3_snn_nmnist", image_data, nmnist_frames)
    table, layers = _profile("exp3_snn_nmnist", data)
    check_table(table, layers, "snn", pooling=None, dense=False)
    x, _ = data.batch(torch.arange(4))
    assert table["time_steps"].iloc[0] == x.shape[0] > 1  # the batch's frames, densified in the data phase


def test_profile_of_the_snntorch_twin_finds_its_lif_in_plain_aten_ops(image_data):
    table, layers = _profile("exp1_snn_snntorch", image_data["mnist"])
    check_table(table, layers, "snn", pooling=False)
    lif = table[table["op_kind"] == "LIF recurrence"]
    assert set(lif["layer"]) == set(layers)  # snnTorch's Leaky: its backward nodes by their forward ops' layer


def test_the_profiled_step_is_train_step(image_data):
    """training_step (the phases marked) makes the same calls as spikebench.training.train_step: the same loss
    and, bitwise on the CPU, the same weights after one step."""
    spec, data = tiny_spec("exp1_snn"), image_data["mnist"]
    idx = torch.arange(spec.batch_size)
    results = []
    for marked in (False, True):
        torch.manual_seed(0)
        net = implementation_of(spec).build(spec)
        optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
        generator = torch.Generator().manual_seed(1)
        if marked:
            loss = training_step(net, optimizer, spec, data, idx, generator, ranges=True)
        else:
            x, n_steps = encode_batch(spec, data, idx, generator)
            loss, _ = train_step(net, optimizer, spec, x, data.labels[idx], n_steps)
        results.append((loss.item(), {k: v.clone() for k, v in net.state_dict().items()}))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in results[0][1])


def test_arithmetic_floor_for_the_benchmark(image_data):
    """arithmetic_floor(net, x): per layer and total seconds; the first layer without an input gradient."""
    spec, data = tiny_spec("exp1_snn"), image_data["mnist"]
    net = implementation_of(spec).build(spec)
    x, _ = encode_batch(spec, data, torch.arange(spec.batch_size), None)
    floor = arithmetic_floor(net, x, repeats=2)
    assert list(floor["layers"]) == ["fc1", "fc2", "fc3"]
    assert [v["input_grad"] for v in floor["layers"].values()] == [False, True, True]
    assert floor["layers"]["fc1"]["input_shape"] == [spec.num_steps * spec.batch_size, 784]
    assert floor["floor_s"] == pytest.approx(sum(v["floor_s"] for v in floor["layers"].values()))
    assert all(p.grad is None for p in net.parameters())


def test_op_kinds_of_profiler_names():
    """The names torch.profiler records: aten ops, autograd nodes, spikebench's Functions and ranges."""
    base = Context("forward", "fc1", "other", False)
    expect = {
        "aten::addmm": "matmul/conv",
        "aten::mm": "matmul/conv",
        "autograd::engine::evaluate_function: MmBackward0": "matmul/conv",
        "aten::mkldnn_convolution": "matmul/conv",
        "aten::convolution_backward": "matmul/conv",
        "ConvPoolFunction": "matmul/conv",
        "aten::max_pool2d_with_indices_backward": "pooling",
        "LeakyFunction": "LIF recurrence",
        "autograd::engine::evaluate_function: LeakyFunctionBackward": "LIF recurrence",
        "spikebench.lif": "LIF recurrence",
        "aten::mse_loss": "loss",
        "aten::nll_loss_backward": "loss",
        "Optimizer.step#Adam.step": "optimiser",
        "aten::_foreach_mul_": "optimiser",
        "aten::relu": "ReLU/dropout",
        "aten::empty": "other",
        "aten::sum": "other",
        "aten::mul": "other",
    }
    assert {name: classify(name, base).kind for name in expect} == expect
    lif = classify("spikebench.lif", base)
    assert classify("aten::mm", lif).kind == "LIF recurrence"  # inside a sticky range everything is its kind
    assert classify("spikebench.layer:conv2", base).layer == "conv2"


def test_profile_job_and_summary_from_a_weights_file(image_data, tmp_path):
    """Rule profile's job on a weights file as rule train writes it, then rule profile_summary's table and figure."""
    from spikebench.profiling.job import profile_job
    from spikebench.profiling.report import kind_column, write_profile_summary

    spec = tiny_spec("exp1_snn")
    net = implementation_of(spec).build(spec)
    weights = tmp_path / "weights.pt"
    atomic.save_torch(
        {"network": "exp1_snn", "spec": spec.to_dict(), "epoch": 1, "state_dict": net.state_dict()}, weights
    )
    out = tmp_path / "exp1_snn" / "profile.parquet"

    profile_job(
        "exp1_snn",
        spec,
        inputs={"weights": str(weights)},
        output=out,
        data_root=image_data["root"],
        which="last",
        seed=0,
        device="cpu",
        profile={"repeats": 2, "warmup_steps": 1},
        log=logging.getLogger("test"),
        data_source="demo",
    )
    table = pd.read_parquet(out)
    check_table(table, ["fc1", "fc2", "fc3"], "snn", pooling=False, dense=False)  # the job's plumbing, not timing
    outputs = {"table": tmp_path / "profile.csv", "png": tmp_path / "profile.png", "svg": tmp_path / "profile.svg"}
    summary = write_profile_summary({"exp1_snn": out}, outputs, demo=True)
    assert summary[[kind_column(k) for k in KINDS]].sum(axis=1).iloc[0] == pytest.approx(100.0)
    csv = pd.read_csv(outputs["table"])
    assert csv["data"].eq("DEMO DATA").all() and csv["step_over_floor"].iloc[0] > 0
    assert "DEMO DATA" in outputs["svg"].read_text() and outputs["png"].stat().st_size > 0


@pytest.mark.slow  # runs Snakemake (a dry run, ~10-20 s): the full lane only
def test_profile_rules_are_in_the_demo_dag(workflow_dir):
    """A dry run of the demo: one profile job per configured network (the first seed of each) and the summary."""
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", "--configfile", "config.demo.yaml"),
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    stats = dict(re.findall(r"^(profile\w*)\s+(\d+)$", run.stdout, re.M))
    networks = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")["networks"]
    assert stats == {"profile": str(len(networks)), "profile_summary": "1"}
    assert "results-demo/exp1_snn/profile.parquet" in run.stdout
    assert "results-demo/figures/profile.svg" in run.stdout


@pytest.mark.slow  # the whole demo (shared with tests/test_workflow.py's demo_run)
def test_demo_profiles_every_network(demo_run):
    """The demo writes a profile of every configured network and the report's figure and table."""
    results = demo_run / "results-demo"
    networks = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")["networks"]
    for network, entry in networks.items():
        table = pd.read_parquet(results / network / "profile.parquet")
        assert table["null_reason"].isna().all() and table["step_ms"].iloc[0] > 0, network
        assert ("LIF recurrence" in set(table["op_kind"])) == (entry["kind"] == "snn"), network
    summary = pd.read_csv(results / "tables" / "profile.csv")
    assert set(summary["network"]) == set(networks) and (summary["data"] == "DEMO DATA").all()
    assert (results / "figures" / "profile.svg").stat().st_size > 10_000


def test_a_run_without_weights_has_null_times_and_a_reason_never_zeros(tmp_path):
    """A training that ran out of memory: one row of nulls with the reason; the summary keeps them null and the
    figure writes the reason in place of a bar."""
    from spikebench.profiling.job import _not_measured
    from spikebench.profiling.report import kind_column, write_profile_summary

    table = _not_measured("exp2_cnn", tiny_spec("exp2_cnn"), "training ran out of memory")
    assert list(table.columns) == list(COLUMNS) and table["time_ms"].isna().all()
    path = tmp_path / "profile.parquet"
    atomic.write_parquet(table, path)
    outputs = {"table": tmp_path / "p.csv", "png": tmp_path / "p.png", "svg": tmp_path / "p.svg"}
    summary = write_profile_summary({"exp2_cnn": path}, outputs)
    assert summary[["step_ms", "floor_ms", kind_column("matmul/conv")]].isna().all(axis=None)
    assert summary["null_reason"].iloc[0] == "training ran out of memory"
    assert "not profiled" in outputs["svg"].read_text()
