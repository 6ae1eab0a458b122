"""Data files fail with errors that name them, and interrupted downloads leave nothing that lasts (issue 21).

- a truncated or corrupt N-MNIST frames Parquet, an IDX header whose dimensions overflow, a full disk while a
  checkpoint is written, an offline download: each error names the file (and the URL), says what was expected;
- an interrupted download's partial folder (``.spikebench-partial-*``) is removed by the next download run and
  logged, a running download's is not, and nothing else in the data folders is touched.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torchvision.datasets.utils as tv_utils
from torchvision.datasets import CIFAR10

from spikebench import atomic
from spikebench.data import fetch
from spikebench.data.cifar10 import download_cifar10
from spikebench.data.mnist import DataIntegrityError, download_mnist, mnist_raw_folder, read_idx
from spikebench.data.nmnist import load_frames
from spikebench.data.nmnist.errors import NMNISTFramesError
from spikebench.data.nmnist.schema import FRAMES_SCHEMA, SAMPLES_SCHEMA
from spikebench.data.nmnist.store import _PARQUET_OPTIONS, _split_metadata
from spikebench.data.nmnist_download import download_nmnist

# --- N-MNIST frames Parquet -----------------------------------------------------------------------------------------


@pytest.fixture
def frames_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A valid frames/samples pair as preprocess_split writes it (zstd, byte-stream-split): 40 samples."""
    rng = np.random.default_rng(0)
    n, per = 40, 100
    meta = {**_split_metadata("test", 10000, 1000), "table": "nmnist_frames"}
    frames = pa.Table.from_arrays(
        [
            pa.array(np.repeat(np.arange(n), per).astype(np.int32)),
            pa.array(rng.integers(0, 5, n * per).astype(np.int16)),
            pa.array(rng.integers(0, 2, n * per).astype(np.int8)),
            pa.array(rng.integers(0, 34, n * per).astype(np.int8)),
            pa.array(rng.integers(0, 34, n * per).astype(np.int8)),
            pa.array(rng.integers(1, 9, n * per).astype(np.int16)),
        ],
        schema=FRAMES_SCHEMA.with_metadata(meta),
    )
    samples = pa.table(
        {
            "sample": np.arange(n, dtype=np.int32),
            "label": rng.integers(0, 10, n),
            "n_frames": np.full(n, 5, np.int32),
            "n_events": np.full(n, 500, np.int32),
            "n_events_denoised": np.full(n, 400, np.int32),
            "source": [f"Test/0/{i:05d}.bin" for i in range(n)],
        },
        schema=SAMPLES_SCHEMA.with_metadata({**meta, "table": "nmnist_samples"}),
    )
    frames_path, samples_path = tmp_path / "frames_test.parquet", tmp_path / "samples_test.parquet"
    pq.write_table(frames, frames_path, **_PARQUET_OPTIONS)
    pq.write_table(samples, samples_path, compression="zstd")
    assert len(load_frames(frames_path, samples_path)) == n
    return frames_path, samples_path


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # the compressed pages overwritten, the footer intact
        path.write_bytes(data[:4] + bytes([0xA5]) * (len(data) // 2) + data[4 + len(data) // 2 :])


@pytest.mark.parametrize("which", ["frames", "samples"])
@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_frames_parquet_names_the_file_and_the_remedy(frames_pair, which: str, how: str):
    frames, samples = frames_pair
    damaged = frames if which == "frames" else samples
    _damage(damaged, how)
    before = damaged.read_bytes()
    with pytest.raises(NMNISTFramesError) as error:
        load_frames(frames, samples)
    message = str(error.value)
    assert str(damaged) in message and "Parquet file of preprocessed N-MNIST" in message
    assert "Delete it" in message and "preprocessing rule makes it again" in message
    assert damaged.read_bytes() == before  # reported, never removed


# --- IDX headers ----------------------------------------------------------------------------------------------------


def _idx(dims: tuple[int, ...], payload: bytes = b"") -> bytes:
    magic = 2051 if len(dims) == 3 else 2049
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize(
    ("dims", "payload"),
    [((2**31, 2**31, 4), b""), ((2**32 - 1, 2**32 - 1, 2**32 - 1), b""), ((2**31, 2**31, 4), bytes(784))],
    ids=["2^64-empty", "max-dims", "2^64-one-image"],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_an_idx_header_whose_dimensions_overflow_names_the_file(tmp_path: Path, dims, payload, gz: bool):
    path = tmp_path / ("images.gz" if gz else "images")
    content = _idx(dims, payload)
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataIntegrityError) as error:
        read_idx(path)
    message = str(error.value)
    assert str(path) in message and f"shape {dims}" in message and str(dims[0] * dims[1] * dims[2]) in message
    assert "implies" in message and "Delete it" in message


def test_the_download_check_refuses_an_overflowing_idx_header(tmp_path: Path, monkeypatch):
    raw = mnist_raw_folder(tmp_path)
    raw.mkdir(parents=True)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(_idx((10000,), bytes(10000)))
    (raw / "t10k-images-idx3-ubyte").write_bytes(_idx((2**31, 2**31, 4)))
    monkeypatch.setattr(fetch, "fetch_url", lambda *a: pytest.fail("nothing may be fetched"))
    with pytest.raises(DataIntegrityError, match=r"t10k-images-idx3-ubyte: the IDX header \(shape \(2147483648"):
        download_mnist(tmp_path, splits=("test",))


def test_a_gz_idx_is_decompressed_only_as_far_as_its_header_says(tmp_path: Path, monkeypatch):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(_idx((10,), bytes(50_000_000))))  # a bomb: 50 MB behind a 10-byte header
    reads: list[int] = []
    original = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: reads.append(n) or original(self, n))
    with pytest.raises(DataIntegrityError, match=r"labels.gz: .* implies 10 bytes .* holds more decompressed"):
        read_idx(path)
    assert all(0 <= n <= 11 for n in reads), reads  # never "the rest", never more than the payload + 1
    path.write_bytes(gzip.compress(_idx((10,), bytes(range(10)))))
    assert read_idx(path).tolist() == list(range(10))


# --- a full disk while a checkpoint is written ----------------------------------------------------------------------


class _FullDisk:
    """A file on a disk that fills up after ``room`` bytes: writes past it raise ENOSPC, as the kernel does."""

    def __init__(self, path, mode, room: int):
        self.handle, self.room = open(path, mode), room  # noqa: SIM115 - closed in close()

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= size
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.mark.parametrize("room", [10, 1000, 5000])
def test_a_full_disk_during_a_checkpoint_names_the_file(tmp_path: Path, monkeypatch, room: int):
    import torch

    monkeypatch.setattr(atomic, "open", lambda path, mode="r": _FullDisk(path, mode, room), raising=False)
    out = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as error:
        atomic.save_torch({"weights": torch.zeros(2000)}, out)
    assert error.value.errno == errno.ENOSPC, repr(error.value)
    assert f"cannot write {out}" in str(error.value) and "disk full?" in str(error.value)
    assert list(tmp_path.iterdir()) == []  # no partial checkpoint, no temporary


# --- a failed download names the URL and the file -------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """No network, as on an offline machine: urllib fails with a resolver error that names no URL."""
    calls: list[str] = []

    def unreachable(url, *args, **kwargs):
        calls.append(str(url))
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(tv_utils, "_urlretrieve", unreachable)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    return calls


def test_an_offline_cifar_download_names_the_url_and_the_file(tmp_path: Path, offline):
    with pytest.raises(OSError) as error:
        download_cifar10(tmp_path)
    message = str(error.value)
    assert CIFAR10.url in message and str(tmp_path / CIFAR10.filename) in message
    assert "name resolution" in message and offline[0] == CIFAR10.url
    assert list(tmp_path.iterdir()) == []


def test_fetch_url_downloads_in_a_partial_folder_and_names_url_and_file_on_failure(tmp_path: Path, monkeypatch):
    seen: list[Path] = []

    def serve(url, filename, *args, **kwargs):
        seen.append(Path(filename))
        Path(filename).write_bytes(b"half")
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(tv_utils, "_urlretrieve", serve)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    dest = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(fetch.DownloadError) as error:
        fetch.fetch_url("https://example.org/t10k-labels-idx1-ubyte.gz", dest, None)
    assert "https://example.org/t10k-labels-idx1-ubyte.gz" in str(error.value) and str(dest) in str(error.value)
    assert seen[0].parent.name.startswith(".spikebench-partial-t10k-labels-idx1-ubyte.gz-")
    assert seen[0].parent.parent == tmp_path and list(tmp_path.iterdir()) == []


# --- stale partial downloads ----------------------------------------------------------------------------------------

_KILLED = """
import os, signal, sys
from spikebench.data import fetch
with fetch.partial_folder(sys.argv[1], sys.argv[2]) as stage:
    (stage / sys.argv[2]).write_bytes(b"half a download")
    print(stage, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-download, as by a scheduler
"""
_RUNNING = """
import sys
from spikebench.data import fetch
with fetch.partial_folder(sys.argv[1], sys.argv[2]) as stage:
    (stage / sys.argv[2]).write_bytes(b"a download in progress")
    print(stage, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def _killed_download(folder: Path, name: str) -> Path:
    run = subprocess.run([sys.executable, "-c", _KILLED, str(folder), name], capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    return Path(run.stdout.strip())


@pytest.fixture
def running_download():
    """Start a download that is in progress in another process (its partial folder locked); yields a starter."""
    children: list[subprocess.Popen] = []

    def start(folder: Path, name: str) -> Path:
        child = subprocess.Popen(
            [sys.executable, "-c", _RUNNING, str(folder), name], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        children.append(child)
        return Path(child.stdout.readline().decode().strip())

    yield start
    for child in children:
        child.stdin.close()
        assert child.wait(timeout=60) == 0


def _bystanders(folder: Path) -> dict[Path, bytes]:
    """Files beside the partial folders that look alike but are not spikebench's: they must stay."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / ".spikebench-partial-notes.txt": b"a file, not a partial folder",
        folder / "spikebench-partial-x": b"no leading dot",
        folder / ".spikebench-partia-y": b"a similar name",
        folder / f".{folder.name}.old.tmp": b"a temporary file of an older spikebench",
        folder / ".extract-Test-abc" / "keep.bin": b"an older staging folder",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(fetch.PARTIAL_PREFIX) and p.is_dir())


def test_the_next_mnist_download_removes_only_stale_partials_and_says_so(
    shared_data: Path, tmp_path: Path, monkeypatch, caplog, running_download
):
    raw = mnist_raw_folder(tmp_path)
    bystanders = _bystanders(raw)
    stale = [_killed_download(raw, "t10k-images-idx3-ubyte.gz"), _killed_download(raw, "t10k-labels-idx1-ubyte")]
    live = running_download(raw, "train-images-idx3-ubyte.gz")
    assert _partials(raw) == sorted([*stale, live])

    def serve(url, filename, *args, **kwargs):  # the real download path, served from local files
        Path(filename).write_bytes((shared_data / "mnist" / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(tv_utils, "_urlretrieve", serve)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    with caplog.at_level(logging.INFO, logger="spikebench.data.fetch"):
        download_mnist(tmp_path, splits=("test",))
    assert _partials(raw) == [live]  # the stale ones gone, the running one kept, none of this run's left
    assert all(path.read_bytes() == content for path, content in bystanders.items())
    removed = sorted(r.getMessage() for r in caplog.records if "stale partial download" in r.getMessage())
    assert len(removed) == 2
    for message, path in zip(removed, stale):
        assert message.startswith(f"removed {path}, a stale partial download of an interrupted run (its process ")
        assert message.endswith("on this host has ended)")
    assert any(f"{live} belongs to a download in progress" in r.getMessage() for r in caplog.records)
    assert any(".old.tmp looks like a temporary file of an older spikebench" in r.getMessage() for r in caplog.records)
    assert (raw / "t10k-images-idx3-ubyte").stat().st_size == 16 + 10000 * 784


@pytest.mark.parametrize("dataset", ["cifar10", "nmnist"])
def test_the_next_cifar_and_nmnist_downloads_remove_their_stale_partials(
    tmp_path: Path, offline, caplog, running_download, dataset: str
):
    folders = (
        [tmp_path, tmp_path / "cifar-10-batches-py"] if dataset == "cifar10" else [tmp_path / "NMNIST"]
    )  # where each downloads and extracts
    bystanders = {k: v for folder in folders for k, v in _bystanders(folder).items()}
    stale = [_killed_download(folder, f"extract-{i}") for i, folder in enumerate(folders)]
    live = running_download(folders[-1], "test.zip")
    with caplog.at_level(logging.INFO, logger="spikebench.data.fetch"), pytest.raises((OSError, RuntimeError)):
        (download_cifar10 if dataset == "cifar10" else download_nmnist)(tmp_path)  # offline: the fetch fails
    assert offline  # it went as far as the download
    for folder in folders:
        assert _partials(folder) == ([live] if folder == folders[-1] else [])
    assert all(path.read_bytes() == content for path, content in bystanders.items())
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"removed {p}, a stale partial download" in logged for p in stale)


def test_a_partial_folder_of_another_host_is_kept_until_long_unchanged(tmp_path: Path, monkeypatch):
    stage = tmp_path / ".spikebench-partial-test.zip-abcdefgh"
    stage.mkdir()
    (stage / fetch.OWNER_FILE).write_text("another-node 12345\n")
    (stage / "test.zip").write_bytes(b"half")
    assert fetch.remove_stale_partials(tmp_path) == [] and stage.exists()  # it may be running there
    old = os.stat(stage).st_mtime - 2 * fetch.FOREIGN_QUIET_S
    for path in (stage, stage / fetch.OWNER_FILE, stage / "test.zip"):
        os.utime(path, (old, old))
    assert fetch.remove_stale_partials(tmp_path) == [stage] and not stage.exists()
