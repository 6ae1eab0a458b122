"""The one atomic-output module: nothing under the final name unless the write finished."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from spikebench import atomic


def test_failed_block_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "table.csv"
    atomic.write_text("good\n", out)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_output(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert out.read_text() == "good\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["table.csv"]


def test_output_gets_umask_permissions_not_mkstemp_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        out = atomic.write_bytes(b"x", tmp_path / "a.bin")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o644


def test_json_nan_is_null_and_numpy_scalars_are_numbers(tmp_path: Path) -> None:
    out = atomic.write_json(
        {"a": math.nan, "b": [1.5, np.int64(2)], "c": Path("x"), 3: np.float32(0.5)}, tmp_path / "t.json"
    )
    assert json.loads(out.read_text()) == {"a": None, "b": [1.5, 2], "c": "x", "3": 0.5}


def test_parquet_metadata_and_frame_round_trip(tmp_path: Path) -> None:
    df = pd.DataFrame({"epoch": [1, 2], "train_acc": [0.5, 0.75]}, index=[7, 8])
    out = atomic.write_parquet(df, tmp_path / "e.parquet", metadata={"run": {"seed": 1}})
    table = pq.read_table(out)
    assert table.column_names == ["epoch", "train_acc"]  # index dropped
    assert json.loads(table.schema.metadata[b"run"]) == {"seed": 1}
    pd.testing.assert_frame_equal(table.to_pandas(), df.reset_index(drop=True))


def test_full_disk_names_the_file_and_keeps_errno(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    out = tmp_path / "weights.pt"
    with pytest.raises(OSError, match=f"cannot write {out}") as info:
        atomic.save_torch({"w": 1}, out)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_parent_that_is_a_file_names_the_output(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OSError, match="cannot write .*results/x.json"):
        atomic.write_json({}, tmp_path / "results" / "x.json")
    assert (tmp_path / "results").read_text() == "not a folder"
