"""Runs of every network, sweep variant and seed, summarised: mean and 95% interval, and the SNN/ANN difference.

- :func:`run_table`: one row per run id (network or variant x seed) with its ``status`` (ok | oom) and the
  figures of Tables I and II computed exactly as there (:func:`spikebench.results.table1` / ``table2``);
  an out-of-memory run has null metrics (never 0) and its ``memory_reached_mib``.
- :func:`summary_table`: one row per network or variant: ``n_runs``, ``n_ok``, and per figure the mean over
  its completed runs and, with two or more, the 95% Student-t interval of that mean,
  ``scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=scipy.stats.sem(values))``.
- :func:`difference_table`: per SNN (and each of its variants) and figure, the difference from the ANN of its
  experiment (``spikebench.results.spiking_pairs``), with Welch's t-test (``scipy.stats.ttest_ind(...,
  equal_var=False)``) and its 95% interval of the difference; ``exceeds_interval`` is true when that interval
  excludes 0 (the same as p < 0.05), null with fewer than two completed runs on either side.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from spikebench import results

CONFIDENCE = 0.95
#: Figure in these tables -> (Table I or II, its column there).
METRICS = {
    "highest_val_acc_pct": ("table1", "highest_val_acc"),
    "avg_epoch_time_s": ("table1", "avg_epoch_time_s"),
    "energy_per_epoch_j": ("table1", "energy_per_epoch_j"),
    "train_avg_power_w": ("table1", "avg_power_w"),
    "train_peak_memory_mib": ("table1", "peak_memory_mib"),
    "test_acc_pct": ("table2", "test_acc"),
    "test_time_s": ("table2", "test_time_s"),
    "test_energy_j": ("table2", "energy_j"),
    "energy_per_test_sample_mj": ("table2", "energy_per_test_sample_mj"),
    "test_peak_memory_mib": ("table2", "peak_memory_mib"),
}
#: Beyond Tables I and II: the largest activation peak of the run's epochs (null on the CPU).
ACTIVATION = "activation_peak_mib"
FIGURES = (*METRICS, ACTIVATION)
RUN_KEYS = ("network", "base", "sweep", "setting", "value", "seed", "experiment", "kind", "implementation")


def _status(epochs: pd.DataFrame, test: Mapping) -> str:
    statuses = set(epochs["status"].dropna()) if "status" in epochs else set()
    statuses.add(test.get("status") or "ok")
    return "oom" if "oom" in statuses else "ok"


def run_table(epochs: Mapping[str, pd.DataFrame], tests: Mapping[str, Mapping], runs: Mapping[str, Mapping]
              ) -> pd.DataFrame:
    """One row per run id: its network, sweep setting and value, seed, status and figures (module docstring)."""
    specs = {run_id: runs[run_id] for run_id in runs}
    t1 = results.table1(epochs, specs).set_index("network")
    t2 = results.table2(tests, specs).set_index("network")
    rows = []
    for run_id, run in runs.items():
        e = epochs[run_id]
        status = _status(e, tests[run_id])
        row = {"run_id": run_id, **{k: run.get(k) for k in RUN_KEYS}, "status": status}
        for name, (table, column) in METRICS.items():
            value = (t1 if table == "table1" else t2).at[run_id, column]
            row[name] = math.nan if status == "oom" else float(value)
        activation = pd.to_numeric(e.get(ACTIVATION, pd.Series(dtype=float)), errors="coerce")
        row[ACTIVATION] = math.nan if status == "oom" or activation.isna().all() else float(activation.max())
        reached = pd.to_numeric(e.get("memory_reached_mib", pd.Series(dtype=float)), errors="coerce")
        row["memory_reached_mib"] = float(reached.max()) if reached.notna().any() else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    table["value"] = table["value"].astype(object)
    return table


def interval(values) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% Student-t interval of the mean of the finite `values`; NaN bounds below 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(v))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(v) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per network or variant (module docstring), in the order of `runs`."""
    rows = []
    for network, group in runs.groupby("network", sort=False):
        ok = group[group["status"] == "ok"]
        first = group.iloc[0]
        n_oom = int((group["status"] == "oom").sum())
        row = {k: first[k] for k in ("network", "base", "sweep", "setting", "value", "experiment", "kind",
                                     "implementation")}
        row.update(n_runs=len(group), n_ok=len(ok), seeds=" ".join(str(s) for s in group["seed"]),
                   status="ok" if n_oom == 0 else ("oom" if len(ok) == 0 else f"oom in {n_oom} of {len(group)}"),
                   memory_reached_mib=group["memory_reached_mib"].max())
        for name in FIGURES:
            mean, low, high = interval(ok[name])
            row.update({name: mean, f"{name}_ci95_low": low, f"{name}_ci95_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def welch(snn, ann) -> dict:
    """Welch's t-test of snn - ann: difference of means, its 95% interval, p and whether the interval excludes 0."""
    a = np.asarray([x for x in snn if np.isfinite(x)], dtype=float)
    b = np.asarray([x for x in ann if np.isfinite(x)], dtype=float)
    out = {"snn_mean": a.mean() if len(a) else math.nan, "ann_mean": b.mean() if len(b) else math.nan}
    out["difference"] = out["snn_mean"] - out["ann_mean"]
    out["ratio"] = out["snn_mean"] / out["ann_mean"] if np.isfinite(out["ann_mean"]) and out["ann_mean"] else math.nan
    out.update(difference_ci95_low=math.nan, difference_ci95_high=math.nan, p_value=math.nan, exceeds_interval=None)
    if len(a) >= 2 and len(b) >= 2 and (a.std() > 0 or b.std() > 0):
        test = stats.ttest_ind(a, b, equal_var=False)
        ci = test.confidence_interval(CONFIDENCE)
        out.update(difference_ci95_low=float(ci.low), difference_ci95_high=float(ci.high),
                   p_value=float(test.pvalue), exceeds_interval=bool(ci.low > 0 or ci.high < 0))
    return out


def difference_table(runs: pd.DataFrame, networks: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per SNN of an experiment with an ANN (and each of the SNN's variants) and figure: SNN - ANN (Welch)."""
    ok = runs[runs["status"] == "ok"]
    rows = []
    for pair in results.spiking_pairs(networks):
        if str(networks[pair["denominator"]].get("kind")) != "ann":
            continue
        ann = ok[ok["network"] == pair["denominator"]]
        for snn_network in runs.loc[runs["base"] == pair["numerator"], "network"].unique():
            snn = ok[ok["network"] == snn_network]
            for name in FIGURES:
                rows.append({"experiment": pair["experiment"], "snn": snn_network, "ann": pair["denominator"],
                             "metric": name, "n_snn": len(snn), "n_ann": len(ann),
                             **welch(snn[name], ann[name])})
    return pd.DataFrame(rows)


def write_aggregate(epochs_paths: Mapping[str, str], test_paths: Mapping[str, str], runs: Mapping[str, Mapping],
                    networks: Mapping[str, Mapping], outputs: Mapping[str, str], *, demo: bool = False
                    ) -> dict[str, pd.DataFrame]:
    """Rule aggregate: the runs, summary and difference tables (CSV + HTML), from every run's results."""
    epochs = {r: results.read_epochs(p) for r, p in epochs_paths.items()}
    tests = {r: results.read_test(p) for r, p in test_paths.items()}
    table = run_table(epochs, tests, runs)
    summary = summary_table(table)
    difference = difference_table(table, networks)
    oom_note = ("A run that ran out of memory has status oom, null figures and the memory it had reached "
                "(memory_reached_mib).")
    results.write_table(table, outputs["runs_csv"], outputs["runs_html"], demo=demo,
                        title="Every run: network or sweep variant, seed", intro=[oom_note])
    results.write_table(summary, outputs["summary_csv"], outputs["summary_html"], demo=demo,
                        title="Networks and sweep variants: mean and 95% confidence interval over their seeds",
                        intro=["Mean over the completed runs; with two or more, the 95% Student-t interval of the "
                               "mean (<figure>_ci95_low, <figure>_ci95_high).", oom_note])
    results.write_table(difference, outputs["difference_csv"], outputs["difference_html"], demo=demo,
                        title="SNN minus ANN: is the difference larger than its interval?",
                        intro=["Welch's t-test of SNN - ANN per figure; exceeds_interval: its 95% interval of the "
                               "difference excludes 0 (p < 0.05); empty with fewer than two completed runs a side."])
    return {"runs": table, "summary": summary, "difference": difference}
