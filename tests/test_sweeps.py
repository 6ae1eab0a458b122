"""Sweeps, repeats and out-of-memory runs (docs/exploring.md): run ids, validation, the
`status: oom` record of a run that runs out of memory, and the confidence intervals of repeats."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spikebench.config import ConfigError, expand_runs, load_config, merge, validate_config

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_config() -> dict:
    return load_config(PROJECT / "config.yaml", PROJECT / "config.demo.yaml")


def _with(config: dict, overlay: dict) -> dict:
    out = merge(config, overlay)
    validate_config(out)
    return out


def test_without_sweeps_or_repeats_the_run_ids_are_the_network_ids():
    base = load_config(PROJECT / "config.yaml")
    runs = expand_runs(base)
    assert list(runs) == list(base["networks"])
    assert all(r["spec"] == base["networks"][n] and r["seed"] == base["seed"] for n, r in runs.items())


def test_a_variant_copies_every_setting_of_its_base_and_replaces_one(demo_config):
    config = merge(demo_config, {"sweeps": {"t": {"networks": ["exp1_snn"], "num_steps": [3, 7]}}})
    config["networks"]["exp1_snn"]["some_new_setting"] = "kept"  # e.g. another helper's `implementation`
    runs = expand_runs(config)
    variant = runs["exp1_snn-num_steps3"]
    base = {k: v for k, v in config["networks"]["exp1_snn"].items() if k != "repeats"}  # repeats is not a setting
    assert variant["spec"] == {**base, "num_steps": 3} and variant["spec"]["some_new_setting"] == "kept"
    assert (variant["base"], variant["setting"], variant["value"]) == ("exp1_snn", "num_steps", 3)
    assert {"exp1_snn-num_steps7", "exp1_snn-num_steps7-seed1"} <= set(runs)  # exp1_snn has repeats: 2 in the demo


def test_repeats_give_one_run_per_seed_and_a_networks_own_repeats_win(demo_config):
    config = _with(demo_config, {"seed": 5, "repeats": 2, "networks": {"exp2_cnn": {"repeats": 1}}})
    runs = expand_runs(config)
    assert [runs[run_id]["seed"] for run_id in ("exp1_ann", "exp1_ann-seed6")] == [5, 6]  # the first at its old path
    assert "exp2_cnn" in runs and "exp2_cnn-seed6" not in runs
    assert all("repeats" not in r["spec"] for r in runs.values())


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"networks": ["nope"], "num_steps": [5]}, "unknown network 'nope'"),
        ({"networks": ["exp1_snn"], "kind": ["ann"]}, "'sweeps.s.kind': not a setting a sweep can vary"),
        ({"networks": ["exp1_snn"], "num_steps": [0]}, "variant exp1_snn-num_steps0: 0 is less than the minimum"),
        ({"networks": ["exp2_cnn"], "input_size": [8]}, "variant exp2_cnn-input_size8: .*too small"),
    ],
)
def test_a_bad_sweep_is_named(demo_config, sweep, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(merge(demo_config, {"sweeps": {"s": sweep}}))


# ---- a run that runs out of memory -----------------------------------------------------------------


def test_an_allocation_failure_is_recorded_as_oom_and_its_evaluation_too(
    tmp_path, demo_mnist_job, demo_config, monkeypatch
):
    """A real failed CPU allocation in epoch 2: train and evaluate both write their outputs, status oom."""
    from spikebench import training
    from spikebench.jobs import evaluate_job, train_job
    from spikebench.results import read_epochs, read_test

    real_epoch = training._run_epoch

    def epoch_that_cannot_allocate(net, optimizer, spec, train, val, gens, device, epoch, telemetry):
        if epoch < 2:
            return real_epoch(net, optimizer, spec, train, val, gens, device, epoch, telemetry)
        telemetry.phase("train", epoch)
        torch.empty(1 << 60, dtype=torch.uint8)  # far more than any machine has: the allocator fails

    monkeypatch.setattr(training, "_run_epoch", epoch_that_cannot_allocate)
    spec = {**demo_config["networks"]["exp1_ann"], "epochs": 3}
    out, log = tmp_path / "exp1_ann", logging.getLogger("spikebench")
    telemetry = {"enabled": False, "interval_s": 1.0, "idle_s": 0}
    train_job(
        "exp1_ann",
        spec,
        inputs={"split": str(demo_mnist_job["split"])},
        outputs={
            "weights": out / "weights.pt",
            "epochs": out / "epochs.parquet",
            "telemetry": out / "telemetry_train.parquet",
        },
        data_root=demo_mnist_job["root"],
        seed=0,
        device="cpu",
        telemetry=telemetry,
        checkpoint=out / "checkpoint.pt",
        log=log,
        data_source="demo",
    )
    epochs = read_epochs(out / "epochs.parquet")
    assert list(epochs["status"]) == ["oom"] and list(epochs["epoch"]) == [2]
    assert epochs["train_acc"].isna().all() and epochs["memory_reached_mib"].iloc[0] > 0
    assert "DefaultCPUAllocator" in epochs["error"].iloc[0]
    evaluate_job(
        "exp1_ann",
        spec,
        inputs={"weights": str(out / "weights.pt")},
        outputs={"test": out / "test.json", "telemetry": out / "telemetry_test.parquet"},
        data_root=demo_mnist_job["root"],
        which="last",
        seed=0,
        device="cpu",
        telemetry=telemetry,
        log=log,
        data_source="demo",
    )
    test = read_test(out / "test.json")
    assert test["status"] == "oom" and test["accuracy"] is None and test["f1_macro"] is None
    assert (out / "telemetry_test.parquet").is_file()


def test_other_errors_are_not_out_of_memory():
    from spikebench.oom import is_out_of_memory

    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))


# ---- intervals and the SNN/ANN difference ------------------------------------------------------------


def test_the_interval_is_the_student_t_interval_of_the_mean():
    from scipy import stats

    from spikebench.aggregate import interval

    mean, low, high = interval([90.0, 92.0, 91.0])  # n = 3: t(0.975, 2) = 4.3027, sem = 1 / sqrt(3)
    assert (
        mean == 91.0
        and low == pytest.approx(91.0 - 4.3027 / np.sqrt(3), abs=1e-3)
        and high == pytest.approx(91.0 + 4.3027 / np.sqrt(3), abs=1e-3)
    )
    assert np.isnan(interval([90.0, 92.0])[1])  # n = 2: +-12.7 standard errors, not drawn
    values = [1.0, 2.5, 2.0, 4.0]
    assert interval(values)[1:] == pytest.approx(
        stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    )
    assert interval([3.0, float("nan")]) == (
        3.0,
        pytest.approx(float("nan"), nan_ok=True),
        pytest.approx(float("nan"), nan_ok=True),
    )


def test_welch_difference_and_whether_it_exceeds_its_interval():
    from scipy import stats

    from spikebench.aggregate import welch

    snn, ann = [10.0, 11.0, 12.0], [2.0, 2.5, 2.25]
    out = welch(snn, ann)
    reference = stats.ttest_ind(snn, ann, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert out["difference"] == pytest.approx(11.0 - 2.25) and out["p_value"] == pytest.approx(reference.pvalue)
    assert (out["difference_ci95_low"], out["difference_ci95_high"]) == pytest.approx((ci.low, ci.high))
    assert out["exceeds_interval"] is True
    assert welch([1.0, 3.0, 2.0], [2.0, 2.5, 2.2])["exceeds_interval"] is False
    assert welch([10.0, 11.0], [2.0, 2.5])["exceeds_interval"] is None  # two runs a side: no interval


# ---- the workflow: an out-of-memory variant, repeats, adding sweep points ----------------------------


def _small_config(workdir: Path) -> None:
    """exp1's two networks only, one epoch, three seeds each (the fewest with an interval), and a sweep of
    exp1_snn's time steps."""
    import yaml

    config = merge(
        yaml.safe_load((workdir / "config.yaml").read_text()),
        yaml.safe_load((workdir / "config.demo.yaml").read_text()),
    )
    config["networks"] = {n: {**config["networks"][n], "epochs": 1} for n in ("exp1_ann", "exp1_snn")}
    config["repeats"] = 3
    config["networks"] = {n: {k: v for k, v in s.items() if k != "repeats"} for n, s in config["networks"].items()}
    config["sweeps"] = {"time_steps": {"networks": ["exp1_snn"], "num_steps": [2]}}
    config["implementations"] = {"snntorch": []}  # no snnTorch twin here
    config["telemetry"]["idle_s"] = 0
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def _planned(workdir: Path, overlay: dict) -> set[tuple[str, str]]:
    import re
    import subprocess

    import yaml

    from conftest import snakemake_cmd

    (workdir / "change.yaml").write_text(yaml.safe_dump(overlay))
    run = subprocess.run(
        snakemake_cmd("-n", "--cores", "2", "--configfile", "change.yaml"),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    jobs = set()
    for block in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", run.stdout + run.stderr, re.M):
        wildcards = re.search(r"^\s+wildcards: (.*)$", block.group(2), re.M)
        jobs.add((block.group(1), wildcards.group(1).strip() if wildcards else ""))
    return jobs


def _point_jobs(value: float) -> set[tuple[str, str]]:
    return {
        (rule, f"network=exp1_ann-lr{value}{seed}")
        for rule in ("train", "evaluate")
        for seed in ("", "-seed1", "-seed2")
    }


@pytest.mark.slow
def test_an_oom_variant_is_a_result_repeats_have_intervals_and_a_new_point_plans_only_its_jobs(workflow_dir):
    import os
    import subprocess

    from scipy import stats

    from conftest import snakemake_cmd

    _small_config(workflow_dir)
    env = {**os.environ, "SPIKEBENCH_FAULT_OOM": "exp1_snn-num_steps2-seed1:1"}
    run = subprocess.run(
        snakemake_cmd("--cores", "2"), cwd=workflow_dir, env=env, capture_output=True, text=True, timeout=1500
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    tables = workflow_dir / "results-demo" / "tables"
    runs = pd.read_csv(tables / "runs.csv").set_index("run_id")
    assert runs.at["exp1_snn-num_steps2-seed1", "status"] == "oom"
    assert pd.isna(runs.at["exp1_snn-num_steps2-seed1", "test_acc_pct"])
    assert runs.at["exp1_snn-num_steps2-seed1", "memory_reached_mib"] > 0
    assert (runs.drop(index="exp1_snn-num_steps2-seed1")["status"] == "ok").all()
    test = json.loads((workflow_dir / "results-demo" / "exp1_snn-num_steps2-seed1" / "test.json").read_text())
    assert test["status"] == "oom" and test["accuracy"] is None

    summary = pd.read_csv(tables / "summary.csv").set_index("network")
    assert summary.at["exp1_snn-num_steps2", "status"] == "oom in 1 of 3"
    for network in ("exp1_ann", "exp1_snn"):
        values = runs.loc[runs["network"] == network, "test_acc_pct"].to_numpy()
        low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
        low, high = max(low, 0.0), min(high, 100.0)  # an accuracy's interval stays within [0, 100] %
        row = summary.loc[network]
        assert (row["test_acc_pct_ci95_low"], row["test_acc_pct_ci95_high"]) == pytest.approx((low, high), rel=1e-5)
    difference = pd.read_csv(tables / "difference.csv")
    assert set(difference["snn"]) == {"exp1_snn", "exp1_snn-num_steps2"}
    cost = pd.read_csv(tables / "cost.csv")  # rule tables: the same verdict as difference.csv
    row = cost[(cost["numerator"] == "exp1_snn") & (cost["metric"] == "avg_epoch_time_s")].iloc[0]
    welch = difference[(difference["snn"] == "exp1_snn") & (difference["metric"] == "avg_epoch_time_s")].iloc[0]
    assert pd.notna(row["exceeds_interval"]) and str(row["exceeds_interval"]) == str(welch["exceeds_interval"])
    assert row["difference_ci95_low"] == pytest.approx(welch["difference_ci95_low"], rel=1e-5)
    assert (workflow_dir / "results-demo" / "figures" / "sweep_num_steps.svg").is_file()

    lr = {"networks": ["exp1_ann"], "lr": [0.002, 0.003]}
    two = _planned(workflow_dir, {"sweeps": {"lr": lr}})
    assert {job for job in two if job[0] in ("train", "evaluate")} == _point_jobs(0.002) | _point_jobs(0.003)
    three = _planned(workflow_dir, {"sweeps": {"lr": {**lr, "lr": [0.002, 0.003, 0.004]}}})
    assert three - two == _point_jobs(0.004)


def _sweep_row(network, status, value, low=np.nan, high=np.nan, n_ok=3, acc=None, acc_low=np.nan, acc_high=np.nan):
    """A summary row as spikebench.aggregate writes it: every figure `value` (activation memory not measured)."""
    from spikebench.aggregate import FIGURES

    out = {"network": network, "status": status, "implementation": None, "n_runs": n_ok, "n_ok": n_ok}
    for name in FIGURES:
        v = np.nan if status == "oom" or name == "activation_peak_mib" else value
        out.update({name: v, f"{name}_ci95_low": low, f"{name}_ci95_high": high})
    if acc is not None:
        out.update(test_acc_pct=acc, test_acc_pct_ci95_low=acc_low, test_acc_pct_ci95_high=acc_high)
    return out


SWEEP_NETWORKS = {
    "exp1_ann": {"experiment": 1, "kind": "ann", "dataset": "mnist"},
    "exp1_snn": {"experiment": 1, "kind": "snn", "dataset": "mnist"},
    "exp1_snn_snntorch": {"experiment": 1, "kind": "snn", "dataset": "mnist", "implementation": "snntorch"},
}


def _panel(fig, ylabel):
    (ax,) = [ax for ax in fig.axes if ax.get_ylabel() == ylabel]
    return ax


def _interval_segments(ax) -> list[tuple[float, float, float]]:
    """(x, low, high) of every error bar drawn in `ax`."""
    from matplotlib.container import ErrorbarContainer

    out = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer) and container.has_yerr:
            for segment in container.lines[2][0].get_segments():
                out.append((float(segment[0][0]), float(min(segment[:, 1])), float(max(segment[:, 1]))))
    return out


def test_the_sweep_figure_draws_means_with_intervals_and_an_oom_point_as_a_cross_not_a_value():
    from spikebench.sweep_figures import PANELS, sweep_figure

    summary = pd.DataFrame(
        [
            _sweep_row("exp1_ann", "ok", 1.0),
            _sweep_row("exp1_snn", "ok", 4.0, 3.0, 5.0),
            _sweep_row("exp1_snn-num_steps5", "ok", 2.0, 1.5, 2.5),
            _sweep_row("exp1_snn-num_steps50", "oom", 0),
        ]
    )
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-num_steps5", "base": "exp1_snn", "value": 5},
        {"network": "exp1_snn-num_steps50", "base": "exp1_snn", "value": 50},
    ]
    fig = sweep_figure(summary, "num_steps", points, SWEEP_NETWORKS)
    time_ax = _panel(fig, PANELS["avg_epoch_time_s"])
    line = time_ax.lines[0]
    assert list(line.get_xdata()) == [5.0, 10.0] and list(line.get_ydata()) == [2.0, 4.0]  # the oom point is no value
    assert sorted(_interval_segments(time_ax)) == [(5.0, 1.5, 2.5), (10.0, 3.0, 5.0)]
    crosses = [c for c in time_ax.collections if c.get_offsets().shape[0] == 1 and c.get_offsets()[0][0] == 50.0]
    assert crosses  # ... but a cross at 50
    assert any(ln.get_linestyle() == "--" and list(ln.get_ydata()) == [1.0, 1.0] for ln in time_ax.lines)  # the ANN
    # activation memory was measured nowhere: no empty panel, a note under the figure says why
    assert PANELS["activation_peak_mib"] not in [ax.get_ylabel() for ax in fig.axes] and len(fig.axes) == 4
    note = fig.legends[0].get_title().get_text()
    assert "activation memory (MiB) (no activation peak on the CPU)" in note


def test_the_sweep_figure_draws_the_memory_saved_for_backward_measured_and_predicted_against_the_steps():
    from spikebench.sweep_figures import PANELS, sweep_figure

    rows = [_sweep_row("exp1_ann", "ok", 1.0), _sweep_row("exp1_snn", "ok", 10.0), _sweep_row("exp1_snn-s2", "ok", 2.0)]
    for row, predicted in zip(rows, (1.1, 9.5, 1.9)):
        row["saved_for_backward_predicted_mib"] = predicted
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-s2", "base": "exp1_snn", "value": 2},
    ]
    ax = _panel(sweep_figure(pd.DataFrame(rows), "num_steps", points, SWEEP_NETWORKS), PANELS["saved_for_backward_mib"])
    lines = {(ln.get_linestyle(), tuple(ln.get_ydata())) for ln in ax.lines}
    assert ("-", (2.0, 10.0)) in lines and (":", (1.9, 9.5)) in lines  # measured and, dotted, predicted
    assert ("--", (1.0, 1.0)) in lines  # the ANN: flat, a reference line


def test_sweep_intervals_need_three_seeds_and_stay_within_their_domain():
    from spikebench.sweep_figures import PANELS, sweep_figure

    summary = pd.DataFrame(
        [
            _sweep_row("exp1_ann", "ok", 1.0, n_ok=2),
            # two seeds: Student's t gives an interval below 0 s and past 100 %; it must not be drawn
            _sweep_row("exp1_snn", "ok", 4.0, -6.0, 9.0, n_ok=2, acc=90.0, acc_low=78.0, acc_high=101.0),
            # three seeds: drawn, clipped at 0 s and at 100 %
            _sweep_row("exp1_snn-num_steps5", "ok", 2.0, -0.5, 4.5, n_ok=3, acc=97.0, acc_low=93.0, acc_high=104.0),
        ]
    )
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-num_steps5", "base": "exp1_snn", "value": 5},
    ]
    fig = sweep_figure(summary, "num_steps", points, SWEEP_NETWORKS, demo=True)
    try:
        assert _interval_segments(_panel(fig, PANELS["avg_epoch_time_s"])) == [(5.0, 0.0, 4.5)]
        assert _interval_segments(_panel(fig, PANELS["test_acc_pct"])) == [(5.0, 93.0, 100.0)]
        for ax in fig.axes:
            low, high = ax.get_ylim()
            assert low >= 0 and (ax.get_ylabel() != PANELS["test_acc_pct"] or high <= 102.0)
        assert "DEMO DATA" in fig._suptitle.get_text()
    finally:
        plt_close(fig)


def test_sweep_colours_follow_the_kind_and_the_snntorch_twin_is_lighter_and_dashed():
    from matplotlib.colors import to_rgb

    from spikebench.figures import KIND_COLORS
    from spikebench.sweep_figures import PANELS, sweep_figure

    summary = pd.DataFrame(
        [
            _sweep_row("exp1_ann", "ok", 1.0),
            _sweep_row("exp1_snn", "ok", 4.0),
            _sweep_row("exp1_snn-num_steps5", "ok", 2.0),
            _sweep_row("exp1_snn_snntorch", "ok", 5.0),
            _sweep_row("exp1_snn_snntorch-num_steps5", "ok", 3.0),
        ]
    )
    points = [
        {"network": "exp1_snn", "base": "exp1_snn", "value": 10},
        {"network": "exp1_snn-num_steps5", "base": "exp1_snn", "value": 5},
        {"network": "exp1_snn_snntorch", "base": "exp1_snn_snntorch", "value": 10},
        {"network": "exp1_snn_snntorch-num_steps5", "base": "exp1_snn_snntorch", "value": 5},
    ]
    fig = sweep_figure(summary, "num_steps", points, SWEEP_NETWORKS)
    try:
        ax = _panel(fig, PANELS["avg_epoch_time_s"])
        by_values = {tuple(ln.get_ydata()): ln for ln in ax.lines}
        snn, twin, ann = by_values[(2.0, 4.0)], by_values[(3.0, 5.0)], by_values[(1.0, 1.0)]
        assert to_rgb(snn.get_color()) == to_rgb(KIND_COLORS["snn"])  # blue, never the first-in-line orange
        assert to_rgb(ann.get_color()) == to_rgb(KIND_COLORS["ann"])
        assert to_rgb(twin.get_color()) != to_rgb(snn.get_color()) and twin.get_linestyle() != snn.get_linestyle()
        r, g, b = to_rgb(twin.get_color())
        assert b == max(r, g, b) and sum((r, g, b)) > sum(to_rgb(snn.get_color()))  # the same blue, lighter
    finally:
        plt_close(fig)


def plt_close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
