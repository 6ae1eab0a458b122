"""Losses and predictions: ANN cross-entropy / largest logit; SNN MSE spike-count loss / most output spikes.

For variable-length inputs (N-MNIST, padded at the end of each batch) the output spikes at steps t >=
n_steps[b] are masked out, so padding changes neither a prediction nor a loss; each sample's spike-count
targets use its own number of steps (``int(n_steps * rate)``) and its squared error is divided by its own
n_steps (the one deliberate difference from a padded snnTorch run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spikebench.spec import NetworkSpec, as_spec


def step_mask(n_steps: torch.Tensor, total_steps: int) -> torch.Tensor:
    """Boolean [T, B]: True where time step t < n_steps[b]."""
    steps = torch.arange(total_steps, device=n_steps.device)
    return steps[:, None] < n_steps.to(steps.device)[None, :]


def spike_counts(spikes: torch.Tensor, n_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Spikes per output neuron [B, C] of ``spikes [T, B, C]``, counting only steps t < n_steps[b]."""
    if n_steps is None:
        return spikes.sum(0)
    mask = step_mask(n_steps, spikes.shape[0]).to(spikes.dtype)
    return (spikes * mask[..., None]).sum(0)


def spike_count_loss(
    spikes: torch.Tensor,
    targets: torch.Tensor,
    n_steps: torch.Tensor | None = None,
    *,
    correct_rate: float,
    incorrect_rate: float,
) -> torch.Tensor:
    """MSE spike-count loss, ``snntorch.functional.mse_count_loss(correct_rate, incorrect_rate)``.

    With ``n_steps`` (per-sample steps of a padded batch) each sample's counts, targets and scaling use its
    own number of steps; with equal lengths this equals snnTorch's value.
    """
    n_total, n_out = spikes.shape[0], spikes.shape[-1]
    if n_steps is None:
        on, off = int(n_total * correct_rate), int(n_total * incorrect_rate)
        target = torch.full((spikes.shape[1], n_out), float(off), device=spikes.device, dtype=spikes.dtype)
        target.scatter_(1, targets.view(-1, 1).to(spikes.device), float(on))
        return F.mse_loss(spikes.sum(0), target) / n_total
    steps = n_steps.to(spikes.device, torch.float64)
    on = torch.floor(steps * correct_rate).to(spikes.dtype)  # int() of a positive float, as snnTorch
    off = torch.floor(steps * incorrect_rate).to(spikes.dtype)
    onehot = F.one_hot(targets.to(spikes.device), n_out).to(torch.bool)
    target = torch.where(onehot, on[:, None], off[:, None])
    per_sample = (spike_counts(spikes, n_steps) - target).pow(2).mean(1) / steps.to(spikes.dtype)
    return per_sample.mean()


def network_loss(
    kind: str,
    output: torch.Tensor,
    targets: torch.Tensor,
    n_steps: torch.Tensor | None = None,
    spec: NetworkSpec | dict | None = None,
) -> torch.Tensor:
    """Training loss: cross-entropy for an ANN, ``spike_count_loss`` for an SNN (its rates from ``spec``)."""
    if kind == "ann":
        return F.cross_entropy(output, targets)
    if spec is None:
        raise ValueError("an SNN's loss needs its network spec (correct_rate, incorrect_rate)")
    spec = as_spec(spec)
    return spike_count_loss(
        output, targets, n_steps, correct_rate=spec.correct_rate, incorrect_rate=spec.incorrect_rate
    )


def predict(kind: str, output: torch.Tensor, n_steps: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted class [B]: largest logit (ANN) or most output spikes (SNN); ties -> lowest index."""
    if kind == "ann":
        return output.argmax(-1)
    return spike_counts(output, n_steps).argmax(-1)
