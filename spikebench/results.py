"""The study's Tables I and II from this run, next to the study's own values, and the cost of spiking.

Pure functions over the per-network results (``epochs.parquet`` as DataFrames, ``test.json`` as
dicts) build the tables; writers put them on disk as CSV and self-contained HTML, atomically.

Conventions (the README's "Assumptions" lists them too):

- Accuracies are in %, as in the study; recall, precision and F1 are macro averages in 0..1.
- ``epochs_to_best_val`` is the (1-based) epoch of the first highest validation accuracy.
- ``avg_epoch_time_s`` is training plus validation, as the study's panel B; ``median_epoch_time_s``
  (ours, the study reports none) is the median of the same per-epoch times, robust to a slow epoch.
- ``avg_memory_pct`` and ``avg_power_w`` of Table I are averages over the run, i.e. the per-epoch
  averages weighted by each epoch's duration; those of Table II are the test phase's averages.
- Telemetry that was not measured stays empty (NaN) and the HTML says why in a footnote; it is
  never replaced by 0.
- The study reports no energy: its energy per epoch (cost of spiking) is derived as average power
  times average time per epoch, and is marked as derived.
- Experiment 3 has two SNNs and no ANN: its "cost" row compares the N-MNIST SNN with the MNIST SNN
  (the cost of event data, which is what experiment 3 studies); an SNN/ANN ratio is n/a there.
  Comparing it with experiment 1's ANN would mix the cost of spiking with that of a different
  architecture (convolutional vs fully connected).
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

PAPER_VALUES = Path(__file__).with_name("paper_values.csv")
HARDWARE_KEY = b"spikebench.hardware"

EPOCH_COLUMNS = (
    "network", "epoch", "train_acc", "val_acc", "epoch_time_s", "n_train", "peak_memory_mib",
    "device", "avg_power_w", "energy_j", "train_energy_j", "device_memory_avg_pct", "telemetry_source",
)
TEST_KEYS = (
    "network", "n_test", "accuracy", "precision_macro", "recall_macro", "f1_macro",
    "test_time_s", "peak_memory_mib", "device", "telemetry",
)
TEST_TELEMETRY_KEYS = ("avg_power_w", "energy_j", "device_memory_avg_pct", "telemetry_source")
TELEMETRY_COLUMNS = (
    "time_s", "phase", "source", "power_w", "memory_used_mib", "memory_used_pct", "rss_mib",
)
PAPER_COLUMNS = ("table", "experiment", "network", "paper_label", "metric", "value", "unit", "source", "hardware")

TABLE1_COLUMNS = [
    "experiment", "network", "highest_train_acc", "highest_val_acc", "epochs_to_best_val",
    "avg_epoch_time_s", "median_epoch_time_s", "avg_memory_pct", "avg_power_w",
    "energy_per_epoch_j", "energy_per_train_sample_mj", "peak_memory_mib",
    # beyond the study (issue #12): energy above the idle power, activation memory, resident dataset
    "energy_above_idle_per_epoch_j", "activation_peak_mib", "dataset_mib",
]
TABLE2_COLUMNS = [
    "experiment", "network", "test_acc", "test_time_s", "avg_memory_pct", "avg_power_w", "recall", "f1",
    "precision", "energy_j", "energy_per_test_sample_mj", "peak_memory_mib",
    "energy_above_idle_per_test_sample_mj",
]
# After the study's columns and ours: what a reader needs to interpret them.
CONTEXT_COLUMNS = ["device", "memory_source", "telemetry_source", "energy_source", "hardware"]
#: Why a column beyond the study's is empty, as the job recorded it (a context column of Tables I/II).
NULL_REASON_COLUMNS = {
    "energy_above_idle_per_epoch_j": "idle_null_reason",
    "energy_above_idle_per_test_sample_mj": "idle_null_reason",
    "activation_peak_mib": "memory_null_reason",
}

#: Columns that come from the telemetry sidecar and what they measure ("power" or "memory").
TELEMETRY_QUANTITY = {
    "avg_memory_pct": "memory",
    "avg_power_w": "power",
    "energy_per_epoch_j": "power",
    "energy_per_train_sample_mj": "power",
    "energy_j": "power",
    "energy_per_test_sample_mj": "power",
    "energy_above_idle_per_epoch_j": "power",
    "energy_above_idle_per_test_sample_mj": "power",
    "activation_peak_mib": "memory",
}

UNITS = {
    "highest_train_acc": "%", "highest_val_acc": "%", "test_acc": "%", "epochs_to_best_val": "epochs",
    "avg_epoch_time_s": "s", "median_epoch_time_s": "s", "test_time_s": "s", "avg_memory_pct": "% of device memory", "avg_power_w": "W",
    "energy_per_epoch_j": "J", "energy_j": "J", "energy_per_train_sample_mj": "mJ",
    "energy_per_test_sample_mj": "mJ", "peak_memory_mib": "MiB", "recall": "1", "f1": "1", "precision": "1",
    "energy_above_idle_per_epoch_j": "J", "energy_above_idle_per_test_sample_mj": "mJ", "activation_peak_mib": "MiB",
    "dataset_mib": "MiB",
}

COST_METRICS = ("avg_epoch_time_s", "median_epoch_time_s", "energy_per_epoch_j", "avg_power_w", "avg_memory_pct", "peak_memory_mib")
#: Cost metrics compared only where Table I has a value in the column (activation memory: CUDA only).
OPTIONAL_COST_METRICS = ("activation_peak_mib",)
#: What each cost metric is, for the cost table's HTML view and the headline figure.
COST_LABELS = {
    "avg_epoch_time_s": "time per epoch", "median_epoch_time_s": "median time per epoch", "energy_per_epoch_j": "energy per epoch", "avg_power_w": "average power",
    "avg_memory_pct": "average memory", "peak_memory_mib": "peak memory", "activation_peak_mib": "activation memory",
}

#: Chance accuracy (%) of the study's 10-class tasks; a network whose test accuracy is below
#: LEARNED_FACTOR x chance is flagged as not having learned.
CHANCE_PCT = 10.0
LEARNED_FACTOR = 2.0

DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "nmnist": "N-MNIST"}


class ResultsInputError(ValueError):
    """A per-network result file lacks what the tables need; the message names file and key."""


# ---------------------------------------------------------------------------------------------
# Reading


def read_hardware(path: str | Path) -> dict:
    """The ``spikebench.hardware`` JSON of a Parquet file's key-value metadata ({} when absent)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(HARDWARE_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ResultsInputError(f"{path}: metadata 'spikebench.hardware' is not JSON ({exc})") from exc
    return value if isinstance(value, dict) else {"value": value}


def _read_parquet(path: Path, columns, what: str, written_by: str = "") -> pd.DataFrame:
    """The Parquet file ``path`` as a DataFrame, or a clear error if it is absent or lacks one of ``columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}{written_by}")
    df = pq.read_table(path).to_pandas()
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsInputError(f"{path}: {what} lacks columns {missing} (has {list(df.columns)})")
    return df


def read_epochs(path: str | Path) -> pd.DataFrame:
    """One network's ``epochs.parquet``, sorted by epoch; its hardware JSON in ``.attrs['hardware']``."""
    path = Path(path)
    df = _read_parquet(path, EPOCH_COLUMNS, "epochs table", " (written by the rule train)")
    if df.empty:
        raise ResultsInputError(f"{path}: epochs table has no rows (expected one per epoch)")
    df = df.sort_values("epoch", kind="stable").reset_index(drop=True)
    df.attrs["hardware"] = read_hardware(path)
    return df


def read_test(path: str | Path) -> dict:
    """One network's ``test.json``, checked for the keys Table II needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"test result not found: {path} (written by the rule evaluate)")
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(result, dict):
        raise ResultsInputError(f"{path}: expected a JSON object, got {type(result).__name__}")
    missing = [k for k in TEST_KEYS if k not in result]
    if missing:
        raise ResultsInputError(f"{path}: test result lacks keys {missing}")
    if not isinstance(result["telemetry"], dict):
        raise ResultsInputError(f"{path}: key 'telemetry' must be an object, got {type(result['telemetry']).__name__}")
    missing = [k for k in TEST_TELEMETRY_KEYS if k not in result["telemetry"]]
    if missing:
        raise ResultsInputError(f"{path}: 'telemetry' lacks keys {missing} (null values are fine, absent keys are not)")
    return result


def read_telemetry(path: str | Path) -> pd.DataFrame:
    """A telemetry sidecar (one row per sample), sorted by time; may have no rows."""
    df = _read_parquet(Path(path), TELEMETRY_COLUMNS, "telemetry sidecar")
    for column in ("time_s", "power_w", "memory_used_mib", "memory_used_pct", "rss_mib", "cpu_energy_uj"):
        if column not in df:
            continue
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    return df.sort_values("time_s", kind="stable").reset_index(drop=True)


def load_paper_values(path: str | Path = PAPER_VALUES) -> pd.DataFrame:
    """The study's Tables I and II in long format (one row per value), with their sources."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the study's values not found: {path}")
    df = pd.read_csv(path)
    missing = [c for c in PAPER_COLUMNS if c not in df.columns]
    if missing:
        raise ResultsInputError(f"{path}: lacks columns {missing}")
    bad = df.loc[~df["table"].isin(["I", "II"]), "table"]
    if len(bad):
        raise ResultsInputError(f"{path}: column 'table' must be I or II, got {sorted(set(bad))}")
    df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
    return df


# ---------------------------------------------------------------------------------------------
# Helpers


def _num(value: Any) -> float:
    """A JSON/Parquet value as float; None, "" and non-numbers are NaN (never 0)."""
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _text(values: Iterable[Any]) -> str | None:
    """Distinct non-empty strings of a column, joined; None when there are none."""
    seen: list[str] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        s = str(v)
        if s and s not in seen:
            seen.append(s)
    return ", ".join(seen) if seen else None


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


def network_label(network: str, networks: Mapping[str, Mapping]) -> str:
    """The study's name of a network: ANN / CNN / SNN, with the dataset where an experiment has two of a kind
    (of the same implementation), and " (snnTorch)" for ``implementation: snntorch``."""
    spec = networks[network]
    kind = str(spec.get("kind", "")).lower()
    base = "CNN" if kind == "ann" and str(spec.get("architecture", "")).startswith("conv") else kind.upper() or network
    suffix = " (snnTorch)" if implementation(spec) == "snntorch" else ""
    same = [
        n for n, s in networks.items()
        if s.get("experiment") == spec.get("experiment") and str(s.get("kind", "")).lower() == kind
        and implementation(s) == implementation(spec)
    ]
    if len(same) > 1:
        return f"{base}: {DATASET_NAMES.get(spec.get('dataset'), str(spec.get('dataset')))}{suffix}"
    return base + suffix


# --- implementation column (network setting `implementation`) -------------------------------
def implementation(spec: Mapping) -> str:
    """The network's ``implementation`` setting (schema default ``spikebench``)."""
    return str(spec.get("implementation", "spikebench"))
# --- end implementation column ---------------------------------------------------------------


def describe_hardware(hardware: Mapping[str, Any] | None) -> str:
    """One line naming the GPU (or "no GPU"), driver, CUDA, PyTorch, CPU, RAM and host of a hardware JSON.

    Reads the keys of ``spikebench.telemetry.hardware_info`` (device, device_name, memory_total_mib,
    driver_version, cuda_version, torch_version, snntorch_version, cpu_model, cpu_count,
    ram_total_mib, host_name, platform); a few other spellings are accepted.
    """
    if not hardware:
        return "not recorded"
    hw = {str(k).lower(): v for k, v in hardware.items()}

    def pick(*keys: str) -> Any:
        for key in keys:
            value = hw.get(key)
            if value not in (None, "", [], {}) and not isinstance(value, (dict, list)):
                return value
        return None

    device = str(pick("device") or "")
    gpu_name = pick("gpu_name", "gpu", "cuda_device_name") or (pick("device_name", "name") if device.startswith("cuda") else None)
    parts: list[str] = []
    if gpu_name is not None:
        label = f"1x {gpu_name}"
        memory = _num(pick("gpu_memory_total_mib", "memory_total_mib", "gpu_memory_mib"))
        if not math.isnan(memory):
            label += f" ({memory / 1024:.0f} GiB)"
        parts.append(label + (f" as {device}" if device else ""))
        for label, keys in (("driver", ("driver_version", "driver", "nvidia_driver")),
                            ("CUDA", ("cuda_version", "cuda", "torch_cuda"))):
            value = pick(*keys)
            if value is not None:
                parts.append(f"{label} {value}")
    else:
        parts.append(f"no GPU (device {device or 'unknown'})")
    for label, keys in (("PyTorch", ("torch_version", "torch")), ("snnTorch", ("snntorch_version", "snntorch"))):
        value = pick(*keys)
        if value is not None:
            parts.append(f"{label} {value}")
    cpu = pick("cpu_model", "cpu", "processor")
    if cpu is not None:
        cores = pick("cpu_count", "cpu_cores")
        parts.append(f"CPU {cpu}" + (f" ({cores} cores)" if cores is not None else ""))
    ram = _num(pick("ram_total_mib"))
    if not math.isnan(ram):
        parts.append(f"{ram / 1024:.0f} GiB RAM")
    for label, keys in (("host", ("host_name", "host", "hostname", "node")), ("OS", ("platform", "os"))):
        value = pick(*keys)
        if value is not None:
            parts.append(f"{label} {value}")
    numerics = hardware.get("numerics") if isinstance(hardware.get("numerics"), Mapping) else {}
    if numerics.get("precision"):     # spikebench.devices.numeric_settings: the arithmetic both networks used
        parts.append(f"precision {numerics['precision']}, cudnn.benchmark {numerics.get('cudnn_benchmark')}, "
                     f"LIF {numerics.get('lif_backend')}, threads torch {numerics.get('torch_threads')} / "
                     f"numba {numerics.get('numba_threads')}")
    return "; ".join(parts)


def _order(networks: Mapping[str, Mapping], present: Iterable[str]) -> list[str]:
    """Networks in the study's order: by experiment, then as listed in the config."""
    present = list(present)
    unknown = [n for n in present if n not in networks]
    if unknown:
        raise ResultsInputError(f"networks {unknown} have results but no config entry under 'networks'")
    listed = [n for n in networks if n in present]
    return sorted(listed, key=lambda n: (int(networks[n].get("experiment", 0)), listed.index(n)))


def not_learned(t2: pd.DataFrame) -> dict[str, float]:
    """Networks of Table II whose test accuracy (%) is within LEARNED_FACTOR x chance: {network: accuracy}."""
    acc = pd.to_numeric(t2["test_acc"], errors="coerce").astype(float)
    low = acc < LEARNED_FACTOR * CHANCE_PCT
    return dict(zip(t2.loc[low, "network"], acc[low]))


def not_learned_note(network: str, accuracy_pct: float) -> str:
    """The footnote of a network that did not learn."""
    return (f"did not learn: {network}'s test accuracy {accuracy_pct:.1f}% is within {LEARNED_FACTOR:g}x of chance "
            f"({CHANCE_PCT:g}% for 10 classes), so its costs are not those of a working network")


def learning_notes(table: pd.DataFrame, flagged: Mapping[str, float]) -> dict[tuple[int, str], str]:
    """Footnotes on the ``network`` cell of every flagged network's row of a Table I/II frame."""
    return {(i, "network"): not_learned_note(n, flagged[n]) for i, n in enumerate(table["network"]) if n in flagged}


# ---------------------------------------------------------------------------------------------
# Tables


def _mean_if_any(e: pd.DataFrame, column: str) -> float:
    """Mean of an epochs-table column that older runs lack (NaN where absent or all null)."""
    values = pd.to_numeric(e[column], errors="coerce") if column in e else pd.Series(dtype=float)
    return float(values.mean()) if values.notna().any() else math.nan


def _max_if_any(e: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(e[column], errors="coerce") if column in e else pd.Series(dtype=float)
    return float(values.max()) if values.notna().any() else math.nan


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
    for network in _order(networks, epochs):
        e = epochs[network]
        missing = [c for c in EPOCH_COLUMNS if c not in e.columns]
        if missing:
            raise ResultsInputError(f"epochs of {network!r} lack columns {missing}")
        if e.empty:
            raise ResultsInputError(f"epochs of {network!r} have no rows")
        e = e.sort_values("epoch", kind="stable")
        val = e["val_acc"].astype(float)
        time_s = e["epoch_time_s"].astype(float)
        memory_pct, n_memory = _weighted_mean(e["device_memory_avg_pct"], time_s)
        power_w, n_power = _weighted_mean(e["avg_power_w"], time_s)
        energy = pd.to_numeric(e["energy_j"], errors="coerce").astype(float)
        train_energy = pd.to_numeric(e["train_energy_j"], errors="coerce").astype(float)
        has_train_energy = train_energy.notna()
        n_train = e["n_train"].astype(float)[has_train_energy].sum()
        hw = (hardware or {}).get(network, e.attrs.get("hardware", {}))
        rows.append({
            "experiment": int(networks[network]["experiment"]),
            "network": network,
            "implementation": implementation(networks[network]),
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
                float(train_energy[has_train_energy].sum() / n_train * 1e3) if has_train_energy.any() and n_train > 0 else math.nan
            ),
            "peak_memory_mib": float(pd.to_numeric(e["peak_memory_mib"], errors="coerce").max()),
            "energy_above_idle_per_epoch_j": _mean_if_any(e, "energy_above_idle_j"),
            "activation_peak_mib": _max_if_any(e, "activation_peak_mib"),
            "dataset_mib": _max_if_any(e, "dataset_mib"),
            "idle_null_reason": _text(e["idle_null_reason"]) if "idle_null_reason" in e else None,
            "memory_null_reason": _text(e["memory_null_reason"]) if "memory_null_reason" in e else None,
            "epochs": int(len(e)),
            "telemetry_epochs": int(max(n_memory, n_power)),
            "device": _text(e["device"]),
            "memory_source": _text(e["memory_source"]) if "memory_source" in e else None,
            "telemetry_source": _text(e["telemetry_source"]),
            "energy_source": _text(e["energy_source"]) if "energy_source" in e else None,
            "hardware": describe_hardware(hw),
        })
    columns = TABLE1_COLUMNS + ["implementation", "epochs", "telemetry_epochs"] + CONTEXT_COLUMNS + ["idle_null_reason", "memory_null_reason"]
    return pd.DataFrame(rows, columns=columns)


def table2(tests: Mapping[str, Mapping], networks: Mapping[str, Mapping]) -> pd.DataFrame:
    """Table II (test): one row per network from its ``test.json``, the study's columns first."""
    rows = []
    for network in _order(networks, tests):
        t = tests[network]
        missing = [k for k in TEST_KEYS if k not in t]
        if missing:
            raise ResultsInputError(f"test result of {network!r} lacks keys {missing}")
        tel = t.get("telemetry") or {}
        energy_j = _num(tel.get("energy_j"))
        per_sample = _num(tel.get("energy_per_sample_mj"))
        n_test = _num(t["n_test"])
        if math.isnan(per_sample) and not math.isnan(energy_j) and n_test > 0:
            per_sample = energy_j / n_test * 1e3
        rows.append({
            "experiment": int(networks[network]["experiment"]),
            "network": network,
            "implementation": implementation(networks[network]),
            "test_acc": _num(t["accuracy"]) * 100,
            "test_time_s": _num(t["test_time_s"]),
            "avg_memory_pct": _num(tel.get("device_memory_avg_pct")),
            "avg_power_w": _num(tel.get("avg_power_w")),
            "recall": _num(t["recall_macro"]),
            "f1": _num(t["f1_macro"]),
            "precision": _num(t["precision_macro"]),
            "energy_j": energy_j,
            "energy_per_test_sample_mj": per_sample,
            "peak_memory_mib": _num(t["peak_memory_mib"]),
            "energy_above_idle_per_test_sample_mj": _num(tel.get("energy_above_idle_per_sample_mj")),
            "idle_null_reason": tel.get("idle_null_reason"),
            "n_test": int(n_test) if n_test == n_test else None,
            "weights": t.get("weights"),
            "epoch_of_weights": t.get("epoch_of_weights"),
            "device": t.get("device"),
            "memory_source": t.get("memory_source"),
            "telemetry_source": tel.get("telemetry_source"),
            "energy_source": tel.get("energy_source"),
            "hardware": describe_hardware(t.get("hardware")),
        })
    columns = TABLE2_COLUMNS + ["implementation", "n_test", "weights", "epoch_of_weights"] + CONTEXT_COLUMNS + ["idle_null_reason"]
    return pd.DataFrame(rows, columns=columns)


def hardware_table(t1: pd.DataFrame, t2: pd.DataFrame) -> pd.DataFrame:
    """What each network ran on, for training (Table I) and test (Table II)."""
    a = t1[["experiment", "network", "device", "telemetry_source", "hardware"]].assign(phase="training and validation")
    b = t2[["experiment", "network", "device", "telemetry_source", "hardware"]].assign(phase="test")
    out = pd.concat([a, b], ignore_index=True)
    out = out.sort_values(["experiment", "network", "phase"], ascending=[True, True, False], kind="stable")
    return out[["experiment", "network", "phase", "device", "telemetry_source", "hardware"]].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Why a cell is empty


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def source_kind(source: Any) -> str:
    """"nvml", "cpu" or "none" from a telemetry source (summaries may join several: "nvml+cpu")."""
    if _is_missing(source) or str(source) in ("", "none"):
        return "none"
    source = str(source)
    if "nvml" in source:
        return "nvml"
    if "cpu" in source:
        return "cpu"
    return source


def missing_reason(column: str, row: Mapping[str, Any], telemetry_enabled: bool = True) -> str:
    """Why `column` of a table row (Table I/II, with its context columns) has no value."""
    quantity = TELEMETRY_QUANTITY.get(column)
    device = row.get("device") or "an unknown device"
    recorded = row.get(NULL_REASON_COLUMNS.get(column, ""))
    if not _is_missing(recorded) and recorded:
        return str(recorded)
    if quantity is None:
        return f"{column} was not recorded for this network"
    what = "power (and so energy)" if quantity == "power" else "device memory"
    if not telemetry_enabled:
        return f"telemetry disabled in the configuration (telemetry.enabled: false): {what} not measured"
    kind = source_kind(row.get("telemetry_source"))
    if kind == "none":
        if str(device).startswith("cuda"):
            return f"no telemetry on {device}: NVML could not be read, so {what} was not measured"
        return f"no telemetry on {device}: {what} not measured"
    if kind == "cpu":
        if quantity == "power":
            return (f"no NVIDIA GPU (ran on {device}): power not measured "
                    "(no NVML, and the CPU's RAPL energy counter is not readable)")
        return (f"no NVIDIA GPU (ran on {device}): memory not measured; "
                "peak_memory_mib is the process's peak resident memory instead")
    if kind == "nvml":
        return f"the GPU reported no {what} reading through NVML"
    return f"{what} not measured (telemetry source {kind!r})"


def measured_note(column: str, row: Mapping[str, Any]) -> str | None:
    """What a measured telemetry value means when it is not the GPU's (a CPU run), else None."""
    quantity = TELEMETRY_QUANTITY.get(column)
    if quantity is None or source_kind(row.get("telemetry_source")) != "cpu":
        return None
    device = row.get("device") or "the CPU"
    if quantity == "memory":
        return (f"no NVIDIA GPU (ran on {device}): the process's resident memory in % of the machine's RAM, "
                "not GPU memory")
    if str(row.get("energy_source") or "") == "rapl":
        return f"no NVIDIA GPU (ran on {device}): CPU package power from RAPL (the whole package), not GPU power"
    return None


def explain_missing(table: pd.DataFrame, telemetry_enabled: bool = True, columns: Iterable[str] | None = None) -> dict[tuple[int, str], str]:
    """Footnotes for a Table I/II frame: {(row position, column): why it is empty, partial or not the GPU's}."""
    columns = list(columns) if columns is not None else [c for c in table.columns if c in TELEMETRY_QUANTITY]
    notes: dict[tuple[int, str], str] = {}
    records = table.to_dict("records")
    for i, row in enumerate(records):
        for column in columns:
            if column not in row:
                continue
            if _is_missing(row[column]):
                notes[(i, column)] = missing_reason(column, row, telemetry_enabled)
                continue
            parts = [measured_note(column, row)]
            if "telemetry_epochs" in row and 0 < row["telemetry_epochs"] < row["epochs"]:
                parts.append(f"telemetry for {row['telemetry_epochs']} of {row['epochs']} epochs only; "
                             "the average is over those epochs")
            text = "; ".join(p for p in parts if p)
            if text:
                notes[(i, column)] = text
    return notes


def notes_column(table: pd.DataFrame, notes: Mapping[tuple[int, str], str]) -> pd.Series:
    """The footnotes of each row as one text cell ("column: why; ..."), for the CSV."""
    per_row: dict[int, list[str]] = {}
    for (i, column), text in notes.items():
        per_row.setdefault(i, []).append(f"{column}: {text}")
    return pd.Series([" | ".join(per_row.get(i, [])) for i in range(len(table))], index=table.index, dtype=object)


# ---------------------------------------------------------------------------------------------
# Comparison with the study


def _long(table: pd.DataFrame, name: str, metrics: Iterable[str]) -> pd.DataFrame:
    metrics = [m for m in metrics if m in table.columns]
    out = table.melt(id_vars=["network", "hardware"], value_vars=metrics, var_name="metric", value_name="run_value")
    out["table"] = name
    out["run_value"] = pd.to_numeric(out["run_value"], errors="coerce").astype(float)
    return out


def paper_comparison(
    t1: pd.DataFrame,
    t2: pd.DataFrame,
    paper: pd.DataFrame,
    telemetry_enabled: bool = True,
) -> pd.DataFrame:
    """Each value of the study's Tables I and II next to this run's, with difference and ratio.

    One row per study value (all of them, also where this run lacks the network); difference is
    run minus study, ratio is run over study. Both sides' hardware is in every row; ``note``
    says why a run value is empty.
    """
    run = pd.concat([
        _long(t1, "I", paper.loc[paper["table"] == "I", "metric"].unique()),
        _long(t2, "II", paper.loc[paper["table"] == "II", "metric"].unique()),
    ], ignore_index=True)
    reasons: dict[tuple[str, str, str], str] = {}
    for name, table in (("I", t1), ("II", t2)):
        for (i, column), text in explain_missing(table, telemetry_enabled).items():
            reasons[(name, table["network"].iloc[i], column)] = text
    out = paper.rename(columns={"value": "paper_value", "source": "paper_source", "hardware": "paper_hardware"})
    out = out.merge(run.rename(columns={"hardware": "run_hardware"}), on=["table", "network", "metric"], how="left")
    out["difference"] = out["run_value"] - out["paper_value"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.where(out["paper_value"] != 0, out["run_value"] / out["paper_value"], np.nan)
    present = set(t1["network"]) | set(t2["network"])
    out["note"] = [
        reasons.get((t, n, m), "") if n in present else "network not in this run"
        for t, n, m in zip(out["table"], out["network"], out["metric"])
    ]
    out["run_hardware"] = out["run_hardware"].where(out["run_hardware"].notna(), "")
    columns = ["table", "experiment", "network", "paper_label", "metric", "unit", "paper_value", "run_value",
               "difference", "ratio", "paper_source", "paper_hardware", "run_hardware", "note"]
    return out[columns]


def spiking_pairs(networks: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    """Per experiment, which network is compared with which in the cost-of-spiking summary.

    With an ANN in the experiment: every SNN against it (the cost of spiking), each SNN under its own
    implementation (``implementation``: spikebench or snntorch) against the same ANN. Without one
    (experiment 3): per implementation, the second SNN against the first (N-MNIST against MNIST in
    the study), the cost of event data; an SNN/ANN ratio is n/a there.
    """
    pairs = []
    experiments = sorted({int(s["experiment"]) for s in networks.values()})
    for experiment in experiments:
        members = [n for n, s in networks.items() if int(s["experiment"]) == experiment]
        anns = [n for n in members if str(networks[n].get("kind")).lower() == "ann"]
        snns = [n for n in members if str(networks[n].get("kind")).lower() == "snn"]
        if anns:
            for snn in snns:
                pairs.append({
                    "experiment": experiment, "implementation": implementation(networks[snn]),
                    "numerator": snn, "denominator": anns[0],
                    "comparison": f"{network_label(snn, networks)} / {network_label(anns[0], networks)}",
                    "note": "cost of spiking: the SNN over the ANN of the same architecture and data",
                })
            continue
        for impl in dict.fromkeys(implementation(networks[n]) for n in snns):
            same = [n for n in snns if implementation(networks[n]) == impl]
            for snn in same[1:]:
                pairs.append({
                    "experiment": experiment, "implementation": impl, "numerator": snn, "denominator": same[0],
                    "comparison": f"{network_label(snn, networks)} / {network_label(same[0], networks)}",
                    "note": ("no ANN in this experiment, so SNN/ANN is n/a: shown instead is the same SNN on "
                             "event data over static rate-coded data (the cost of event data)"),
                })
    return pairs


def _cost_value(frame: pd.DataFrame, network: str, metric: str) -> float:
    if network in frame.index and metric in frame.columns:
        return _num(frame.at[network, metric])
    return math.nan


def _cost_run_note(metric: str, run: pd.DataFrame, num: str, den: str) -> str | None:
    """What this run's memory value measures where it is not the GPU's (a CPU run)."""
    if metric not in ("avg_memory_pct", "peak_memory_mib"):
        return None
    rows = [run.loc[n] for n in (num, den) if n in run.index]
    if not rows or not any(source_kind(r.get("telemetry_source")) == "cpu" or str(r.get("device") or "") == "cpu"
                           for r in rows):
        return None
    return ("this run on the CPU: the process's resident memory (RSS), mostly the runtime (Python, PyTorch, "
            "libraries) rather than the network's activations, so the ratio understates the SNN's extra memory")


def cost_of_spiking(t1: pd.DataFrame, paper: pd.DataFrame, networks: Mapping[str, Mapping],
                    t2: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per experiment, the SNN/ANN ratios of time per epoch, energy per epoch, power and memory, run vs study.

    The study's energy per epoch is derived (average power x average time per epoch); it reports
    no peak memory in MiB, so that ratio is run-only. With Table II (``t2``), a pair with a network that
    did not learn (:func:`not_learned`) names it in ``not_learned`` and its ratios carry a note.
    """
    p1 = paper[paper["table"] == "I"].pivot_table(index="network", columns="metric", values="value", aggfunc="first")
    if "avg_power_w" in p1 and "avg_epoch_time_s" in p1:
        p1["energy_per_epoch_j"] = p1["avg_power_w"] * p1["avg_epoch_time_s"]
    run = t1.set_index("network")
    flagged = not_learned(t2) if t2 is not None else {}
    metrics = COST_METRICS + tuple(m for m in OPTIONAL_COST_METRICS
                                   if m in t1.columns and pd.to_numeric(t1[m], errors="coerce").notna().any())
    rows = []
    for pair in spiking_pairs(networks):
        num, den = pair["numerator"], pair["denominator"]
        failed = [n for n in (num, den) if n in flagged]
        for metric in metrics:
            rn, rd = _cost_value(run, num, metric), _cost_value(run, den, metric)
            pn, pd_ = _cost_value(p1, num, metric), _cost_value(p1, den, metric)
            notes = [pair["note"]]
            if metric == "energy_per_epoch_j":
                notes.append("study value derived as average power x average time per epoch")
            if metric in ("peak_memory_mib", *OPTIONAL_COST_METRICS):
                notes.append("the study reports no peak memory in MiB")
            if metric == "median_epoch_time_s":
                notes.append("the study reports no median time per epoch")
            if math.isnan(rn) or math.isnan(rd):
                notes.append("this run: not measured (see Table I's footnotes)")
            else:
                notes.append(_cost_run_note(metric, run, num, den))
            notes += [f"this run: {not_learned_note(n, flagged[n])}" for n in failed]
            rows.append({
                "experiment": pair["experiment"], "implementation": pair["implementation"],
                "comparison": pair["comparison"],
                "numerator": num, "denominator": den, "metric": metric, "unit": UNITS.get(metric, "MiB"),
                "run_numerator": rn, "run_denominator": rd,
                "run_ratio": rn / rd if rd and not math.isnan(rd) else math.nan,
                "paper_numerator": pn, "paper_denominator": pd_,
                "paper_ratio": pn / pd_ if pd_ and not math.isnan(pd_) else math.nan,
                "not_learned": ", ".join(failed),
                "note": "; ".join(n for n in notes if n),
            })
    columns = ["experiment", "implementation", "comparison", "numerator", "denominator", "metric", "unit",
               "run_numerator", "run_denominator", "run_ratio", "paper_numerator", "paper_denominator", "paper_ratio",
               "not_learned", "note"]
    return pd.DataFrame(rows, columns=columns)


def cost_view(cost: pd.DataFrame) -> pd.DataFrame:
    """The cost table as the report shows it: one row per experiment and metric, narrow columns.

    ``this run`` and ``study`` give numerator / denominator with the unit, ``ratio ...`` their ratios.
    """
    def pair(a: float, b: float, unit: str) -> str | None:
        if _is_missing(a) and _is_missing(b):
            return None
        unit = "" if unit in ("1", "") else (" %" if unit.startswith("%") else f" {unit}")
        return f"{format_number(a) or 'n/a'} / {format_number(b) or 'n/a'}{unit}"

    labels = [COST_LABELS.get(m, m) + (f" ({u})" if u and u != "1" else "")
              for m, u in zip(cost["metric"], cost["unit"])]
    return pd.DataFrame({
        "experiment": cost["experiment"].to_numpy(),
        "comparison": cost["comparison"].to_numpy(),
        "metric": labels,
        "this run": [pair(a, b, u) for a, b, u in zip(cost["run_numerator"], cost["run_denominator"], cost["unit"])],
        "study": [pair(a, b, u) for a, b, u in zip(cost["paper_numerator"], cost["paper_denominator"], cost["unit"])],
        "ratio, this run": cost["run_ratio"].to_numpy(dtype=float),
        "ratio, study": cost["paper_ratio"].to_numpy(dtype=float),
    })


# ---------------------------------------------------------------------------------------------
# Writing


def chmod_default(path: str | Path) -> None:
    """Give a temporary file (mkstemp: 0600) the permissions a plain new file gets under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    chmod_default(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_csv(table: pd.DataFrame, path: str | Path) -> None:
    """CSV with empty cells for missing values (never 0), written atomically."""
    _atomic_write_text(table.to_csv(index=False, float_format="%.6g", na_rep=""), path)


def format_number(value: Any) -> str:
    """A cell as text: integers plain, others with 2 decimals (4 significant below 1)."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        if abs(v) >= 1000:
            return f"{v:,.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(value)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:1.2em;color:#222}
h1{font-size:1.25em;margin:.2em 0 .6em}
.demo{background:#b00020;color:#fff;font-weight:bold;padding:.5em .8em;margin-bottom:1em;font-size:1.1em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f2f2f2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.missing{background:#fafafa;text-align:center}
sup a{text-decoration:none;color:#b00020}
.intro{max-width:60em}
ol.footnotes{font-size:.85em;max-width:60em}
"""


def _marks() -> Iterable[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    for n in range(1, 100):
        for letter in letters:
            yield letter * n


def render_html(
    table: pd.DataFrame,
    *,
    title: str,
    intro: Iterable[str] = (),
    notes: Mapping[tuple[int, str], str] | None = None,
    demo: bool = False,
) -> str:
    """A self-contained HTML page of `table`: empty cells carry a footnote mark saying why."""
    notes = dict(notes or {})
    mark_of: dict[str, str] = {}
    marks = _marks()
    for key in sorted(notes, key=lambda k: (k[0], list(table.columns).index(k[1]) if k[1] in table.columns else 0)):
        if notes[key] not in mark_of:
            mark_of[notes[key]] = next(marks)
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(('DEMO DATA: ' if demo else '') + title)}</title><style>{_CSS}</style></head><body>"]
    if demo:
        out.append('<div class="demo">DEMO DATA: made offline by spikebench and shrunk networks, '
                   "not the study's data; the numbers only show that the pipeline works.</div>")
    out.append(f"<h1>{esc(title)}</h1>")
    for paragraph in intro:
        out.append(f'<p class="intro">{esc(paragraph)}</p>')
    out.append("<table><thead><tr>")
    for column in table.columns:
        unit = UNITS.get(str(column))
        label = f"{column} ({unit})" if unit and unit != "1" and not str(column).endswith(("_s", "_w", "_j", "_mj", "_mib", "_pct")) else str(column)
        out.append(f"<th>{esc(label)}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(table.itertuples(index=False, name=None)):
        out.append("<tr>")
        for column, value in zip(table.columns, row):
            note = notes.get((i, column))
            sup = f'<sup><a href="#note-{mark_of[note]}" title="{esc(note)}">{mark_of[note]}</a></sup>' if note else ""
            if _is_missing(value):
                out.append(f'<td class="missing">{sup}</td>')
            elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                out.append(f'<td class="num">{esc(format_number(value))}{sup}</td>')
            else:
                out.append(f"<td>{esc(str(value))}{sup}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if mark_of:
        out.append('<ol class="footnotes">')
        for text, mark in mark_of.items():
            out.append(f'<li id="note-{mark}" style="list-style:none"><sup>{mark}</sup> {esc(text)}</li>')
        out.append("</ol>")
    out.append("</body></html>")
    return "\n".join(out)


def write_table(
    table: pd.DataFrame,
    csv_path: str | Path,
    html_path: str | Path,
    *,
    title: str,
    intro: Iterable[str] = (),
    notes: Mapping[tuple[int, str], str] | None = None,
    demo: bool = False,
    html_drop: Iterable[str] = ("hardware", "paper_hardware", "run_hardware", "note"),
    html_table: pd.DataFrame | None = None,
) -> None:
    """Write a table as CSV (with a ``notes`` column when there are footnotes) and as HTML.

    The HTML leaves out ``html_drop`` (long text the page states once, or footnotes say); with
    ``html_table`` it shows that frame (same rows, e.g. a narrower view) instead, ``notes`` keyed by its columns.
    """
    csv_table = table.copy()
    if notes is not None and "note" not in csv_table.columns and html_table is None:
        csv_table["notes"] = notes_column(table, notes)
    if demo:
        csv_table["data"] = "DEMO DATA"
    write_csv(csv_table, csv_path)
    shown = table if html_table is None else html_table
    shown = shown.drop(columns=[c for c in html_drop if c in shown.columns])
    _atomic_write_text(render_html(shown, title=title, intro=intro, notes=notes, demo=demo), html_path)


def _energy_source_notes(table: pd.DataFrame) -> dict[tuple[int, str], str]:
    """A footnote on every empty ``energy_source`` cell: there was no energy to name a source for."""
    return {
        (i, "energy_source"): "no energy measured (no NVML energy counter or power readings, no readable RAPL "
                              "counter), so there is no energy source"
        for i, value in enumerate(table["energy_source"]) if _is_missing(value) or value == ""
    } if "energy_source" in table else {}


def _table_notes(table: pd.DataFrame, telemetry_enabled: bool, flagged: Mapping[str, float]) -> dict:
    """All footnotes of a Table I/II frame: missing telemetry, empty energy source, networks that did not learn."""
    return {**explain_missing(table, telemetry_enabled), **_energy_source_notes(table), **learning_notes(table, flagged)}


def _comparison_notes(comparison: pd.DataFrame) -> dict[tuple[int, str], str]:
    return {(i, "run_value"): text for i, text in enumerate(comparison["note"]) if text}


def _cost_notes(cost: pd.DataFrame) -> dict[tuple[int, str], str]:
    """The cost table's notes as footnotes on the cells of :func:`cost_view` they explain."""
    notes: dict[tuple[int, str], str] = {}
    for i, text in enumerate(cost["note"]):
        parts: dict[str, list[str]] = {}
        for part in filter(None, str(text).split("; ")):
            if part.startswith("this run"):
                column = "ratio, this run"
            elif part.startswith(("study value", "the study")):
                column = "ratio, study"
            else:
                column = "comparison"
            parts.setdefault(column, []).append(part)
        notes.update({(i, column): "; ".join(texts) for column, texts in parts.items()})
    return notes


def write_tables(
    epochs_paths: Mapping[str, str | Path],
    test_paths: Mapping[str, str | Path],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str | Path],
    *,
    demo: bool = False,
    telemetry_enabled: bool = True,
    paper_path: str | Path = PAPER_VALUES,
    difference_path: str | Path | None = None,
    summary_path: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Rule tables: read every network's results and write all tables (CSV + HTML).

    ``outputs`` keys: table1_csv, table1_html, table2_csv, table2_html, comparison_csv,
    comparison_html, cost_csv, cost_html, hardware_csv, hardware_html. With the aggregate tables
    (``difference_path``, ``summary_path``) the cost and comparison tables say whether SNN - ANN exceeds its interval.
    """
    from spikebench import aggregate

    epochs = {n: read_epochs(p) for n, p in epochs_paths.items()}
    tests = {n: read_test(p) for n, p in test_paths.items()}
    paper = load_paper_values(paper_path)
    t1 = table1(epochs, networks)
    t2 = table2(tests, networks)
    comparison = paper_comparison(t1, t2, paper, telemetry_enabled)
    cost = cost_of_spiking(t1, paper, networks, t2)
    if difference_path is not None and summary_path is not None:
        difference = aggregate.read_table(difference_path, "difference")
        summary = aggregate.read_table(summary_path, "summary")
        cost = aggregate.cost_verdicts(cost, difference, summary)
        comparison = aggregate.comparison_verdicts(comparison, difference, summary, networks)
    flagged = not_learned(t2)
    hardware = hardware_table(t1, t2)
    paper_hw = str(paper["hardware"].iloc[0])
    run_hw = "; ".join(sorted(set(t1["hardware"]) | set(t2["hardware"])))
    hardware_line = f"Hardware. The study: {paper_hw}. This run: {run_hw}."
    write_table(
        t1, outputs["table1_csv"], outputs["table1_html"], demo=demo,
        notes=_table_notes(t1, telemetry_enabled, flagged),
        title="Table I: training and validation (one row per network)",
        intro=[
            "The study's columns (accuracies in %, epochs to the best validation accuracy, average time per "
            "epoch of training plus validation, average device memory in % and average power over the run) "
            "and, beyond the study, energy per epoch, energy per training sample and the peak memory "
            "PyTorch allocated (the process's peak resident memory on a CPU).",
            hardware_line,
        ],
    )
    write_table(
        t2, outputs["table2_csv"], outputs["table2_html"], demo=demo,
        notes=_table_notes(t2, telemetry_enabled, flagged),
        title="Table II: test (one row per network)",
        intro=[
            "The study's columns (test accuracy in %, time to run the test set, average device memory and power "
            "during the test, macro recall and F1) and, beyond the study, macro precision, energy of the test "
            "phase and energy per test sample.",
            hardware_line,
        ],
    )
    write_table(
        comparison, outputs["comparison_csv"], outputs["comparison_html"], demo=demo,
        notes={**_comparison_notes(comparison), **aggregate.verdict_notes(comparison)},
        html_table=aggregate.verdict_view(comparison, comparison),
        title="The study's Tables I and II next to this run",
        intro=[
            "Each value of the study's Tables I and II (paper_value, transcribed with its table, row and column in "
            "paper_source) next to this run's (run_value); difference = run - study, ratio = run / study.",
            *aggregate.verdict_intro(comparison),
            hardware_line,
        ],
    )
    write_table(
        cost, outputs["cost_csv"], outputs["cost_html"], demo=demo,
        notes={**_cost_notes(cost), **aggregate.verdict_notes(cost)},
        html_table=aggregate.verdict_view(cost_view(cost), cost),
        title="The cost of spiking: SNN over ANN, this run and the study",
        intro=[
            "One row per experiment and metric: the SNN's value over the ANN's (this run, study) and their ratio "
            "(> 1: the SNN costs more). Experiment 3 has no ANN: it compares the N-MNIST SNN with the MNIST "
            "SNN instead. The study reports no energy: its energy per epoch is average power x time per epoch. "
            f"A network whose test accuracy is below {LEARNED_FACTOR:g}x chance ({LEARNED_FACTOR * CHANCE_PCT:g}%) "
            "did not learn: its ratios carry a footnote.",
            *aggregate.verdict_intro(cost),
            hardware_line,
        ],
    )
    write_table(
        hardware, outputs["hardware_csv"], outputs["hardware_html"], demo=demo, html_drop=(),
        title="Hardware and software of this run",
        intro=[f"As the telemetry recorded it for each network and phase. The study ran on {paper_hw}."],
    )
    return {"table1": t1, "table2": t2, "comparison": comparison, "cost": cost, "hardware": hardware}
