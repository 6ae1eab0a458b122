"""spikebench.spec: the typed network spec built once from a run's config entry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from spikebench.config import expand_runs, load_config, load_schema
from spikebench.spec import NetworkSpec, NetworkSpecError, as_spec

PROJECT = Path(__file__).resolve().parents[1]
NETWORKS = yaml.safe_load((PROJECT / "config.yaml").read_text())["networks"]


def test_fields_are_the_schema_network_settings() -> None:
    """A setting added to the schema must get a typed field (and one removed, lose it)."""
    settings = set(load_schema()["$defs"]["network"]["properties"])
    fields = {f.name for f in dataclasses.fields(NetworkSpec)} - {"name", "entry"}
    assert fields == settings


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_to_dict_gives_back_the_entry(network: str) -> None:
    entry = NETWORKS[network]
    spec = NetworkSpec.from_config(entry, network)
    assert spec.to_dict() == entry
    assert json.dumps(spec.to_dict(), sort_keys=True) == json.dumps(entry, sort_keys=True)  # what fingerprints hash
    assert spec.name == network and spec.kind == entry["kind"] and spec.batch_size == entry["batch_size"]
    assert spec.to_dict() is not spec.to_dict()  # a copy: the frozen spec cannot be changed through it


def test_every_run_of_the_config_builds() -> None:
    config = load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")
    for run_id, run in expand_runs(config).items():
        spec = NetworkSpec.from_config(run["spec"], run_id)
        assert spec.to_dict() == run["spec"]


def test_absent_keys_take_the_schema_defaults() -> None:
    properties = load_schema()["$defs"]["network"]["properties"]
    entry = {k: v for k, v in NETWORKS["exp1_snn"].items() if k not in ("implementation", "dropout")}
    spec = NetworkSpec.from_config(entry, "exp1_snn")
    assert spec.implementation == properties["implementation"]["default"] == "spikebench"
    assert spec.dropout == float(properties["dropout"]["default"]) and isinstance(spec.dropout, float)
    assert spec.input_size is None and spec.fc is None  # no default in the schema: None
    assert "implementation" not in spec.to_dict() and "dropout" not in spec.to_dict()  # nothing added


def test_types() -> None:
    spec = NetworkSpec.from_config({**NETWORKS["exp2_snn"], "lr": 1}, "exp2_snn")
    assert spec.lr == 1.0 and isinstance(spec.lr, float)
    assert spec.channels == tuple(NETWORKS["exp2_snn"]["channels"]) and isinstance(spec.channels, tuple)
    assert spec.to_dict()["lr"] == 1  # the entry itself as it came
    hash(spec)  # frozen and hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lr = 2.0  # type: ignore[misc]


def test_input_shape_from_the_catalog_and_input_size() -> None:
    assert NetworkSpec.from_config(NETWORKS["exp1_snn"], "a").input_shape == (1, 28, 28)
    assert NetworkSpec.from_config(NETWORKS["exp2_cnn"], "a").input_shape == (3, 32, 32)
    assert NetworkSpec.from_config(NETWORKS["exp3_snn_mnist"], "a").input_shape == (1, 32, 32)
    assert NetworkSpec.from_config(NETWORKS["exp3_snn_nmnist"], "a").input_shape == (2, 34, 34)
    with pytest.raises(NetworkSpecError, match="n1: N-MNIST frames are 34x34; input_size 28"):
        _ = NetworkSpec.from_config({**NETWORKS["exp3_snn_nmnist"], "input_size": 28}, "n1").input_shape


def test_bad_entries_name_the_network_and_key() -> None:
    entry = NETWORKS["exp1_snn"]
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: missing key 'epochs'"):
        NetworkSpec.from_config({k: v for k, v in entry.items() if k != "epochs"}, "exp1_snn")
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: missing key 'beta'"):  # required for an SNN
        NetworkSpec.from_config({k: v for k, v in entry.items() if k != "beta"}, "exp1_snn")
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: unknown key 'num_step'"):
        NetworkSpec.from_config({**entry, "num_step": 5}, "exp1_snn")
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: key 'batch_size': 'big' is not of type 'integer'"):
        NetworkSpec.from_config({**entry, "batch_size": "big"}, "exp1_snn")
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: kind 'rnn': expected one of ann, snn"):
        NetworkSpec.from_config({**entry, "kind": "rnn"}, "exp1_snn")
    with pytest.raises(NetworkSpecError, match=r"exp1_snn: expected a mapping"):
        NetworkSpec.from_config(["kind"], "exp1_snn")  # type: ignore[arg-type]


def test_as_spec_passes_a_spec_through_and_ignores_extra_keys() -> None:
    spec = NetworkSpec.from_config(NETWORKS["exp1_ann"], "exp1_ann")
    assert as_spec(spec) is spec
    assert as_spec(spec, "other").name == "other" and as_spec(spec, "other").to_dict() == spec.to_dict()
    # a benchmark's entry: its name under _name and keys that are no network setting
    loose = as_spec({**NETWORKS["exp1_ann"], "_name": "bench", "denoise_filter_us": 10000})
    assert loose.name == "bench" and loose == dataclasses.replace(spec, name="bench")
    with pytest.raises(NetworkSpecError, match="unknown key 'denoise_filter_us'"):
        NetworkSpec.from_config({**NETWORKS["exp1_ann"], "denoise_filter_us": 10000}, "exp1_ann")
