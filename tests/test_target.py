"""The cost of reaching an accuracy (spikebench.results.target, through rule aggregate into the cost table): the
first epoch at the target, the training time, samples and energy summed through it, 'not reached' as null with
the reason, the default target and a configured one."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from spikebench import aggregate
from spikebench.results.target import experiment_targets, to_target

NETWORKS = {
    "exp1_ann": {"experiment": 1, "kind": "ann", "dataset": "mnist"},
    "exp1_snn": {"experiment": 1, "kind": "snn", "dataset": "mnist"},
}


def epochs(val_acc, train_time_s, energy_j=None, n_train=1000):
    n = len(val_acc)
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "val_acc": val_acc,
            "train_time_s": train_time_s,
            "epoch_time_s": [t + 0.5 for t in train_time_s],
            "n_train": [n_train] * n,
            "train_energy_j": energy_j if energy_j is not None else [math.nan] * n,
        }
    )


def test_the_first_epoch_at_the_target_and_the_sums_through_it():
    e = epochs([0.80, 0.91, 0.89, 0.95], [2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0])
    got = to_target(e.iloc[::-1], 90.0)  # order of the rows does not matter: epochs are sorted
    assert got == {
        "time_to_target_s": 5.0,  # train phases of epochs 1 and 2, validation left out
        "samples_to_target": 2000.0,
        "energy_to_target_j": 30.0,
        "reached_target": True,
        "epochs_to_target": 2,
    }
    assert math.isnan(to_target(e.assign(train_energy_j=[10.0, math.nan, 1.0, 1.0]), 90.0)["energy_to_target_j"])
    missed = to_target(e, 96.0)
    assert missed["reached_target"] is False and math.isnan(missed["time_to_target_s"])


def test_the_default_target_is_a_level_both_networks_reach_and_the_config_overrides_it():
    targets = experiment_targets({"exp1_ann": 97.0, "exp1_snn": 92.0}, NETWORKS)
    assert targets[1]["target_val_acc_pct"] == pytest.approx(0.95 * 92.0)
    assert "lower best validation accuracy of exp1_snn and exp1_ann" in targets[1]["target_source"]
    fixed = experiment_targets({"exp1_ann": 97.0, "exp1_snn": 92.0}, NETWORKS, {"val_acc_pct": {"1": 90.0}})
    assert fixed[1] == {"target_val_acc_pct": 90.0, "target_source": "config"}
    assert experiment_targets({"exp1_ann": 97.0, "exp1_snn": 92.0}, NETWORKS, {"factor": 0.5})[1][
        "target_val_acc_pct"
    ] == pytest.approx(46.0)


def _summary_row(network, n_ok, n_reached, time_s):
    return {"network": network, "n_ok": n_ok, "n_reached_target": n_reached, "time_to_target_s": time_s}


def test_a_ratio_of_times_to_target_is_null_where_a_seed_did_not_reach_it():
    cost = pd.DataFrame(
        {
            "numerator": ["exp1_snn"],
            "denominator": ["exp1_ann"],
            "metric": ["time_to_target_s"],
            **{c: [math.nan] for c in ("run_numerator", "run_denominator", "run_ratio")},
        }
    )
    summary = pd.DataFrame([_summary_row("exp1_snn", 3, 2, 12.0), _summary_row("exp1_ann", 3, 3, 2.0)])
    row = aggregate.seed_ratios(cost, summary).iloc[0]
    assert math.isnan(row["run_ratio"]) and row["seeds"] == "3/3"
    assert row["ratio_interval_null_reason"] == "target accuracy not reached: exp1_snn in 1 of 3 seeds"
    summary.loc[0, "n_reached_target"] = 3
    assert aggregate.seed_ratios(cost, summary).iloc[0]["run_ratio"] == pytest.approx(6.0)


def test_run_table_measures_every_run_against_its_experiments_target():
    runs = {
        "exp1_ann": {**NETWORKS["exp1_ann"], "network": "exp1_ann", "base": "exp1_ann", "seed": 0},
        "exp1_snn": {**NETWORKS["exp1_snn"], "network": "exp1_snn", "base": "exp1_snn", "seed": 0},
    }
    table = pd.DataFrame(
        [
            {"run_id": r, "network": r, "experiment": 1, "status": "ok", "highest_val_acc_pct": v}
            for r, v in (("exp1_ann", 96.0), ("exp1_snn", 90.0))
        ]
    )
    frames = {
        "exp1_ann": epochs([0.90, 0.96], [1.0, 1.0]),
        "exp1_snn": epochs([0.80, 0.86, 0.90], [4.0, 4.0, 4.0]),
    }
    out = aggregate._with_targets(table, frames, {n: NETWORKS[n] for n in runs}, None).set_index("run_id")
    assert out.at["exp1_ann", "target_val_acc_pct"] == pytest.approx(85.5)  # 0.95 x 90
    assert out.at["exp1_ann", "time_to_target_s"] == 1.0 and out.at["exp1_snn", "time_to_target_s"] == 8.0
    assert out.at["exp1_snn", "samples_to_target"] == 2000.0 and out.at["exp1_snn", "reached_target"] is True
