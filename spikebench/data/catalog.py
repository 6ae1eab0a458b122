"""Where each dataset's files live under the data root (the libraries' own layouts).

The Snakefile builds its rules' inputs and outputs from these paths, and the loaders read them,
so a user can point `data.root` at an existing torchvision/tonic download and nothing is fetched
again.
"""

from __future__ import annotations

from pathlib import Path

DATASETS = ("mnist", "cifar10", "nmnist")

MNIST_RAW = "MNIST/raw"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_META = "batches.meta"
NMNIST_FOLDERS = {"train": "NMNIST/Train", "test": "NMNIST/Test"}


def mnist_files(root: str | Path) -> list[str]:
    """The four uncompressed IDX files torchvision's MNIST keeps in `root/MNIST/raw`."""
    return [f"{root}/{MNIST_RAW}/{name}" for split in ("train", "test") for name in MNIST_FILES[split]]


def cifar10_files(root: str | Path) -> list[str]:
    """The pickled batches and metadata torchvision's CIFAR10 extracts into `root/cifar-10-batches-py`."""
    names = [*CIFAR10_FILES["train"], *CIFAR10_FILES["test"], CIFAR10_META]
    return [f"{root}/{CIFAR10_FOLDER}/{name}" for name in names]


def nmnist_folder(root: str | Path, split: str) -> str:
    """tonic's N-MNIST layout: `root/NMNIST/{Train,Test}/<digit>/<index>.bin`."""
    if split not in NMNIST_FOLDERS:
        raise ValueError(f"N-MNIST split must be 'train' or 'test', got {split!r}")
    return f"{root}/{NMNIST_FOLDERS[split]}"


def raw_files(dataset: str, root: str | Path) -> list[str]:
    """Every raw file (or recordings folder) of `dataset` under `root`."""
    if dataset == "mnist":
        return mnist_files(root)
    if dataset == "cifar10":
        return cifar10_files(root)
    if dataset == "nmnist":
        return [nmnist_folder(root, "train"), nmnist_folder(root, "test")]
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")


def nmnist_frames(results: str | Path, split: str) -> dict[str, str]:
    """The preprocessed N-MNIST Parquet files of one split (written by rule preprocess_nmnist)."""
    return {
        "frames": f"{results}/data/nmnist_{split}_frames.parquet",
        "samples": f"{results}/data/nmnist_{split}_samples.parquet",
    }


def split_file(results: str | Path, dataset: str) -> str:
    """The train/validation split of one dataset's training set (written by rule split)."""
    return f"{results}/data/split_{dataset}.parquet"


def root_of(path: str | Path) -> str:
    """The data root a dataset file or folder lives under (inverse of the functions above)."""
    p = Path(path)
    for parent in (p, *p.parents):
        if parent.name in ("MNIST", CIFAR10_FOLDER, "NMNIST"):
            return str(parent.parent)
    raise ValueError(f"{path} is not inside a MNIST, {CIFAR10_FOLDER} or NMNIST folder")
