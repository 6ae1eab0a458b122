"""spikebench's spiking networks: each layer's synapses over all T*B inputs, then the fused LIF (:mod:`.lif`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spikebench.models import convpool
from spikebench.models.base import Network
from spikebench.models.lif import Leaky


def active_input_linear(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear(x)`` for an input that needs no gradient, skipping the input features that are zero in every row.

    Experiment 1's first layer sees rate-coded MNIST: a third of the 784 pixels is zero in every image of a
    batch, so those columns of the [T*B, 784] x [784, 256] products (forward and weight gradient) only add
    zeros. The weight gradient of the skipped columns is exactly zero, as it would be with them included.
    """
    rows = x.reshape(-1, x.shape[-1])
    # Column sums as one matrix-vector product (faster than rows.any(0) on the CPU: one BLAS call); of |x| unless x >= 0
    # (spikes), where no sum of non-zeros can cancel to zero.
    ones = rows.new_ones(1, rows.shape[0])
    sums = ones @ (rows if rows.min() >= 0 else rows.abs())
    active = sums.squeeze(0).nonzero().squeeze(1)
    if active.numel() > 0.9 * x.shape[-1]:
        return linear(x)
    return F.linear(x.index_select(-1, active), linear.weight.index_select(1, active), linear.bias)


class SpikingStage(nn.Module):
    """One SNN layer: synapses (Linear or Conv2d [+ max-pool]) over all T*B inputs, then the fused LIF."""

    def __init__(
        self, synapse: nn.Module, lif: Leaky, pool: bool = False, flatten: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.synapse, self.lif = synapse, lif
        self.pool, self.flatten, self.dropout = pool, flatten, float(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_steps, batch = x.shape[0], x.shape[1]
        z = x.reshape(n_steps * batch, *x.shape[2:])
        if self.flatten:
            z = z.reshape(z.shape[0], -1)
        if self.dropout > 0.0:
            z = F.dropout(z, self.dropout, self.training)
        if self.pool:
            z = convpool.conv_pool(z, self.synapse)
        elif z.device.type == "cpu" and not z.requires_grad:
            z = active_input_linear(z, self.synapse)
        else:
            z = self.synapse(z)
        spk, mem = self.lif(z.reshape(n_steps, batch, *z.shape[1:]))
        return spk, mem


class SNN(Network):
    """A spiking network: ``forward(x [T, B, C, H, W]) -> spikes [T, B, 10]`` (``, membrane`` on request)."""

    kind = "snn"

    def __init__(self, name: str, shape: tuple[int, int, int], stages: list[SpikingStage]) -> None:
        super().__init__()
        self.name, self.input_shape = name, shape
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, return_membrane: bool = False):
        self._check_input(x, 2)
        z = x.reshape(x.shape[0], x.shape[1], *self.input_shape)
        mem = z
        for stage in self.stages:
            z, mem = stage(z)
        return (z, mem) if return_membrane else z
