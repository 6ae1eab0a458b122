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


# ---- names and folders the schema used to let through


def _schema_patterns(node, where=""):
    """(where, pattern) of every `pattern` in the schema, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern":
                yield where, value
            else:
                yield from _schema_patterns(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schema_patterns(value, f"{where}[{i}]")


def test_every_schema_pattern_refuses_a_trailing_newline():
    """jsonschema matches with Python's re.search, where `$` also matches before a final newline."""
    import re

    from spikebench.config import load_schema

    patterns = list(_schema_patterns(load_schema()))
    assert len(patterns) >= 6  # device, data.root, results, network/sweep/energy-model names, ...
    for where, pattern in patterns:
        assert pattern.startswith("^") and pattern.endswith("(?!\\n)$"), where
        assert re.search(pattern, "a1\n") is None and re.search(pattern, "cpu\n") is None, where


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"device": "cpu\n"}, "config key 'device': value 'cpu\\n' does not match"),
        ({"device": "cuda:0\n"}, "config key 'device': value 'cuda:0\\n' does not match"),
        ({"results": "results\n"}, "config key 'results': value 'results\\n' does not match"),
        ({"data": {"root": "data\n", "source": "download"}}, "config key 'data.root': value 'data\\n' does not match"),
        (
            {"sweeps": {"t\n": {"networks": ["exp1_snn"], "num_steps": [5]}}},
            "config key 'sweeps': name 't\\n' does not match",
        ),
        (
            {"energy_model": {"name": "chip", "custom": {"chip\n": {"mac_pj": 1, "ac_pj": 1}}}},
            "config key 'energy_model.custom': name 'chip\\n' does not match",
        ),
    ],
)
def test_a_value_or_name_with_a_trailing_newline_is_refused(config, change, expected):
    bad = {**copy.deepcopy(config), **change}
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert expected in str(err.value)
    assert "nothing may follow, not even a newline" in str(err.value)


def test_a_network_id_with_a_trailing_newline_is_refused(config):
    bad = copy.deepcopy(config)
    bad["networks"]["exp1_x\n"] = bad["networks"]["exp1_ann"]
    with pytest.raises(ConfigError, match=r"config key 'networks': name 'exp1_x\\n' does not match"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["implementations"]["snntorch"] = ["exp1_snn\n"]
    with pytest.raises(ConfigError, match=r"'implementations.snntorch.0': value 'exp1_snn\\n' does not match"):
        validate_config(bad)


@pytest.mark.parametrize(
    "results, root, expected",
    [
        ("/", "data", "'/' (resolved: /) is the file system root"),
        ("../../../../../../../../../..", "data", "is the file system root"),
        ("..", "data", "(resolved: {tmp}) is the working directory {tmp}/work or holds it"),
        (".", "data", "'.' (resolved: {tmp}/work) is the working directory"),
        ("data", "data", "'data' (resolved: {tmp}/work/data) is the data root, data.root 'data' (resolved: {tmp}/work"),
        ("./data/", "{tmp}/work/data", "is the data root, data.root '{tmp}/work/data'"),
        ("data/results", "data", "(resolved: {tmp}/work/data/results) is inside the data root, data.root 'data'"),
        ("out", "out/data", "'out' (resolved: {tmp}/work/out) holds the data root, data.root 'out/data' (resolved:"),
        ("link", "data", "'link' (resolved: {tmp}/work/data) is the data root"),  # a symbolic link to it
    ],
)
def test_results_may_not_be_the_root_the_data_root_or_hold_or_lie_in_it(
    config, tmp_path, monkeypatch, results, root, expected
):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "link").symlink_to(work / "data")
    monkeypatch.chdir(work)
    tmp = str(tmp_path.resolve())
    bad = {**copy.deepcopy(config), "results": results.format(tmp=tmp)}
    bad["data"] = {**bad["data"], "root": root.format(tmp=tmp)}
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert "config key 'results': " in str(err.value)
    assert expected.format(tmp=tmp) in str(err.value)
    for results, root in (("results", "data"), ("results-demo", "data-demo"), (str(tmp_path / "r"), "/elsewhere/d")):
        validate_config({**config, "results": results, "data": {**config["data"], "root": root}})  # separate: fine
