"""One cell of a result file or table: read as a number or text, missing or not, written as text.

Missing is ``None``, ``pd.NA`` or NaN, never 0: a value that was not measured stays empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def as_number(value: Any) -> float:
    """A JSON/Parquet value as float; None, "" and non-numbers are NaN (never 0)."""
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def distinct_text(values: Iterable[Any]) -> str | None:
    """Distinct non-empty strings of a column, joined; None when there are none."""
    seen: list[str] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            continue
        s = str(v)
        if s and s not in seen:
            seen.append(s)
    return ", ".join(seen) if seen else None


def is_missing(value: Any) -> bool:
    """Whether a cell is empty: None, pd.NA or NaN."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def format_number(value: Any) -> str:
    """A cell as text: integers plain, others with 2 decimals (4 significant below 1)."""
    if is_missing(value):
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
