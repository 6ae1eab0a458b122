"""Experiment 1's fully connected network (architecture ``fc``), ANN and SNN: its builder only, so that editing it
reruns only
the jobs of the networks of this architecture (spikebench.provenance hashes this file for them)."""

from __future__ import annotations

from torch import nn

from spikebench.data.catalog import N_CLASSES
from spikebench.models.snn import SpikingStage
from spikebench.spec import NetworkSpec


def build_fc(spec: NetworkSpec, name: str, shape: tuple[int, int, int], lif) -> list[nn.Module]:
    """Experiment 1: Linear 784-256-256-10 with ReLU (ANN) or LIF after each Linear (SNN)."""
    hidden = list(spec.hidden)
    sizes = [shape[0] * shape[1] * shape[2], *hidden, N_CLASSES]
    if lif is not None:
        return [
            SpikingStage(nn.Linear(a, b), lif(), flatten=(i == 0))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]
    mods: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return mods
