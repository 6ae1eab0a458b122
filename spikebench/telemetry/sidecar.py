"""The telemetry sidecar: its table schema, reading and writing it, and finishing a job's sidecar.

:data:`SAMPLE_SCHEMA` are the columns of the table a :class:`~spikebench.telemetry.TelemetrySampler` records
(one row per sample, pandas nullable dtypes: NA where a value is unavailable, never 0). The sidecar is that
table as Parquet, with the sampler settings and phase boundaries as JSON under :data:`METADATA_KEY` in the
schema metadata; every write goes through :mod:`spikebench.atomic` (temporary file, then rename).
:func:`read_samples` is the one reader of a sidecar (the results tables and figures use it too).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spikebench import atomic

PHASES: tuple[str, ...] = ("train", "val", "test", "idle")
SOURCES: tuple[str, ...] = ("nvml", "cpu", "none")
METADATA_KEY = b"spikebench.telemetry"

SAMPLE_SCHEMA: dict[str, str] = {
    "time_s": "float64",  # monotonic seconds since start()
    "timestamp": "datetime64[ns, UTC]",
    "phase": "string",  # train | val | test | idle
    "epoch": "Int64",
    "source": "string",  # nvml | cpu | none
    "power_w": "Float64",
    "energy_counter_mj": "Int64",  # NVML total-energy counter (mJ since driver load)
    "memory_used_mib": "Float64",
    "memory_total_mib": "Float64",
    "memory_used_pct": "Float64",
    "gpu_util_pct": "Float64",
    "memory_util_pct": "Float64",
    "temperature_c": "Float64",
    "sm_clock_mhz": "Float64",
    "cpu_util_pct": "Float64",
    "rss_mib": "Float64",
    "cpu_energy_uj": "Int64",  # RAPL package energy, unwrapped counter (µJ)
    "torch_peak_allocated_mib": "Float64",  # on phase-closing samples: peak since the phase began
    "error": "string",
}
"""Columns of the telemetry table and their pandas dtypes (nullable: NA where unavailable)."""

_COLUMNS = tuple(SAMPLE_SCHEMA)
_IX = {name: i for i, name in enumerate(_COLUMNS)}


def empty_samples() -> pd.DataFrame:
    """An empty telemetry table with the right columns and dtypes."""
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in SAMPLE_SCHEMA.items()})


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    """Build the typed telemetry table from raw sample rows (wall time as float seconds)."""
    if not rows:
        return empty_samples()
    columns = list(zip(*rows))  # column-wise, keeping Python ints exact (no float round trip)
    out: dict[str, pd.Series] = {}
    for (name, dtype), values in zip(SAMPLE_SCHEMA.items(), columns):
        if name == "timestamp":
            stamps = pd.to_datetime(np.asarray(values, dtype="float64"), unit="s", utc=True)
            out[name] = pd.Series(stamps).astype(dtype)
        elif name == "time_s":
            out[name] = pd.Series(np.asarray(values, dtype="float64"))
        else:
            out[name] = pd.Series(values, dtype="object").astype(dtype)
    return pd.DataFrame(out)


def _rows_of(df: pd.DataFrame) -> list[list[Any]]:
    """The raw sample rows of a telemetry table (inverse of :func:`_frame`; NA as None)."""
    if df.empty:
        return []
    columns = []
    for name in _COLUMNS:
        col = df[name]
        if name == "timestamp":
            columns.append([t.timestamp() for t in col])
        elif name == "time_s":
            columns.append(col.astype("float64").tolist())
        else:
            columns.append([None if v is pd.NA else v for v in col.astype(object).where(col.notna(), None)])
    return [list(row) for row in zip(*columns)]


def read_samples(path: str | os.PathLike[str], required: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a telemetry sidecar written by :meth:`TelemetrySampler.write`: the :data:`SAMPLE_SCHEMA` columns.

    ``required``: the columns the caller needs (default: all of the schema); a schema column not required
    and absent from the file (a sidecar of an older spikebench) comes back all NA. Other columns are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"telemetry sidecar not found: {path}")
    df = pd.read_parquet(path)
    needed = _COLUMNS if required is None else tuple(required)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a telemetry sidecar, missing columns {missing}")
    for name in _COLUMNS:
        if name not in df.columns:
            df[name] = pd.Series([pd.NA] * len(df), dtype=SAMPLE_SCHEMA[name], index=df.index)
    return df[list(_COLUMNS)].astype(SAMPLE_SCHEMA)


def sidecar_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The sampler settings and phase boundaries stored in a sidecar's Parquet metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(Path(path)).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_sidecar(samples: pd.DataFrame, info: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the telemetry table ``samples`` to Parquet at ``path`` atomically, with ``info`` (sampler
    settings, phase boundaries, ...) as JSON under :data:`METADATA_KEY`; returns the path.

    Through :func:`~spikebench.atomic.atomic_output`, not ``atomic.write_parquet``: a failing write raises the
    writer's own ``OSError`` and the callers (``JobTelemetry.epoch_done``, :func:`finish_telemetry`) name the
    file once, as they did before this module existed (``write_parquet`` names it too: the name came twice).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pa.Table.from_pandas(samples, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(info, default=str).encode()
    with atomic.atomic_output(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return path


def add_parquet_metadata(path: str | os.PathLike[str], metadata: dict, columns: dict | None = None) -> None:
    """Rewrite a Parquet file with extra key-value metadata (JSON values) and constant columns, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    table = pq.read_table(path)
    for name, value in (columns or {}).items():
        if name not in table.column_names:
            table = table.append_column(name, pa.array([value] * table.num_rows))
    atomic.write_parquet(table, path, metadata=metadata)


def finish_telemetry(
    hook: Any, path: str | os.PathLike[str], log: logging.Logger, failed: BaseException | None = None
) -> None:
    """Stop the sampler and write the whole run's sidecar to `path` (``hook.write``, the job's
    :class:`~spikebench.jobs.JobTelemetry`).

    A write that fails names `path`. While the job is already failing (`failed`), that write failure is only
    logged, so that the first error (say, the checkpoint save that hit a full disk) is the one raised.
    """
    try:
        hook.write(path)
    except Exception as exc:  # noqa: BLE001 - re-raised below unless another error is on its way
        if failed is None:
            if isinstance(exc, OSError):
                raise atomic.write_error(Path(path), exc) from exc
            raise
        log.error(
            "after the job failed (%s: %s), the telemetry sidecar %s could not be written either (%s: %s)",
            type(failed).__name__,
            failed,
            path,
            type(exc).__name__,
            exc,
        )
