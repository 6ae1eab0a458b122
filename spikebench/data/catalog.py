"""The facts about each dataset in one place: its sample shape and classes, where its files live
under the data root (the libraries' own layouts), and the workflow's own files about them under the
results folder. The code that needs a shape, a class count or a file name imports it from here.

The dataset files are never Snakemake inputs or outputs (so Snakemake can never delete them): the
rules pass the data root through params and depend on each dataset's verified manifest instead,
so a user can point `data.root` at an existing torchvision/tonic download and only what is
missing is fetched.
"""

from __future__ import annotations

import math
from pathlib import Path

DATASETS = ("mnist", "cifar10", "nmnist")

#: The shape of one sample as the networks see it: (channels, height, width); N-MNIST's channels are
#: the two polarities of one frame (tonic's ``sensor_size[::-1]`` without the time axis).
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "nmnist": (2, 34, 34),
}
#: Classes of each dataset (the digits 0..9; CIFAR-10's ten classes).
NUM_CLASSES: dict[str, int] = {"mnist": 10, "cifar10": 10, "nmnist": 10}
#: The networks' output width: every dataset has ten classes (one output neuron per class).
N_CLASSES = 10
assert set(NUM_CLASSES.values()) == {N_CLASSES}, "a dataset with another number of classes needs N_CLASSES per dataset"

MNIST_IMAGE_SHAPE = DATASET_SHAPES["mnist"][1:]  # (28, 28): one IDX image
MNIST_COUNTS = {"train": 60000, "test": 10000}  # images of each official split
CIFAR10_IMAGE_SHAPE = DATASET_SHAPES["cifar10"]  # (3, 32, 32): R, G, B planes
CIFAR10_ROW_BYTES = math.prod(CIFAR10_IMAGE_SHAPE)  # one image as a row of a CIFAR-10 batch's ``data`` (3072 bytes)

#: tonic's ``NMNIST.sensor_size``: (x/width, y/height, polarities).
NMNIST_SENSOR_SIZE: tuple[int, int, int] = (34, 34, 2)
NMNIST_WIDTH, NMNIST_HEIGHT, NMNIST_POLARITIES = NMNIST_SENSOR_SIZE
NMNIST_PLANE = NMNIST_HEIGHT * NMNIST_WIDTH  # cells of one polarity of a frame (1156)
NMNIST_CELLS = NMNIST_POLARITIES * NMNIST_PLANE  # cells of one frame, [p, y, x] (2312)
NMNIST_RECORDINGS = {"train": 60000, "test": 10000}  # recordings of each official split

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
