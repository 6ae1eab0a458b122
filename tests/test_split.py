"""Train/validation split: seeded, disjoint, complete, exact size, stored with its parameters."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from spikebench.data.split import SplitMismatchError, make_split, read_split, read_split_metadata, write_split


def test_split_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = make_split(60000, 0.2, seed=42)
    b = make_split(60000, 0.2, seed=42)
    c = make_split(60000, 0.2, seed=43)
    assert a.equals(b)
    assert not np.array_equal(a["subset"].to_numpy(), c["subset"].to_numpy())


@pytest.mark.parametrize(("n", "fraction"), [(60000, 0.2), (50000, 0.2), (1001, 0.15), (7, 0.5), (10, 0.0)])
def test_split_is_disjoint_complete_and_exact(n, fraction):
    df = make_split(n, fraction, seed=1)
    assert list(df.columns) == ["index", "subset"]
    assert df["index"].dtype == np.int64
    assert set(df["subset"]) <= {"train", "val"}
    assert np.array_equal(np.sort(df["index"].to_numpy()), np.arange(n))
    val = df.loc[df["subset"] == "val", "index"].to_numpy()
    train = df.loc[df["subset"] == "train", "index"].to_numpy()
    assert len(val) == round(n * fraction)
    assert len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == n


def test_split_is_random_not_a_block():
    df = make_split(10000, 0.2, seed=42)
    val = df.loc[df["subset"] == "val", "index"].to_numpy()
    # A random draw spreads over the whole training set (a tail block would have min 8000).
    assert val.min() < 100 and val.max() > 9900
    # about 20% of every tenth of the set
    per_tenth = np.bincount(val // 1000, minlength=10)
    assert per_tenth.min() > 140 and per_tenth.max() < 260


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="val_fraction"):
        make_split(100, 1.0, seed=0)
    with pytest.raises(ValueError, match="positive"):
        make_split(0, 0.2, seed=0)


def test_write_read_round_trip_keeps_parameters(tmp_path: Path):
    df = make_split(60000, 0.2, seed=42)
    path = tmp_path / "splits" / "mnist.parquet"
    write_split(df, path, dataset="mnist", n=60000, val_fraction=0.2, seed=42)
    assert [p.name for p in path.parent.iterdir()] == ["mnist.parquet"]  # no temporary file left
    assert read_split_metadata(path) == {"dataset": "mnist", "n": "60000", "val_fraction": "0.2", "seed": "42"}
    train, val = read_split(path, n_expected=60000)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert len(val) == 12000 and len(train) == 48000
    assert np.array_equal(val, np.sort(df.loc[df["subset"] == "val", "index"].to_numpy()))
    assert np.array_equal(np.union1d(train, val), np.arange(60000))
    assert pq.read_table(path).num_rows == 60000


def test_read_split_refuses_another_dataset_size(tmp_path: Path):
    path = tmp_path / "cifar10.parquet"
    write_split(make_split(4000, 0.2, seed=42), path, dataset="cifar10", n=4000, val_fraction=0.2, seed=42)
    with pytest.raises(SplitMismatchError, match=r"cifar10\.parquet.*4000.*50000"):
        read_split(path, n_expected=50000)


def test_read_split_refuses_a_broken_table(tmp_path: Path):
    df = make_split(100, 0.2, seed=0)
    df.loc[5, "index"] = 6  # index 5 missing, 6 twice
    path = tmp_path / "broken.parquet"
    write_split(df, path, dataset="mnist", n=100, val_fraction=0.2, seed=0)
    with pytest.raises(SplitMismatchError, match="broken.parquet"):
        read_split(path)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_split(tmp_path / "missing.parquet")
