"""What every network shares: the input shape a network expects, the common checks, the errors, Kaiming
initialisation (ANN and SNN, every architecture)."""

from __future__ import annotations

import torch
from torch import nn

from spikebench.spec import NetworkSpec, NetworkSpecError, as_spec

__all__ = ["InputShapeError", "Network", "NetworkSpecError", "count_parameters", "input_shape", "kaiming_init_"]


class InputShapeError(ValueError):
    """An input whose shape does not fit the network."""


def input_shape(spec: NetworkSpec | dict) -> tuple[int, int, int]:
    """(channels, height, width) that the network built from ``spec`` expects (:attr:`NetworkSpec.input_shape`)."""
    return as_spec(spec).input_shape


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
                f"{want} (or flattened {flat[0]})"
            )


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
