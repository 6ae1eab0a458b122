"""Where each dataset's files live under the data root (the libraries' own layouts), and the
workflow's own files about them under the results folder.

The dataset files are never Snakemake inputs or outputs (so Snakemake can never delete them): the
rules pass the data root through params and depend on each dataset's verified manifest instead,
so a user can point `data.root` at an existing torchvision/tonic download and only what is
missing is fetched.
"""

from __future__ import annotations

from pathlib import Path

DATASETS = ("mnist", "cifar10", "nmnist")

#: Number of classes of every dataset (ten digits, ten CIFAR-10 classes).
N_CLASSES = 10
#: Input shape (channels, height, width) of each dataset as stored, before any resizing.
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "nmnist": (2, 34, 34),
}

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


def nmnist_folder(root: str | Path, split: str) -> str:
    """tonic's N-MNIST layout: `root/NMNIST/{Train,Test}/<digit>/<index>.bin`."""
    if split not in NMNIST_FOLDERS:
        raise ValueError(f"N-MNIST split must be 'train' or 'test', got {split!r}")
    return f"{root}/{NMNIST_FOLDERS[split]}"


def manifest_file(results: str | Path, dataset: str) -> str:
    """The verified manifest of one dataset (written by its download/demo rule, read by every job on it)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    return f"{results}/data/manifest_{dataset}.json"


def nmnist_frames(results: str | Path, split: str) -> dict[str, str]:
    """The preprocessed N-MNIST Parquet files of one split (written by rule preprocess_nmnist)."""
    return {
        "frames": f"{results}/data/nmnist_{split}_frames.parquet",
        "samples": f"{results}/data/nmnist_{split}_samples.parquet",
    }


def split_file(results: str | Path, dataset: str) -> str:
    """The train/validation split of one dataset's training set (written by rule split)."""
    return f"{results}/data/split_{dataset}.parquet"
