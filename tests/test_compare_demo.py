"""benchmarks/compare_demo.py on small synthetic results folders: equal results pass (whatever the times),
any changed loss, metric, operation count or N-MNIST frame fails, naming the file and what differs."""

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "benchmarks"))
import compare_demo  # noqa: E402


def write_frames(path, counts, version="26.0.1"):
    table = pa.table(
        {
            "sample": pa.array([0, 0, 1], pa.int32()),
            "frame": pa.array([0, 1, 0], pa.int16()),
            "count": pa.array(counts, pa.int16()),
        }
    )
    pq.write_table(table.replace_schema_metadata({"pyarrow_version": version, "time_window_us": "10000"}), path)


def make_results(root):
    """A results folder like the demo's: one SNN run (epochs, test, layers) and the N-MNIST data files."""
    run = root / "exp1_snn"
    run.mkdir(parents=True)
    pd.DataFrame(
        {
            "network": ["exp1_snn"] * 2,
            "epoch": [1, 2],
            "train_loss": [0.52, 0.31],
            "train_acc": [0.8, 0.9],
            "val_loss": [0.4, 0.3],
            "val_acc": [0.85, 0.875],
            "epoch_time_s": [12.5, 12.25],
            "avg_power_w": [None, None],
        }
    ).to_parquet(run / "epochs.parquet")
    (run / "test.json").write_text(
        json.dumps(
            {
                "network": "exp1_snn",
                "accuracy": 0.904,
                "precision_macro": 0.9,
                "recall_macro": 0.91,
                "f1_macro": 0.905,
                "per_class_recall": [0.9, 0.91],
                "per_class_precision": [0.9, 0.9],
                "per_class_f1": [0.9, 0.905],
                "confusion_matrix": [[9, 1], [1, 9]],
                "test_time_s": 3.2,
                "telemetry": {"n_samples": 30},
                "hardware": {"cpu": "EPYC"},
            }
        )
    )
    pd.DataFrame(
        {"layer": [0, 1], "spikes_per_sample": [280.345, 187.791], "zero_relu_fraction": [np.nan, np.nan]}
    ).to_parquet(run / "layers.parquet")
    (root / "data").mkdir()
    write_frames(root / "data" / "nmnist_train_frames.parquet", [1, 2, 3])
    return root


@pytest.fixture
def folders(tmp_path):
    ref = make_results(tmp_path / "ref")
    new = tmp_path / "new"
    shutil.copytree(ref, new)
    return ref, new


def run(ref, new, capsys):
    code = compare_demo.main(["--reference", str(ref), "--new", str(new)])
    return code, capsys.readouterr()


def test_equal_folders_match(folders, capsys):
    code, out = run(*folders, capsys)
    assert code == 0, out.out
    assert "4 matched, 0 differ" in out.out


def test_times_telemetry_and_hardware_may_differ(folders, capsys):
    ref, new = folders
    epochs = pd.read_parquet(new / "exp1_snn" / "epochs.parquet")
    epochs["epoch_time_s"] = [99.0, 98.0]
    epochs.to_parquet(new / "exp1_snn" / "epochs.parquet")
    test = json.loads((new / "exp1_snn" / "test.json").read_text())
    test.update(test_time_s=9.9, telemetry={"n_samples": 99}, hardware={"cpu": "other"})
    (new / "exp1_snn" / "test.json").write_text(json.dumps(test))
    code, out = run(ref, new, capsys)
    assert code == 0, out.out


def test_one_changed_loss_fails_naming_the_file_and_column(folders, capsys):
    ref, new = folders
    epochs = pd.read_parquet(new / "exp1_snn" / "epochs.parquet")
    epochs.loc[1, "val_loss"] = np.nextafter(0.3, 1.0)  # one ulp
    epochs.to_parquet(new / "exp1_snn" / "epochs.parquet")
    code, out = run(ref, new, capsys)
    assert code == 1
    line = next(line for line in out.out.splitlines() if "DIFFER" in line)
    assert "exp1_snn" in line and "epochs.parquet" in line and "val_loss" in line and "row 1" in line
    assert "3 matched, 1 differ" in out.out


def test_a_changed_metric_fails_naming_the_key(folders, capsys):
    ref, new = folders
    test = json.loads((new / "exp1_snn" / "test.json").read_text())
    test["confusion_matrix"] = [[8, 2], [1, 9]]
    (new / "exp1_snn" / "test.json").write_text(json.dumps(test))
    code, out = run(ref, new, capsys)
    assert code == 1
    assert "test.json" in out.out and "confusion_matrix" in out.out


def test_operation_counts_compare_bitwise_with_nan_equal_to_nan(folders, capsys):
    ref, new = folders
    code, _ = run(ref, new, capsys)  # the NaN column of both files matches
    assert code == 0
    layers = pd.read_parquet(new / "exp1_snn" / "layers.parquet")
    layers.loc[0, "spikes_per_sample"] = 280.346
    layers.to_parquet(new / "exp1_snn" / "layers.parquet")
    code, out = run(ref, new, capsys)
    assert code == 1
    assert "layers.parquet" in out.out and "spikes_per_sample" in out.out


def test_frames_compare_as_tables_metadata_only_reported(folders, capsys):
    ref, new = folders
    write_frames(new / "data" / "nmnist_train_frames.parquet", [1, 2, 3], version="27.0.0")
    code, out = run(ref, new, capsys)
    assert code == 0, out.out
    assert "file bytes differ (metadata: pyarrow_version)" in out.out
    write_frames(new / "data" / "nmnist_train_frames.parquet", [1, 2, 4])
    code, out = run(ref, new, capsys)
    assert code == 1
    assert "nmnist_train_frames.parquet" in out.out and "count" in out.out


def test_a_file_or_run_on_one_side_only_is_a_difference(folders, capsys):
    ref, new = folders
    (new / "exp1_snn" / "layers.parquet").unlink()
    code, out = run(ref, new, capsys)
    assert code == 1 and "only in the reference folder" in out.out
    shutil.copytree(new / "exp1_snn", new / "exp1_ann")
    code, out = run(ref, new, capsys)
    assert code == 1 and "exp1_ann" in out.out and "only in the new folder" in out.out


def test_nothing_to_compare_is_exit_2(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, out = run(tmp_path / "a", tmp_path / "b", capsys)
    assert code == 2 and "nothing to compare" in out.err


def test_reference_commit_runs_in_a_worktree_of_that_commit(tmp_path, monkeypatch):
    """--reference-commit's runner: a detached worktree of the commit, the command run there with
    PYTHONPATH=<worktree>; a failing run stops naming its log. (The demo itself is replaced by a stand-in
    command that records its environment; the real one takes minutes.)"""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "marker.txt").write_text("old")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    old = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (repo / "marker.txt").write_text("new")
    subprocess.run([*git, "commit", "-qam", "new"], check=True)

    record = "import os, pathlib; pathlib.Path('seen.txt').write_text(os.environ['PYTHONPATH'])"
    monkeypatch.setattr(compare_demo, "demo_command", lambda: ["python3", "-c", record])
    results = compare_demo.run_reference_demo(old, tmp_path / "wt", repo)
    assert results == tmp_path / "wt" / "results-demo"
    assert (tmp_path / "wt" / "marker.txt").read_text() == "old"
    assert (tmp_path / "wt" / "seen.txt").read_text() == str(tmp_path / "wt")

    monkeypatch.setattr(compare_demo, "demo_command", lambda: ["python3", "-c", "raise SystemExit(3)"])
    with pytest.raises(SystemExit, match=r"failed \(exit 3\).*compare_demo_reference\.log"):
        compare_demo.run_reference_demo(old, tmp_path / "wt2", repo)


def test_reference_commit_that_is_not_a_commit_stops_naming_it(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    with pytest.raises(SystemExit, match="could not make a git worktree of 'no-such-commit'"):
        compare_demo.run_reference_demo("no-such-commit", tmp_path / "wt", tmp_path / "repo")
