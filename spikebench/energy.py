"""Energy per operation: the models of config ``energy_model`` and the estimate of joules per sample from counts.

The energy model (config ``energy_model``) turns counts into joules per sample:
``effective MACs * mac_pj + effective ACs * ac_pj + membrane updates * neuron_update_pj`` (1e-12 J per pJ), and
``dense ops * mac_pj`` for a dense implementation. The built-in figures are Horowitz's 45 nm, 0.9 V table
(M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, Fig. 1.1.9): add
fp32 0.9 pJ, mult fp32 3.7 pJ; fp16 add 0.4, mult 1.1; int8 add 0.03, mult 0.2; int32 add 0.1, mult 3.1 (pJ).
A MAC is a multiply plus an add. A membrane update (one LIF neuron at one time step, ``U <- beta * U + I``) is
one multiply (the decay) plus one add (the input current), so each built-in model prices it as one of its MACs
(fp32: 3.7 + 0.9 = 4.6 pJ); the threshold comparison and the reset are not counted. Memory accesses (weights,
membrane states, spikes) are not included, as in that table: the estimate is of arithmetic only. A custom model
without ``neuron_update_pj`` counts membrane updates at 0 pJ, and the table header says so
(:func:`membrane_update_text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_HOROWITZ = "Horowitz, ISSCC 2014, 45 nm 0.9 V"
_UPDATE = "membrane update = one mult (decay) + one add (input), as a MAC; threshold and reset not counted"
#: Built-in energy models: pJ per multiply-accumulate, per accumulate, per membrane update.
ENERGY_MODELS: dict[str, dict[str, Any]] = {
    "horowitz45_fp32": {
        "mac_pj": 4.6,
        "ac_pj": 0.9,
        "neuron_update_pj": 4.6,
        "source": f"{_HOROWITZ}: fp32 mult 3.7 + add 0.9 pJ; {_UPDATE}",
    },
    "horowitz45_fp16": {
        "mac_pj": 1.5,
        "ac_pj": 0.4,
        "neuron_update_pj": 1.5,
        "source": f"{_HOROWITZ}: fp16 mult 1.1 + add 0.4 pJ; {_UPDATE}",
    },
    "horowitz45_int8": {
        "mac_pj": 0.23,
        "ac_pj": 0.03,
        "neuron_update_pj": 0.23,
        "source": f"{_HOROWITZ}: int8 mult 0.2 + add 0.03 pJ; {_UPDATE}",
    },
    "horowitz45_int32": {
        "mac_pj": 3.2,
        "ac_pj": 0.1,
        "neuron_update_pj": 3.2,
        "source": f"{_HOROWITZ}: int32 mult 3.1 + add 0.1 pJ; {_UPDATE}",
    },
}


class EnergyModelError(ValueError):
    """An ``energy_model`` setting that names no model or defines one badly."""


def energy_settings(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config's ``energy_model`` mapping with the schema's defaults filled in (defaults live in the schema)."""
    if schema is None:
        from spikebench.config import load_schema

        schema = load_schema()
    properties = schema["properties"]["energy_model"]["properties"]
    given = config.get("energy_model") or {}
    return {key: given.get(key, spec.get("default")) for key, spec in properties.items()}


def energy_model(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The energy model that config ``energy_model`` selects: ``{name, mac_pj, ac_pj, neuron_update_pj, source}``.

    ``settings`` is ``{name: <model>, custom: {<model>: {mac_pj, ac_pj[, neuron_update_pj, source]}}}`` (None or
    missing keys: the schema's defaults); custom models are added to (and may replace) the built-in
    ``ENERGY_MODELS``.
    """
    settings = energy_settings({"energy_model": dict(settings or {})})
    name = settings["name"]
    models = {**ENERGY_MODELS, **(settings.get("custom") or {})}
    if name not in models:
        raise EnergyModelError(
            f"config key 'energy_model.name': {name!r} is no energy model; expected one of "
            f"{', '.join(sorted(models))} (or define it under energy_model.custom)"
        )
    model = dict(models[name])
    model.setdefault("neuron_update_pj", 0.0)
    for key in ("mac_pj", "ac_pj", "neuron_update_pj"):
        if not isinstance(model.get(key), (int, float)) or model[key] < 0:
            raise EnergyModelError(
                f"config key 'energy_model.custom.{name}.{key}': expected a number >= 0 "
                f"(picojoules per operation), got {model.get(key)!r}"
            )
    model.setdefault("source", "user-defined (config energy_model.custom)")
    return {"name": name, **model}


def membrane_update_text(model: Mapping[str, Any]) -> str:
    """How the model prices a membrane update, for table headers and captions; 0 pJ is said to be not counted."""
    pj = float(model.get("neuron_update_pj") or 0.0)
    return f"{pj:g} pJ per membrane update" if pj > 0 else "membrane updates at 0 pJ: not counted"


def estimate_energy(ops: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, float | None]:
    """Joules per sample of the operation counts ``ops`` (a test.json ``operations`` mapping) on ``model``:
    the estimate (synaptic operations and membrane updates), its membrane-update part (None for a network
    without membranes, an ANN) and the dense estimate."""

    def get(key: str) -> float:
        return float(ops.get(key) or 0.0)

    updates = ops.get("membrane_updates_per_sample")
    membrane = None if updates is None else float(updates) * model.get("neuron_update_pj", 0.0) * 1e-12
    synaptic = get("effective_macs_per_sample") * model["mac_pj"] + get("effective_acs_per_sample") * model["ac_pj"]
    return {
        "estimated_energy_per_sample_j": synaptic * 1e-12 + (membrane or 0.0),
        "membrane_update_energy_per_sample_j": membrane,
        "dense_energy_per_sample_j": get("dense_ops_per_sample") * model["mac_pj"] * 1e-12,
    }
