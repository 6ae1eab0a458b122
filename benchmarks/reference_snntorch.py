"""Reference implementation of the study's training, written the way snnTorch's tutorials do it.

This is the baseline that ``bench_training.py`` compares spikebench against. It is deliberately *not*
optimised: it follows snnTorch tutorials 5-7 (and the plain-PyTorch MNIST/CIFAR examples for the ANN/CNN):

- data: torchvision ``MNIST`` / ``CIFAR10`` read from their own on-disk layouts, with per-sample transforms
  (``ToTensor``; ``Resize(32)`` first for the exp3 MNIST network), or tonic's ``NMNIST`` with per-sample
  ``Denoise`` + ``ToFrame`` behind tonic's ``DiskCachedDataset``, all behind a ``torch.utils.data.DataLoader``
  (``shuffle=True``; N-MNIST batches collated by ``tonic.collation.PadTensors(batch_first=False)``);
- rate coding: ``snntorch.spikegen.rate(data, num_steps)`` once per batch;
- forward: a Python loop over time steps, calling each layer and its ``snn.Leaky(beta, spike_grad=atan,
  reset_mechanism="subtract")`` one step at a time with an explicit membrane potential, recording the
  output spikes and membrane with ``torch.stack``;
- loss ``snntorch.functional.mse_count_loss(0.8, 0.2)`` (ANN/CNN: ``nn.CrossEntropyLoss``), accuracy per
  batch (``SF.accuracy_rate``), ``torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999))`` in the same implementation
  as spikebench's training on each device (``fused=True`` on CUDA, torch's default elsewhere:
  :func:`adam_options`), so that a speed ratio never mixes optimiser implementations.

``resident_batches`` gives the same training with the data already resident as tensors (no DataLoader during
training), the second baseline of ``bench_training.py``.

The networks have exactly the shapes of ``spikebench.models.build_network`` for the same config entry
(``reference_parameter_shapes`` lists them in registration order, which is also spikebench's order), so
``copy_parameters_`` can load spikebench's initial weights and both sides start from the same network.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import snntorch as snn
import snntorch.functional as SF
import torch
import torch.nn.functional as F
from snntorch import spikegen, surrogate
from torch import nn

N_CLASSES = 10
NMNIST_SENSOR_SIZE = (34, 34, 2)  # tonic's (width, height, polarity)


class ReferenceSpecError(ValueError):
    """A config entry the reference implementation cannot build."""


# --------------------------------------------------------------------------------------------------
# Networks (tutorial style: one module per layer, a Python loop over time steps)
# --------------------------------------------------------------------------------------------------
def _leaky(spec: dict) -> snn.Leaky:
    return snn.Leaky(
        beta=float(spec.get("beta", 0.8)),
        threshold=float(spec.get("threshold", 1.0)),
        spike_grad=surrogate.atan(),
        reset_mechanism="subtract",
    )


class FCSNN(nn.Module):
    """exp1_snn: Linear 784-256-256-10 with a ``snn.Leaky`` after every Linear (tutorial 5)."""

    def __init__(self, spec: dict, n_inputs: int) -> None:
        super().__init__()
        h1, h2 = (int(h) for h in spec["hidden"])
        self.fc1 = nn.Linear(n_inputs, h1)
        self.lif1 = _leaky(spec)
        self.fc2 = nn.Linear(h1, h2)
        self.lif2 = _leaky(spec)
        self.fc3 = nn.Linear(h2, N_CLASSES)
        self.lif3 = _leaky(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk3_rec, mem3_rec = [], []
        for step in range(x.size(0)):
            cur1 = self.fc1(x[step].flatten(1))
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            cur3 = self.fc3(spk2)
            spk3, mem3 = self.lif3(cur3, mem3)
            spk3_rec.append(spk3)
            mem3_rec.append(mem3)
        return torch.stack(spk3_rec, dim=0), torch.stack(mem3_rec, dim=0)


class Conv5SNN(nn.Module):
    """exp2_snn: five Conv2d 5x5 (padding 2) + 2x2 max-pool + Leaky, Linear 512 + Leaky, dropout, Linear 10 + Leaky."""

    def __init__(self, spec: dict, in_channels: int, size: int) -> None:
        super().__init__()
        channels = [int(c) for c in spec["channels"]]
        if len(channels) != 5:
            raise ReferenceSpecError(f"conv5 needs 5 channel widths, got {channels}")
        self.conv1 = nn.Conv2d(in_channels, channels[0], 5, padding=2)
        self.lif1 = _leaky(spec)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, padding=2)
        self.lif2 = _leaky(spec)
        self.conv3 = nn.Conv2d(channels[1], channels[2], 5, padding=2)
        self.lif3 = _leaky(spec)
        self.conv4 = nn.Conv2d(channels[2], channels[3], 5, padding=2)
        self.lif4 = _leaky(spec)
        self.conv5 = nn.Conv2d(channels[3], channels[4], 5, padding=2)
        self.lif5 = _leaky(spec)
        flat = channels[4] * (size // 32) ** 2
        self.fc1 = nn.Linear(flat, int(spec["fc"]))
        self.lif6 = _leaky(spec)
        self.dropout = nn.Dropout(float(spec.get("dropout", 0.0)))
        self.fc2 = nn.Linear(int(spec["fc"]), N_CLASSES)
        self.lif7 = _leaky(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mems = [
            lif.init_leaky() for lif in (self.lif1, self.lif2, self.lif3, self.lif4, self.lif5, self.lif6, self.lif7)
        ]
        mem1, mem2, mem3, mem4, mem5, mem6, mem7 = mems
        spk7_rec, mem7_rec = [], []
        for step in range(x.size(0)):
            cur1 = F.max_pool2d(self.conv1(x[step]), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = F.max_pool2d(self.conv2(spk1), 2)
            spk2, mem2 = self.lif2(cur2, mem2)
            cur3 = F.max_pool2d(self.conv3(spk2), 2)
            spk3, mem3 = self.lif3(cur3, mem3)
            cur4 = F.max_pool2d(self.conv4(spk3), 2)
            spk4, mem4 = self.lif4(cur4, mem4)
            cur5 = F.max_pool2d(self.conv5(spk4), 2)
            spk5, mem5 = self.lif5(cur5, mem5)
            cur6 = self.fc1(spk5.flatten(1))
            spk6, mem6 = self.lif6(cur6, mem6)
            cur7 = self.fc2(self.dropout(spk6))
            spk7, mem7 = self.lif7(cur7, mem7)
            spk7_rec.append(spk7)
            mem7_rec.append(mem7)
        return torch.stack(spk7_rec, dim=0), torch.stack(mem7_rec, dim=0)


class Conv2SNN(nn.Module):
    """exp3: 12C5-MP2-32C5-MP2-800-10, a Leaky after each pooled convolution and after the Linear (tutorial 6/7)."""

    def __init__(self, spec: dict, in_channels: int, size: int) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in spec["channels"])
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.lif1 = _leaky(spec)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.lif2 = _leaky(spec)
        side = ((size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(c2 * side * side, N_CLASSES)
        self.lif3 = _leaky(spec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk3_rec, mem3_rec = [], []
        for step in range(x.size(0)):
            cur1 = F.max_pool2d(self.conv1(x[step]), 2)
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = F.max_pool2d(self.conv2(spk1), 2)
            spk2, mem2 = self.lif2(cur2, mem2)
            cur3 = self.fc1(spk2.flatten(1))
            spk3, mem3 = self.lif3(cur3, mem3)
            spk3_rec.append(spk3)
            mem3_rec.append(mem3)
        return torch.stack(spk3_rec, dim=0), torch.stack(mem3_rec, dim=0)


class FCANN(nn.Module):
    """exp1_ann: Linear 784-256-256-10 with ReLU (the plain PyTorch MNIST example)."""

    def __init__(self, spec: dict, n_inputs: int) -> None:
        super().__init__()
        h1, h2 = (int(h) for h in spec["hidden"])
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(n_inputs, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, N_CLASSES)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Conv5CNN(nn.Module):
    """exp2_cnn: five Conv2d 5x5 (padding 2) + 2x2 max-pool + ReLU, Linear 512 + ReLU, dropout, Linear 10."""

    def __init__(self, spec: dict, in_channels: int, size: int) -> None:
        super().__init__()
        channels = [int(c) for c in spec["channels"]]
        mods: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
            mods += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.MaxPool2d(2, 2), nn.ReLU()]
        flat = channels[-1] * (size // 2 ** len(channels)) ** 2
        mods += [
            nn.Flatten(),
            nn.Linear(flat, int(spec["fc"])),
            nn.ReLU(),
            nn.Dropout(float(spec.get("dropout", 0.0))),
            nn.Linear(int(spec["fc"]), N_CLASSES),
        ]
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def input_shape(spec: dict) -> tuple[int, int, int]:
    """(channels, height, width) that the network for ``spec`` receives from the reference data path."""
    dataset = spec.get("dataset")
    if dataset == "mnist":
        size = int(spec.get("input_size") or 28)
        return 1, size, size
    if dataset == "cifar10":
        return 3, 32, 32
    if dataset == "nmnist":
        return 2, 34, 34
    raise ReferenceSpecError(f"unknown dataset {dataset!r}; expected mnist, cifar10 or nmnist")


def build_reference_network(spec: dict) -> nn.Module:
    """The tutorial-style network for one ``networks:`` entry of config.yaml."""
    channels, size, _ = input_shape(spec)
    kind, arch = spec.get("kind"), spec.get("architecture")
    if arch == "fc":
        n_inputs = channels * size * size
        return FCSNN(spec, n_inputs) if kind == "snn" else FCANN(spec, n_inputs)
    if arch == "conv5":
        return Conv5SNN(spec, channels, size) if kind == "snn" else Conv5CNN(spec, channels, size)
    if arch == "conv2" and kind == "snn":
        return Conv2SNN(spec, channels, size)
    raise ReferenceSpecError(f"no reference network for kind={kind!r}, architecture={arch!r}")


def reference_parameter_shapes(net: nn.Module) -> list[tuple[int, ...]]:
    """Shapes of the trainable parameters, in registration order."""
    return [tuple(p.shape) for p in net.parameters() if p.requires_grad]


@torch.no_grad()
def copy_parameters_(dest: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s trainable parameters into ``dest`` by position (shapes must match one to one)."""
    dst = [p for p in dest.parameters() if p.requires_grad]
    src = [p for p in source.parameters() if p.requires_grad]
    shapes_d, shapes_s = [tuple(p.shape) for p in dst], [tuple(p.shape) for p in src]
    if shapes_d != shapes_s:
        raise ReferenceSpecError(f"parameter shapes differ: reference {shapes_d} vs source {shapes_s}")
    for d, s in zip(dst, src):
        d.copy_(s)


# --------------------------------------------------------------------------------------------------
# Data (torchvision / tonic datasets with per-sample transforms behind a DataLoader)
# --------------------------------------------------------------------------------------------------
def _offline_nmnist_class():
    """tonic's NMNIST, minus its download check (it wants train.zip and >= 10000 recordings on disk)."""
    import tonic

    class NMNIST(tonic.datasets.NMNIST):  # same class name: tonic reads from save_to/<class name>
        """tonic.datasets.NMNIST over an existing ``save_to/NMNIST/{Train,Test}/<digit>/*.bin`` folder."""

        def _check_exists(self) -> bool:  # the recordings are there; there is no zip to verify
            return True

    return NMNIST


def _offline_cifar10_class():
    """torchvision's CIFAR10 with its md5 checks off (the benchmark writes its own batches in the real format)."""
    import os
    import pickle

    import torchvision

    class OfflineCIFAR10(torchvision.datasets.CIFAR10):
        """torchvision.datasets.CIFAR10 over ``root/cifar-10-batches-py`` files that exist but are not the originals."""

        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            with open(path, "rb") as infile:
                self.classes = pickle.load(infile, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {_class: i for i, _class in enumerate(self.classes)}

    return OfflineCIFAR10


def reference_dataset(spec: dict, data_root: str | Path, train: bool = True) -> torch.utils.data.Dataset:
    """The official training (or test) set of ``spec``'s dataset, as the tutorials load it (no download)."""
    import torchvision
    from torchvision import transforms

    data_root = str(data_root)
    dataset = spec.get("dataset")
    if dataset == "mnist":
        steps: list[Any] = []
        if spec.get("input_size"):
            size = int(spec["input_size"])
            steps.append(transforms.Resize((size, size)))
        steps.append(transforms.ToTensor())
        return torchvision.datasets.MNIST(data_root, train=train, download=False, transform=transforms.Compose(steps))
    if dataset == "cifar10":
        return _offline_cifar10_class()(data_root, train=train, download=False, transform=transforms.ToTensor())
    if dataset == "nmnist":
        import tonic

        frame = tonic.transforms.Compose(
            [
                tonic.transforms.Denoise(filter_time=int(spec.get("denoise_filter_us", 10000))),
                tonic.transforms.ToFrame(
                    sensor_size=NMNIST_SENSOR_SIZE, time_window=int(spec.get("time_window_us", 1000))
                ),
            ]
        )
        return _offline_nmnist_class()(save_to=data_root, train=train, transform=frame)
    raise ReferenceSpecError(f"unknown dataset {dataset!r}")


def reference_loader(
    spec: dict,
    data_root: str | Path,
    indices: Sequence[int] | None,
    batch_size: int,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """A shuffling DataLoader over ``indices`` of the official training set (N-MNIST: disk-cached frames).

    As in the tutorials: ``num_workers=0``, ``drop_last=False``; for N-MNIST the ``Subset`` is wrapped in
    tonic's ``DiskCachedDataset`` (``cache_dir`` required) and collated with ``PadTensors(batch_first=False)``.
    """
    dataset = reference_dataset(spec, data_root, train=True)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, [int(i) for i in indices])
    generator = torch.Generator().manual_seed(seed)
    if spec.get("dataset") == "nmnist":
        import tonic

        if cache_dir is None:
            raise ReferenceSpecError("N-MNIST needs a cache_dir for tonic's DiskCachedDataset")
        cached = tonic.DiskCachedDataset(dataset, cache_path=str(cache_dir))
        return torch.utils.data.DataLoader(
            cached,
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=tonic.collation.PadTensors(batch_first=False),
        )
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)


def fill_disk_cache(loader: torch.utils.data.DataLoader) -> int:
    """Read every sample of an N-MNIST loader's DiskCachedDataset once, so later epochs read the cache."""
    dataset = loader.dataset
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset)


def resident_batches(
    loader: torch.utils.data.DataLoader, device: torch.device | str, max_batches: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches (one shuffled pass) read once and kept as tensors on ``device``.

    The resident variant of the reference: training then iterates this list, so no DataLoader, per-sample
    transform or tonic cache read is timed, only the tutorial-style network, rate coding, loss and optimiser,
    which isolates the network implementation from data loading. Batches keep the loader's dtype
    (N-MNIST frames int16, converted per step as the DataLoader variant does).
    """
    batches = []
    for i, (data, targets) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batches.append((data.to(device), targets.to(device)))
    return batches


# --------------------------------------------------------------------------------------------------
# Training (the tutorials' loop)
# --------------------------------------------------------------------------------------------------
def _device_type(device: torch.device | str) -> str:
    return getattr(device, "type", None) or torch.device(device).type


def adam_options(device: torch.device | str) -> dict:
    """The Adam implementation spikebench's training uses on ``device`` (``spikebench.training``: one fused
    kernel for the whole update on CUDA, torch's default elsewhere); the reference uses the same, so that a
    speed ratio compares the networks, not two optimiser implementations."""
    return {"fused": True if _device_type(device) == "cuda" else None}


def make_adam(params: Iterable[torch.nn.Parameter], spec: dict, device: torch.device | str) -> torch.optim.Adam:
    """The tutorials' ``Adam(lr, betas=(0.9, 0.999))`` in spikebench's implementation for ``device``."""
    return torch.optim.Adam(params, lr=float(spec.get("lr", 1e-3)), betas=(0.9, 0.999), **adam_options(device))


def optimizer_description(device: torch.device | str) -> str:
    """Which Adam both sides run on ``device``, for the benchmarks' machine line and JSON."""
    return "Adam fused" if adam_options(device)["fused"] else "Adam for-loop (torch's default off CUDA)"


@dataclass
class ReferenceTrainer:
    """Network, loss, optimiser and encoding of one tutorial-style training run."""

    spec: dict
    net: nn.Module
    device: torch.device
    num_steps: int | None = None

    def __post_init__(self) -> None:
        self.snn = self.spec.get("kind") == "snn"
        self.net.to(self.device)
        if self.snn:
            self.loss_fn = SF.mse_count_loss(
                correct_rate=float(self.spec.get("correct_rate", 0.8)),
                incorrect_rate=float(self.spec.get("incorrect_rate", 0.2)),
            )
        else:
            self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = make_adam(self.net.parameters(), self.spec, self.device)
        self.rate_coded = self.snn and self.spec.get("dataset") != "nmnist"
        if self.rate_coded and not self.num_steps:
            self.num_steps = int(self.spec.get("num_steps", 25))

    def step(self, data: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """One training step on one DataLoader batch; returns (loss, accuracy)."""
        data = data.to(self.device)
        targets = targets.to(self.device)
        self.net.train()
        if self.snn:
            if self.rate_coded:
                data = spikegen.rate(data, num_steps=self.num_steps)  # [T, B, C, H, W]
            else:
                data = data.float()  # PadTensors: [T, B, 2, 34, 34]
            spk_rec, _ = self.net(data)
            loss_val = self.loss_fn(spk_rec, targets)
            acc = SF.accuracy_rate(spk_rec, targets)
        else:
            output = self.net(data)
            loss_val = self.loss_fn(output, targets)
            acc = float((output.argmax(1) == targets).float().mean())
        self.optimizer.zero_grad()
        loss_val.backward()
        self.optimizer.step()
        return float(loss_val.item()), float(acc)

    def train_epoch(self, loader: Iterable, max_batches: int | None = None) -> dict:
        """One pass over ``loader``: samples, seconds, samples/s, mean loss and accuracy."""
        start = time.perf_counter()
        n = 0
        losses, accs = [], []
        for i, (data, targets) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            loss, acc = self.step(data, targets)
            losses.append(loss)
            accs.append(acc)
            n += int(targets.shape[0])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return {
            "train_samples": n,
            "train_time_s": seconds,
            "train_samples_per_s": n / seconds if seconds else 0.0,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "train_acc": float(np.mean(accs)) if accs else float("nan"),
        }
