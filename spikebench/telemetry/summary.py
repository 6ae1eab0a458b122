"""The per-phase summary of a telemetry table: a pure function, so its arithmetic is testable exactly.

:func:`summarize` reduces the samples of some phases (of one epoch or all) to averages, peaks and energy.
Averages are **time-weighted** (trapezoids over consecutive samples of the same phase interval), because
boundary samples make the sampling non-uniform; when the selection spans no time (a single sample) they fall
back to the plain mean. Energy is the counter difference between the first and last sample of each phase
interval, summed over intervals; otherwise trapezoidal integration of ``power_w``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from spikebench.telemetry.sidecar import _COLUMNS, PHASES

ENERGY_SOURCES: tuple[str, ...] = ("nvml_energy_counter", "nvml_power_integrated", "rapl")
MIN_RELIABLE_ENERGY_S = 1.0
"""Shortest phase interval whose NVML energy is reported as reliable (s): the energy counter updates
every ~100 ms and the power reading is a ~1 s moving average (Zeus's measurement notes)."""

SUMMARY_KEYS: tuple[str, ...] = (
    "avg_power_w",
    "energy_j",
    "energy_source",
    "avg_memory_mib",
    "peak_memory_mib",
    "avg_memory_pct",
    "peak_memory_pct",
    "avg_gpu_util_pct",
    "avg_cpu_util_pct",
    "torch_peak_allocated_mib",
    "telemetry_source",
    "n_samples",
    "duration_s",
    "idle_power_w",
    "energy_above_idle_j",
    "energy_reliable",
    "energy_unreliable_reason",
)
"""Keys of :func:`summarize`'s result (``epoch_summary`` adds ``train_energy_j``, ``val_energy_j``,
``train_energy_above_idle_j``, ``val_energy_above_idle_j``)."""


def _num(values: pd.Series) -> np.ndarray:
    """A nullable numeric column as float64 with NaN for NA."""
    return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)


def _scalar(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize(
    samples: pd.DataFrame, phases: str | Iterable[str], epoch: int | None = None, idle_power_w: float | None = None
) -> dict[str, Any]:
    """Summarise the samples of the given phase(s), optionally of one epoch only.

    ``phases`` is a phase name or several (e.g. ``("train", "val")``); ``epoch=None`` selects every
    epoch. A *phase interval* is a contiguous run of samples with the same (phase, epoch); energy
    and durations are summed over intervals, never across the gap between two intervals. Rows are
    taken in ``time_s`` order (a stable sort: rows with equal times keep their table order).
    ``energy_above_idle_j`` is ``energy_j - idle_power_w * duration_s`` (None without an idle power).
    An NVML energy of a selection with an interval shorter than :data:`MIN_RELIABLE_ENERGY_S` has
    ``energy_reliable`` False and the reason in ``energy_unreliable_reason`` (None without energy).
    Returns the :data:`SUMMARY_KEYS` with plain Python values (``None`` where unavailable).
    """
    sel, seg = _select(samples, phases, epoch)
    result: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)
    result["n_samples"] = len(sel)
    if sel.empty:
        return result
    iv = _Intervals(sel, seg)
    sources = sorted(set(sel["source"].dropna().astype(str)))
    energy, energy_source = _energy(iv, sources)
    if energy is not None and iv.duration > 0:
        avg_power = energy / iv.duration
    else:
        avg_power = iv.time_avg("power_w")

    result.update(_energy_quality(energy, energy_source, iv.duration, idle_power_w, iv.dt, iv.pair, seg))
    result.update(
        avg_power_w=_scalar(avg_power) if avg_power is not None else None,
        energy_j=energy,
        energy_source=energy_source,
        avg_memory_mib=iv.time_avg("memory_used_mib"),
        peak_memory_mib=iv.peak("memory_used_mib"),
        avg_memory_pct=iv.time_avg("memory_used_pct"),
        peak_memory_pct=iv.peak("memory_used_pct"),
        avg_gpu_util_pct=iv.time_avg("gpu_util_pct"),
        avg_cpu_util_pct=iv.time_avg("cpu_util_pct"),
        torch_peak_allocated_mib=iv.peak("torch_peak_allocated_mib"),
        telemetry_source="+".join(sources) if sources else None,
        duration_s=iv.duration,
    )
    return result


def _select(samples: pd.DataFrame, phases: str | Iterable[str], epoch: int | None) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``phases`` (of ``epoch``) in ``time_s`` order, and the phase interval of each (numbered)."""
    missing = [c for c in _COLUMNS if c not in samples.columns]
    if missing:
        raise ValueError(f"summarize: samples table lacks columns {missing} (expected SAMPLE_SCHEMA)")
    wanted = (phases,) if isinstance(phases, str) else tuple(phases)
    unknown = sorted(set(wanted) - set(PHASES))
    if unknown:
        raise ValueError(f"summarize: unknown phase(s) {unknown}; expected some of {PHASES}")

    df = samples.sort_values("time_s", kind="stable").reset_index(drop=True)
    phase = df["phase"].astype("string").fillna("").to_numpy(dtype=object)
    ep = df["epoch"].astype("Int64").fillna(-1).to_numpy(dtype="int64")
    change = np.ones(len(df), dtype=bool)
    if len(df) > 1:
        change[1:] = (phase[1:] != phase[:-1]) | (ep[1:] != ep[:-1])
    segment = np.cumsum(change)

    mask = np.isin(phase, wanted)
    if epoch is not None:
        mask &= ep == int(epoch)
    return df.loc[mask].reset_index(drop=True), segment[mask]


class _Intervals:
    """The selected samples with their phase intervals: ``pair[i]`` when row i closes the pair (i-1, i)
    inside one interval, ``dt`` the time step to row i, ``first``/``last`` the rows opening/closing an interval."""

    def __init__(self, sel: pd.DataFrame, seg: np.ndarray) -> None:
        self.sel = sel
        t = sel["time_s"].to_numpy(dtype="float64")
        self.pair = pair = np.zeros(len(sel), dtype=bool)
        pair[1:] = seg[1:] == seg[:-1]
        self.dt = dt = np.zeros(len(sel))
        dt[1:] = np.diff(t)
        self.duration = float(dt[pair].sum())
        self.first = np.ones(len(sel), dtype=bool)
        self.first[1:] = ~pair[1:]
        self.last = np.ones(len(sel), dtype=bool)
        self.last[:-1] = ~pair[1:]

    @staticmethod
    def pair_means(x: np.ndarray) -> np.ndarray:
        mid = np.full(len(x), np.nan)
        mid[1:] = (x[1:] + x[:-1]) / 2.0
        return mid

    def time_avg(self, column: str) -> float | None:
        x = _num(self.sel[column])
        mid = self.pair_means(x)
        ok = self.pair & ~np.isnan(mid)
        weight = self.dt[ok].sum()
        if weight > 0:
            return _scalar(float((mid[ok] * self.dt[ok]).sum() / weight))
        finite = x[~np.isnan(x)]
        return _scalar(float(finite.mean())) if finite.size else None

    def peak(self, column: str) -> float | None:
        x = _num(self.sel[column])
        return _scalar(float(np.nanmax(x))) if (~np.isnan(x)).any() else None

    def counter_energy(self, column: str, joules_per_unit: float) -> float | None:
        c = self.sel[column].astype("Int64")
        start, end = c[self.first], c[self.last]
        if start.isna().any() or end.isna().any():
            return None
        diff = end.to_numpy(dtype="int64") - start.to_numpy(dtype="int64")
        if (diff < 0).any():  # counter reset (driver reload): not a usable difference
            return None
        return float(diff.sum()) * joules_per_unit

    def integrated_energy(self, column: str) -> float | None:
        x = _num(self.sel[column])
        if np.isnan(x).all():
            return None
        mid = self.pair_means(x)
        if np.isnan(mid[self.pair]).any():  # a gap in the readings: the integral would be incomplete
            return None
        return float((mid[self.pair] * self.dt[self.pair]).sum())


def _energy(iv: _Intervals, sources: list[str]) -> tuple[float | None, str | None]:
    """Energy of the selection (J) and where it comes from (:data:`ENERGY_SOURCES`), or (None, None)."""
    energy: float | None = None
    energy_source: str | None = None
    if sources == ["nvml"]:
        energy = iv.counter_energy("energy_counter_mj", 1e-3)
        if energy is not None:
            energy_source = "nvml_energy_counter"
        else:
            energy = iv.integrated_energy("power_w")
            energy_source = "nvml_power_integrated" if energy is not None else None
    elif sources == ["cpu"]:
        energy = iv.counter_energy("cpu_energy_uj", 1e-6)
        energy_source = "rapl" if energy is not None else None
    return energy, energy_source


def _energy_quality(
    energy: float | None,
    energy_source: str | None,
    duration: float,
    idle_power_w: float | None,
    dt: np.ndarray,
    pair: np.ndarray,
    seg: np.ndarray,
) -> dict[str, Any]:
    """``idle_power_w``, ``energy_above_idle_j``, ``energy_reliable`` and its reason for :func:`summarize`."""
    idle = _scalar(idle_power_w) if idle_power_w is not None else None
    out: dict[str, Any] = {
        "idle_power_w": idle,
        "energy_above_idle_j": None,
        "energy_reliable": None,
        "energy_unreliable_reason": None,
    }
    if energy is None:
        return out
    if idle is not None:
        out["energy_above_idle_j"] = energy - idle * duration
    out["energy_reliable"] = True
    if energy_source is not None and energy_source.startswith("nvml"):
        _, index = np.unique(seg, return_inverse=True)
        shortest = float(np.bincount(index, weights=np.where(pair, dt, 0.0)).min())
        if shortest < MIN_RELIABLE_ENERGY_S:
            out["energy_reliable"] = False
            out["energy_unreliable_reason"] = (
                f"a phase interval of {shortest:.3g} s is shorter than {MIN_RELIABLE_ENERGY_S:g} s: NVML's energy "
                "counter updates every ~100 ms and its power reading is a ~1 s average"
            )
    return out
