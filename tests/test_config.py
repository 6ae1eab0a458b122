"""The configuration is validated before any job starts, and errors name the key."""

import copy
import subprocess

import pytest
import yaml

from conftest import PROJECT, snakemake_cmd
from spikebench.config import ConfigError, config_errors, load_config, merge, validate_config


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config(PROJECT / "config.yaml")


def test_default_and_demo_configs_are_valid(config):
    study = ["exp1_ann", "exp1_snn", "exp2_cnn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist"]
    twins = [f"{n}_snntorch" for n in study if "snn" in n]  # each SNN also run by snnTorch's code path
    assert set(config["networks"]) == set(study + twins)
    assert [config["networks"][n]["epochs"] for n in study] == [20, 20, 30, 30, 10, 10]
    demo = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")
    assert demo["data"]["source"] == "demo" and demo["results"] != config["results"]
    assert demo["data"]["root"] != config["data"]["root"]
    # the overlay only overrides: untouched keys keep the study's values
    assert demo["networks"]["exp1_snn"]["beta"] == 0.8 and demo["networks"]["exp1_snn"]["lr"] == 1e-3


def _break(config, path, value):
    bad = copy.deepcopy(config)
    node = bad
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return bad


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("networks", "exp1_ann", "epochs"), "20", "networks.exp1_ann.epochs': '20' is not of type 'integer'"),
        (("networks", "exp1_ann", "lr"), "fast", "networks.exp1_ann.lr'"),
        (("networks", "exp1_snn", "kind"), "rnn", "networks.exp1_snn.kind': 'rnn' is not one of"),
        (("networks", "exp2_cnn", "dataset"), "imagenet", "networks.exp2_cnn.dataset': 'imagenet' is not one of"),
        (
            ("networks", "exp3_snn_mnist", "epochs"),
            0,
            "networks.exp3_snn_mnist.epochs': 0 is less than the minimum of 1",
        ),
        (("networks", "exp3_snn_mnist", "epochs"), -3, "networks.exp3_snn_mnist.epochs'"),
        (("split", "val_fraction"), 0.0, "split.val_fraction': 0.0 is less than or equal to the minimum of 0"),
        (("split", "val_fraction"), 1.2, "split.val_fraction': 1.2 is greater than or equal to the maximum of 1"),
        (("networks", "exp1_ann", "batch_sise"), 64, "networks.exp1_ann.batch_sise': unknown key"),
        (("nmnist", "time_windw_us"), 1000, "nmnist.time_windw_us': unknown key"),
        (("device",), "gpu", "device'"),
        (("networks", "exp1_snn", "beta"), KeyError, "networks.exp1_snn': 'beta' is a required property"),
        (("data", "source"), "internet", "data.source': 'internet' is not one of"),
    ],
)
def test_each_bad_value_is_reported_with_its_key(config, path, value, expected):
    bad = _break(config, path, value)
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert expected in str(err.value)


def test_all_problems_are_listed_at_once(config):
    bad = _break(_break(config, ("seed",), -1), ("networks", "exp2_snn", "epochs"), 0)
    assert len(config_errors(bad)) == 2


def test_merge_is_recursive():
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
@pytest.mark.parametrize(
    "overlay, key",
    [
        ({"networks": {"exp1_ann": {"epochs": -1}}}, "networks.exp1_ann.epochs"),
        ({"networks": {"exp2_snn": {"kind": "spiking"}}}, "networks.exp2_snn.kind"),
        ({"split": {"val_fraction": 1.5}}, "split.val_fraction"),
        ({"networks": {"exp1_ann": {"epoch": 3}}}, "networks.exp1_ann.epoch"),
    ],
)
def test_workflow_stops_before_any_job(workflow_dir, overlay, key):
    overlay_file = workflow_dir / "bad.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", "--configfile", "bad.yaml"),
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert key in out
    assert "Job stats" not in out and "rule train" not in out


# ---- geometry: an input too small for the convolutions stops the run before any job


@pytest.mark.parametrize(
    "network, change, expected",
    [
        (
            "exp3_snn_mnist",
            {"input_size": 8},
            "networks.exp3_snn_mnist': input 1x8x8 is too small for architecture "
            "conv2 (2 x 5x5 conv, padding 0, + 2x2 max-pool): layer 2 gets a 2x2 map, smaller than its 5x5 kernel",
        ),
        (
            "exp3_snn_mnist",
            {"input_size": 12},
            "layer 2 gets a 4x4 map, smaller than its 5x5 kernel (padding 0); the smallest input_size that fits is 16",
        ),
        (
            "exp2_cnn",
            {"dataset": "mnist"},
            "networks.exp2_cnn': input 1x28x28 is too small for architecture conv5 "
            "(5 x 5x5 conv, padding 2, + 2x2 max-pool): layer 5 gets a 1x1 map, its conv gives 1x1, too small for the "
            "2x2 max-pool; the smallest input_size that fits is 32",
        ),
        ("exp3_snn_nmnist", {"input_size": 32}, "networks.exp3_snn_nmnist.input_size': N-MNIST frames are 34x34"),
        ("exp3_snn_mnist", {"channels": [12, 32, 64]}, "networks.exp3_snn_mnist.channels': architecture conv2 needs 2"),
    ],
)
def test_an_input_too_small_for_the_architecture_is_a_config_error(config, network, change, expected):
    bad = copy.deepcopy(config)
    bad["networks"][network].update(change)
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert expected in str(err.value)


def test_geometry_check_agrees_with_the_network_builder():
    """The config's arithmetic and spikebench.models (which builds the layers) accept exactly the same inputs."""
    from spikebench import config as cfg
    from spikebench.models import DATASET_SHAPES, NetworkSpecError, build_network

    assert cfg.DATASET_SHAPES == DATASET_SHAPES
    base = yaml.safe_load((PROJECT / "config.yaml").read_text())["networks"]
    for network, channels in (("exp3_snn_mnist", [2, 2]), ("exp2_cnn", [2, 2, 2, 2, 2])):
        for size in range(8, 40):
            spec = {**base[network], "dataset": "mnist", "input_size": size, "channels": channels, "fc": 4}
            try:
                build_network(spec, network)
                builds = True
            except NetworkSpecError:
                builds = False
            assert (cfg.geometry_errors({network: spec}) == []) == builds, (network, size)


def test_workflow_stops_at_a_too_small_input_before_any_job(workflow_dir):
    (workflow_dir / "small.yaml").write_text(yaml.safe_dump({"networks": {"exp3_snn_mnist": {"input_size": 8}}}))
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "1", "--configfile", "small.yaml"),
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "networks.exp3_snn_mnist': input 1x8x8 is too small for architecture conv2" in out
    assert "layer 2 gets a 2x2 map" in out
    assert "Job stats" not in out and "rule train" not in out
