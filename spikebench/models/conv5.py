"""Experiment 2's five-convolution network (architecture ``conv5``), ANN and SNN: its builder only, so that editing
it reruns only
the jobs of the networks of this architecture (spikebench.provenance hashes this file for them)."""

from __future__ import annotations

from torch import nn

from spikebench.data.catalog import N_CLASSES
from spikebench.models.snn import SpikingStage
from spikebench.models.tied_conv import conv_stack
from spikebench.spec import NetworkSpec


def build_conv5(spec: NetworkSpec, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 2: five conv 5x5 (padding 2) + 2x2 max-pool + ReLU/LIF, FC 512 (dropout ``dropout``), FC 10."""
    convs, flat = conv_stack(spec, name, shape, 5, padding=2)
    fc, dropout = spec.fc, spec.dropout
    if lif is not None:
        stages = [SpikingStage(conv, lif(), pool=True) for conv in convs]
        stages.append(SpikingStage(nn.Linear(flat, fc), lif(), flatten=True))
        stages.append(SpikingStage(nn.Linear(fc, N_CLASSES), lif(), dropout=dropout))
        return stages
    mods: list[nn.Module] = []
    for conv in convs:
        mods += [conv, nn.MaxPool2d(2, 2), nn.ReLU()]
    return mods + [nn.Flatten(), nn.Linear(flat, fc), nn.ReLU(), nn.Dropout(dropout), nn.Linear(fc, N_CLASSES)]
