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
    assert label_names(tmp_path) == CIFAR_NAMES


def test_written_batches_load_with_the_exact_pixels(shared_data: Path, tmp_path: Path):
    images, labels = _test_pngs(shared_data)
    assert labels.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    folder = cifar10_folder(tmp_path)
    write_cifar_batch(folder / "test_batch", images, labels, "testing batch 1 of 1")
    loaded, loaded_labels = load_cifar10(tmp_path, "test")
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
