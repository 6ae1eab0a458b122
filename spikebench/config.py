"""The workflow's configuration: loading, merging overlays and validation against the schema.

`validate_config` is what `rules/common.smk` runs when the workflow starts, so a wrong type,
an unknown network kind or dataset, a non-positive epoch count, a validation fraction outside
(0, 1) or a misspelt key stops the run before any job starts, with a message naming the key.
So does an input too small for its network's convolutions (`geometry_errors`, pure arithmetic on the
config: building the DAG imports no torch).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = PROJECT_ROOT / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration does not match the schema; the message names every offending key."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def merge(base: dict, overlay: dict) -> dict:
    """Recursive dict update, the way Snakemake merges `--configfile` overlays."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*paths: Path | str) -> dict:
    """Load one or more YAML files, later ones overriding earlier ones, and validate the result."""
    config: dict = {}
    for path in paths:
        with open(path) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        config = merge(config, loaded)
    validate_config(config)
    return config


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        keys = ", ".join(repr(_key(where + [k])) for k in extra) or repr(_key(where))
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        return f"config key {keys}: unknown key{hint}"
    if error.validator == "required":
        return f"config key {_key(where)!r}: {error.message}"
    if error.validator == "propertyNames":
        return f"config key {_key(where + [error.instance])!r}: network ids must match ^[a-z][a-z0-9_]*$"
    return f"config key {_key(where)!r}: {error.message}"


def config_errors(config: dict, schema: dict | None = None) -> list[str]:
    """Every schema violation of `config`, one message per violation, each naming its key."""
    schema = schema if schema is not None else load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


#: (channels, height, width) of each dataset as stored: spikebench.models.DATASET_SHAPES (tests keep them equal).
DATASET_SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "nmnist": (2, 34, 34)}
#: architecture -> (5x5 convolutions, each + 2x2 max-pool; their padding), as spikebench.models builds them.
CONV_STACKS = {"conv5": (5, 2), "conv2": (2, 0)}


def _empty_layer(size: int, n_layers: int, padding: int) -> tuple[int, int, int] | None:
    """(layer, map size it gets, size after its conv) of the first conv + pool layer whose output is empty."""
    for layer in range(1, n_layers + 1):
        conv = size + 2 * padding - 5 + 1
        if conv // 2 < 1:
            return layer, size, conv
        size = conv // 2
    return None


def geometry_errors(networks: dict) -> list[str]:
    """One message per network whose input does not fit its architecture, computed from the config alone.

    The spatial size goes through the conv + max-pool stack as ``spikebench.models._conv_stack`` computes it:
    ``size -> (size + 2 * padding - 5 + 1) // 2`` per layer, which must stay >= 1; N-MNIST frames cannot be
    resized; a conv architecture needs one channel width per layer.
    """
    problems = []
    for name, spec in networks.items():
        dataset, arch, size = spec.get("dataset"), spec.get("architecture"), spec.get("input_size")
        channels, height, _ = DATASET_SHAPES[dataset]
        if size is not None and dataset == "nmnist" and size != height:
            problems.append(f"config key 'networks.{name}.input_size': N-MNIST frames are {height}x{height}; "
                            f"input_size {size} is not supported (leave it out)")
            continue
        if arch not in CONV_STACKS:
            continue
        n_layers, padding = CONV_STACKS[arch]
        if len(spec.get("channels", [])) != n_layers:
            problems.append(f"config key 'networks.{name}.channels': architecture {arch} needs {n_layers} "
                            f"channel widths, got {spec.get('channels')}")
        side = height if size is None else size
        empty = _empty_layer(side, n_layers, padding)
        if empty is not None:
            layer, got, conv = empty
            fits = next(s for s in range(side, 10 * 5 ** n_layers) if _empty_layer(s, n_layers, padding) is None)
            reached = (f"smaller than its 5x5 kernel (padding {padding})" if conv < 1
                       else f"its conv gives {conv}x{conv}, too small for the 2x2 max-pool")
            problems.append(
                f"config key 'networks.{name}': input {channels}x{side}x{side} is too small for architecture "
                f"{arch} ({n_layers} x 5x5 conv, padding {padding}, + 2x2 max-pool): layer {layer} gets a "
                f"{got}x{got} map, {reached}; the smallest input_size that fits is {fits}")
    return problems


def implementation_errors(networks: dict) -> list[str]:
    """One message per ANN set to ``implementation: snntorch`` (snnTorch's neurons are for SNNs only)."""
    return [f"config key 'networks.{name}.implementation': 'snntorch' runs an SNN's neurons with snnTorch, "
            f"but {name} is an ANN (kind: ann); set implementation: spikebench or leave the key out"
            for name, spec in networks.items()
            if spec.get("implementation") == "snntorch" and spec.get("kind") != "snn"]


def validate_config(config: dict, schema: dict | None = None, source: str = "config") -> None:
    """Raise `ConfigError` listing every problem, or return None when the config is valid.

    The schema first; once it holds, the networks' geometry (`geometry_errors`) and implementations
    (`implementation_errors`).
    """
    problems = config_errors(config, schema) or (geometry_errors(config["networks"])
                                                 + implementation_errors(config["networks"]))
    if problems:
        raise ConfigError(f"invalid {source}:\n  - " + "\n  - ".join(problems))
