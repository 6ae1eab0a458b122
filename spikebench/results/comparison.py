"""This run next to the study: each value of the study's Tables I and II beside this run's
(:func:`paper_comparison`), and the cost of spiking, the SNN/ANN ratios per experiment, this run and the
study (:func:`cost_of_spiking`, and :func:`cost_view`, its narrow view in the report).

The study reports no energy: its energy per epoch is derived as average power times average time per
epoch, and is marked as derived. Experiment 3 has two SNNs and no ANN: its "cost" row compares the
N-MNIST SNN with the MNIST SNN (the cost of event data, which is what experiment 3 studies); an SNN/ANN
ratio is n/a there. Comparing it with experiment 1's ANN would mix the cost of spiking with that of a
different architecture (convolutional vs fully connected).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from spikebench.results.cells import as_number as _num, format_number, is_missing as _is_missing
from spikebench.results.footnotes import explain_missing, not_learned, not_learned_note, source_kind
from spikebench.results.networks import spiking_pairs
from spikebench.results.tables import UNITS

COST_METRICS = (
    "train_time_per_sample_ms",
    "energy_per_train_sample_mj",
    "avg_epoch_time_s",
    "median_epoch_time_s",
    "energy_per_epoch_j",
    "avg_power_w",
    "avg_memory_pct",
    "peak_memory_mib",
)
#: Cost metrics compared only where Table I has a value in the column (activation memory: CUDA only; the memory
#: saved for backward: results from before it was measured have none).
OPTIONAL_COST_METRICS = ("activation_peak_mib", "saved_for_backward_mib")
#: The cost of reaching the experiment's target validation accuracy (:mod:`spikebench.results.target`): over seeds,
#: from the aggregate tables only (``cost_of_spiking(..., to_target=True)``, then ``aggregate.seed_ratios``).
TARGET_COST_METRICS = ("time_to_target_s", "energy_to_target_j", "samples_to_target")
#: What each cost metric is, for the cost table's HTML view and the headline figure.
COST_LABELS = {
    "time_to_target_s": "training time to the target accuracy",
    "energy_to_target_j": "training energy to the target accuracy",
    "samples_to_target": "training samples to the target accuracy",
    "train_time_per_sample_ms": "training time per sample",
    "energy_per_train_sample_mj": "training energy per sample",
    "avg_epoch_time_s": "time per epoch",
    "median_epoch_time_s": "median time per epoch",
    "energy_per_epoch_j": "energy per epoch",
    "avg_power_w": "average power",
    "avg_memory_pct": "average memory",
    "peak_memory_mib": "peak memory",
    "activation_peak_mib": "activation memory",
    "saved_for_backward_mib": "memory saved for backward",
}


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
    run = pd.concat(
        [
            _long(t1, "I", paper.loc[paper["table"] == "I", "metric"].unique()),
            _long(t2, "II", paper.loc[paper["table"] == "II", "metric"].unique()),
        ],
        ignore_index=True,
    )
    reasons: dict[tuple[str, str, str], str] = {}
    for name, table in (("I", t1), ("II", t2)):
        for (i, column), text in explain_missing(table, telemetry_enabled).items():
            reasons[(name, table["network"].iloc[i], column)] = text
    out = paper.rename(columns={"value": "paper_value", "source": "paper_source", "hardware": "paper_hardware"})
    out = out.merge(run.rename(columns={"hardware": "run_hardware"}), on=["table", "network", "metric"], how="left")
    out["difference"] = out["run_value"] - out["paper_value"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.where(out["paper_value"] != 0, out["run_value"] / out["paper_value"], np.nan)
    unlike = [
        _unlike_quantity(t1 if t == "I" else t2, n, m) for t, n, m in zip(out["table"], out["network"], out["metric"])
    ]
    out.loc[[u is not None for u in unlike], ["difference", "ratio"]] = np.nan
    present = set(t1["network"]) | set(t2["network"])
    out["note"] = [
        "; ".join(filter(None, [reasons.get((t, n, m), ""), u])) if n in present else "network not in this run"
        for t, n, m, u in zip(out["table"], out["network"], out["metric"], unlike)
    ]
    out["run_hardware"] = out["run_hardware"].where(out["run_hardware"].notna(), "")
    columns = [
        "table",
        "experiment",
        "network",
        "paper_label",
        "metric",
        "unit",
        "paper_value",
        "run_value",
        "difference",
        "ratio",
        "paper_source",
        "paper_hardware",
        "run_hardware",
        "note",
    ]
    return out[columns]


#: The study's figures that are the GPU's own: this run's value of the same column on the CPU is another quantity.
GPU_QUANTITIES = {"avg_memory_pct": "memory", "avg_power_w": "power"}


def _unlike_quantity(table: pd.DataFrame, network: str, metric: str) -> str | None:
    """Why this run's value of `metric` is not the study's quantity (a CPU run: % of RAM, not of GPU memory; the
    CPU package's power, not the GPU's), so that no difference or ratio is formed; None where they are alike."""
    quantity = GPU_QUANTITIES.get(metric)
    rows = table.loc[table["network"] == network] if "network" in table else table.iloc[:0]
    if quantity is None or rows.empty:
        return None
    row = rows.iloc[0]
    if source_kind(row.get("telemetry_source")) != "cpu" and not str(row.get("device") or "").startswith("cpu"):
        return None
    if quantity == "memory":
        return (
            "not compared: this run's memory is the process's share of the machine's RAM (no GPU), the study's "
            "the share of the GPU's memory; a difference or ratio of the two means nothing"
        )
    return (
        "not compared: this run's power is the CPU package's (RAPL), the study's the GPU board's; a difference "
        "or ratio of the two means nothing"
    )


def _cost_value(frame: pd.DataFrame, network: str, metric: str) -> float:
    if network in frame.index and metric in frame.columns:
        return _num(frame.at[network, metric])
    return math.nan


def _cost_run_note(metric: str, run: pd.DataFrame, num: str, den: str) -> str | None:
    """What this run's memory value measures where it is not the GPU's (a CPU run)."""
    if metric not in ("avg_memory_pct", "peak_memory_mib"):
        return None
    rows = [run.loc[n] for n in (num, den) if n in run.index]
    if not rows or not any(
        source_kind(r.get("telemetry_source")) == "cpu" or str(r.get("device") or "") == "cpu" for r in rows
    ):
        return None
    return (
        "this run on the CPU: the process's resident memory (RSS), mostly the runtime (Python, PyTorch, "
        "libraries) rather than the network's activations, so the ratio understates the SNN's extra memory"
    )


#: Per-sample metric -> the study's per-epoch metric its ratio is derived from: the study's two networks of a pair
#: train on the same samples per epoch (MNIST 48,000, CIFAR-10 40,000, N-MNIST 48,000), so its per-sample ratio is
#: its per-epoch ratio; it reports no per-sample value itself.
PAPER_PER_SAMPLE = {"train_time_per_sample_ms": "avg_epoch_time_s", "energy_per_train_sample_mj": "energy_per_epoch_j"}
PER_EPOCH = ("avg_epoch_time_s", "median_epoch_time_s", "energy_per_epoch_j")

#: The cost table's columns, in order.
COST_COLUMNS = [
    "experiment",
    "implementation",
    "comparison",
    "numerator",
    "denominator",
    "metric",
    "unit",
    "run_numerator",
    "run_denominator",
    "run_ratio",
    "samples_numerator",
    "samples_denominator",
    "paper_numerator",
    "paper_denominator",
    "paper_ratio",
    "not_learned",
    "note",
]


def _paper_table1(paper: pd.DataFrame) -> pd.DataFrame:
    """The study's Table I, one row per network, with its energy per epoch derived (power x time per epoch)."""
    p1 = paper[paper["table"] == "I"].pivot_table(index="network", columns="metric", values="value", aggfunc="first")
    if "avg_power_w" in p1 and "avg_epoch_time_s" in p1:
        p1["energy_per_epoch_j"] = p1["avg_power_w"] * p1["avg_epoch_time_s"]
    return p1


def _cost_metrics(t1: pd.DataFrame, to_target: bool) -> tuple[str, ...]:
    """The cost metrics compared: :data:`TARGET_COST_METRICS` (``to_target``), all of :data:`COST_METRICS`, the
    optional ones where Table I has a value."""
    return (
        (TARGET_COST_METRICS if to_target else ())
        + COST_METRICS
        + tuple(
            m for m in OPTIONAL_COST_METRICS if m in t1.columns and pd.to_numeric(t1[m], errors="coerce").notna().any()
        )
    )


def _samples_note(metric: str, samples: tuple[float, float]) -> str | None:
    """Where the two networks train on different numbers of samples per epoch: a per-epoch ratio compares
    different amounts of work."""
    a, b = samples
    if math.isnan(a) or math.isnan(b) or a == b:
        return None
    if metric in PER_EPOCH:
        return (
            f"this run: the networks train on different samples per epoch ({a:.0f} vs {b:.0f}): this per-epoch "
            "ratio compares different amounts of work; compare the per-sample rows"
        )
    return f"this run: {a:.0f} vs {b:.0f} training samples per epoch (a per-sample ratio)"


def _cost_notes(
    pair: Mapping,
    metric: str,
    run: pd.DataFrame,
    measured: bool,
    failed: list[str],
    flagged: Mapping[str, float],
    samples: tuple[float, float],
) -> str:
    """The note of one cost row: the pair's, what the study lacks, what this run measured, who did not learn."""
    notes = [pair["note"]]
    if metric == "energy_per_epoch_j":
        notes.append("study value derived as average power x average time per epoch")
    if metric in PAPER_PER_SAMPLE:
        notes.append(
            "study ratio derived: its per-epoch ratio (both networks of a pair train on the same samples per "
            "epoch; it reports no per-sample value)"
        )
    if metric in ("peak_memory_mib", *OPTIONAL_COST_METRICS):
        notes.append("the study reports no peak memory in MiB")
    if metric == "median_epoch_time_s":
        notes.append("the study reports no median time per epoch")
    if metric in TARGET_COST_METRICS:
        notes.append("the study reports no time or energy to an accuracy")
        measured = True  # filled from the aggregate tables (aggregate.seed_ratios), which say what was not reached
    if not measured:
        notes.append("this run: not measured (see Table I's footnotes)")
    else:
        notes.append(_cost_run_note(metric, run, pair["numerator"], pair["denominator"]))
    notes.append(_samples_note(metric, samples))
    notes += [f"this run: {not_learned_note(n, flagged[n])}" for n in failed]
    return "; ".join(n for n in notes if n)


def _cost_row(
    pair: Mapping, metric: str, run: pd.DataFrame, p1: pd.DataFrame, flagged: Mapping[str, float]
) -> dict[str, Any]:
    """One row of the cost table: one pair's numerator and denominator and their ratio, run and study."""
    num, den = pair["numerator"], pair["denominator"]
    failed = [n for n in (num, den) if n in flagged]
    rn, rd = _cost_value(run, num, metric), _cost_value(run, den, metric)
    study = PAPER_PER_SAMPLE.get(metric)
    pn, pd_ = (math.nan, math.nan) if study else (_cost_value(p1, num, metric), _cost_value(p1, den, metric))
    sn, sd = (_cost_value(p1, num, study), _cost_value(p1, den, study)) if study else (pn, pd_)
    samples = (_cost_value(run, num, "train_samples_per_epoch"), _cost_value(run, den, "train_samples_per_epoch"))
    measured = not (math.isnan(rn) or math.isnan(rd))
    return {
        "experiment": pair["experiment"],
        "implementation": pair["implementation"],
        "comparison": pair["comparison"],
        "numerator": num,
        "denominator": den,
        "metric": metric,
        "unit": UNITS.get(metric, "MiB"),
        "run_numerator": rn,
        "run_denominator": rd,
        "run_ratio": rn / rd if rd and not math.isnan(rd) else math.nan,
        "samples_numerator": samples[0],
        "samples_denominator": samples[1],
        "paper_numerator": pn,
        "paper_denominator": pd_,
        "paper_ratio": sn / sd if sd and not math.isnan(sd) else math.nan,
        "not_learned": ", ".join(failed),
        "note": _cost_notes(pair, metric, run, measured, failed, flagged, samples),
    }


def cost_of_spiking(
    t1: pd.DataFrame,
    paper: pd.DataFrame,
    networks: Mapping[str, Mapping],
    t2: pd.DataFrame | None = None,
    *,
    to_target: bool = False,
) -> pd.DataFrame:
    """Per experiment, the SNN/ANN ratios of training time and energy per sample, time and energy per epoch, power
    and memory, run vs study (one run each; the tables rule puts the means over seeds in, ``aggregate.seed_ratios``).

    The study's energy per epoch is derived (average power x average time per epoch); it reports
    no peak memory in MiB, so that ratio is run-only. With Table II (``t2``), a pair with a network that
    did not learn (:func:`not_learned`) names it in ``not_learned`` and its ratios carry a note.
    """
    p1 = _paper_table1(paper)
    run = t1.set_index("network")
    flagged = not_learned(t2) if t2 is not None else {}
    metrics = _cost_metrics(t1, to_target)
    rows = [_cost_row(pair, metric, run, p1, flagged) for pair in spiking_pairs(networks) for metric in metrics]
    return pd.DataFrame(rows, columns=COST_COLUMNS)


def cost_view(cost: pd.DataFrame) -> pd.DataFrame:
    """The cost table as the report shows it: one row per experiment and metric, narrow columns.

    ``this run`` and ``study`` give numerator / denominator with the unit, ``ratio ...`` their ratios.
    """

    def pair(a: float, b: float, unit: str) -> str | None:
        if _is_missing(a) and _is_missing(b):
            return None
        unit = "" if unit in ("1", "") else (" %" if unit.startswith("%") else f" {unit}")
        return f"{format_number(a) or 'n/a'} / {format_number(b) or 'n/a'}{unit}"

    labels = [
        COST_LABELS.get(m, m) + (f" ({u})" if u and u != "1" else "") for m, u in zip(cost["metric"], cost["unit"])
    ]
    return pd.DataFrame(
        {
            "experiment": cost["experiment"].to_numpy(),
            "comparison": cost["comparison"].to_numpy(),
            "metric": labels,
            "this run": [
                pair(a, b, u) for a, b, u in zip(cost["run_numerator"], cost["run_denominator"], cost["unit"])
            ],
            "study": [
                pair(a, b, u) for a, b, u in zip(cost["paper_numerator"], cost["paper_denominator"], cost["unit"])
            ],
            "ratio, this run": cost["run_ratio"].to_numpy(dtype=float),
            **_seed_columns(cost),
            "ratio, study": cost["paper_ratio"].to_numpy(dtype=float),
        }
    )


def _seed_columns(cost: pd.DataFrame) -> dict[str, list]:
    """The view's seeds and interval columns, where the cost table has them (``aggregate.seed_ratios``)."""
    if "seeds" not in cost:
        return {}

    def interval(low: float, high: float) -> str | None:
        return None if _is_missing(low) or _is_missing(high) else f"{format_number(low)} to {format_number(high)}"

    return {
        "seeds (SNN/ANN)": list(cost["seeds"]),
        "95% interval of the ratio": [interval(a, b) for a, b in zip(cost["ci_low"], cost["ci_high"])],
    }


def comparison_notes(comparison: pd.DataFrame) -> dict[tuple[int, str], str]:
    """The comparison table's notes as footnotes on its ``run_value`` cells."""
    return {(i, "run_value"): text for i, text in enumerate(comparison["note"]) if text}


def cost_notes(cost: pd.DataFrame) -> dict[tuple[int, str], str]:
    """The cost table's notes as footnotes on the cells of :func:`cost_view` they explain (and why a ratio has no
    interval)."""
    notes: dict[tuple[int, str], str] = {}
    reasons = cost["ratio_interval_null_reason"] if "ratio_interval_null_reason" in cost else [None] * len(cost)
    for i, reason in enumerate(reasons):
        if isinstance(reason, str) and reason:
            notes[(i, "95% interval of the ratio")] = reason
    for i, text in enumerate(cost["note"]):
        parts: dict[str, list[str]] = {}
        for part in filter(None, str(text).split("; ")):
            if part.startswith("this run"):
                column = "ratio, this run"
            elif part.startswith(("study value", "study ratio", "the study")):
                column = "ratio, study"
            else:
                column = "comparison"
            parts.setdefault(column, []).append(part)
        notes.update({(i, column): "; ".join(texts) for column, texts in parts.items()})
    return notes
