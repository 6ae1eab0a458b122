"""MNIST and CIFAR-10 downloads and loaders, on the real files in ../shared/data."""

import gzip
import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils as tv_utils
from PIL import Image

from spikebench.data.cifar10 import (
    cifar10_folder,
    download_cifar10,
    label_names,
    load_cifar10,
    write_cifar_batch,
    write_cifar_meta,
)
from spikebench.data.mnist import (
    MNIST_FILES,
    DataIntegrityError,
    download_mnist,
    load_mnist,
    mnist_raw_folder,
    read_idx,
    write_idx,
)

T10K_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def no_network(monkeypatch):
    """Make torchvision's URL download (and urllib underneath) fail, to prove nothing is fetched."""
    fetched: list[str] = []

    def refuse(url, *args, **kwargs):
        fetched.append(str(url))
        raise OSError(f"network disabled in this test: {url}")

    monkeypatch.setattr(tv_utils, "_urlretrieve", refuse)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    return fetched


@pytest.fixture
def mnist_gz_root(shared_data: Path, tmp_path: Path) -> Path:
    """A data root holding the real t10k images/labels and train labels .gz in torchvision's layout."""
    raw = mnist_raw_folder(tmp_path)
    raw.mkdir(parents=True)
    for gz in sorted((shared_data / "mnist").glob("*.gz")):
        shutil.copyfile(gz, raw / gz.name)
    return tmp_path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_mnist_only_verifies_and_extracts_existing_gz(mnist_gz_root: Path, no_network):
    raw = mnist_raw_folder(mnist_gz_root)
    gz_before = {p.name: p.read_bytes() for p in raw.iterdir()}
    records = download_mnist(mnist_gz_root, splits=("test",))
    paths = [raw / name for name in MNIST_FILES["test"]]
    assert no_network == []
    assert hashlib.md5(paths[0].read_bytes()).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert hashlib.md5(paths[1].read_bytes()).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    assert {p.name: p.read_bytes() for p in raw.glob("*.gz")} == gz_before  # the .gz files are kept as they were
    assert _leftovers(raw) == []
    by_path = {r["path"]: r for r in records}
    gz = by_path["MNIST/raw/t10k-images-idx3-ubyte.gz"]
    assert gz["md5"] == gz["expected_md5"] == "9fb629c4189551a2d022fa330f9573f3"
    assert by_path["MNIST/raw/t10k-images-idx3-ubyte"]["size_bytes"] == 16 + 10000 * 784

    images, labels = load_mnist(mnist_gz_root, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == T10K_LABEL_COUNTS
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    # the uncompressed files are checked and used as they are on a second call: still nothing fetched
    mtime = paths[0].stat().st_mtime_ns
    assert download_mnist(mnist_gz_root, splits=("test",)) == records
    assert paths[0].stat().st_mtime_ns == mtime and no_network == []


def test_download_mnist_fetches_what_is_missing_and_leaves_no_partial_file(mnist_gz_root: Path, no_network):
    raw = mnist_raw_folder(mnist_gz_root)
    with pytest.raises(RuntimeError, match="train-images-idx3-ubyte.gz"):
        download_mnist(mnist_gz_root, splits=("train",))
    assert any("train-images-idx3-ubyte.gz" in url for url in no_network)
    assert not (raw / "train-images-idx3-ubyte.gz").exists()
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert _leftovers(raw) == []


def test_download_mnist_stops_on_a_corrupt_gz(mnist_gz_root: Path, no_network):
    raw = mnist_raw_folder(mnist_gz_root)
    gz = raw / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:500_000])  # a partial download
    found = hashlib.md5(gz.read_bytes()).hexdigest()
    with pytest.raises(DataIntegrityError) as error:
        download_mnist(mnist_gz_root, splits=("test",))
    message = str(error.value)
    assert str(gz) in message and found in message and "9fb629c4189551a2d022fa330f9573f3" in message
    assert "delete" in message
    assert not (raw / "t10k-images-idx3-ubyte").exists()
    assert gz.stat().st_size == 500_000  # not overwritten by a silent re-download
    assert no_network == [] and _leftovers(raw) == []


def test_load_mnist_names_missing_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte.*download"):
        load_mnist(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "validation")


def test_read_idx_reads_gz_and_checks_magic_and_size(shared_data: Path, tmp_path: Path):
    labels = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]

    wrong_magic = tmp_path / "labels-idx1-ubyte"
    wrong_magic.write_bytes((2050).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(DataIntegrityError, match=r"labels-idx1-ubyte.*2050"):
        read_idx(wrong_magic)
    truncated = tmp_path / "short-idx3-ubyte.gz"
    raw = gzip.decompress((shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    truncated.write_bytes(gzip.compress(raw[:-784], compresslevel=1))
    with pytest.raises(DataIntegrityError, match=r"short-idx3-ubyte.gz.*10000, 28, 28"):
        read_idx(truncated)
    broken_gz = tmp_path / "broken-idx3-ubyte.gz"
    broken_gz.write_bytes((shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()[:1000])
    with pytest.raises(DataIntegrityError, match="broken-idx3-ubyte.gz"):
        read_idx(broken_gz)


@pytest.mark.parametrize(
    "damage,cause", [("flip@100", "error"), ("flip@3000", "BadGzipFile"), ("cut@2000", "EOFError")]
)
def test_read_idx_names_a_damaged_gz_and_the_remedy(shared_data: Path, tmp_path: Path, damage: str, cause: str):
    """A byte-flipped or truncated copy of the real t10k labels .gz: zlib's bare 'Error -3' gets the path."""
    real = (shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    how, offset = damage.split("@")
    data = bytearray(real[: int(offset)] if how == "cut" else real)
    if how == "flip":
        data[int(offset)] ^= 0xFF
    damaged = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError) as error:
        read_idx(damaged)
    assert type(error.value.__cause__).__name__ == cause  # zlib.error, gzip.BadGzipFile, EOFError
    message = str(error.value)
    assert message.startswith(f"{damaged}: cannot decompress") and "corrupt or truncated" in message
    assert "Delete it and run the download again" in message
    assert damaged.read_bytes() == bytes(data)  # the user's file is left as it was


def test_write_idx_writes_the_exact_idx_format(shared_data: Path, tmp_path: Path):
    real = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    write_idx(tmp_path / "labels", labels)
    assert (tmp_path / "labels").read_bytes() == real  # byte-identical to the real file
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:3]
    write_idx(tmp_path / "images", images)
    assert np.array_equal(read_idx(tmp_path / "images"), images)
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "bad", images.astype(np.int64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "labels"]


# --- CIFAR-10 ------------------------------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _test_pngs(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((shared_data / "cifar10" / "test_png").glob("cifar10_*.png"))
    assert len(files) == 10
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
    labels = np.array([int(f.stem.split("_")[2]) for f in files])
    return images, labels


def test_label_names_from_the_real_batches_meta(shared_data: Path, tmp_path: Path):
    meta = shared_data / "cifar10" / "cifar-10-batches-py" / "batches.meta"
    assert hashlib.md5(meta.read_bytes()).hexdigest() == "5ff9c542aee3614f3951f8cda6e48888"
    assert label_names(shared_data / "cifar10") == CIFAR_NAMES
    # the meta we write for demo data reads back the same way
    write_cifar_meta(cifar10_folder(tmp_path) / "batches.meta", CIFAR_NAMES, 10000)
    assert label_names(tmp_path, verify_md5=False) == CIFAR_NAMES


def test_written_batches_load_with_the_exact_pixels(shared_data: Path, tmp_path: Path):
    images, labels = _test_pngs(shared_data)
    assert labels.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    folder = cifar10_folder(tmp_path)
    write_cifar_batch(folder / "test_batch", images, labels, "testing batch 1 of 1")
    loaded, loaded_labels = load_cifar10(tmp_path, "test", verify_md5=False)
    assert loaded.dtype == np.uint8 and loaded.shape == (10, 3, 32, 32)
    assert loaded_labels.dtype == np.int64 and loaded_labels.tolist() == labels.tolist()
    assert np.array_equal(loaded, images)
    assert tuple(loaded[0, :, 0, 0]) == (158, 112, 49)
    # the real format: data uint8 [N, 3072] as R, G, B planes, labels a list
    with open(folder / "test_batch", "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    assert entry["data"].shape == (10, 3072) and entry["data"].dtype == np.uint8
    assert tuple(entry["data"][0, [0, 1024, 2048]]) == (158, 112, 49)
    assert entry["labels"] == labels.tolist()


def test_torchvision_reads_written_batches(shared_data: Path, tmp_path: Path):
    from torchvision.datasets import CIFAR10

    images, labels = _test_pngs(shared_data)
    folder = cifar10_folder(tmp_path)
    write_cifar_batch(folder / "test_batch", images, labels, "testing batch 1 of 1")
    shutil.copyfile(shared_data / "cifar10" / "cifar-10-batches-py" / "batches.meta", folder / "batches.meta")
    original = CIFAR10._check_integrity
    try:
        CIFAR10._check_integrity = lambda self: True  # our 10-image batch has not the real md5, by design
        dataset = CIFAR10(str(tmp_path), train=False, download=False)
    finally:
        CIFAR10._check_integrity = original
    assert dataset.data.shape == (10, 32, 32, 3)
    assert np.array_equal(dataset.data, images.transpose(0, 2, 3, 1))
    assert dataset.targets == labels.tolist() and dataset.classes == CIFAR_NAMES


def test_load_cifar10_names_missing_batches(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"data_batch_1.*download"):
        load_cifar10(tmp_path, "train")


def test_download_cifar10_stops_on_a_corrupt_tarball(tmp_path: Path, no_network):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"\x1f\x8b" + bytes(1000))  # a partial download
    found = hashlib.md5(tarball.read_bytes()).hexdigest()
    with pytest.raises(DataIntegrityError) as error:
        download_cifar10(tmp_path)
    message = str(error.value)
    assert str(tarball) in message and found in message and "c58f30108f718f92721af3b95e74349a" in message
    assert "delete" in message
    assert not cifar10_folder(tmp_path).exists() and no_network == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]
    assert tarball.read_bytes() == b"\x1f\x8b" + bytes(1000)


def test_download_cifar10_refuses_unverified_batches(shared_data: Path, tmp_path: Path, no_network):
    images, labels = _test_pngs(shared_data)
    folder = cifar10_folder(tmp_path)
    folder.mkdir()
    shutil.copyfile(shared_data / "cifar10" / "cifar-10-batches-py" / "batches.meta", folder / "batches.meta")
    write_cifar_batch(folder / "test_batch", images, labels, "testing batch 1 of 1")
    before = (folder / "test_batch").read_bytes()
    with pytest.raises(DataIntegrityError) as error:
        download_cifar10(tmp_path)
    message = str(error.value)
    assert "test_batch: md5" in message and "40351d587109b95175f43aff81a1287e" in message
    assert "batches.meta" not in message and "data_batch_1" not in message  # verified / missing: not damaged
    assert (folder / "test_batch").read_bytes() == before
    assert no_network == []  # nothing fetched while a damaged file is there


def test_download_cifar10_fetch_failure_leaves_nothing(tmp_path: Path, no_network):
    with pytest.raises(OSError, match="network disabled"):
        download_cifar10(tmp_path)
    assert any("cifar-10-python.tar.gz" in url for url in no_network)
    assert list(tmp_path.iterdir()) == []


# --- CIFAR-10 pickles: md5 first (real data), restricted unpickling always --------------------------


class _Payload:
    """Unpickling this runs ``func(*args)``: what a tampered CIFAR-10 batch could do."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    import os

    return {
        "os.system": _Payload(os.system, (f"touch {marker}",)),
        "open": _Payload(open, (str(marker), "w")),
        "Path.touch": _Payload(Path.touch, (marker,)),
    }


@pytest.mark.parametrize("payload", ["os.system", "open", "Path.touch"])
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_tampered_cifar_pickle_is_refused_and_runs_nothing(tmp_path: Path, payload: str, protocol: int):
    from spikebench.data.cifar10 import UnsafePickleError

    marker = tmp_path / "created-by-the-pickle"
    folder = cifar10_folder(tmp_path / "data")
    folder.mkdir(parents=True)
    evil = pickle.dumps({"data": _payloads(marker)[payload], "labels": [0]}, protocol=protocol)
    pickle.loads(evil)  # the payload is real: plain pickle creates the file
    assert marker.exists()
    marker.unlink()
    for name in ("test_batch", "batches.meta"):
        (folder / name).write_bytes(evil)
    with pytest.raises(UnsafePickleError) as error:
        load_cifar10(tmp_path / "data", "test", verify_md5=False)
    message = str(error.value)
    assert str(folder / "test_batch") in message and "refused to load the global" in message
    assert payload.split(".")[-1] in message or "getattr" in message  # names the refused global
    assert isinstance(error.value, DataIntegrityError) and "Delete it" in message
    with pytest.raises(UnsafePickleError, match="batches.meta"):
        label_names(tmp_path / "data", verify_md5=False)
    assert not marker.exists()


def _python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the CIFAR-10 site's Python 2 pickles are laid out (protocol 2; numpy.core names, str data)."""
    import struct

    def short(b: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(b)]) + b

    raw = data.tobytes()
    out = b"\x80\x02}(" + short(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
    out += b"(K\x01M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
    out += b"cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tb"
    out += short(b"labels") + b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"eu."
    return out


def test_the_python2_batch_layout_loads_through_the_restricted_unpickler(shared_data: Path, tmp_path: Path):
    images, labels = _test_pngs(shared_data)
    folder = cifar10_folder(tmp_path)
    folder.mkdir()
    (folder / "test_batch").write_bytes(_python2_batch(images.reshape(10, 3072), labels.tolist()))
    loaded, loaded_labels = load_cifar10(tmp_path, "test", verify_md5=False)
    assert np.array_equal(loaded, images) and loaded_labels.tolist() == labels.tolist()


def test_a_batch_with_the_wrong_md5_is_refused_before_unpickling(shared_data: Path, tmp_path: Path, monkeypatch):
    import spikebench.data.cifar_pickle as cifar_pickle

    images, labels = _test_pngs(shared_data)
    folder = cifar10_folder(tmp_path)
    write_cifar_batch(folder / "test_batch", images, labels, "testing batch 1 of 1")
    found = hashlib.md5((folder / "test_batch").read_bytes()).hexdigest()
    unpickled: list[object] = []
    original_run = cifar_pickle._StrictPickle.run
    monkeypatch.setattr(cifar_pickle._StrictPickle, "run", lambda self: unpickled.append(self) or original_run(self))
    for name in ("load", "loads", "Unpickler"):  # the reader never unpickles, md5 checked or not
        monkeypatch.setattr(pickle, name, lambda *a, **k: unpickled.append(a))
    with pytest.raises(DataIntegrityError) as error:
        load_cifar10(tmp_path, "test")  # verify_md5 defaults to True: the real dataset
    message = str(error.value)
    assert str(folder / "test_batch") in message and found in message
    assert "40351d587109b95175f43aff81a1287e" in message and "Delete it and run the download again" in message
    assert unpickled == []
    # the same stand-in is read (restricted) when the caller says it is the demo's
    assert load_cifar10(tmp_path, "test", verify_md5=False)[1].tolist() == labels.tolist()
    assert len(unpickled) == 1


def test_jobs_verify_cifar10_md5_unless_the_data_source_is_demo(tmp_path: Path):
    from spikebench.data.demo import make_demo_cifar10
    from spikebench.jobs import training_set_size

    make_demo_cifar10(tmp_path, n_train=50, n_test=10, seed=0)
    assert training_set_size("cifar10", tmp_path, data_source="demo") == 50
    with pytest.raises(DataIntegrityError, match=r"data_batch_1: md5 .* does not match the expected c99cafc1"):
        training_set_size("cifar10", tmp_path, data_source="download")
