"""Seeded random train/validation split of an official training set, stored as Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spikebench.atomic import write_parquet

SUBSETS = ("train", "val")
_META_PREFIX = "spikebench.split."


class SplitMismatchError(ValueError):
    """A split file does not fit the dataset it is used with."""


def make_split(n: int, val_fraction: float, seed: int) -> pd.DataFrame:
    """Split positions ``0..n-1`` of an official training set into train and val.

    Returns columns ``index`` (int64, position in the official training set, ascending) and
    ``subset`` ("train"/"val"); exactly ``round(n * val_fraction)`` rows are "val", drawn with
    ``numpy.random.default_rng(seed)``.
    """
    if int(n) != n or n <= 0:
        raise ValueError(f"split size n must be a positive integer, got {n!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = int(n)
    n_val = int(round(n * val_fraction))
    val = np.random.default_rng(seed).permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64),
            "subset": pd.Series(np.where(is_val, "val", "train"), dtype=object),
        }
    )


def write_split(df: pd.DataFrame, path: Path, dataset: str, n: int, val_fraction: float, seed: int) -> None:
    """Write a split as Parquet with its parameters in the key-value metadata, atomically."""
    path = Path(path)
    if list(df.columns) != ["index", "subset"]:
        raise ValueError(f"{path}: split table needs columns ['index', 'subset'], got {list(df.columns)}")
    if len(df) != n:
        raise ValueError(f"{path}: split table has {len(df)} rows for a dataset of {n}")
    table = pa.Table.from_pandas(
        pd.DataFrame({"index": df["index"].astype(np.int64).to_numpy(), "subset": df["subset"].astype(str).to_numpy()}),
        preserve_index=False,
    )
    params = {"dataset": dataset, "n": n, "val_fraction": val_fraction, "seed": seed}
    metadata = dict(table.schema.metadata or {})
    metadata.update({f"{_META_PREFIX}{key}".encode(): str(value).encode() for key, value in params.items()})
    # the parameters as plain strings (write_parquet's own ``metadata`` would JSON-encode them)
    write_parquet(table.replace_schema_metadata(metadata), path)


def read_split_metadata(path: Path) -> dict[str, str]:
    """The parameters ``write_split`` stored (dataset, n, val_fraction, seed), as strings."""
    metadata = pq.read_schema(path).metadata or {}
    return {
        key.decode()[len(_META_PREFIX) :]: value.decode()
        for key, value in metadata.items()
        if key.decode().startswith(_META_PREFIX)
    }


def read_split(path: Path, n_expected: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a split file: (train indices, val indices), int64, ascending.

    With ``n_expected`` (the size of the official training set in use) a split made for another
    size is refused with an error naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"split file not found: {path} (make it with the split rule first)")
    df = pq.read_table(path).to_pandas()
    if list(df.columns) != ["index", "subset"]:
        raise SplitMismatchError(f"{path}: expected columns ['index', 'subset'], got {list(df.columns)}")
    index = df["index"].to_numpy(dtype=np.int64)
    subset = df["subset"].astype(str).to_numpy()
    unknown = set(np.unique(subset)) - set(SUBSETS)
    if unknown:
        raise SplitMismatchError(f"{path}: unknown subset values {sorted(unknown)}; expected {SUBSETS}")
    n = len(index)
    if not np.array_equal(np.sort(index), np.arange(n)):
        raise SplitMismatchError(f"{path}: 'index' is not a permutation of 0..{n - 1}")
    stored_n = read_split_metadata(path).get("n")
    if stored_n is not None and int(stored_n) != n:
        raise SplitMismatchError(f"{path}: metadata says n={stored_n} but the table has {n} rows")
    if n_expected is not None and n != n_expected:
        raise SplitMismatchError(
            f"{path}: split made for a training set of {n} samples, but the dataset has {n_expected}; "
            "remake the split for this dataset (delete the file and rerun the split rule)"
        )
    is_val = subset == "val"
    return np.sort(index[~is_val]), np.sort(index[is_val])
