"""The telemetry of a run on one time axis, for the figures: the train and test sidecars joined
(:func:`run_timeline`), power derived from the CPU's RAPL counter where there is no GPU power
(:func:`with_power`), memory as one series (:func:`memory_series`), phases as spans (:func:`phase_spans`)
and long runs averaged into bins (:func:`thin`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_POINTS = 1500  # per line: long runs (100 ms samples over hours) are averaged into bins


def with_power(sidecar: pd.DataFrame) -> pd.DataFrame:
    """One sidecar with ``power_kind``: "gpu" where NVML gave ``power_w``; on a CPU run with a readable
    RAPL counter, ``power_w`` derived from ``cpu_energy_uj`` (energy difference over time) and "cpu"."""
    out = sidecar.assign(power_kind=None)
    power = pd.to_numeric(out["power_w"], errors="coerce").astype(float)
    if power.notna().any():
        out["power_w"] = power
        out.loc[power.notna(), "power_kind"] = "gpu"
        return out
    if "cpu_energy_uj" in out:
        energy = pd.to_numeric(out["cpu_energy_uj"], errors="coerce").astype(float).to_numpy()
        t = out["time_s"].astype(float).to_numpy()
        derived = np.full(len(out), np.nan)
        if len(out) > 1:
            dt = np.diff(t)
            with np.errstate(divide="ignore", invalid="ignore"):
                derived[1:] = np.where(dt > 0, np.diff(energy) / dt * 1e-6, np.nan)
        out["power_w"] = derived
        out.loc[~np.isnan(derived), "power_kind"] = "cpu"
    return out


def _from_phase_start(sidecar: pd.DataFrame, phase: str) -> pd.DataFrame:
    """The samples from the first one of ``phase`` on, with ``t_s`` counted from it (start-up left out);
    all samples from the first when no sample has that phase."""
    t = sidecar["time_s"].astype(float)
    in_phase = (sidecar["phase"].astype("string").fillna("") == phase).to_numpy(bool) if "phase" in sidecar else None
    start = float(t[in_phase].min()) if in_phase is not None and in_phase.any() else float(t.min())
    part = with_power(sidecar.loc[t >= start])
    return part.assign(t_s=(part["time_s"].astype(float) - start).to_numpy())


def run_timeline(train: pd.DataFrame, test: pd.DataFrame | None = None) -> pd.DataFrame:
    """The train and test sidecars on one time axis, ``t_s`` seconds from the first training sample.

    Start-up (loading data and the network before the first training sample) is left out; the test phase
    follows training directly (a short gap marks the boundary), from its first test sample; the real gap
    between the two jobs, which may be hours on a cluster, is left out. Adds ``power_kind`` (see
    :func:`with_power`).
    """
    parts = []
    end = 0.0
    if train is not None and len(train):
        part = _from_phase_start(train, "train")
        end = float(part["t_s"].max())
        parts.append(part)
    if test is not None and len(test):
        gap = max(end * 0.01, 0.5) if parts else 0.0
        part = _from_phase_start(test, "test")
        part = part.assign(t_s=part["t_s"].to_numpy() + end + gap)
        part["phase"] = part["phase"].astype(object).where(part["phase"].notna(), "test")
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["t_s", "phase", "source", "power_w", "power_kind", "memory_used_mib", "rss_mib"])
    return pd.concat(parts, ignore_index=True)


def memory_series(timeline: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """``t_s``/``memory_mib`` of one network and its kind: "gpu" (NVML device memory) or "rss" (the process's)."""
    if timeline.empty:
        return None
    source = timeline["source"].astype(object) if "source" in timeline else pd.Series("nvml", index=timeline.index)
    gpu = timeline.loc[(source == "nvml") & timeline["memory_used_mib"].notna(), ["t_s", "memory_used_mib"]]
    if len(gpu):
        return gpu.rename(columns={"memory_used_mib": "memory_mib"}), "gpu"
    rss = timeline.loc[timeline["rss_mib"].notna(), ["t_s", "rss_mib"]]
    if len(rss):
        return rss.rename(columns={"rss_mib": "memory_mib"}), "rss"
    return None


def phase_spans(timeline: pd.DataFrame) -> pd.DataFrame:
    """Consecutive samples of one phase as spans: start_s, end_s, phase (each ends where the next starts)."""
    if timeline.empty or "phase" not in timeline:
        return pd.DataFrame(columns=["start_s", "end_s", "phase"])
    phase = timeline["phase"].astype(object).where(timeline["phase"].notna(), "idle").astype(str)
    block = (phase != phase.shift()).cumsum()
    spans = pd.DataFrame({"t": timeline["t_s"].to_numpy(), "phase": phase.to_numpy(), "block": block.to_numpy()})
    spans = spans.groupby("block", sort=True).agg(start_s=("t", "min"), end_s=("t", "max"), phase=("phase", "first"))
    nxt = spans["start_s"].shift(-1)
    spans["end_s"] = np.where(nxt.notna() & (nxt - spans["end_s"] < 5 * _step(timeline)), nxt, spans["end_s"])
    return spans.reset_index(drop=True)


def _step(timeline: pd.DataFrame) -> float:
    d = np.diff(timeline["t_s"].to_numpy(dtype=float))
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 0.0


def thin(timeline: pd.DataFrame, column: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """``t_s`` and `column` averaged into at most `max_points` time bins (NaN samples skipped)."""
    df = timeline[["t_s", column]].dropna()
    if len(df) <= max_points:
        return df
    t = df["t_s"].to_numpy(dtype=float)
    span = t.max() - t.min()
    bins = (
        np.minimum(((t - t.min()) / span * max_points).astype(np.int64), max_points - 1)
        if span > 0
        else np.zeros(len(t), int)
    )
    return df.groupby(bins, sort=True).mean()


def time_unit(t_max: float) -> tuple[float, str]:
    """The time axis's scale and unit: minutes for runs over 20 minutes, else seconds."""
    return (60.0, "min") if t_max > 1200 else (1.0, "s")
