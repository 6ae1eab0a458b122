"""`implementation: snntorch` beside spikebench's: same weights and spikes give the same losses; it trains; config."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import snntorch
import torch
import yaml

from spikebench import provenance, results
from spikebench.config import ConfigError, load_config, validate_config
from spikebench.implementation import implementation_of
from spikebench.models import SNN, NetworkSpecError
from spikebench.models.snntorch_twin import SnnTorchSNN

PROJECT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((PROJECT / "config.yaml").read_text())
NETWORKS = CONFIG["networks"]
CPU = torch.device("cpu")


def _inputs(spec: dict, shape, n_steps: int, batch: int, gen: torch.Generator):
    """One batch of input spikes and labels; N-MNIST-like sparse frames with two shorter (padded) samples."""
    if spec["dataset"] == "nmnist":
        x = (torch.rand(n_steps, batch, *shape, generator=gen) < 0.05).float()
        lengths = torch.full((batch,), n_steps)
        lengths[:2] = n_steps - 3
        x[n_steps - 3 :, :2] = 0.0  # padding frames are empty, as DeviceFrames makes them
        return x, lengths, torch.randint(0, 10, (batch,), generator=gen)
    x = (torch.rand(n_steps, batch, *shape, generator=gen) < 0.3).float()
    return x, None, torch.randint(0, 10, (batch,), generator=gen)


def _trajectory(spec: dict, name: str, n_steps: int, steps: int = 5) -> list[float]:
    """Losses of ``steps`` Adam steps from the seed-0 initialisation, the same input spikes for both sides."""
    impl = implementation_of(spec)
    torch.manual_seed(0)
    net = impl.build(spec, name).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=float(spec["lr"]))
    gen = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(steps):
        x, lengths, y = _inputs(spec, net.input_shape, n_steps, 16, gen)
        loss = impl.loss(spec, net(x), y, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name,n_steps", [("exp1_snn", 10), ("exp3_snn_mnist", 10), ("exp3_snn_nmnist", 8)])
def test_same_weights_and_spikes_give_the_same_loss_trajectory(name: str, n_steps: int) -> None:
    spec = {k: v for k, v in NETWORKS[name].items() if k != "implementation"}
    ours = _trajectory({**spec, "implementation": "spikebench"}, name, n_steps)
    theirs = _trajectory({**spec, "implementation": "snntorch"}, name, n_steps)
    assert len(set(ours)) > 1  # the weights moved: later losses differ
    np.testing.assert_allclose(theirs, ours, rtol=1e-5)


def test_snntorch_twin_uses_snntorch_layers_and_the_same_initial_weights() -> None:
    spec = NETWORKS["exp3_snn_mnist"]
    torch.manual_seed(5)
    ours = implementation_of(spec).build(spec, "exp3_snn_mnist")
    after_ours = torch.rand(3)
    torch.manual_seed(5)
    twin = implementation_of({**spec, "implementation": "snntorch"}).build(spec, "exp3_snn_mnist")
    after_twin = torch.rand(3)
    assert isinstance(ours, SNN) and isinstance(twin, SnnTorchSNN)
    assert torch.equal(after_ours, after_twin)  # building the twin draws no extra random numbers
    assert all(isinstance(s.lif, snntorch.Leaky) for s in twin.stages)
    assert [type(s.synapse) for s in twin.stages] == [torch.nn.Conv2d, torch.nn.Conv2d, torch.nn.Linear]
    for a, b in zip(ours.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_snntorch_rate_coding_is_spikegen_rate() -> None:
    spec = {**NETWORKS["exp1_snn"], "implementation": "snntorch"}
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(11)
    ours = implementation_of(spec).rate_code(x, 7, None)
    torch.manual_seed(11)
    assert torch.equal(ours, snntorch.spikegen.rate(x, num_steps=7))


def test_train_network_with_snntorch_learns_demo_mnist(tmp_path: Path) -> None:
    from spikebench.data.demo import make_demo_mnist
    from spikebench.data.device import DeviceImages
    from spikebench.training import train_network

    splits = make_demo_mnist(tmp_path / "data", n_test=500, seed=0)
    images, labels = (torch.from_numpy(np.ascontiguousarray(a)) for a in splits["train"])
    images = images[:, None] if images.dim() == 3 else images
    train = DeviceImages(images[:1536], labels[:1536], name="train", source="demo train[:1536]")
    val = DeviceImages(images[1536:2048], labels[1536:2048], name="val", source="demo train[1536:2048]")
    spec = {**NETWORKS["exp1_snn"], "implementation": "snntorch", "epochs": 1, "num_steps": 10}
    table = train_network(
        spec,
        train,
        val,
        network_id="exp1_snn_snntorch",
        device=CPU,
        seed=0,
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "e.parquet",
        checkpoint_path=tmp_path / "c.pt",
    )
    assert table["val_acc"].iloc[0] > 0.5  # chance is 0.1
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert saved["spec"]["implementation"] == "snntorch"


def _config(**network) -> dict:
    config = yaml.safe_load((PROJECT / "config.yaml").read_text())
    config["networks"] = {"net": {**NETWORKS["exp1_ann"], **network}}
    return config


def test_ann_with_snntorch_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"networks\.net\.implementation.*ANN"):
        validate_config(_config(implementation="snntorch"))
    with pytest.raises(ConfigError, match=r"networks\.net\.implementation"):
        validate_config(
            _config(
                kind="snn",
                **{
                    k: NETWORKS["exp1_snn"][k]
                    for k in ("num_steps", "beta", "threshold", "surrogate", "correct_rate", "incorrect_rate")
                },
                implementation="norse",
            )
        )
    with pytest.raises(NetworkSpecError, match="for SNNs"):
        implementation_of({**NETWORKS["exp1_ann"], "implementation": "snntorch"})


def test_paper_config_twins_every_snn_and_the_demo_exp1_snn() -> None:
    """config `implementations`: a twin `<id>_snntorch` copies every setting of its SNN as the overlays left
    them (the demo's shrunk exp1_snn), with implementation: snntorch."""
    for config, twinned in (
        (load_config(PROJECT / "config.yaml"), ["exp1_snn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist"]),
        (load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml"), ["exp1_snn"]),
    ):
        nets = config["networks"]
        assert sorted(n for n in nets if n.endswith("_snntorch")) == sorted(f"{n}_snntorch" for n in twinned)
        for name in twinned:
            twin = nets[f"{name}_snntorch"]
            assert twin == {**nets[name], "implementation": "snntorch"}
    demo = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")["networks"]
    assert demo["exp1_snn_snntorch"]["num_steps"] == demo["exp1_snn"]["num_steps"] == 10  # the overlay's value


@pytest.mark.parametrize(
    "name, message",
    [
        ("exp1_ann", "'exp1_ann' is not an SNN (kind: ann)"),
        ("exp9_snn", "'exp9_snn' is not a network of `networks`"),
    ],
)
def test_twins_of_what_is_not_an_snn_are_config_errors(name: str, message: str) -> None:
    from spikebench.config import ConfigError, add_implementation_twins, merge, validate_config

    config = merge(load_config(PROJECT / "config.yaml"), {"implementations": {"snntorch": [name]}})
    add_implementation_twins(config)
    with pytest.raises(ConfigError, match=r"config key 'implementations.snntorch': " + re.escape(message)):
        validate_config(config)


def test_snntorch_networks_digest_their_module(tmp_path: Path, monkeypatch) -> None:
    """Editing models/snntorch_twin.py changes the code digest of snntorch networks only."""
    import shutil

    spec = NETWORKS["exp1_snn"]
    twin = {**spec, "implementation": "snntorch"}
    copy = tmp_path / "spikebench"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    before = [provenance.code_digest(s, stage) for s in (spec, twin) for stage in ("train", "evaluate")]
    assert before[0] != before[2]
    with open(copy / "models" / "snntorch_twin.py", "a") as fh:
        fh.write("\n# edited\n")
    after = [provenance.code_digest(s, stage) for s in (spec, twin) for stage in ("train", "evaluate")]
    assert after[:2] == before[:2]  # spikebench's networks: unchanged
    assert after[2] != before[2] and after[3] != before[3]  # snntorch's: both stages rerun
    with open(copy / "kernels" / "lif.py", "a") as fh:  # spikebench's CPU kernels: not run by the twin
        fh.write("\n# edited\n")
    assert [provenance.code_digest(twin, stage) for stage in ("train", "evaluate")] == after[2:]
    assert provenance.code_digest(spec, "train") != after[0]


def _with_twins(networks: dict) -> dict:
    out = {}
    for name, spec in networks.items():
        out[name] = spec
        if spec["kind"] == "snn":
            out[f"{name}_snntorch"] = {**spec, "implementation": "snntorch"}
    return out


def test_tables_have_an_implementation_column_and_ratios_per_implementation(tmp_path: Path) -> None:
    from test_results import STUDY_NETWORKS, write_fake_run

    networks = _with_twins(STUDY_NETWORKS)
    run = write_fake_run(tmp_path / "results", networks)
    epochs = {n: results.read_epochs(run / n / "epochs.parquet") for n in networks}
    tests = {n: results.read_test(run / n / "test.json") for n in networks}
    t1, t2 = results.table1(epochs, networks), results.table2(tests, networks)
    for table in (t1, t2):
        got = dict(zip(table["network"], table["implementation"]))
        assert got == {n: s.get("implementation", "spikebench") for n, s in networks.items()}
    labels = {n: results.network_label(n, networks) for n in networks}
    for experiment in (1, 2, 3):  # figures key their colours by label
        same = [labels[n] for n, s in networks.items() if s["experiment"] == experiment]
        assert len(set(same)) == len(same)
    assert labels["exp1_snn_snntorch"] == "SNN (snnTorch)" and labels["exp1_snn"] == "SNN"

    cost = results.cost_of_spiking(t1, results.load_paper_values(), networks)
    time = cost[cost["metric"] == "avg_epoch_time_s"].set_index(["experiment", "implementation"])
    by_net = t1.set_index("network")["avg_epoch_time_s"]
    expected = {
        (1, "spikebench"): ("exp1_snn", "exp1_ann"),
        (1, "snntorch"): ("exp1_snn_snntorch", "exp1_ann"),
        (2, "spikebench"): ("exp2_snn", "exp2_cnn"),
        (2, "snntorch"): ("exp2_snn_snntorch", "exp2_cnn"),
        (3, "spikebench"): ("exp3_snn_nmnist", "exp3_snn_mnist"),
        (3, "snntorch"): ("exp3_snn_nmnist_snntorch", "exp3_snn_mnist_snntorch"),
    }
    assert sorted(time.index) == sorted(expected)  # no pair across implementations
    for key, (num, den) in expected.items():
        row = time.loc[key]
        assert (row["numerator"], row["denominator"]) == (num, den)
        assert row["run_ratio"] == pytest.approx(by_net[num] / by_net[den])
    assert time.loc[(1, "snntorch"), "comparison"] == "SNN (snnTorch) / ANN"


def test_snntorch_training_is_reproducible_and_the_warm_up_leaves_no_trace(tmp_path: Path) -> None:
    """spikegen.rate draws from the global RNG: the seed fixes it, and the warm-up restores it."""
    from spikebench.data.device import DeviceImages
    from spikebench.training import train_network

    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(320, 1, 28, 28, generator=gen) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (320,), generator=gen)
    train = DeviceImages(images[:256], labels[:256], name="train", source="random")
    val = DeviceImages(images[256:], labels[256:], name="val", source="random")
    spec = {**NETWORKS["exp1_snn"], "implementation": "snntorch", "epochs": 1, "num_steps": 4, "batch_size": 64}

    def weights(run: str, warmup: int) -> dict:
        folder = tmp_path / run
        train_network(
            spec,
            train,
            val,
            network_id="exp1_snn_snntorch",
            device=CPU,
            seed=3,
            weights_out=folder / "w.pt",
            epochs_out=folder / "e.parquet",
            checkpoint_path=folder / "c.pt",
            warmup_steps=warmup,
        )
        return torch.load(folder / "w.pt", weights_only=True)["state_dict"]

    first, again, warmed = weights("a", 0), weights("b", 0), weights("c", 2)
    for key in first:
        assert torch.equal(first[key], again[key]) and torch.equal(first[key], warmed[key]), key


def test_snntorch_evaluation_is_seeded(tmp_path: Path) -> None:
    """spikegen.rate draws from the global RNG, so evaluation seeds it: the same weights and seed give the same
    test metrics whatever the process drew before."""
    from spikebench.data.device import DeviceImages
    from spikebench.evaluation import evaluate_network
    from spikebench.training import train_network

    gen = torch.Generator().manual_seed(1)
    images = (torch.rand(200, 1, 28, 28, generator=gen) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (200,), generator=gen)
    train = DeviceImages(images[:128], labels[:128], name="train", source="random")
    test = DeviceImages(images[128:], labels[128:], name="test", source="random")
    spec = {**NETWORKS["exp1_snn"], "implementation": "snntorch", "epochs": 1, "num_steps": 4, "batch_size": 64}
    train_network(
        spec,
        train,
        None,
        network_id="exp1_snn_snntorch",
        device=CPU,
        seed=0,
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "e.parquet",
        checkpoint_path=tmp_path / "c.pt",
    )
    runs = []
    for draws in (0, 1000):
        torch.rand(draws)  # what else the process drew before
        runs.append(evaluate_network(tmp_path / "w.pt", spec, test, network_id="exp1_snn_snntorch", device=CPU, seed=0))
    assert runs[0]["confusion_matrix"] == runs[1]["confusion_matrix"]
