"""Repeats in the study's tables and headline figure (docs/exploring.md): the cost and comparison
tables say whether SNN - ANN exceeds its interval (as Welch's test in scipy decides), null with the reason
where there is none; the cost figure and the sweep figures draw the spread over seeds as error bars."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from scipy import stats
from test_results import GPU_HARDWARE, STUDY_NETWORKS, _write_parquet, table_outputs, write_fake_run

from spikebench import aggregate, results

#: Seed k's epoch times over seed 0's: exp1 close to its first seed (a clear SNN - ANN difference),
#: exp2's SNN far from it (a difference inside its interval).
SEED1_TIME = {
    "exp1_ann": 1.03,
    "exp1_snn": 0.98,
    "exp2_cnn": 1.05,
    "exp2_snn": 0.2,
    "exp3_snn_mnist": 1.1,
    "exp3_snn_nmnist": 0.95,
}
SEED2_TIME = {
    "exp1_ann": 0.98,
    "exp1_snn": 1.03,
    "exp2_cnn": 0.96,
    "exp2_snn": 1.9,
    "exp3_snn_mnist": 0.92,
    "exp3_snn_nmnist": 1.04,
}
SEED2_POWER = {
    "exp1_ann": 0.97,
    "exp1_snn": 1.02,
    "exp2_cnn": 1.08,
    "exp2_snn": 0.93,
    "exp3_snn_mnist": 1.01,
    "exp3_snn_nmnist": 0.99,
}
SEED1_POWER = {
    "exp1_ann": 1.04,
    "exp1_snn": 0.97,
    "exp2_cnn": 0.9,
    "exp2_snn": 1.1,
    "exp3_snn_mnist": 1.0,
    "exp3_snn_nmnist": 1.02,
}


def _runs(root: Path, repeats: int, oom: str | None = None) -> dict[str, dict]:
    """The study's six networks with `repeats` seeds as the train/evaluate jobs write them (seed k in `<id>-seed<k>`);
    `oom`: that run id ran out of memory (status oom, null metrics)."""
    write_fake_run(root / "results")
    runs = {
        n: {"network": n, "base": n, "sweep": None, "setting": None, "value": None, "seed": 0, **spec}
        for n, spec in STUDY_NETWORKS.items()
    }
    factors = {1: (SEED1_TIME, SEED1_POWER), 2: (SEED2_TIME, SEED2_POWER)}
    for seed in range(1, repeats):
        write_fake_run(root / f"seed{seed}")
        time_factor, power_factor = factors[seed]
        for network in STUDY_NETWORKS:
            run_id, source = f"{network}-seed{seed}", root / f"seed{seed}" / network
            epochs = pd.read_parquet(source / "epochs.parquet")
            epochs["network"] = run_id
            for column in ("epoch_time_s", "train_time_s", "val_time_s"):
                epochs[column] *= time_factor[network]
            epochs["avg_power_w"] *= power_factor[network]
            epochs["energy_j"] = epochs["avg_power_w"] * epochs["epoch_time_s"]
            epochs["train_energy_j"] = epochs["avg_power_w"] * epochs["train_time_s"]
            test = json.loads((source / "test.json").read_text())
            if run_id == oom:
                epochs = epochs.iloc[:1].assign(status="oom", memory_reached_mib=812.0)
                test.update(status="oom", accuracy=None)
            _write_parquet(epochs, root / "results" / run_id / "epochs.parquet", GPU_HARDWARE)
            (root / "results" / run_id / "test.json").write_text(json.dumps(test))
            runs[run_id] = {**runs[network], "seed": seed}
    return runs


def _tables(root: Path, repeats: int = 3, oom: str | None = None) -> dict:
    """Rules aggregate then tables on the fake runs; returns the frames and the folder of the tables."""
    runs = _runs(root, repeats, oom)
    epochs = {r: root / "results" / r / "epochs.parquet" for r in runs}
    tests = {r: root / "results" / r / "test.json" for r in runs}
    tables = root / "tables"
    outputs = {f"{k}_{e}": tables / f"{k}.{e}" for k in ("runs", "summary", "difference") for e in ("csv", "html")}
    frames = aggregate.write_aggregate(epochs, tests, runs, STUDY_NETWORKS, outputs)
    frames.update(
        results.write_tables(
            {n: epochs[n] for n in STUDY_NETWORKS},
            {n: tests[n] for n in STUDY_NETWORKS},
            STUDY_NETWORKS,
            table_outputs(tables),
            difference_path=outputs["difference_csv"],
            summary_path=outputs["summary_csv"],
        )
    )
    return {**frames, "folder": tables, "epochs": epochs}


def _seed_values(epochs: dict[str, Path], network: str, column: str) -> list[float]:
    """A Table I figure of each seed of `network`, recomputed from its epochs file (mean over epochs)."""
    return [
        float(pd.read_parquet(path)[column].mean())
        for run_id, path in epochs.items()
        if run_id == network or run_id.startswith(f"{network}-seed")
    ]


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_with_three_seeds_the_cost_tables_verdict_is_welchs_decision(tmp_path):
    made = _tables(tmp_path)
    cost = pd.read_csv(made["folder"] / "cost.csv")
    decided = {}
    for metric, column in (
        ("avg_epoch_time_s", "epoch_time_s"),
        ("avg_power_w", "avg_power_w"),
        ("energy_per_epoch_j", "energy_j"),
    ):
        for snn, ann in (("exp1_snn", "exp1_ann"), ("exp2_snn", "exp2_cnn")):
            a, b = _seed_values(made["epochs"], snn, column), _seed_values(made["epochs"], ann, column)
            assert len(a) == len(b) == 3
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            row = cost[(cost["numerator"] == snn) & (cost["metric"] == metric)].iloc[0]
            assert (row["difference_ci95_low"], row["difference_ci95_high"]) == pytest.approx(
                (ci.low, ci.high), rel=1e-4
            )
            assert str(row["exceeds_interval"]) == str(bool(ci.low > 0 or ci.high < 0))
            assert pd.isna(row["exceeds_interval_null_reason"])
            decided[(snn, metric)] = bool(ci.low > 0 or ci.high < 0)
    assert decided[("exp1_snn", "avg_epoch_time_s")] is True and decided[("exp2_snn", "avg_epoch_time_s")] is False
    exp3 = cost[cost["experiment"] == 3]
    assert exp3["exceeds_interval"].isna().all()
    assert exp3["exceeds_interval_null_reason"].str.startswith("no ANN in this experiment").all()
    # the comparison table: the same verdict on the SNN's row of the same figure, the ANN's rows say where it is
    comparison = pd.read_csv(made["folder"] / "comparison.csv")
    row = comparison[
        (comparison["network"] == "exp1_snn")
        & (comparison["table"] == "I")
        & (comparison["metric"] == "avg_epoch_time_s")
    ].iloc[0]
    assert row["exceeds_interval"] == True  # noqa: E712 (read back from the CSV)
    assert (
        comparison.loc[comparison["network"] == "exp1_ann", "exceeds_interval_null_reason"]
        .str.startswith("an ANN")
        .all()
    )
    # the HTML view shows the verdict as yes / no, and the reason of an empty cell as its footnote
    page = (made["folder"] / "cost.html").read_text()
    assert (
        aggregate.VERDICT_LABEL in page and ">yes<" in page and ">no<" in page and "no ANN in this experiment" in page
    )


@pytest.mark.parametrize("repeats", [1, 2])
def test_with_fewer_than_three_seeds_the_verdict_is_null_with_the_reason(tmp_path, repeats):
    """Two seeds give Student's t one degree of freedom: an interval +-12.7 standard errors wide that informs
    nothing, so neither the verdict nor the ratio's interval is filled."""
    made = _tables(tmp_path, repeats=repeats)
    cost = pd.read_csv(made["folder"] / "cost.csv")
    pairs = cost[cost["experiment"] < 3]
    assert len(pairs) and pairs["exceeds_interval"].isna().all() and pairs["difference_ci95_low"].isna().all()
    reason = pairs.loc[pairs["numerator"] == "exp1_snn", "exceeds_interval_null_reason"].iloc[0]
    assert reason == f"needs >= 3 seeds a side (exp1_snn: {repeats}, exp1_ann: {repeats})"
    assert html.escape(reason) in (made["folder"] / "cost.html").read_text()
    assert pairs["ci_low"].isna().all()
    assert (pairs["ratio_interval_null_reason"] == f"needs >= 3 seeds a side (has {repeats}/{repeats})").all()
    assert (pairs["seeds"] == f"{repeats}/{repeats}").all()
    summary = made["summary"]
    assert summary["avg_epoch_time_s_ci95_low"].isna().all()  # no interval in the summary either
    if repeats == 1:  # Table I and the ratios are the first seed's, as without the aggregate tables
        plain = results.write_tables(
            {n: made["epochs"][n] for n in STUDY_NETWORKS},
            {n: tmp_path / "results" / n / "test.json" for n in STUDY_NETWORKS},
            STUDY_NETWORKS,
            table_outputs(tmp_path / "plain"),
        )
        assert "exceeds_interval" not in plain["cost"]
        same = made["cost"][~made["cost"]["metric"].isin(results.comparison.TARGET_COST_METRICS)]
        pd.testing.assert_frame_equal(same[plain["cost"].columns].reset_index(drop=True), plain["cost"])
    else:  # the ratio is the ratio of the means over both seeds, as the headline figure draws it
        row = pairs[(pairs["numerator"] == "exp1_snn") & (pairs["metric"] == "avg_epoch_time_s")].iloc[0]
        snn, ann = (_seed_values(made["epochs"], n, "epoch_time_s") for n in ("exp1_snn", "exp1_ann"))
        assert row["run_ratio"] == pytest.approx(np.mean(snn) / np.mean(ann), rel=1e-5)  # CSV: 6 digits


def test_intervals_stay_where_their_figure_can_lie():
    low_accuracy = aggregate.interval([99.0, 99.9, 100.0], "test_acc_pct")
    assert low_accuracy[2] == 100.0 and low_accuracy[1] < 99.6
    time = aggregate.interval([0.1, 2.0, 9.0], "avg_epoch_time_s")
    assert time[1] == 0.0 and time[2] > 9.0
    assert np.isnan(aggregate.interval([1.0, 2.0], "avg_epoch_time_s")[1])  # two runs: no interval


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_a_side_that_ran_out_of_memory_gives_a_null_verdict_saying_so(tmp_path):
    made = _tables(tmp_path, oom="exp1_snn-seed1")
    cost = made["cost"]
    exp1 = cost[cost["numerator"] == "exp1_snn"]
    assert exp1["exceeds_interval"].isna().all()
    assert exp1["exceeds_interval_null_reason"].str.startswith("oom: exp1_snn completed 2 of 3 runs").all()
    assert cost.loc[cost["numerator"] == "exp2_snn", "exceeds_interval"].notna().any()  # the others still decided


def test_a_bad_difference_table_names_the_file(tmp_path):
    path = tmp_path / "difference.csv"
    path.write_text("snn,ann,metric,exceeds_interval\nexp1_snn,exp1_ann,avg_epoch_time_s,maybe\n")
    with pytest.raises(ValueError, match="tables/difference.csv.*forcerun aggregate"):
        aggregate.read_table(path, "difference")
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope.csv'}: cannot read the summary table"):
        aggregate.read_table(tmp_path / "nope.csv", "summary")


def test_an_empty_difference_table_gives_null_verdicts_not_an_error(tmp_path):
    # a config without an ANN (experiment 3 only): rule aggregate writes a difference table without rows
    exp3 = {n: s for n, s in STUDY_NETWORKS.items() if s["experiment"] == 3}
    runs = _runs(tmp_path, repeats=1)
    outputs = {f"{k}_{e}": tmp_path / f"{k}.{e}" for k in ("runs", "summary", "difference") for e in ("csv", "html")}
    aggregate.write_aggregate(
        {n: tmp_path / "results" / n / "epochs.parquet" for n in exp3},
        {n: tmp_path / "results" / n / "test.json" for n in exp3},
        {n: runs[n] for n in exp3},
        exp3,
        outputs,
    )
    difference = aggregate.read_table(outputs["difference_csv"], "difference")
    assert difference.empty
    cost = results.cost_of_spiking(
        results.table1({n: results.read_epochs(tmp_path / "results" / n / "epochs.parquet") for n in exp3}, exp3),
        results.load_paper_values(),
        exp3,
    )
    out = aggregate.cost_verdicts(cost, difference, aggregate.read_table(outputs["summary_csv"], "summary"))
    assert out["exceeds_interval"].isna().all()
    assert out["exceeds_interval_null_reason"].str.startswith("no ANN in this experiment").all()


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_the_cost_figure_draws_the_ratio_of_the_means_with_its_interval(tmp_path):
    from spikebench.figures import cost_of_spiking_figure

    made = _tables(tmp_path)
    summary = aggregate.read_table(made["folder"] / "summary.csv", "summary")
    fed = aggregate.seed_ratios(made["cost"], summary)
    pd.testing.assert_frame_equal(fed[made["cost"].columns], made["cost"])  # the table's statistic is the figure's
    snn, ann = (_seed_values(made["epochs"], n, "train_time_s") for n in ("exp1_snn", "exp1_ann"))
    ratio = np.mean(snn) / np.mean(ann)
    r = [stats.sem(v) / np.mean(v) for v in (snn, ann)]  # relative standard errors, two dof each
    df = (r[0] ** 2 + r[1] ** 2) ** 2 / (r[0] ** 4 / 2 + r[1] ** 4 / 2)
    half = stats.t.ppf(0.975, df) * np.hypot(*r)
    row = fed[(fed["numerator"] == "exp1_snn") & (fed["metric"] == "train_time_per_sample_ms")].iloc[0]
    assert (row["run_ratio"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (ratio, ratio * np.exp(-half), ratio * np.exp(half)), rel=1e-4
    )

    fig = cost_of_spiking_figure(fed)
    time_ax = fig.axes[0]
    bars = [c for c in time_ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3  # one per experiment's "this run" bar
    (segment,) = bars[0].lines[2][0].get_segments()  # exp1's vertical error bar
    assert segment[:, 1].tolist() == pytest.approx([row["ci_low"], row["ci_high"]], rel=1e-6)
    (bar,) = [p for p in time_ax.patches if p.get_x() + p.get_width() / 2 == pytest.approx(segment[0, 0])]
    assert bar.get_height() == pytest.approx(ratio, rel=1e-5)  # the bar is the ratio of the means (CSV: 6 digits)
    assert any("95% interval" in t.get_text() for t in fig.legends[0].get_texts())

    two = _tables(tmp_path / "two", repeats=2)  # two seeds: bars, no error bars
    plain = cost_of_spiking_figure(two["cost"])
    assert not [c for c in plain.axes[0].containers if isinstance(c, ErrorbarContainer)]


def test_the_cost_figure_has_no_error_bar_where_a_network_has_one_seed(tmp_path):
    made = _tables(tmp_path, repeats=1)
    fed = aggregate.seed_ratios(made["cost"], aggregate.read_table(made["folder"] / "summary.csv", "summary"))
    assert fed["ci_low"].isna().all()
    pd.testing.assert_series_equal(fed["run_ratio"], made["cost"]["run_ratio"], check_exact=False, rtol=1e-12)


def test_the_sweep_figure_draws_each_points_interval_over_seeds():
    from spikebench.sweep_figures import PANELS, sweep_figure

    def row(network, time_s, low, high):
        out = {"network": network, "status": "ok", "implementation": None}
        for name in aggregate.FIGURES:
            out.update({name: time_s, f"{name}_ci95_low": low, f"{name}_ci95_high": high})
        return out

    summary = pd.DataFrame(
        [
            row("exp1_ann", 1.0, np.nan, np.nan),
            row("exp1_snn", 4.0, 3.0, 5.5),
            row("exp1_snn-num_steps5", 2.0, 1.5, 2.5),
        ]
    )
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-num_steps5", "base": "exp1_snn", "value": 5},
    ]
    networks = {
        "exp1_ann": {"experiment": 1, "kind": "ann", "dataset": "mnist"},
        "exp1_snn": {"experiment": 1, "kind": "snn", "dataset": "mnist"},
    }
    ax = sweep_figure(summary, "num_steps", points, networks).axes[list(PANELS).index("avg_epoch_time_s")]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    spans = sorted(tuple(s[:, 1]) for s in bars.lines[2][0].get_segments())
    assert spans == [pytest.approx((1.5, 2.5)), pytest.approx((3.0, 5.5))]
