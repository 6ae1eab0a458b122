"""The study's own SNN code path (``implementation: snntorch``): snnTorch layers called once per time step.

This is how the study (and snnTorch's tutorials 5-7) runs a spiking network, shipped so that the same workflow
can measure how much of an SNN's cost is the SNN and how much its implementation:

- input: ``snntorch.spikegen.rate(x, num_steps)`` on the device tensor (a Bernoulli draw per pixel and step
  from the device's global random generator, which seeds, checkpoints and the warm-up handle like the
  dropout masks); N-MNIST frames are already spikes per step and go in unchanged;
- forward: a Python loop over the time steps; per step every layer runs on that step's ``[B, ...]`` input,
  its plain ``nn.Linear`` / ``nn.Conv2d`` (+ ``F.max_pool2d(2)``) followed by a
  ``snntorch.Leaky(beta, threshold, reset_mechanism="subtract", spike_grad=snntorch.surrogate.atan())`` with
  an explicit membrane potential; the output layer's spikes and membrane are recorded with ``torch.stack``;
  experiment 2's dropout is an ``nn.Dropout`` called on the 512-unit layer's spikes every step;
- loss: ``snntorch.functional.mse_count_loss(correct_rate, incorrect_rate)``; prediction: the output neuron
  with the most spikes (what ``snntorch.functional.accuracy_rate`` counts).

None of spikebench's speed-ups run here (no fused LIF, numba kernels, tied weights, skipped zero inputs).

The twin has spikebench's layer shapes and initial weights: :func:`build_snntorch_network` builds spikebench's
network for the same spec (so the global RNG draws the same Kaiming initialisation and is left in the same
state) and copies its parameters into layers made without an initialisation of their own.

N-MNIST batches are padded at the end to the longest recording; as in spikebench, output spikes at a sample's
padding steps are masked out and each sample's targets use its own number of steps (``spike_count_loss``),
which equals ``mse_count_loss`` whenever the samples of a batch have the same length. This keeps the padding
from changing a loss or a prediction, so the two implementations differ only in how the neurons run.
"""

from __future__ import annotations

import snntorch
import snntorch.functional as SF
import torch
import torch.nn.functional as F
from snntorch import spikegen, surrogate
from torch import nn

from spikebench.models.base import Network, NetworkSpecError
from spikebench.models.build import build_network
from spikebench.models.losses import spike_count_loss
from spikebench.models.snn import SNN, SpikingStage
from spikebench.spec import NetworkSpec, as_spec


class StepStage(nn.Module):
    """One layer run for one time step: (dropout), synapse, (2x2 max-pool), ``snntorch.Leaky``."""

    def __init__(self, synapse: nn.Module, lif: snntorch.Leaky, pool: bool, flatten: bool, dropout: float) -> None:
        super().__init__()
        self.synapse, self.lif = synapse, lif
        self.pool, self.flatten = pool, flatten
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else None

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.flatten:
            x = x.flatten(1)
        if self.dropout is not None:
            x = self.dropout(x)
        cur = self.synapse(x)
        if self.pool:
            cur = F.max_pool2d(cur, 2)
        return self.lif(cur, mem)


class SnnTorchSNN(Network):
    """``forward(x [T, B, C, H, W]) -> spikes [T, B, 10]`` (``, membrane`` on request), one step at a time."""

    kind = "snn"
    implementation = "snntorch"

    def __init__(self, name: str, shape: tuple[int, int, int], stages: list[StepStage]) -> None:
        super().__init__()
        self.name, self.input_shape = name, shape
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, return_membrane: bool = False):
        self._check_input(x, 2)
        x = x.reshape(x.shape[0], x.shape[1], *self.input_shape)
        mems = [stage.lif.reset_mem() for stage in self.stages]
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):
            z = x[step]
            for i, stage in enumerate(self.stages):
                z, mems[i] = stage(z, mems[i])
            spk_rec.append(z)
            mem_rec.append(mems[-1])
        spikes = torch.stack(spk_rec, dim=0)
        return (spikes, torch.stack(mem_rec, dim=0)) if return_membrane else spikes


def _plain_copy(synapse: nn.Module) -> nn.Module:
    """A plain ``nn.Linear`` / ``nn.Conv2d`` with ``synapse``'s shape and parameters (drawing no random numbers)."""
    if isinstance(synapse, nn.Conv2d):
        plain = nn.utils.skip_init(
            nn.Conv2d,
            synapse.in_channels,
            synapse.out_channels,
            synapse.kernel_size,
            stride=synapse.stride,
            padding=synapse.padding,
            bias=synapse.bias is not None,
        )
    elif isinstance(synapse, nn.Linear):
        plain = nn.utils.skip_init(nn.Linear, synapse.in_features, synapse.out_features, bias=synapse.bias is not None)
    else:
        raise NetworkSpecError(f"no snnTorch twin for synapse {type(synapse).__name__}")
    with torch.no_grad():
        for dst, src in zip(plain.parameters(), synapse.parameters(), strict=True):
            dst.copy_(src)
    return plain


def _leaky(stage: SpikingStage) -> snntorch.Leaky:
    return snntorch.Leaky(
        beta=stage.lif.beta,
        threshold=stage.lif.threshold,
        reset_mechanism="subtract",
        spike_grad=surrogate.atan(alpha=stage.lif.alpha),
    )


def build_snntorch_network(spec: NetworkSpec, name: str | None = None) -> SnnTorchSNN:
    """The snnTorch twin of ``build_network(spec, name)``: same shapes, same initial weights."""
    net = build_network(spec, name)
    if not isinstance(net, SNN):
        raise NetworkSpecError(
            f"{net.name}: implementation 'snntorch' is for SNNs; this network is an "
            f"{net.kind.upper()} (set implementation: spikebench or leave it out)"
        )
    stages = [StepStage(_plain_copy(s.synapse), _leaky(s), s.pool, s.flatten, s.dropout) for s in net.stages]
    return SnnTorchSNN(net.name, net.input_shape, stages)


def rate_code(x: torch.Tensor, num_steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``snntorch.spikegen.rate(x, num_steps)``: spikes ``[num_steps, *x.shape]`` from the global RNG
    (snnTorch takes no generator, so ``generator`` is unused)."""
    return spikegen.rate(x, num_steps=num_steps)


def snntorch_loss(
    spec: NetworkSpec, output: torch.Tensor, targets: torch.Tensor, n_steps: torch.Tensor | None = None
) -> torch.Tensor:
    """``snntorch.functional.mse_count_loss(correct_rate, incorrect_rate)``; per-sample steps for padded
    N-MNIST batches (``models.spike_count_loss``, equal to it for equal lengths)."""
    spec = as_spec(spec)
    correct, incorrect = spec.correct_rate, spec.incorrect_rate
    if n_steps is not None:
        return spike_count_loss(output, targets, n_steps, correct_rate=correct, incorrect_rate=incorrect)
    return SF.mse_count_loss(correct_rate=correct, incorrect_rate=incorrect)(output, targets)
