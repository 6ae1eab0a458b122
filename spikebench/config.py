"""The workflow's configuration: loading, merging overlays and validation against the schema.

`validate_config` is what `rules/common.smk` runs when the workflow starts, so a wrong type,
an unknown network kind or dataset, a non-positive epoch count, a validation fraction outside
(0, 1) or a misspelt key stops the run before any job starts, with a message naming the key.
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


def validate_config(config: dict, schema: dict | None = None, source: str = "config") -> None:
    """Raise `ConfigError` listing every problem, or return None when the config is valid."""
    problems = config_errors(config, schema)
    if problems:
        raise ConfigError(f"invalid {source}:\n  - " + "\n  - ".join(problems))
