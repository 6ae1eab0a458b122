"""The study's Table I (training and validation) and Table II (test), one row per network, recomputed
from this run's results: the study's columns first, then ours, then what a reader needs to interpret them.

Conventions (docs/data.md's "Assumptions" lists them too): accuracies in %, recall, precision and F1 macro
averages in 0..1; ``epochs_to_best_val`` the (1-based) epoch of the first highest validation accuracy;
``avg_epoch_time_s`` training plus validation (the study's panel B) and ``median_epoch_time_s`` (ours) the
median of the same per-epoch times; Table I's ``avg_memory_pct`` and ``avg_power_w`` averages over the run
(per-epoch averages weighted by each epoch's duration), Table II's the test phase's. Telemetry that was not
measured stays empty (NaN), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from spikebench.results.cells import as_number, distinct_text
from spikebench.results.hardware import describe_hardware
from spikebench.results.networks import implementation, network_order
from spikebench.results.reading import EPOCH_COLUMNS, TEST_KEYS, ResultsInputError

TABLE1_COLUMNS = [
    "experiment",
    "network",
    "highest_train_acc",
    "highest_val_acc",
    "epochs_to_best_val",
    "avg_epoch_time_s",
    "median_epoch_time_s",
    "avg_memory_pct",
    "avg_power_w",
    "energy_per_epoch_j",
    "energy_per_train_sample_mj",
    "peak_memory_mib",
    # beyond the study (issue #12): energy above the idle power, activation memory, resident dataset
    "energy_above_idle_per_epoch_j",
    "activation_peak_mib",
    "dataset_mib",
    # what autograd keeps for backward in one training batch (issue #23; spikebench.saved_memory)
    "saved_for_backward_mib",
    # per training sample (issue #20): networks of a comparison may see different numbers of samples per epoch
    "train_time_per_sample_ms",
    "train_samples_per_epoch",
]
TABLE2_COLUMNS = [
    "experiment",
    "network",
    "test_acc",
    "test_time_s",
    "avg_memory_pct",
    "avg_power_w",
    "recall",
    "f1",
    "precision",
    "energy_j",
    "energy_per_test_sample_mj",
    "peak_memory_mib",
    "energy_above_idle_per_test_sample_mj",
    "test_time_per_sample_ms",
]
# After the study's columns and ours: what a reader needs to interpret them.
CONTEXT_COLUMNS = ["device", "memory_source", "telemetry_source", "energy_source", "hardware"]

UNITS = {
    "highest_train_acc": "%",
    "highest_val_acc": "%",
    "test_acc": "%",
    "epochs_to_best_val": "epochs",
    "avg_epoch_time_s": "s",
    "median_epoch_time_s": "s",
    "test_time_s": "s",
    "avg_memory_pct": "% of device memory",
    "avg_power_w": "W",
    "energy_per_epoch_j": "J",
    "energy_j": "J",
    "energy_per_train_sample_mj": "mJ",
    "energy_per_test_sample_mj": "mJ",
    "peak_memory_mib": "MiB",
    "recall": "%",  # macro recall, F1 and precision in %, as accuracy (one scale in Table II)
    "f1": "%",
    "precision": "%",
    "energy_above_idle_per_epoch_j": "J",
    "energy_above_idle_per_test_sample_mj": "mJ",
    "activation_peak_mib": "MiB",
    "dataset_mib": "MiB",
    "saved_for_backward_mib": "MiB",
    "saved_for_backward_predicted_mib": "MiB",
    "train_time_per_sample_ms": "ms",
    "train_samples_per_epoch": "samples",
    "test_time_per_sample_ms": "ms",
    "time_to_target_s": "s",
    "energy_to_target_j": "J",
    "samples_to_target": "samples",
}


def _weighted_mean(values: pd.Series, weights: pd.Series) -> tuple[float, int]:
    """Mean of `values` weighted by `weights` over the rows where values are present; (mean, n)."""
    v = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    w = pd.to_numeric(weights, errors="coerce").astype(float).to_numpy()
    ok = ~np.isnan(v)
    n = int(ok.sum())
    if n == 0:
        return math.nan, 0
    w_ok = np.where(np.isnan(w[ok]) | (w[ok] <= 0), 0.0, w[ok])
    if w_ok.sum() <= 0:
        return float(v[ok].mean()), n
    return float(np.average(v[ok], weights=w_ok)), n


def _mean_if_any(e: pd.DataFrame, column: str) -> float:
    """Mean of an epochs-table column that older runs lack (NaN where absent or all null)."""
    values = pd.to_numeric(e[column], errors="coerce") if column in e else pd.Series(dtype=float)
    return float(values.mean()) if values.notna().any() else math.nan


def _max_if_any(e: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(e[column], errors="coerce") if column in e else pd.Series(dtype=float)
    return float(values.max()) if values.notna().any() else math.nan


def _checked_epochs(network: str, e: pd.DataFrame) -> pd.DataFrame:
    """One network's epochs table sorted by epoch, or an error naming the network if it is unusable."""
    missing = [c for c in EPOCH_COLUMNS if c not in e.columns]
    if missing:
        raise ResultsInputError(f"epochs of {network!r} lack columns {missing}")
    if e.empty:
        raise ResultsInputError(f"epochs of {network!r} have no rows")
    return e.sort_values("epoch", kind="stable")


def _training_figures(e: pd.DataFrame) -> dict[str, Any]:
    """Table I's measured columns of one network's (sorted) epochs table, with the epochs they cover."""
    val = e["val_acc"].astype(float)
    time_s = e["epoch_time_s"].astype(float)
    memory_pct, n_memory = _weighted_mean(e["device_memory_avg_pct"], time_s)
    power_w, n_power = _weighted_mean(e["avg_power_w"], time_s)
    energy = pd.to_numeric(e["energy_j"], errors="coerce").astype(float)
    train_energy = pd.to_numeric(e["train_energy_j"], errors="coerce").astype(float)
    has_train_energy = train_energy.notna()
    n_train = e["n_train"].astype(float)[has_train_energy].sum()
    return {
        "highest_train_acc": float(e["train_acc"].astype(float).max() * 100),
        "highest_val_acc": float(val.max() * 100),
        "epochs_to_best_val": (
            int(e["epoch"].to_numpy()[int(np.nanargmax(val.to_numpy()))]) if val.notna().any() else None
        ),
        "avg_epoch_time_s": float(time_s.mean()),
        "median_epoch_time_s": float(time_s.median()),
        "avg_memory_pct": memory_pct,
        "avg_power_w": power_w,
        "energy_per_epoch_j": float(energy.mean()) if energy.notna().any() else math.nan,
        "energy_per_train_sample_mj": (
            float(train_energy[has_train_energy].sum() / n_train * 1e3)
            if has_train_energy.any() and n_train > 0
            else math.nan
        ),
        "peak_memory_mib": float(pd.to_numeric(e["peak_memory_mib"], errors="coerce").max()),
        "energy_above_idle_per_epoch_j": _mean_if_any(e, "energy_above_idle_j"),
        "activation_peak_mib": _max_if_any(e, "activation_peak_mib"),
        "dataset_mib": _max_if_any(e, "dataset_mib"),
        # one figure per run, the same on every row (a resumed run's: its first process's)
        "saved_for_backward_mib": _max_if_any(e, "saved_for_backward_mib"),
        "saved_for_backward_predicted_mib": _max_if_any(e, "saved_for_backward_predicted_mib"),
        **_per_sample(e),
        "epochs": int(len(e)),
        "telemetry_epochs": int(max(n_memory, n_power)),
    }


def _per_sample(e: pd.DataFrame) -> dict[str, Any]:
    """Training time per training sample (the train phases' time over the samples they trained on, in ms; the
    validation phase is left out) and the training samples per epoch."""
    n_train = pd.to_numeric(e["n_train"], errors="coerce").astype(float)
    train_s = pd.to_numeric(e["train_time_s"], errors="coerce").astype(float) if "train_time_s" in e else None
    ok = n_train.notna() & (n_train > 0) & (train_s.notna() if train_s is not None else False)
    per_sample = float(train_s[ok].sum() / n_train[ok].sum() * 1e3) if train_s is not None and ok.any() else math.nan
    samples = n_train.dropna().unique()
    return {
        "train_time_per_sample_ms": per_sample,
        "train_samples_per_epoch": int(samples[0]) if len(samples) == 1 else (math.nan if not len(samples) else None),
    }


def _training_context(e: pd.DataFrame) -> dict[str, Any]:
    """Table I's context columns of one network: device, sources and why a column beyond the study's is empty."""
    optional = (
        "idle_null_reason",
        "memory_null_reason",
        "memory_source",
        "energy_source",
    )
    return {
        **{column: distinct_text(e[column]) if column in e else None for column in optional},
        "saved_for_backward_null_reason": _saved_reason(e),
        "device": distinct_text(e["device"]),
        "telemetry_source": distinct_text(e["telemetry_source"]),
    }


def _saved_reason(e: pd.DataFrame) -> str | None:
    """Why ``saved_for_backward_mib`` is empty, as the job recorded it; an out-of-memory run's; None where it is
    not (or results from before it was measured, which Table I's footnote says)."""
    recorded = distinct_text(e["saved_for_backward_null_reason"]) if "saved_for_backward_null_reason" in e else None
    if recorded:
        return recorded
    column = "saved_for_backward_mib"
    values = pd.to_numeric(e[column], errors="coerce") if column in e else pd.Series(dtype=float)
    if "status" in e and (e["status"] == "oom").any() and values.isna().all():
        return "the run ran out of memory (status oom): no training batch was measured"
    return None


def _lif_context(hardware: Mapping[str, Any] | None) -> dict[str, Any]:
    """Which LIF recurrence ran (``spikebench.models.lif.backend_record``, stored with the job's numerics) and,
    for the footnote, why the Triton kernel fell back or why nothing is recorded."""
    numerics = (hardware or {}).get("numerics")
    numerics = numerics if isinstance(numerics, Mapping) else {}
    used = numerics.get("lif_backend_used")
    if "lif_backend_used" not in numerics:
        note = "not recorded (results from before lif_backend_used existed)"
    else:
        note = numerics.get("lif_backend_fallback_reason") or numerics.get("lif_backend_used_null_reason")
    return {"lif_backend_used": used, "lif_backend_note": note}


def _load_context(hardware: Mapping[str, Any] | None) -> dict[str, Any]:
    """The machine's highest 1-minute load average at the job's start and end, and the CPUs it had."""
    hardware = hardware or {}
    loads = [as_number(hardware.get(k)) for k in ("load_1min_start", "load_1min_end")]
    loads = [x for x in loads if not math.isnan(x)]
    return {"load_1min_max": max(loads) if loads else math.nan, "cpus_available": hardware.get("cpus_available")}


def table1(
    epochs: Mapping[str, pd.DataFrame],
    networks: Mapping[str, Mapping],
    hardware: Mapping[str, Mapping] | None = None,
) -> pd.DataFrame:
    """Table I (training and validation): one row per network, the study's columns first.

    ``epochs`` maps network id to its epochs table; ``networks`` is the config's ``networks``
    (at least ``experiment``, ``kind``, ``dataset``); ``hardware`` maps network id to the hardware
    JSON (default: each frame's ``attrs['hardware']``).
    """
    rows = []
    for network in network_order(networks, epochs):
        e = _checked_epochs(network, epochs[network])
        hw = (hardware or {}).get(network, e.attrs.get("hardware", {}))
        rows.append(
            {
                "experiment": int(networks[network]["experiment"]),
                "network": network,
                "implementation": implementation(networks[network]),
                **_training_figures(e),
                **_training_context(e),
                "hardware": describe_hardware(hw),
                **_lif_context(hw),
                **_load_context(hw),
            }
        )
    columns = (
        TABLE1_COLUMNS
        + ["implementation", "lif_backend_used", "epochs", "telemetry_epochs", "load_1min_max", "cpus_available"]
        + ["saved_for_backward_predicted_mib"]
        + CONTEXT_COLUMNS
        + ["idle_null_reason", "memory_null_reason", "lif_backend_note", "saved_for_backward_null_reason"]
    )
    return pd.DataFrame(rows, columns=columns)


def table2(tests: Mapping[str, Mapping], networks: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table II (test): one row per network from its ``test.json``, the study's columns first."""
    rows = []
    for network in network_order(networks, tests):
        t = tests[network]
        missing = [k for k in TEST_KEYS if k not in t]
        if missing:
            raise ResultsInputError(f"test result of {network!r} lacks keys {missing}")
        tel = t.get("telemetry") or {}
        energy_j = as_number(tel.get("energy_j"))
        per_sample = as_number(tel.get("energy_per_sample_mj"))
        n_test = as_number(t["n_test"])
        if math.isnan(per_sample) and not math.isnan(energy_j) and n_test > 0:
            per_sample = energy_j / n_test * 1e3
        rows.append(
            {
                "experiment": int(networks[network]["experiment"]),
                "network": network,
                "implementation": implementation(networks[network]),
                "test_acc": as_number(t["accuracy"]) * 100,
                "test_time_s": as_number(t["test_time_s"]),
                "avg_memory_pct": as_number(tel.get("device_memory_avg_pct")),
                "avg_power_w": as_number(tel.get("avg_power_w")),
                "recall": as_number(t["recall_macro"]) * 100,
                "f1": as_number(t["f1_macro"]) * 100,
                "precision": as_number(t["precision_macro"]) * 100,
                "energy_j": energy_j,
                "energy_per_test_sample_mj": per_sample,
                "peak_memory_mib": as_number(t["peak_memory_mib"]),
                "energy_above_idle_per_test_sample_mj": as_number(tel.get("energy_above_idle_per_sample_mj")),
                "test_time_per_sample_ms": (
                    as_number(t["test_time_s"]) / n_test * 1e3 if n_test == n_test and n_test > 0 else math.nan
                ),
                "idle_null_reason": tel.get("idle_null_reason"),
                "n_test": int(n_test) if n_test == n_test else None,
                "weights": t.get("weights"),
                "epoch_of_weights": t.get("epoch_of_weights"),
                "device": t.get("device"),
                "memory_source": t.get("memory_source"),
                "telemetry_source": tel.get("telemetry_source"),
                "energy_source": tel.get("energy_source"),
                "hardware": describe_hardware(t.get("hardware")),
            }
        )
    columns = (
        TABLE2_COLUMNS
        + ["implementation", "n_test", "weights", "epoch_of_weights"]
        + CONTEXT_COLUMNS
        + ["idle_null_reason"]
    )
    return pd.DataFrame(rows, columns=columns)
