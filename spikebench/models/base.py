"""What every network shares: the input shape a network expects, the common checks, the errors, Kaiming
initialisation (ANN and SNN, every architecture)."""

from __future__ import annotations

import torch
from torch import nn

from spikebench.data.catalog import DATASET_SHAPES, N_CLASSES

class NetworkSpecError(ValueError):
    """A network entry of the configuration that cannot be built."""

class InputShapeError(ValueError):
    """An input whose shape does not fit the network."""

def input_shape(spec: dict) -> tuple[int, int, int]:
    """(channels, height, width) that the network built from ``spec`` expects."""
    name = spec.get("_name", "network")
    dataset = spec.get("dataset")
    if dataset not in DATASET_SHAPES:
        raise NetworkSpecError(f"{name}: unknown dataset {dataset!r}; expected one of {sorted(DATASET_SHAPES)}")
    channels, height, width = DATASET_SHAPES[dataset]
    size = spec.get("input_size")
    if size is not None:
        if dataset == "nmnist" and int(size) != height:
            raise NetworkSpecError(f"{name}: N-MNIST frames are {height}x{width}; input_size {size} is not supported")
        height = width = int(size)
    return channels, height, width

class Network(nn.Module):
    """Common checks of ANN and SNN."""

    name: str
    kind: str
    input_shape: tuple[int, int, int]

    def _check_input(self, x: torch.Tensor, n_lead: int) -> None:
        want = self.input_shape
        flat = (want[0] * want[1] * want[2],)
        got = tuple(x.shape[n_lead:])
        if x.dim() < n_lead + 1 or (got != want and got != flat):
            lead = "[T, B, ...]" if n_lead == 2 else "[B, ...]"
            raise InputShapeError(
                f"{self.name}: input of shape {tuple(x.shape)} does not fit; expected {lead} with sample shape "
                f"{want} (or flattened {flat[0]})")

def require(spec: dict, key: str, name: str):
    if key not in spec:
        raise NetworkSpecError(f"{name}: missing key {key!r} for architecture {spec.get('architecture')!r}")
    return spec[key]

def kaiming_init_(net: nn.Module) -> None:
    """Kaiming-normal weights (fan-in, ReLU gain) and zero biases for every Linear and Conv2d."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)

def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
