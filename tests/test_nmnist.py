"""spikebench.data.nmnist against tonic itself, on the real N-MNIST recordings and on crafted files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tonic
import torch

from spikebench.data import nmnist
from spikebench.data.mnist import DataIntegrityError
from spikebench.data.nmnist import (
    NMNIST_SENSOR_SIZE,
    NMNISTDownloadError,
    NMNISTFramesError,
    NMNISTRecordingError,
    batches as nmnist_batches,
    events_frames,
    load_frames,
    nmnist_split_folder,
    preprocess_split,
    read_recording,
    recording_frames,
)
from spikebench.data.nmnist_download import download_nmnist

STUDY = (10000, 1000)  # config.yaml nmnist: denoise_filter_us, time_window_us
OTHER = (5000, 3000)


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def nmnist_data(shared_data: Path) -> Path:
    folder = shared_data / "nmnist"
    if not folder.is_dir():
        pytest.skip(f"no N-MNIST recordings at {folder}")
    return folder


@pytest.fixture(scope="session")
def recordings(nmnist_data: Path) -> list[Path]:
    files = sorted(nmnist_data.glob("*/[0-9]/*.bin"))
    assert len(files) == 550  # 500 Train + 50 Test (PROVENANCE.md)
    return files


def tonic_read(path: Path) -> np.ndarray:
    """What tonic.datasets.NMNIST.__getitem__ reads (first_saccade_only=False, stabilize=False)."""
    return tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)


def tonic_transform(filter_us: int, window_us: int) -> tonic.transforms.Compose:
    return tonic.transforms.Compose(
        [
            tonic.transforms.Denoise(filter_time=filter_us),
            tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size, time_window=window_us),
        ]
    )


def write_bin(path: Path, x, y, t, p, overflow_before: tuple[int, ...] = ()) -> Path:
    """An N-MNIST .bin file; an overflow marker (y = 240) is inserted before each listed event index."""
    rows = []
    for i, (xi, yi, ti, pi) in enumerate(zip(x, y, t, p, strict=True)):
        if i in overflow_before:
            rows.append((0, 240, 0, 0, 0))
        assert 0 <= ti < 2**23
        rows.append((xi, yi, (int(pi) << 7) | (ti >> 16), (ti >> 8) & 255, ti & 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.array(rows, dtype=np.uint8).tobytes())
    return path


def copy_layout(files: list[Path], root: Path) -> Path:
    """Copy recordings into tonic's layout root/NMNIST/<Split>/<digit>/<name> (outside the project)."""
    for f in files:
        target = root / "NMNIST" / f.parents[1].name / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return root / "NMNIST"


def assert_cells_sorted(rec: nmnist.RecordingFrames) -> None:
    key = ((rec.frame.astype(np.int64) * 2 + rec.polarity) * 34 + rec.y) * 34 + rec.x
    assert (np.diff(key) > 0).all()
    assert (rec.count >= 1).all()


# ---------------------------------------------------------------------------------------------- reading


def test_constants_match_tonic():
    assert NMNIST_SENSOR_SIZE == tonic.datasets.NMNIST.sensor_size
    assert nmnist.EVENT_DTYPE == tonic.datasets.NMNIST.dtype
    assert nmnist_split_folder("/d", "train") == Path("/d/NMNIST/Train")
    assert nmnist_split_folder("/d", "test") == Path("/d/NMNIST/Test")
    with pytest.raises(ValueError, match="split"):
        nmnist_split_folder("/d", "val")


def test_read_recording_equals_tonic_on_all_recordings(recordings):
    for f in recordings:
        ref = tonic_read(f)
        mine = read_recording(f)
        assert mine.dtype == ref.dtype, f
        assert np.array_equal(mine, ref), f


def test_read_recording_handles_overflow_markers_like_tonic(tmp_path):
    f = write_bin(tmp_path / "o.bin", [1, 2, 3, 4], [5, 6, 7, 8], [100, 8000, 50, 60], [0, 1, 1, 0], (2, 3))
    ref = tonic_read(f)
    assert np.array_equal(read_recording(f), ref)
    assert ref["t"].tolist() == [100, 8000, 50 + 8192, 60 + 2 * 8192]
    rec = recording_frames(f, 20000, 1000)
    assert rec.n_events == 4


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (bytes(12), "multiple of 5"),
        (bytes([40, 3, 0, 0, 9]), "x = 40"),
        (bytes([3, 3, 0, 0, 9, 1, 34, 0, 0, 10]), "event 1 has y = 34"),
        (bytes([0, 240, 0, 0, 0]), "no events"),
    ],
    ids=["empty", "truncated", "x=40", "y=34", "only-overflow"],
)
def test_bad_recordings_raise_naming_the_file(tmp_path, content, match):
    f = tmp_path / "bad.bin"
    f.write_bytes(content)
    for reader in (read_recording, lambda p: recording_frames(p, *STUDY)):
        with pytest.raises(NMNISTRecordingError, match=match) as err:
            reader(f)
        assert str(f) in str(err.value)


# ---------------------------------------------------------------------------------------------- frames


@pytest.mark.parametrize(("filter_us", "window_us"), [STUDY, OTHER], ids=["10000us-1000us", "5000us-3000us"])
def test_frames_equal_tonic_on_all_recordings(recordings, filter_us, window_us):
    denoise = tonic.transforms.Denoise(filter_time=filter_us)
    to_frame = tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size, time_window=window_us)
    for f in recordings:
        events = tonic_read(f)
        kept = denoise(events)
        assert len(kept) > 0  # so Compose([denoise, to_frame]) is exactly to_frame(denoise(events))
        ref = to_frame(kept)
        rec = recording_frames(f, filter_us, window_us)
        assert rec.n_frames == ref.shape[0], f
        assert (rec.n_events, rec.n_events_denoised) == (len(events), len(kept)), f
        dense = rec.to_dense()
        assert dense.dtype == ref.dtype == np.int16
        assert np.array_equal(dense, ref), f
        assert_cells_sorted(rec)


def test_frames_equal_tonic_compose_on_crafted_edge_cases(tmp_path):
    """Equal timestamps, window boundaries, short/exact durations, overflow, unsorted, all-dropped."""
    rng = np.random.default_rng(0)
    cases = []
    # hand-made: exact window boundaries (t0 + k*W), duration an exact multiple of W, equal timestamps
    cases.append(
        ([5, 6, 5, 6, 5, 6, 5], [5, 5, 6, 6, 5, 5, 6], [0, 0, 999, 1000, 1000, 2000, 3000], [0, 1, 0, 1, 1, 0, 1])
    )
    # shorter than one window; starts late (t0 >= filter_time, so the first event needs a real neighbour)
    cases.append(([10, 11, 10, 12], [3, 3, 4, 3], [50000, 50000, 50400, 50500], [1, 1, 0, 0]))
    # isolated events far apart: Denoise drops everything after filter_time (tonic's Compose: no frames)
    cases.append(([0, 30, 15], [0, 30, 15], [20000, 60000, 90000], [0, 1, 0]))
    # a single pixel: the denoise map is 1 x 1, nothing has a neighbour
    cases.append(([7, 7, 7], [0, 0, 0], [0, 10, 20], [1, 1, 1]))
    # timestamps that go backwards (tonic slices with searchsorted on them as they are)
    cases.append(
        (
            [1, 2, 1, 2, 1, 2, 3],
            [1, 1, 2, 2, 1, 1, 1],
            [5000, 5100, 4000, 7000, 6500, 9000, 2000],
            [0, 1, 1, 0, 0, 1, 1],
        )
    )
    for _ in range(60):  # random small recordings, dense in a small patch so neighbours exist
        n = int(rng.integers(1, 400))
        span = int(rng.integers(1, 34))
        t = np.sort(rng.integers(0, int(rng.choice([3000, 30000, 300000])), n))
        if rng.random() < 0.2:
            t = rng.permutation(t)
        cases.append((rng.integers(0, span, n), rng.integers(0, span, n), t, rng.integers(0, 2, n)))
    params = [(10000, 1000), (5000, 3000), (1, 50), (20000, 700), (300, 100000)]
    for k, (x, y, t, p) in enumerate(cases):
        f = write_bin(tmp_path / f"{k}.bin", x, y, [int(v) for v in t], p, overflow_before=(1,) if k % 7 == 3 else ())
        events = tonic_read(f)
        for filter_us, window_us in params:
            ref = tonic_transform(filter_us, window_us)(events.copy())
            rec = recording_frames(f, filter_us, window_us)
            same = events_frames(events.copy(), filter_us, window_us)
            assert all(np.array_equal(a, b) for a, b in zip(rec, same, strict=True))  # file and array paths agree
            if ref.dtype.names is not None:  # Compose stopped: Denoise kept no event
                assert len(ref) == 0 and rec.n_frames == 0 and rec.count.size == 0, (k, filter_us)
                continue
            assert rec.n_frames == ref.shape[0], (k, filter_us, window_us)
            assert np.array_equal(rec.to_dense(), ref), (k, filter_us, window_us)
            assert (rec.count >= 1).all()


@pytest.mark.parametrize("bad", [0, -5, 10.5, True, "1000"])
def test_transform_parameters_are_validated(recordings, bad):
    with pytest.raises(ValueError, match="denoise_filter_us"):
        recording_frames(recordings[0], bad, 1000)
    with pytest.raises(ValueError, match="time_window_us"):
        recording_frames(recordings[0], 1000, bad)


# ---------------------------------------------------------------------------------------------- Parquet


@pytest.fixture(scope="module")
def test_split_parquet(recordings, tmp_path_factory):
    """The 50 real Test recordings in tonic's layout, preprocessed in row groups of 16 samples."""
    root = tmp_path_factory.mktemp("nmnist_root")
    copy_layout([f for f in recordings if f.parents[1].name == "Test"], root)
    out = tmp_path_factory.mktemp("frames")
    frames, samples = out / "test_frames.parquet", out / "test_samples.parquet"
    messages: list[str] = []
    summary = preprocess_split(root / "NMNIST" / "Test", frames, samples, *STUDY, chunk_size=16, log=messages.append)
    return root, frames, samples, summary, messages


def test_preprocess_split_schema_order_and_metadata(test_split_parquet):
    root, frames, samples, summary, messages = test_split_parquet
    assert summary["n_samples"] == 50 and summary["split"] == "test"
    assert any("50/50 recordings" in m for m in messages)
    assert sorted(p.name for p in frames.parent.iterdir()) == [frames.name, samples.name]  # no temp files left

    ff = pq.ParquetFile(frames)
    assert ff.num_row_groups == 4  # 16 + 16 + 16 + 2 samples
    ft = ff.read()
    expected = {
        "sample": pa.int32(),
        "frame": pa.int16(),
        "polarity": pa.int8(),
        "y": pa.int8(),
        "x": pa.int8(),
        "count": pa.int16(),
    }
    assert {f.name: f.type for f in ft.schema} == expected
    assert ft.num_rows == summary["n_cells"]
    cols = {name: ft.column(name).to_numpy().astype(np.int64) for name in expected}
    key = ((((cols["sample"] * 32768 + cols["frame"]) * 2 + cols["polarity"]) * 34 + cols["y"]) * 34) + cols["x"]
    assert (np.diff(key) > 0).all()  # sorted by sample, frame, polarity, y, x; cells unique
    assert (cols["count"] >= 1).all()

    st = pq.read_table(samples)
    assert {f.name: f.type for f in st.schema} == {
        "sample": pa.int32(),
        "label": pa.int64(),
        "n_frames": pa.int32(),
        "n_events": pa.int32(),
        "n_events_denoised": pa.int32(),
        "source": pa.string(),
    }
    files, labels = nmnist.list_recordings(root / "NMNIST" / "Test")
    assert st.column("source").to_pylist() == [f.relative_to(root / "NMNIST").as_posix() for f in files]
    assert st.column("source").to_pylist()[0] == "Test/0/00004.bin"
    assert st.column("label").to_pylist() == labels.tolist()
    assert st.column("n_events").to_pylist() == [len(tonic_read(f)) for f in files]
    assert (np.bincount(cols["sample"], minlength=50) > 0).all()

    for table in (ft, st):
        meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
        assert meta["denoise_filter_us"] == "10000" and meta["time_window_us"] == "1000"
        assert json.loads(meta["sensor_size"]) == [34, 34, 2]
        assert meta["split"] == "test"
        assert meta["tonic_version"] == tonic.__version__ and meta["numpy_version"] == np.__version__
        assert meta["pyarrow_version"] == pa.__version__ and "spikebench_version" in meta


def test_round_trip_equals_tonic_dataset(test_split_parquet, monkeypatch):
    """preprocess_split -> load_frames -> dense_batch equals tonic.datasets.NMNIST(transform=...)[i]."""
    root, frames, samples, _, _ = test_split_parquet
    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)  # no archive, no download
    dataset = tonic.datasets.NMNIST(save_to=str(root), train=False, transform=tonic_transform(*STUDY))
    assert len(dataset) == 50

    sf = load_frames(frames, samples, device="cpu")
    assert len(sf) == 50 and sf.sensor_size == (34, 34, 2)
    assert sf.metadata["denoise_filter_us"] == 10000 and sf.metadata["time_window_us"] == 1000
    assert sf.labels.dtype == torch.int64 and sf.labels.tolist() == dataset.targets
    assert sf.n_frames.dtype == torch.int64

    for idx in (torch.arange(0, 25), torch.arange(49, 24, -1)):
        batch, n_frames = sf.dense_batch(idx)
        assert batch.dtype == torch.float32 and n_frames.dtype == torch.int64
        assert batch.shape == (int(n_frames.max()), len(idx), 2, 34, 34)
        for b, i in enumerate(idx.tolist()):
            ref, label = dataset[i]
            assert label == sf.labels[i]
            assert n_frames[b] == ref.shape[0] == sf.n_frames[i]
            assert torch.equal(batch[: ref.shape[0], b], torch.from_numpy(ref.astype(np.float32)))
            assert not batch[ref.shape[0] :, b].any()  # zero padding at the end

    subset = [7, 3, 41, 3]
    part = load_frames(frames, samples, indices=np.array(subset))
    assert len(part) == 4 and part.labels.tolist() == [sf.labels[i].item() for i in subset]
    assert part.sources == [sf.sources[i] for i in subset]
    got, n_got = part.dense_batch(torch.arange(4))
    want, n_want = sf.dense_batch(torch.tensor(subset))
    assert torch.equal(got, want) and torch.equal(n_got, n_want)


def test_dense_batch_padding_and_index_checks(test_split_parquet):
    _, frames, samples, _, _ = test_split_parquet
    sf = load_frames(frames, samples)
    order = torch.argsort(sf.n_frames)
    short, long = int(order[0]), int(order[-1])
    assert sf.n_frames[short] < sf.n_frames[long]
    batch, n_frames = sf.dense_batch(torch.tensor([short, long, short]))
    assert batch.shape == (int(sf.n_frames[long]), 3, 2, 34, 34)
    assert n_frames.tolist() == [int(sf.n_frames[short]), int(sf.n_frames[long]), int(sf.n_frames[short])]
    assert not batch[int(sf.n_frames[short]) :, 0].any()  # padded with zeros after its last frame
    assert torch.equal(batch[:, 0], batch[:, 2])
    single, n_single = sf.dense_batch([long])
    assert torch.equal(single[:, 0], batch[:, 1]) and n_single.tolist() == [int(sf.n_frames[long])]
    with pytest.raises(IndexError, match="out of range"):
        sf.dense_batch(torch.tensor([0, 50]))
    with pytest.raises(IndexError, match="indices"):
        load_frames(frames, samples, indices=[50])


def test_load_frames_rejects_missing_columns_and_metadata(test_split_parquet, tmp_path):
    _, frames, samples, _, _ = test_split_parquet
    table = pq.read_table(frames)
    no_count = tmp_path / "no_count.parquet"
    pq.write_table(table.drop_columns(["count"]), no_count)
    with pytest.raises(NMNISTFramesError, match="count") as err:
        load_frames(no_count, samples)
    assert str(no_count) in str(err.value)

    no_meta = tmp_path / "no_meta.parquet"
    pq.write_table(table.replace_schema_metadata({}), no_meta)
    with pytest.raises(NMNISTFramesError, match="denoise_filter_us") as err:
        load_frames(no_meta, samples)
    assert str(no_meta) in str(err.value)

    other = tmp_path / "other.parquet"
    meta = dict(table.schema.metadata)
    meta[b"time_window_us"] = b"3000"
    pq.write_table(table.replace_schema_metadata(meta), other)
    with pytest.raises(NMNISTFramesError, match="time_window_us"):
        load_frames(other, samples)

    with pytest.raises(FileNotFoundError):
        load_frames(tmp_path / "absent.parquet", samples)


def test_load_frames_rejects_inconsistent_rows(test_split_parquet, tmp_path):
    _, frames, samples, _, _ = test_split_parquet
    table = pq.read_table(frames)

    def rewrite(name: str, column: str, values: np.ndarray) -> Path:
        path = tmp_path / name
        i = table.schema.get_field_index(column)
        pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type)), path)
        return path

    x = table.column("x").to_numpy().copy()
    x[1000] = 40
    with pytest.raises(NMNISTFramesError, match="row 1000 .*x 40"):
        load_frames(rewrite("x40.parquet", "x", x), samples)
    frame = table.column("frame").to_numpy().copy()
    frame[5] = 5000  # beyond the sample's n_frames
    with pytest.raises(NMNISTFramesError, match="row 5 .*frame 5000"):
        load_frames(rewrite("frame.parquet", "frame", frame), samples)
    sample = table.column("sample").to_numpy().copy()
    sample[-1] = 0
    with pytest.raises(NMNISTFramesError, match="not sorted"):
        load_frames(rewrite("unsorted.parquet", "sample", sample), samples)


def test_preprocess_split_bad_recording_names_it_and_leaves_no_output(recordings, tmp_path):
    nm_dir = copy_layout(recordings[:3], tmp_path / "root")
    bad = write_bin(nm_dir / "Train" / "3" / "99999.bin", [40], [3], [10], [1])
    out = tmp_path / "out"
    with pytest.raises(NMNISTRecordingError, match="x = 40") as err:
        preprocess_split(nm_dir / "Train", out / "f.parquet", out / "s.parquet", *STUDY)
    assert str(bad) in str(err.value)
    assert list(out.iterdir()) == []  # no half-written or temporary files

    (nm_dir / "Train" / "misc").mkdir()
    shutil.copyfile(recordings[0], nm_dir / "Train" / "misc" / "x.bin")
    with pytest.raises(ValueError, match="misc"):
        preprocess_split(nm_dir / "Train", out / "f.parquet", out / "s.parquet", *STUDY)
    with pytest.raises(FileNotFoundError):
        preprocess_split(tmp_path / "nowhere", out / "f.parquet", out / "s.parquet", *STUDY)


def test_preprocess_split_same_files_for_any_threads_and_cells_of_each_recording(nmnist_data, tmp_path):
    """All 500 real Train recordings in chunks of 7 (many compiled batches, framing overlapping the writes):
    the Parquet files are byte-identical for 1, 2 and 3 threads, and each sample's cells are exactly
    recording_frames' (tonic-checked above) of its file."""
    outputs = {}
    for threads in (1, 2, 3):
        out = tmp_path / f"threads{threads}"
        summary = preprocess_split(
            nmnist_data / "Train", out / "f.parquet", out / "s.parquet", *STUDY, chunk_size=7, threads=threads
        )
        assert summary["threads"] == threads and summary["n_samples"] == 500
        outputs[threads] = ((out / "f.parquet").read_bytes(), (out / "s.parquet").read_bytes())
    assert outputs[1] == outputs[2] == outputs[3]

    table = pq.read_table(tmp_path / "threads2" / "f.parquet")
    assert pq.ParquetFile(tmp_path / "threads2" / "f.parquet").num_row_groups == 72  # ceil(500 / 7)
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    samples = pq.read_table(tmp_path / "threads2" / "s.parquet")
    bounds = np.searchsorted(cols["sample"], np.arange(501))
    files, _ = nmnist.list_recordings(nmnist_data / "Train")
    for i, f in enumerate(files):
        rec = recording_frames(f, *STUDY)
        lo, hi = bounds[i], bounds[i + 1]
        for name in ("frame", "polarity", "y", "x", "count"):
            assert np.array_equal(cols[name][lo:hi], getattr(rec, name)), (f, name)
        row = {name: samples.column(name)[i].as_py() for name in ("n_frames", "n_events", "n_events_denoised")}
        assert row == {"n_frames": rec.n_frames, "n_events": rec.n_events, "n_events_denoised": rec.n_events_denoised}


def test_preprocess_split_unsorted_and_emptied_recordings_equal_tonic(recordings, tmp_path):
    """A recording whose timestamps go backwards (numpy's searchsorted path, spliced into its chunk) and
    one that Denoise empties, between real ones: every sample still equals tonic's Compose."""
    real = [f for f in recordings if f.parents[1].name == "Train"]
    nm_dir = copy_layout(real[:3] + [f for f in real if f.parent.name == "1"][:2], tmp_path / "root")
    folder = nm_dir / "Train" / "0"
    assert sorted(p.name for p in folder.iterdir()) == ["00002.bin", "00022.bin", "00035.bin"]
    write_bin(
        folder / "00010.bin",
        [1, 2, 1, 2, 1, 2, 3],
        [1, 1, 2, 2, 1, 1, 1],
        [5000, 5100, 4000, 7000, 6500, 9000, 2000],
        [0, 1, 1, 0, 0, 1, 1],
    )
    emptied = write_bin(folder / "00030.bin", [0, 30, 15], [0, 30, 15], [20000, 60000, 90000], [0, 1, 0])
    out, messages = tmp_path / "out", []
    preprocess_split(
        nm_dir / "Train", out / "f.parquet", out / "s.parquet", *STUDY, chunk_size=3, threads=2, log=messages.append
    )
    assert [m for m in messages if "Denoise kept no event" in m] == [
        f"warning: {emptied}: Denoise kept no event; stored with 0 frames (tonic returns no frames)"
    ]
    sf = load_frames(out / "f.parquet", out / "s.parquet")
    files, _ = nmnist.list_recordings(nm_dir / "Train")
    assert [f.name for f in files[:5]] == ["00002.bin", "00010.bin", "00022.bin", "00030.bin", "00035.bin"]
    for i, f in enumerate(files):
        ref = tonic_transform(*STUDY)(tonic_read(f))
        batch, n_frames = sf.dense_batch([i])
        if f == emptied:
            assert ref.dtype.names is not None and len(ref) == 0 and n_frames.tolist() == [0]
            continue
        assert n_frames.tolist() == [ref.shape[0]], f
        assert torch.equal(batch[:, 0], torch.from_numpy(ref.astype(np.float32))), f


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_the_rules_threads_reach_the_job(recordings, tmp_path, monkeypatch):
    """rules/data.smk asks 2 threads for preprocess_nmnist; the script passes snakemake.threads on; with 2
    the recordings are framed in a worker thread while the job's own thread writes Parquet."""
    import runpy
    import subprocess
    import threading
    from types import SimpleNamespace

    from conftest import PROJECT, copy_workflow, snakemake_cmd

    workflow = copy_workflow(tmp_path / "workflow")
    plan = subprocess.run(
        snakemake_cmd("-n", "--cores", "2", "--configfile", "config.demo.yaml"),
        cwd=workflow,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    blocks = re.split(r"\n(?=\[\w{3} \w{3} +\d+ [\d:]+ \d{4}\]\n)", plan.stdout)  # one job per timestamp
    jobs = [block for block in blocks if "rule preprocess_nmnist:" in block]
    assert len(jobs) == 2 and all(re.search(r"^\s*threads: 2$", job, re.M) for job in jobs), jobs

    nm_dir = copy_layout([f for f in recordings if f.parents[1].name == "Test"][:6], tmp_path / "root")
    workers: list[str] = []
    compute = nmnist_batches._compute_batch
    monkeypatch.setattr(
        nmnist_batches,
        "_compute_batch",
        lambda *a, **k: workers.append(threading.current_thread().name) or compute(*a, **k),
    )
    for threads in (1, 2):
        out, log = tmp_path / f"out{threads}", tmp_path / f"job{threads}.log"
        snakemake = SimpleNamespace(
            input=SimpleNamespace(manifest=str(tmp_path / "manifest_nmnist.json")),
            output=SimpleNamespace(frames=str(out / "f.parquet"), samples=str(out / "s.parquet")),
            params=SimpleNamespace(
                recordings=str(nm_dir / "Test"), denoise_filter_us=STUDY[0], time_window_us=STUDY[1]
            ),
            log=[str(log)],
            threads=threads,
        )
        workers.clear()
        runpy.run_path(str(PROJECT / "scripts" / "preprocess_nmnist.py"), init_globals={"snakemake": snakemake})
        assert f"; {threads} thread{'s' if threads > 1 else ''}\n" in log.read_text()
        assert workers == (["MainThread"] if threads == 1 else ["nmnist-frames_0"])
    assert (tmp_path / "out1" / "f.parquet").read_bytes() == (tmp_path / "out2" / "f.parquet").read_bytes()


# ---------------------------------------------------------------------------------------------- download


@pytest.fixture
def no_network(monkeypatch):
    """Make the download fail loudly (torchvision's URL functions, which spikebench.data.fetch uses)."""
    import torchvision.datasets.utils as tv_utils

    calls: list[str] = []

    def refuse(url, *args, **kwargs):
        calls.append(str(url))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", refuse)
    return calls


def test_download_skips_extracted_folder(recordings, tmp_path, no_network):
    copy_layout([f for f in recordings if f.parents[1].name == "Train"][:5], tmp_path)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    body = download_nmnist(tmp_path, splits=("train",))
    assert no_network == [] and body["files"] == []
    entry = body["splits"]["train"]
    assert entry["folder"] == "NMNIST/Train" and entry["n_recordings"] == 5 and len(entry["sample"]) == 5
    assert sum(entry["recordings_per_class"].values()) == 5
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_download_corrupt_archive_gives_clear_error(tmp_path, no_network):
    archive = tmp_path / "NMNIST" / tonic.datasets.NMNIST.test_filename
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"PK\x03\x04 this is not the N-MNIST archive")
    with pytest.raises(DataIntegrityError) as err:
        download_nmnist(tmp_path, splits=("test",))
    message = str(err.value)
    assert str(archive) in message and "delete" in message and tonic.datasets.NMNIST.test_md5 in message
    assert no_network == []  # nothing fetched while a damaged file is there
    assert archive.read_bytes() == b"PK\x03\x04 this is not the N-MNIST archive"
    assert sorted(p.name for p in (tmp_path / "NMNIST").iterdir()) == [archive.name]  # no staging left


def test_download_extracts_a_verified_archive_into_tonic_layout(recordings, tmp_path, monkeypatch, no_network):
    """A present archive with the expected md5 is verified and extracted; nothing is fetched."""
    test_files = [f for f in recordings if f.parents[1].name == "Test"][:6]
    archive = tmp_path / "NMNIST" / tonic.datasets.NMNIST.test_filename
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for f in test_files:
            zf.write(f, f"Test/{f.parent.name}/{f.name}")
    archive_bytes = archive.read_bytes()
    monkeypatch.setattr(tonic.datasets.NMNIST, "test_md5", hashlib.md5(archive_bytes).hexdigest())
    body = download_nmnist(tmp_path, splits=("test",))
    assert body["splits"]["test"]["n_recordings"] == 6 and no_network == []
    assert [r["path"] for r in body["files"]] == ["NMNIST/test.zip"]
    for f in test_files:
        assert (tmp_path / "NMNIST" / "Test" / f.parent.name / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in (tmp_path / "NMNIST").iterdir()) == ["Test", archive.name]
    assert archive.read_bytes() == archive_bytes  # the archive stays where it was


def test_download_refuses_a_folder_of_demo_recordings(tmp_path):
    (tmp_path / "NMNIST" / "Train" / "0").mkdir(parents=True)
    (tmp_path / "NMNIST" / "DEMO_DATA.txt").write_text("demo")
    with pytest.raises(NMNISTDownloadError, match="demo recordings"):
        download_nmnist(tmp_path)
