"""Datasets resident on the training device, batches made there, and rate coding on the device.

A job loads its data once: MNIST and CIFAR-10 as uint8 tensors ``[N, C, H, W]`` on the device (converted to
float in [0, 1] one batch at a time, MNIST for experiment 3 resized there to ``input_size`` with
``F.interpolate(mode="bilinear", antialias=True)``, what torchvision's ``Resize`` does on tensors), N-MNIST as
sparse frames densified a batch at a time (``spikebench.data.nmnist.SparseFrames``; on a GPU without reading
anything back from the device, :class:`DeviceFrames`). No DataLoader and no per-sample Python: a batch is one
index tensor.

``nmnist_files`` names the N-MNIST frame Parquet pair of the split being loaded
(``spikebench.data.nmnist.load_frames``): keys ``frames`` and ``samples`` (or ``train_frames``/``train_samples``
and ``test_frames``/``test_samples`` in one dict). ``split_path`` is the split file of the official training
set (``spikebench.data.split.read_split``); ``None`` trains on the whole training set without a validation set.
Every dataset carries a ``source`` (its file or folder), which shape errors name. The loaders check once that
the samples fit the network (:func:`check_fits`: the spec's input shape, from ``data.catalog`` and
``input_size``); training and evaluation trust that check.

Rate coding: :func:`rate_code` is spikebench's; which implementation's rate coding a network uses is chosen in
``spikebench.implementation.encode_batch`` (this package imports no model code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from spikebench.data.catalog import DATASET_SHAPES
from spikebench.spec import NetworkSpec, as_spec


class DatasetShapeError(ValueError):
    """A dataset whose samples do not fit the network."""


class DeviceDataset(Protocol):
    """What training and evaluation need from a dataset."""

    name: str
    source: str
    labels: torch.Tensor

    def __len__(self) -> int: ...

    @property
    def sample_shape(self) -> tuple[int, int, int]: ...

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class DeviceImages:
    """uint8 images ``[N, C, H, W]`` and int64 labels on the device; ``batch`` gives float [0, 1] images."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, *, name: str, source: str, size: int | None = None
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DatasetShapeError(
                f"{source}: expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise DatasetShapeError(f"{source}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images, self.labels = images, labels.long()
        self.name, self.source, self.size = name, source, size

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), self.size, self.size) if self.size else (int(c), int(h), int(w))

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Images ``idx`` as float32 in [0, 1], resized on the device if the network asks for it."""
        x = self.images[idx.to(self.images.device)].float().div_(255.0)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x, None


class DeviceFrames:
    """N-MNIST sparse frames on the device; ``batch`` gives ``([T, B, 2, 34, 34], n_frames [B])``.

    On the CPU T is the batch's longest sample (``SparseFrames.dense_batch``, as before). On a GPU the batch's
    shape must not depend on values that live on the device (reading them back would stall the host once per
    batch), so T is the longest sample of the whole dataset and the cells are gathered into a buffer sized for
    the batch's worst case, both known from CPU copies kept here (:func:`dense_batch_without_sync`); the extra
    padding frames are masked out of losses and predictions like any other (``spikebench.models.step_mask``).
    ``host_sync`` forces one way or the other (None: by the device).
    """

    def __init__(self, frames, *, name: str, source: str, host_sync: bool | None = None) -> None:
        self.frames, self.name, self.source = frames, name, source
        self.labels = frames.labels
        self.host_sync = frames.device.type == "cpu" if host_sync is None else bool(host_sync)
        lengths = (frames.offsets[1:] - frames.offsets[:-1]).cpu().numpy()
        self.t_max = int(frames.n_frames.max().cpu()) if len(frames) else 0
        # cells_bound[k-1]: the cells of the k longest samples, an upper bound for any k-sample batch (host ints).
        self.cells_bound = np.cumsum(np.sort(lengths)[::-1]).tolist()

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return DATASET_SHAPES["nmnist"]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(self.labels.device)
        if self.host_sync or idx.numel() == 0:
            frames, n_frames = self.frames.dense_batch(idx)
        else:
            bound = self.cells_bound[min(idx.numel(), len(self)) - 1] if len(self) else 0
            frames, n_frames = dense_batch_without_sync(self.frames, idx, self.t_max, bound)
        if tuple(frames.shape[2:]) != self.sample_shape:
            raise DatasetShapeError(
                f"{self.source}: frames of shape {tuple(frames.shape[2:])}, expected {self.sample_shape}"
            )
        return frames, n_frames.to(frames.device)


def dense_batch_without_sync(
    frames, idx: torch.Tensor, t_max: int, cells_bound: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``SparseFrames.dense_batch(idx)`` padded to ``t_max`` frames, with no value read back from the device.

    ``cells_bound`` (>= the batch's number of cells) sizes the gather: slot j belongs to the sample whose cell
    range holds it (``searchsorted`` over the running cell counts); slots past the batch's last cell write into
    one extra element that is then dropped. ``idx`` must lie in 0..len-1 (it is not checked: that would sync).
    """
    from spikebench.data.catalog import (
        NMNIST_CELLS as _CELLS,
        NMNIST_HEIGHT as _HEIGHT,
        NMNIST_POLARITIES as _POLARITIES,
        NMNIST_WIDTH as _WIDTH,
    )

    device, batch = frames.device, idx.numel()
    starts = frames.offsets[idx]
    lengths = frames.offsets[idx + 1] - starts
    size = t_max * batch * _CELLS
    out = torch.zeros(size + 1, dtype=torch.float32, device=device)  # + the sink of the padding slots
    if cells_bound:
        ends = torch.cumsum(lengths, 0)
        slot = torch.arange(cells_bound, device=device)
        b = torch.searchsorted(ends, slot, right=True)
        valid = b < batch
        b = b.clamp_(max=batch - 1)
        pos = torch.where(valid, slot - (ends - lengths)[b] + starts[b], 0)
        cell = frames.cells[pos].to(torch.int64)
        flat = torch.where(valid, ((cell // _CELLS) * batch + b) * _CELLS + cell % _CELLS, size)
        out.index_put_((flat,), frames.counts[pos].to(torch.float32))
    return out[:size].view(t_max, batch, _POLARITIES, _HEIGHT, _WIDTH), frames.n_frames[idx].clone()


def rate_code(x: torch.Tensor, num_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bernoulli spikes ``[num_steps, *x.shape]`` with probability ``x`` per step (``snntorch.spikegen.rate``).

    On the CPU, when most inputs are zero (MNIST: ~80% of the pixels of a digit), random numbers are drawn only
    for the non-zero ones (a zero-probability input never fires either way): the same distribution, ~5x fewer
    draws. On a GPU every input gets a draw (finding the non-zeros would synchronise with the host).
    """
    if x.device.type == "cpu":
        flat = x.reshape(-1)
        active = flat.nonzero().squeeze(1)
        if active.numel() < flat.numel() // 2:
            draws = torch.rand((num_steps, active.numel()), generator=generator, dtype=x.dtype)
            spikes = torch.zeros((num_steps, flat.numel()), dtype=x.dtype)
            spikes.index_copy_(1, active, torch.lt(draws, flat[active], out=draws))
            return spikes.reshape(num_steps, *x.shape)
    draws = torch.rand((num_steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return torch.lt(draws, x, out=draws)  # in place: 1.0 where the draw is below the probability


def encode_batch(
    spec: NetworkSpec, data: DeviceDataset, idx: torch.Tensor, generator: torch.Generator | None, rate_code=rate_code
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Network input for samples ``idx``: images (ANN), spikes [T, B, ...] rate-coded by ``rate_code``
    (``rate_code(x, num_steps, generator)``, spikebench's by default; ``spikebench.implementation.encode_batch``
    passes the network's implementation's) or N-MNIST frames (SNN)."""
    spec = as_spec(spec)
    x, n_steps = data.batch(idx)
    if spec.rate_coded and n_steps is None:
        x = rate_code(x, spec.num_steps, generator)
    return x, n_steps


def check_fits(spec: NetworkSpec, data: DeviceDataset) -> None:
    """Raise ``DatasetShapeError`` naming the dataset file if its samples do not fit the network."""
    want = spec.input_shape
    if tuple(data.sample_shape) != tuple(want):
        raise DatasetShapeError(
            f"{data.source}: samples of shape {tuple(data.sample_shape)} do not fit {spec.name} "
            f"(dataset {spec.dataset!r}, expects {want})"
        )


def _images(
    spec: NetworkSpec, data_root: Path, split: str, verify_md5: bool = True
) -> tuple[np.ndarray, np.ndarray, str]:
    dataset = spec.dataset
    if dataset == "mnist":
        from spikebench.data.mnist import MNIST_FILES, load_mnist, mnist_raw_folder

        images, labels = load_mnist(Path(data_root), split)
        source = str(mnist_raw_folder(Path(data_root)) / MNIST_FILES[split][0])
    elif dataset == "cifar10":
        from spikebench.data.cifar10 import cifar10_folder, load_cifar10

        images, labels = load_cifar10(Path(data_root), split, verify_md5=verify_md5)
        source = f"{cifar10_folder(Path(data_root))} ({split} batches)"
    else:
        raise DatasetShapeError(f"dataset {dataset!r} is not an image dataset (mnist, cifar10)")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[1:] != DATASET_SHAPES[dataset]:
        raise DatasetShapeError(f"{source}: images of shape {images.shape[1:]}, expected {DATASET_SHAPES[dataset]}")
    return images, np.asarray(labels), source


def _to_device(
    images: np.ndarray, labels: np.ndarray, spec: NetworkSpec, device: torch.device, *, name: str, source: str
) -> DeviceImages:
    size = spec.input_size
    images = np.require(images, requirements=["C_CONTIGUOUS", "WRITEABLE"])  # copies a read-only buffer
    labels = np.require(labels, dtype=np.int64, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    return DeviceImages(
        torch.from_numpy(images).to(device),
        torch.from_numpy(labels).to(device),
        name=name,
        source=source,
        size=int(size) if size else None,
    )


def _nmnist_paths(nmnist_files: dict | None, split: str) -> tuple[Path, Path]:
    """The (frames, samples) Parquet pair of ``split``: keys ``frames``/``samples`` or ``<split>_frames``/..."""
    files = nmnist_files or {}
    for keys in ((f"{split}_frames", f"{split}_samples"), ("frames", "samples")):
        if all(k in files for k in keys):
            return Path(files[keys[0]]), Path(files[keys[1]])
    raise ValueError(
        f"N-MNIST needs nmnist_files with keys 'frames' and 'samples' (or '{split}_frames' and "
        f"'{split}_samples'), got {sorted(files)}"
    )


def load_split_data(
    spec: NetworkSpec,
    data_root: Path,
    split_path: Path | None,
    nmnist_files: dict | None,
    device: torch.device,
    *,
    verify_md5: bool = True,
) -> tuple[DeviceDataset, DeviceDataset | None]:
    """Training and validation sets of ``spec``'s dataset on ``device`` (validation ``None`` without a split),
    checked to fit the network (:func:`check_fits`).

    ``verify_md5``: check CIFAR-10 batches against torchvision's md5 before reading them (False for the demo's
    stand-in, see ``spikebench.data.cifar10.load_cifar10``).
    """
    spec = as_spec(spec)
    train, val = _load_split(spec, data_root, split_path, nmnist_files, device, verify_md5)
    for data in (train, val):
        if data is not None:
            check_fits(spec, data)
    return train, val


def _load_split(
    spec: NetworkSpec,
    data_root: Path,
    split_path: Path | None,
    nmnist_files: dict | None,
    device: torch.device,
    verify_md5: bool,
) -> tuple[DeviceDataset, DeviceDataset | None]:
    from spikebench.data.split import read_split

    if spec.dataset == "nmnist":
        from spikebench.data.nmnist import load_frames

        frames, samples = _nmnist_paths(nmnist_files, "train")
        if split_path is None:
            return DeviceFrames(load_frames(frames, samples, device), name="train", source=str(frames)), None
        train_idx, val_idx = read_split(Path(split_path))
        train = DeviceFrames(load_frames(frames, samples, device, indices=train_idx), name="train", source=str(frames))
        val = DeviceFrames(load_frames(frames, samples, device, indices=val_idx), name="val", source=str(frames))
        return train, val
    images, labels, source = _images(spec, data_root, "train", verify_md5)
    if split_path is None:
        return _to_device(images, labels, spec, device, name="train", source=source), None
    train_idx, val_idx = read_split(Path(split_path), n_expected=len(labels))
    train = _to_device(images[train_idx], labels[train_idx], spec, device, name="train", source=source)
    val = _to_device(images[val_idx], labels[val_idx], spec, device, name="val", source=source)
    return train, val


def load_test_data(
    spec: NetworkSpec, data_root: Path, nmnist_files: dict | None, device: torch.device, *, verify_md5: bool = True
) -> DeviceDataset:
    """The official test set of ``spec``'s dataset on ``device`` (``verify_md5`` as in ``load_split_data``),
    checked to fit the network (:func:`check_fits`)."""
    spec = as_spec(spec)
    if spec.dataset == "nmnist":
        from spikebench.data.nmnist import load_frames

        frames, samples = _nmnist_paths(nmnist_files, "test")
        test = DeviceFrames(load_frames(frames, samples, device), name="test", source=str(frames))
    else:
        images, labels, source = _images(spec, data_root, "test", verify_md5)
        test = _to_device(images, labels, spec, device, name="test", source=source)
    check_fits(spec, test)
    return test
