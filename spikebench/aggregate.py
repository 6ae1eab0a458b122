"""Runs of every network, sweep variant and seed, summarised: mean and 95% interval, and the SNN/ANN difference.

- :func:`run_table`: one row per run id (network or variant x seed) with its ``status`` (ok | oom) and the
  figures of Tables I and II computed exactly as there (:func:`spikebench.results.table1` / ``table2``);
  an out-of-memory run has null metrics (never 0) and its ``memory_reached_mib``.
- :func:`summary_table`: one row per network or variant: ``n_runs``, ``n_ok``, and per figure the mean over
  its completed runs and, with :data:`MIN_RUNS` (3) or more, the 95% Student-t interval of that mean,
  ``scipy.stats.t.interval(0.95, n - 1, loc=mean, scale=scipy.stats.sem(values))``, clipped to where the figure
  can lie (accuracies within [0, 100] %, everything else >= 0).
- :func:`difference_table`: per SNN (and each of its variants) and figure, the difference from the ANN of its
  experiment (``spikebench.results.spiking_pairs``), with Welch's t-test (``scipy.stats.ttest_ind(...,
  equal_var=False)``) and its 95% interval of the difference; ``exceeds_interval`` is true when that interval
  excludes 0 (the same as p < 0.05), null with fewer than :data:`MIN_RUNS` completed runs on either side.
- :func:`cost_verdicts` / :func:`comparison_verdicts`: that verdict on the rows of the cost and comparison tables
  (rule ``tables``), null with the reason where there is none (one seed, out of memory, no ANN, ...);
  :func:`seed_ratios`: the cost table's and the headline figure's one statistic, the ratio of the means over
  seeds, with its 95% interval on the log scale where both sides have :data:`MIN_RUNS` seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from spikebench import results
from spikebench.results.render import column_label
from spikebench.results.target import TARGET_FIGURES, experiment_targets, to_target

CONFIDENCE = 0.95
#: Figure in these tables -> (Table I or II, its column there).
METRICS = {
    "highest_val_acc_pct": ("table1", "highest_val_acc"),
    "avg_epoch_time_s": ("table1", "avg_epoch_time_s"),
    "median_epoch_time_s": ("table1", "median_epoch_time_s"),
    "energy_per_epoch_j": ("table1", "energy_per_epoch_j"),
    "train_time_per_sample_ms": ("table1", "train_time_per_sample_ms"),
    "energy_per_train_sample_mj": ("table1", "energy_per_train_sample_mj"),
    "train_avg_power_w": ("table1", "avg_power_w"),
    "train_avg_memory_pct": ("table1", "avg_memory_pct"),
    "train_peak_memory_mib": ("table1", "peak_memory_mib"),
    # what autograd keeps for backward in one training batch, measured and as the model predicts it (issue #23)
    "saved_for_backward_mib": ("table1", "saved_for_backward_mib"),
    "saved_for_backward_predicted_mib": ("table1", "saved_for_backward_predicted_mib"),
    "test_acc_pct": ("table2", "test_acc"),
    "test_time_s": ("table2", "test_time_s"),
    "test_energy_j": ("table2", "energy_j"),
    "energy_per_test_sample_mj": ("table2", "energy_per_test_sample_mj"),
    "test_peak_memory_mib": ("table2", "peak_memory_mib"),
    "test_time_per_sample_ms": ("table2", "test_time_per_sample_ms"),
}
#: Beyond Tables I and II: the largest activation peak of the run's epochs (null on the CPU).
ACTIVATION = "activation_peak_mib"
FIGURES = (*METRICS, ACTIVATION, *TARGET_FIGURES)
RUN_KEYS = ("network", "base", "sweep", "setting", "value", "seed", "experiment", "kind", "implementation")


def _status(epochs: pd.DataFrame, test: Mapping) -> str:
    statuses = set(epochs["status"].dropna()) if "status" in epochs else set()
    statuses.add(test.get("status") or "ok")
    return "oom" if "oom" in statuses else "ok"


def run_table(
    epochs: Mapping[str, pd.DataFrame],
    tests: Mapping[str, Mapping],
    runs: Mapping[str, Mapping],
    networks: Mapping[str, Mapping] | None = None,
    target: Mapping | None = None,
) -> pd.DataFrame:
    """One row per run id: its network, sweep setting and value, seed, status and figures (module docstring);
    with ``networks``, the time, samples and energy to its experiment's target accuracy
    (:mod:`spikebench.results.target`; ``target``: the config's ``target_accuracy``)."""
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
    return _with_targets(table, epochs, networks, target)


def _with_targets(table: pd.DataFrame, epochs, networks: Mapping[str, Mapping] | None, target) -> pd.DataFrame:
    """The run table with each run's experiment target and its time, samples and energy to reach it."""
    for name in TARGET_FIGURES:
        table[name] = math.nan
    table["target_val_acc_pct"], table["reached_target"] = math.nan, None
    if not networks or table.empty:
        return table
    ok = table[table["status"] == "ok"]
    best = ok.groupby("network")["highest_val_acc_pct"].mean().to_dict()
    targets = experiment_targets(best, networks, target)
    for i, row in table.iterrows():
        goal = targets.get(int(row["experiment"]), {}).get("target_val_acc_pct", math.nan)
        table.at[i, "target_val_acc_pct"] = goal
        if row["status"] != "ok" or math.isnan(goal):
            continue
        for key, value in to_target(epochs[row["run_id"]], goal).items():
            if key in TARGET_FIGURES or key == "reached_target":
                table.at[i, key] = value
    table["reached_target"] = table["reached_target"].astype(object)
    return table


#: An interval needs at least this many completed runs: with two, Student's t has one degree of freedom and its
#: 95% interval is +-12.7 standard errors wide (an accuracy of [78, 101] %, an epoch time of [-6, 9] s), which
#: says nothing a reader can use.
MIN_RUNS = 3
#: Where a figure can lie: accuracies in [0, 100] %, every other figure (times, energies, memory, power) >= 0.
DOMAIN = {"highest_val_acc_pct": (0.0, 100.0), "test_acc_pct": (0.0, 100.0)}


def needs_seeds(n: int) -> str:
    """The reason a figure with ``n`` completed runs has no interval."""
    return f"needs >= {MIN_RUNS} seeds (has {n})"


def interval(values, figure: str | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% Student-t interval of the mean of the finite `values`, clipped to where
    `figure` can lie (:data:`DOMAIN`); NaN bounds with fewer than :data:`MIN_RUNS` values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < MIN_RUNS:
        return mean, math.nan, math.nan
    sem = float(stats.sem(v))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(v) - 1, loc=mean, scale=sem)
    floor, ceiling = DOMAIN.get(figure, (0.0, math.inf))
    return mean, float(max(low, floor)), float(min(high, ceiling))


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per network or variant (module docstring), in the order of `runs`."""
    rows = []
    for _, group in runs.groupby("network", sort=False):
        ok = group[group["status"] == "ok"]
        first = group.iloc[0]
        n_oom = int((group["status"] == "oom").sum())
        row = {
            k: first[k]
            for k in ("network", "base", "sweep", "setting", "value", "experiment", "kind", "implementation")
        }
        row.update(
            n_runs=len(group),
            n_ok=len(ok),
            seeds=" ".join(str(s) for s in group["seed"]),
            status="ok" if n_oom == 0 else ("oom" if len(ok) == 0 else f"oom in {n_oom} of {len(group)}"),
            memory_reached_mib=group["memory_reached_mib"].max(),
            target_val_acc_pct=group["target_val_acc_pct"].max() if "target_val_acc_pct" in group else math.nan,
            n_reached_target=int((ok["reached_target"] == True).sum()) if "reached_target" in ok else 0,  # noqa: E712
        )
        for name in FIGURES:
            mean, low, high = interval(ok[name], name)
            finite = [x for x in ok[name] if np.isfinite(x)]
            sem = float(stats.sem(finite)) if len(finite) >= MIN_RUNS else math.nan
            row.update({name: mean, f"{name}_ci95_low": low, f"{name}_ci95_high": high, f"{name}_sem": sem})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as the report shows it: one row per network (or variant) and figure, its mean, its 95% interval
    (or why there is none) and the runs it is over; the CSV keeps the wide table."""
    rows = []
    for record in summary.to_dict("records"):
        for name in FIGURES:
            mean, low, high = record.get(name), record.get(f"{name}_ci95_low"), record.get(f"{name}_ci95_high")
            if pd.isna(mean):
                continue
            n = int(record.get("n_ok") or 0)
            rows.append(
                {
                    "network": record["network"],
                    "figure": column_label(name),
                    "mean": float(mean),
                    "95% interval": (
                        f"{results.format_number(low)} to {results.format_number(high)}"
                        if not (pd.isna(low) or pd.isna(high))
                        else needs_seeds(n)
                        if n < MIN_RUNS
                        else "no spread"
                    ),
                    "runs": f"{n} of {int(record.get('n_runs') or 0)} ({record.get('status')})",
                }
            )
    return pd.DataFrame(rows, columns=["network", "figure", "mean", "95% interval", "runs"])


def welch(snn, ann) -> dict:
    """Welch's t-test of snn - ann: difference of means, its 95% interval, p and whether the interval excludes 0."""
    a = np.asarray([x for x in snn if np.isfinite(x)], dtype=float)
    b = np.asarray([x for x in ann if np.isfinite(x)], dtype=float)
    out = {"snn_mean": a.mean() if len(a) else math.nan, "ann_mean": b.mean() if len(b) else math.nan}
    out["difference"] = out["snn_mean"] - out["ann_mean"]
    out["ratio"] = out["snn_mean"] / out["ann_mean"] if np.isfinite(out["ann_mean"]) and out["ann_mean"] else math.nan
    out.update(difference_ci95_low=math.nan, difference_ci95_high=math.nan, p_value=math.nan, exceeds_interval=None)
    if len(a) >= MIN_RUNS and len(b) >= MIN_RUNS and (a.std() > 0 or b.std() > 0):
        test = stats.ttest_ind(a, b, equal_var=False)
        ci = test.confidence_interval(CONFIDENCE)
        out.update(
            difference_ci95_low=float(ci.low),
            difference_ci95_high=float(ci.high),
            p_value=float(test.pvalue),
            exceeds_interval=bool(ci.low > 0 or ci.high < 0),
        )
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
                rows.append(
                    {
                        "experiment": pair["experiment"],
                        "snn": snn_network,
                        "ann": pair["denominator"],
                        "metric": name,
                        "n_snn": len(snn),
                        "n_ann": len(ann),
                        **welch(snn[name], ann[name]),
                    }
                )
    return pd.DataFrame(rows)


def write_aggregate(
    epochs_paths: Mapping[str, str],
    test_paths: Mapping[str, str],
    runs: Mapping[str, Mapping],
    networks: Mapping[str, Mapping],
    outputs: Mapping[str, str],
    *,
    demo: bool = False,
    target: Mapping | None = None,
) -> dict[str, pd.DataFrame]:
    """Rule aggregate: the runs, summary and difference tables (CSV + HTML), from every run's results
    (``target``: the config's ``target_accuracy``)."""
    epochs = {r: results.read_epochs(p) for r, p in epochs_paths.items()}
    tests = {r: results.read_test(p) for r, p in test_paths.items()}
    table = run_table(epochs, tests, runs, networks, target)
    summary = summary_table(table)
    difference = difference_table(table, networks)
    oom_note = (
        "A run that ran out of memory has status oom, null figures and the memory it had reached (memory_reached_mib)."
    )
    results.write_table(
        table,
        outputs["runs_csv"],
        outputs["runs_html"],
        demo=demo,
        title="Every run: network or sweep variant, seed",
        intro=[oom_note],
    )
    results.write_table(
        summary,
        outputs["summary_csv"],
        outputs["summary_html"],
        html_table=summary_view(summary),
        demo=demo,
        title="Networks and sweep variants: mean and 95% confidence interval over their seeds",
        intro=[
            f"Mean over the completed runs; with {MIN_RUNS} or more, the 95% Student-t interval of the "
            "mean (<figure>_ci95_low, <figure>_ci95_high), clipped to where the figure can lie (accuracies "
            "within [0, 100] %, times, energies, power and memory >= 0); with fewer, no interval (with two "
            "seeds a 95% interval is +-12.7 standard errors wide and informs nothing).",
            oom_note,
        ],
    )
    results.write_table(
        difference,
        outputs["difference_csv"],
        outputs["difference_html"],
        demo=demo,
        title="SNN minus ANN: is the difference larger than its interval?",
        intro=[
            "Welch's t-test of SNN - ANN per figure; exceeds_interval: its 95% interval of the "
            f"difference excludes 0 (p < 0.05); empty with fewer than {MIN_RUNS} completed runs a side."
        ],
    )
    return {"runs": table, "summary": summary, "difference": difference}


# ---------------------------------------------------------------------------------------------
# The verdict on the cost and comparison tables (rule tables) and the cost figure's intervals (rule figures)

#: Cost-table metric (a Table I column) -> its figure in the summary and difference tables.
COST_FIGURES = {
    "time_to_target_s": "time_to_target_s",
    "energy_to_target_j": "energy_to_target_j",
    "samples_to_target": "samples_to_target",
    "train_time_per_sample_ms": "train_time_per_sample_ms",
    "energy_per_train_sample_mj": "energy_per_train_sample_mj",
    "avg_epoch_time_s": "avg_epoch_time_s",
    "median_epoch_time_s": "median_epoch_time_s",
    "energy_per_epoch_j": "energy_per_epoch_j",
    "avg_power_w": "train_avg_power_w",
    "avg_memory_pct": "train_avg_memory_pct",
    "peak_memory_mib": "train_peak_memory_mib",
    "activation_peak_mib": ACTIVATION,
    "saved_for_backward_mib": "saved_for_backward_mib",
}
#: Comparison-table (study table, metric) -> its figure; the study's other figures are not aggregated over seeds.
COMPARISON_FIGURES = {
    ("I", "highest_val_acc"): "highest_val_acc_pct",
    ("I", "avg_epoch_time_s"): "avg_epoch_time_s",
    ("I", "avg_memory_pct"): "train_avg_memory_pct",
    ("I", "avg_power_w"): "train_avg_power_w",
    ("II", "test_acc"): "test_acc_pct",
    ("II", "test_time_s"): "test_time_s",
}
VERDICT_COLUMNS = ("difference_ci95_low", "difference_ci95_high", "exceeds_interval", "exceeds_interval_null_reason")
#: The column of the tables' HTML views that shows the verdict.
VERDICT_LABEL = "SNN - ANN beyond its 95% interval"
VERDICT_INTRO = (
    f"{VERDICT_LABEL} (exceeds_interval in the CSV): over the seeds of both networks, Welch's 95% "
    "interval of the difference SNN - ANN (tables/difference.csv) excludes 0; filled only where both "
    f"networks have >= {MIN_RUNS} seeds, else empty with the reason (too few seeds, out of memory, no ANN in "
    "the experiment, ...)."
)


def _flag(value) -> bool | None:
    """A CSV cell of ``exceeds_interval`` (True/False/empty, as text or bool) as True/False/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0"):
        return True
    if text in ("false", "0", "0.0"):
        return False
    if text in ("", "nan", "none"):
        return None
    raise ValueError(
        f"exceeds_interval must be True, False or empty, got {value!r} (tables/difference.csv: "
        "remake it with `snakemake --forcerun aggregate`)"
    )


def read_table(path, what: str) -> pd.DataFrame:
    """An aggregate CSV (summary or difference), with a clear error naming the file where it cannot be read."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # no rows and no columns: e.g. no experiment with an ANN
        return pd.DataFrame(columns=["network", "snn", "ann", "metric", "exceeds_interval"])
    except (OSError, pd.errors.ParserError) as error:
        raise ValueError(
            f"{path}: cannot read the {what} table ({error}); remake it with `snakemake --forcerun aggregate`"
        ) from error
    if "exceeds_interval" in table:
        table["exceeds_interval"] = [_flag(v) for v in table["exceeds_interval"]]
    return table


def _null(reason: str) -> dict:
    return {
        "difference_ci95_low": math.nan,
        "difference_ci95_high": math.nan,
        "exceeds_interval": None,
        "exceeds_interval_null_reason": reason,
    }


def _no_interval_reason(row: Mapping, summary: pd.DataFrame, figure: str) -> str:
    """Why the difference row has no Welch interval: too few seeds, out of memory, not measured, or no spread."""
    by = summary.drop_duplicates("network").set_index("network")
    sides = [n for n in (row["snn"], row["ann"]) if n in by.index]
    few = {n: int(by.at[n, "n_runs"]) for n in sides if int(by.at[n, "n_runs"]) < MIN_RUNS}
    if few:
        return f"needs >= {MIN_RUNS} seeds a side (" + ", ".join(f"{n}: {k}" for n, k in few.items()) + ")"
    for n in sides:
        if int(by.at[n, "n_ok"]) < MIN_RUNS:
            return (
                f"oom: {n} completed {int(by.at[n, 'n_ok'])} of {int(by.at[n, 'n_runs'])} runs (status "
                f"{by.at[n, 'status']}), fewer than {MIN_RUNS} for an interval"
            )
    for n in sides:
        if pd.isna(by.at[n, figure]):
            return f"not measured for {n} in this run (see Table I's footnotes)"
        if pd.isna(by.at[n, f"{figure}_ci95_low"]):
            return f"fewer than {MIN_RUNS} of {n}'s completed runs measured it: no interval"
    return "no spread: every seed gave the same value on both sides, so Welch's interval is undefined"


def verdict(difference: pd.DataFrame, summary: pd.DataFrame, snn: str, ann: str, figure: str | None) -> dict:
    """The difference table's interval and ``exceeds_interval`` for SNN `snn` - ANN `ann` on `figure`, or the
    reason it is null (:data:`VERDICT_COLUMNS`)."""
    if figure is None:
        return _null("not aggregated over seeds (tables/summary.csv has no such figure)")
    rows = difference[(difference["snn"] == snn) & (difference["ann"] == ann) & (difference["metric"] == figure)]
    if rows.empty:
        kind = summary.loc[summary["network"] == ann, "kind"]
        if len(kind) and str(kind.iloc[0]).lower() != "ann":
            return _null(f"no ANN in this experiment: {snn} over {ann} is two SNNs, not an SNN - ANN difference")
        return _null(
            f"no SNN - ANN difference of {snn} and {ann} in tables/difference.csv (a network not in "
            "this run; remake it with `snakemake --forcerun aggregate`)"
        )
    row = rows.iloc[0]
    if row["exceeds_interval"] is None:
        return _null(_no_interval_reason(row, summary, figure))
    return {
        "difference_ci95_low": float(row["difference_ci95_low"]),
        "difference_ci95_high": float(row["difference_ci95_high"]),
        "exceeds_interval": bool(row["exceeds_interval"]),
        "exceeds_interval_null_reason": None,
    }


def _with_verdicts(table: pd.DataFrame, verdicts: list[dict]) -> pd.DataFrame:
    columns = pd.DataFrame(verdicts, columns=list(VERDICT_COLUMNS), index=table.index)
    columns["exceeds_interval"] = columns["exceeds_interval"].astype(object)
    out = pd.concat([table.drop(columns=[c for c in VERDICT_COLUMNS if c in table]), columns], axis=1)
    if "note" in out:  # keep the long note last, where the tables have it
        out = out[[c for c in out.columns if c != "note"] + ["note"]]
    return out


def cost_verdicts(cost: pd.DataFrame, difference: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The cost table (``results.cost_of_spiking``) with :data:`VERDICT_COLUMNS` per row: numerator - denominator."""
    return _with_verdicts(
        cost,
        [
            verdict(difference, summary, num, den, COST_FIGURES.get(metric))
            for num, den, metric in zip(cost["numerator"], cost["denominator"], cost["metric"])
        ],
    )


def comparison_verdicts(
    comparison: pd.DataFrame, difference: pd.DataFrame, summary: pd.DataFrame, networks: Mapping[str, Mapping]
) -> pd.DataFrame:
    """The comparison table (``results.paper_comparison``) with the SNN - ANN verdict on each SNN's rows."""
    ann_of = {
        p["numerator"]: p["denominator"]
        for p in results.spiking_pairs(networks)
        if str(networks[p["denominator"]].get("kind")).lower() == "ann"
    }
    verdicts = []
    for table, network, metric in zip(comparison["table"], comparison["network"], comparison["metric"]):
        kind = str((networks.get(network) or {}).get("kind", "")).lower()
        if network not in networks:
            verdicts.append(_null("network not in this run"))
        elif kind == "ann":
            verdicts.append(_null("an ANN: the SNN - ANN verdict is on its SNNs' rows"))
        elif network not in ann_of:
            verdicts.append(_null("no ANN in this experiment: no SNN - ANN difference"))
        else:
            verdicts.append(
                verdict(
                    difference, summary, network, ann_of[network], COMPARISON_FIGURES.get((str(table), str(metric)))
                )
            )
    return _with_verdicts(comparison, verdicts)


def verdict_view(view: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """An HTML view of `table` (same rows) with the verdict as a column :data:`VERDICT_LABEL` (yes / no / empty)
    where `table` has one; the CSV's verdict columns are left out of the view."""
    out = view.drop(columns=[c for c in VERDICT_COLUMNS if c in view])
    if "exceeds_interval" in table:
        out[VERDICT_LABEL] = [None if v is None else ("yes" if v else "no") for v in table["exceeds_interval"]]
    return out


def verdict_intro(table: pd.DataFrame) -> list[str]:
    """The paragraph that explains the verdict column, where `table` has one."""
    return [VERDICT_INTRO] if "exceeds_interval" in table else []


def verdict_notes(table: pd.DataFrame, column: str = VERDICT_LABEL) -> dict[tuple[int, str], str]:
    """Footnotes on the empty verdict cells of `table`'s HTML view: why there is no interval."""
    reasons = table.get("exceeds_interval_null_reason", pd.Series(dtype=object))
    return {(i, column): reason for i, reason in enumerate(reasons) if isinstance(reason, str) and reason}


def _relative_sem(summary_row: Mapping, figure: str) -> tuple[float, float, int] | None:
    """(mean, sem / mean, n - 1) of a figure from its summary row (its standard error of the mean, unclipped), or
    None without one (fewer than :data:`MIN_RUNS` runs)."""
    mean, sem, n = summary_row.get(figure), summary_row.get(f"{figure}_sem"), int(summary_row.get("n_ok") or 0)
    if n < MIN_RUNS or any(v is None or pd.isna(v) for v in (mean, sem)) or not mean > 0:
        return None
    return float(mean), float(sem) / float(mean), n - 1


def ratio_interval(snn: Mapping, ann: Mapping, figure: str) -> tuple[float, float, float]:
    """(ratio of the means, 95% low, high) of `figure`, SNN over ANN, from their summary rows; NaN without repeats.

    On the log scale (so the interval stays positive): log(mean_s / mean_a) +- t * sqrt(r_s^2 + r_a^2), r the
    relative standard error of each mean (delta method), t of Welch-Satterthwaite's degrees of freedom.
    """
    s, a = _relative_sem(snn, figure), _relative_sem(ann, figure)
    if s is None or a is None:
        return math.nan, math.nan, math.nan
    ratio, vs, va = s[0] / a[0], s[1] ** 2, a[1] ** 2
    if vs + va == 0:
        return ratio, ratio, ratio
    df = (vs + va) ** 2 / (vs**2 / s[2] + va**2 / a[2])
    half = stats.t.ppf((1 + CONFIDENCE) / 2, df) * math.sqrt(vs + va)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)


#: Columns :func:`seed_ratios` adds to the cost table.
SEED_COLUMNS = ("seeds", "ci_low", "ci_high", "ratio_interval_null_reason")


def _seed_row(num: Mapping | None, den: Mapping | None, figure: str | None) -> dict:
    """Means over seeds, their ratio and its interval (or why there is none) of one cost row."""
    if figure is None or num is None or den is None or figure not in num:
        return {}
    n_num, n_den = int(num.get("n_ok") or 0), int(den.get("n_ok") or 0)
    if figure in TARGET_FIGURES:
        missed = [
            f"{side['network']} in {n - int(side.get('n_reached_target') or 0)} of {n} seeds"
            for side, n in ((num, n_num), (den, n_den))
            if int(side.get("n_reached_target") or 0) < n
        ]
        if missed:
            return {
                "run_numerator": math.nan,
                "run_denominator": math.nan,
                "run_ratio": math.nan,
                "seeds": f"{n_num}/{n_den}",
                "ratio_interval_null_reason": "target accuracy not reached: " + ", ".join(missed),
            }
    mean_num, mean_den = float(num[figure]), float(den[figure])
    ratio, low, high = ratio_interval(num, den, figure)
    if math.isnan(ratio):
        ratio = mean_num / mean_den if mean_den and not math.isnan(mean_den) else math.nan
    few = min(n_num, n_den) < MIN_RUNS
    unmeasured = [side["network"] for side, m in ((num, mean_num), (den, mean_den)) if math.isnan(m)]
    if unmeasured:
        few, reason = False, f"not measured for {', '.join(unmeasured)} in this run (see Table I's footnotes)"
    else:
        reason = None if not math.isnan(low) else "no interval: every seed gave the same value on a side"
    return {
        "run_numerator": mean_num,
        "run_denominator": mean_den,
        "run_ratio": ratio,
        "seeds": f"{n_num}/{n_den}",
        "ci_low": low,
        "ci_high": high,
        "ratio_interval_null_reason": f"needs >= {MIN_RUNS} seeds a side (has {n_num}/{n_den})" if few else reason,
    }


def seed_ratios(cost: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The cost table with one statistic everywhere (the table, the headline figure, the landing page): each side
    the mean over its completed seeds, ``run_ratio`` the ratio of those means, ``seeds`` how many each side had,
    and ``ci_low``/``ci_high`` the 95% interval of the ratio on the log scale (:func:`ratio_interval`) where both
    sides have :data:`MIN_RUNS` seeds, else NaN with ``ratio_interval_null_reason``. Rows whose figure is not
    aggregated keep their single-run values."""
    by = summary.drop_duplicates("network").set_index("network")
    out = cost.copy()
    for column in SEED_COLUMNS:
        out[column] = None if column in ("seeds", "ratio_interval_null_reason") else math.nan
    for i, (num, den, metric) in enumerate(zip(cost["numerator"], cost["denominator"], cost["metric"])):
        rows = [{**by.loc[n].to_dict(), "network": n} if n in by.index else None for n in (num, den)]
        for column, value in _seed_row(*rows, COST_FIGURES.get(metric)).items():
            out.iloc[i, out.columns.get_loc(column)] = value
    if "note" in out:
        out = out[[c for c in out.columns if c != "note"] + ["note"]]
    return out
