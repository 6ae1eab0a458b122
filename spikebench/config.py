"""The workflow's configuration: loading, merging overlays and validation against the schema.

`validate_config` is what `rules/common.smk` runs when the workflow starts, so a wrong type,
an unknown network kind or dataset, a non-positive epoch count, a validation fraction outside
(0, 1) or a misspelt key stops the run before any job starts, with a message naming the key.
So does a `results` folder that is the file system root, holds the working directory, or is, holds or lies
inside the data root (`location_errors`), and an input too small for its network's convolutions
(`geometry_errors`, pure arithmetic on the config: building the DAG imports no torch).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from spikebench.data.catalog import DATASET_SHAPES

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
    """Load one or more YAML files, later ones overriding earlier ones, add the implementation twins
    (:func:`add_implementation_twins`), and validate the result, as the workflow does."""
    config: dict = {}
    for path in paths:
        with open(path) as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        config = merge(config, loaded)
    add_implementation_twins(config)
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
    if error.validator == "pattern":
        # A name under `networks`, `sweeps`, ... comes through propertyNames: the error's path is the parent's.
        what = "name" if "propertyNames" in error.schema_path else "value"
        return (
            f"config key {_key(where)!r}: {what} {error.instance!r} does not match {error.validator_value!r} "
            "(the whole string: nothing may follow, not even a newline)"
        )
    return f"config key {_key(where)!r}: {error.message}"


def config_errors(config: dict, schema: dict | None = None) -> list[str]:
    """Every schema violation of `config`, one message per violation, each naming its key."""
    schema = schema if schema is not None else load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_describe(e) for e in errors]


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

    The spatial size goes through the conv + max-pool stack as ``spikebench.models.tied_conv.conv_stack`` computes it:
    ``size -> (size + 2 * padding - 5 + 1) // 2`` per layer, which must stay >= 1; N-MNIST frames cannot be
    resized; a conv architecture needs one channel width per layer.
    """
    problems = []
    for name, spec in networks.items():
        dataset, arch, size = spec.get("dataset"), spec.get("architecture"), spec.get("input_size")
        channels, height, _ = DATASET_SHAPES[dataset]
        if size is not None and dataset == "nmnist" and size != height:
            problems.append(
                f"config key 'networks.{name}.input_size': N-MNIST frames are {height}x{height}; "
                f"input_size {size} is not supported (leave it out)"
            )
            continue
        if arch not in CONV_STACKS:
            continue
        n_layers, padding = CONV_STACKS[arch]
        if len(spec.get("channels", [])) != n_layers:
            problems.append(
                f"config key 'networks.{name}.channels': architecture {arch} needs {n_layers} "
                f"channel widths, got {spec.get('channels')}"
            )
        side = height if size is None else size
        empty = _empty_layer(side, n_layers, padding)
        if empty is not None:
            layer, got, conv = empty
            fits = next(s for s in range(side, 10 * 5**n_layers) if _empty_layer(s, n_layers, padding) is None)
            reached = (
                f"smaller than its 5x5 kernel (padding {padding})"
                if conv < 1
                else f"its conv gives {conv}x{conv}, too small for the 2x2 max-pool"
            )
            problems.append(
                f"config key 'networks.{name}': input {channels}x{side}x{side} is too small for architecture "
                f"{arch} ({n_layers} x 5x5 conv, padding {padding}, + 2x2 max-pool): layer {layer} gets a "
                f"{got}x{got} map, {reached}; the smallest input_size that fits is {fits}"
            )
    return problems


def implementation_errors(networks: dict) -> list[str]:
    """One message per ANN set to ``implementation: snntorch`` (snnTorch's neurons are for SNNs only)."""
    return [
        f"config key 'networks.{name}.implementation': 'snntorch' runs an SNN's neurons with snnTorch, "
        f"but {name} is an ANN (kind: ann); set implementation: spikebench or leave the key out"
        for name, spec in networks.items()
        if spec.get("implementation") == "snntorch" and spec.get("kind") != "snn"
    ]


#: Implementations a network can be twinned with (config ``implementations``), and the twin's id suffix.
TWIN_IMPLEMENTATIONS = ("snntorch",)


def twin_id(network: str, implementation: str) -> str:
    return f"{network}_{implementation}"


def add_implementation_twins(config: dict) -> None:
    """Add to ``config["networks"]`` the twin of every network listed under ``implementations.<name>``:
    ``<id>_<name>``, a copy of all of the network's settings (as overlays left them) with
    ``implementation: <name>``. Run before :func:`validate_config`, which reports a listed name that is
    not an SNN of the config (``twin_errors``); what is not well-formed is left to the schema check."""
    networks, wanted = config.get("networks"), config.get("implementations") or {}
    if not isinstance(networks, dict) or not isinstance(wanted, dict):
        return
    for implementation in TWIN_IMPLEMENTATIONS:
        names = wanted.get(implementation) or []
        for name in names if isinstance(names, list) else []:
            spec = networks.get(name)
            if isinstance(spec, dict) and spec.get("kind") == "snn" and twin_id(name, implementation) not in networks:
                networks[twin_id(name, implementation)] = {**copy.deepcopy(spec), "implementation": implementation}


def twin_errors(config: dict) -> list[str]:
    """One message per name under ``implementations`` that is not an SNN of ``networks``."""
    networks = config["networks"]
    return [
        f"config key 'implementations.{implementation}': {name!r} is not "
        + ("an SNN (kind: ann)" if name in networks else "a network of `networks`")
        + f"; list SNN ids only (known: {sorted(n for n, s in networks.items() if s.get('kind') == 'snn')})"
        for implementation, names in (config.get("implementations") or {}).items()
        for name in names
        if networks.get(name, {}).get("kind") != "snn"
    ]


def location_errors(config: dict, base: str | Path | None = None) -> list[str]:
    """One message where ``results`` cannot be the results folder: the file system root, the working directory
    ``base`` (default: the current one, Snakemake's) or a folder holding it, the data root, a folder inside the
    data root or one holding it. Paths are compared resolved (relative to ``base``, symbolic links followed), so
    ``results: ../../..`` or a link to the data root is caught too; the message names both paths."""
    base = Path.cwd() if base is None else Path(base)
    given, root_given = config["results"], config["data"]["root"]
    results, data, work = (base / given).resolve(), (base / root_given).resolve(), base.resolve()
    key = f"config key 'results': {given!r} (resolved: {results})"
    data_key = f"data.root {root_given!r} (resolved: {data})"
    if results == Path(results.anchor):
        return [f"{key} is the file system root; give results a folder of its own (e.g. results)"]
    if results == work or results in work.parents:
        return [f"{key} is the working directory {work} or holds it; give results a folder of its own (e.g. results)"]
    if results == data:
        return [f"{key} is the data root, {data_key}; results and data need separate folders"]
    if data in results.parents:
        return [f"{key} is inside the data root, {data_key}; results and data need separate folders"]
    if results in data.parents:
        return [f"{key} holds the data root, {data_key}; results and data need separate folders"]
    return []


def validate_config(config: dict, schema: dict | None = None, source: str = "config") -> None:
    """Raise `ConfigError` listing every problem, or return None when the config is valid.

    The schema first; once it holds, where the results go (`location_errors`), the networks' geometry
    (`geometry_errors`) and implementations (`implementation_errors`), then the sweeps' variants (`sweep_errors`).
    """
    problems = (
        config_errors(config, schema)
        or (
            location_errors(config)
            + geometry_errors(config["networks"])
            + implementation_errors(config["networks"])
            + twin_errors(config)
        )
        or sweep_errors(config, schema)
    )
    if problems:
        raise ConfigError(f"invalid {source}:\n  - " + "\n  - ".join(problems))


# ---- runs: the base networks, their sweep variants, each times its seeds ---------------------------

#: Settings a sweep may not vary: they say which study network a variant belongs to.
UNSWEEPABLE = ("experiment", "dataset", "kind")


def value_token(value: Any) -> str:
    """A swept value as it appears in a variant id: 50, 0.001, true, 8_16_32 (lists), snntorch."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "_".join(value_token(v) for v in value)
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def variant_id(base: str, key: str, value: Any) -> str:
    """The stable, readable id of `base` with `key` set to `value`, e.g. ``exp1_snn-num_steps50``."""
    return f"{base}-{key}{value_token(value)}"


def _network_repeats(config: dict, spec: dict) -> int:
    return int(spec.get("repeats", config.get("repeats", 1)))


def _variants(config: dict) -> dict[str, dict]:
    """variant id -> {base, sweep, setting, value, spec}: every point of every sweep that differs from its base.

    A point equal to the base's own value is the base network itself (no second run of the same spec)."""
    variants: dict[str, dict] = {}
    for sweep, entry in (config.get("sweeps") or {}).items():
        ((key, values),) = ((k, v) for k, v in entry.items() if k != "networks")
        for base in entry["networks"]:
            spec = config["networks"][base]
            for value in values:
                if spec.get(key) == value:
                    continue
                vid = variant_id(base, key, value)
                variants.setdefault(
                    vid,
                    {
                        "base": base,
                        "sweep": sweep,
                        "setting": key,
                        "value": value,
                        "spec": {**copy.deepcopy(spec), key: copy.deepcopy(value)},
                    },
                )
    return variants


def sweep_errors(config: dict, schema: dict | None = None) -> list[str]:
    """One message per sweep that names an unknown network or setting, or whose variant is invalid.

    Each variant spec (a copy of every setting of its base with the swept key replaced) is validated
    against the schema's network definition and the geometry check, exactly like a base entry."""
    schema = schema if schema is not None else load_schema()
    known = set(schema["$defs"]["network"]["properties"]) - set(UNSWEEPABLE) - {"repeats"}
    problems = []
    for sweep, entry in (config.get("sweeps") or {}).items():
        key = next(k for k in entry if k != "networks")
        if key not in known:
            problems.append(
                f"config key 'sweeps.{sweep}.{key}': not a setting a sweep can vary "
                f"(one of: {', '.join(sorted(known))})"
            )
        for base in entry["networks"]:
            if base not in config["networks"]:
                problems.append(
                    f"config key 'sweeps.{sweep}.networks': unknown network {base!r} "
                    f"(networks: {', '.join(config['networks'])})"
                )
    if problems:
        return problems
    network_schema = {**schema["$defs"]["network"], "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator(network_schema)
    for vid, variant in _variants(config).items():
        where = f"sweeps.{variant['sweep']}.{variant['setting']}"
        for error in validator.iter_errors(variant["spec"]):
            problems.append(f"config key {where!r}: variant {vid}: {error.message}")
        problems += [f"config key {where!r}: variant {vid}: {p}" for p in geometry_errors({vid: variant["spec"]})]
    return problems


def expand_runs(config: dict) -> dict[str, dict]:
    """run id -> what its train and evaluate jobs get: the base networks and the sweep variants, each x seeds.

    Each value is ``{network, base, sweep, setting, value, seed, spec}``: ``network`` is the base or
    variant id, ``spec`` every setting of the base network (the swept one replaced, ``repeats`` removed),
    ``seed`` its training seed. With N repeats the seeds are ``seed .. seed+N-1``: the first one's run id is
    the network id (``results/<network>/``, as with one repeat and as the study's six networks always had),
    the others' ``<network>-seed<k>`` (``results/<network>-seed<k>/``), so raising N adds only the new
    seeds' jobs and the first seed's results stay valid."""
    seed = int(config["seed"])
    networks = {
        name: {"base": name, "sweep": None, "setting": None, "value": None, "spec": spec}
        for name, spec in config["networks"].items()
    }
    runs: dict[str, dict] = {}
    for name, entry in {**networks, **_variants(config)}.items():
        repeats = _network_repeats(config, entry["spec"])
        spec = {k: v for k, v in entry["spec"].items() if k != "repeats"}
        for k in range(seed, seed + repeats):
            run_id = name if k == seed else f"{name}-seed{k}"
            runs[run_id] = {**entry, "network": name, "seed": k, "spec": spec}
    return runs


# ---- run ids as a pattern: the `network` wildcard of rules/common.smk ------------------------------

#: The characters of a run id: a network id (letters, digits, ``_``), a sweep variant's ``-<setting><value>``
#: (value_token: digits, letters, ``.``, ``_`` of a list, ``-``/``+`` of an exponent: 0.002, 1e-05, 8_16_32,
#: snntorch) and a repeat's ``-seed<k>``. Never ``/``: a run id wildcard never reaches into another folder.
RUN_ID_CHARS = "A-Za-z0-9_.+-"


def run_id_pattern(reserved: Iterable[str] = ()) -> str:
    """The regex of a run id, which rules/common.smk constrains the ``network`` wildcard with.

    Its length does not grow with the number of runs (a list of every id did: each ``apply_wildcards`` of
    Snakemake cost time in proportion to it, and planning grew quadratically). A run id starts with a letter,
    holds only RUN_ID_CHARS and is none of `reserved` (the folders beside the runs' own in the results folder:
    ``data``, ``logs``, ``tables``, ...); :func:`run_id_errors` names the ids it would not match."""
    import re

    chars = f"[{RUN_ID_CHARS}]"
    names = "|".join(re.escape(name) for name in sorted(reserved))
    not_reserved = f"(?!(?:{names})(?!{chars}))" if names else ""
    return f"{not_reserved}[A-Za-z]{chars}*"


def run_id_errors(runs: Iterable[str], reserved: Iterable[str] = ()) -> list[str]:
    """One message per run id that :func:`run_id_pattern` does not match: a folder name of the results folder
    (its jobs' files would mix with that folder's), or a character outside RUN_ID_CHARS."""
    import re

    reserved = set(reserved)
    pattern = re.compile(run_id_pattern(reserved))
    problems = []
    for run_id in runs:
        if pattern.fullmatch(run_id):
            continue
        if run_id in reserved:
            why = f"is the name of a folder of the results folder ({', '.join(sorted(reserved))}): rename it"
        else:
            why = f"must start with a letter and hold only letters, digits and _ . + - ({RUN_ID_CHARS})"
        problems.append(f"run id {run_id!r} {why}")
    return problems
