"""The conventional networks (ANN/CNN): one ``nn.Sequential`` of the architecture's layers."""

from __future__ import annotations

import torch
from torch import nn

from spikebench.models.base import Network


class ANN(Network):
    """A conventional network: ``forward(x [B, C, H, W]) -> logits [B, 10]``."""

    kind = "ann"

    def __init__(self, name: str, shape: tuple[int, int, int], layers: nn.Sequential) -> None:
        super().__init__()
        self.name, self.input_shape, self.layers = name, shape, layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, 1)
        return self.layers(x.reshape(x.shape[0], *self.input_shape))
