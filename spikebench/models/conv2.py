"""Experiment 3's two-convolution network (architecture ``conv2``), ANN and SNN: its builder only, so that editing it
reruns only
the jobs of the networks of this architecture (spikebench.provenance hashes this file for them)."""

from __future__ import annotations

from torch import nn

from spikebench.data.catalog import N_CLASSES
from spikebench.models.snn import SpikingStage
from spikebench.models.tied_conv import conv_stack
from spikebench.spec import NetworkSpec


def build_conv2(spec: NetworkSpec, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 3: 12C5-MP2-32C5-MP2-800-10 (no padding), LIF after each layer."""
    convs, flat = conv_stack(spec, name, shape, 2, padding=0)
    if lif is not None:
        stages = [SpikingStage(conv, lif(), pool=True) for conv in convs]
        return stages + [SpikingStage(nn.Linear(flat, N_CLASSES), lif(), flatten=True)]
    mods: list[nn.Module] = []
    for conv in convs:
        mods += [conv, nn.MaxPool2d(2, 2), nn.ReLU()]
    return mods + [nn.Flatten(), nn.Linear(flat, N_CLASSES)]
