"""Reading what the train and evaluate jobs wrote (``epochs.parquet``, ``test.json``, the telemetry
sidecars) and the study's transcribed values (``paper_values.csv``), each checked for what the tables need.

A file that is absent or lacks a column or key is an error naming the file, what was expected and which
rule writes it (:class:`ResultsInputError`, ``FileNotFoundError``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

PAPER_VALUES = Path(__file__).parents[1] / "paper_values.csv"
HARDWARE_KEY = b"spikebench.hardware"

EPOCH_COLUMNS = (
    "network",
    "epoch",
    "train_acc",
    "val_acc",
    "epoch_time_s",
    "n_train",
    "peak_memory_mib",
    "device",
    "avg_power_w",
    "energy_j",
    "train_energy_j",
    "device_memory_avg_pct",
    "telemetry_source",
)
TEST_KEYS = (
    "network",
    "n_test",
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "test_time_s",
    "peak_memory_mib",
    "device",
    "telemetry",
)
TEST_TELEMETRY_KEYS = ("avg_power_w", "energy_j", "device_memory_avg_pct", "telemetry_source")
TELEMETRY_COLUMNS = (
    "time_s",
    "phase",
    "source",
    "power_w",
    "memory_used_mib",
    "memory_used_pct",
    "rss_mib",
)
PAPER_COLUMNS = ("table", "experiment", "network", "paper_label", "metric", "value", "unit", "source", "hardware")


class ResultsInputError(ValueError):
    """A per-network result file lacks what the tables need; the message names file and key."""


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
    from spikebench.telemetry import read_samples

    try:
        df = read_samples(path, required=TELEMETRY_COLUMNS)
    except ValueError as exc:
        raise ResultsInputError(str(exc)) from exc
    for column in ("time_s", "power_w", "memory_used_mib", "memory_used_pct", "rss_mib", "cpu_energy_uj"):
        df[column] = pd.to_numeric(df[column], errors="coerce").astype(float)
    return df.sort_values("time_s", kind="stable").reset_index(drop=True)


#: The study's metrics given as fractions that the tables show in % (Table II: recall, F1).
PERCENT_OF_FRACTION = ("recall", "f1", "precision")


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
    # The study gives macro recall and F1 as fractions; Table II has them in % like accuracy (one scale).
    fractions = df["metric"].isin(PERCENT_OF_FRACTION) & (df["unit"].astype(str) == "1")
    df.loc[fractions, "value"] *= 100
    df.loc[fractions, "unit"] = "%"
    return df
