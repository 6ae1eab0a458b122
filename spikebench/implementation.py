"""Which code runs a network: the one place that chooses by the network setting ``implementation``.

``spikebench`` (the default; every ANN): :mod:`spikebench.models` (fused LIF over all time steps, CPU kernels)
and :func:`spikebench.data.device.rate_code`. ``snntorch`` (SNNs only): the study's own code path,
:mod:`spikebench.models.snntorch_twin` (``snntorch.Leaky`` per time step, ``spikegen.rate``, ``mse_count_loss``).
Training, evaluation, the data path and telemetry are the same for both: they call the functions of
:func:`implementation_of`, and :func:`encode_batch` for a batch's input (the rate-coding dispatch lives here, so
that ``spikebench.data`` imports no model code). Every function takes the run's
:class:`spikebench.spec.NetworkSpec` (a plain config entry is turned into one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spikebench import models
from spikebench.spec import NetworkSpec, NetworkSpecError, as_spec

IMPLEMENTATIONS = ("spikebench", "snntorch")


@dataclass(frozen=True)
class Implementation:
    """The builder, loss, prediction and rate coding of one implementation."""

    name: str
    #: ``build(spec, name) -> nn.Module`` (Kaiming-initialised from the global RNG)
    build: Callable[..., torch.nn.Module]
    #: ``loss(spec, output, targets, n_steps) -> scalar``
    loss: Callable[..., torch.Tensor]
    #: ``predict(spec, output, n_steps) -> classes [B]``
    predict: Callable[..., torch.Tensor]
    #: ``rate_code(x, num_steps, generator) -> spikes [T, *x.shape]``
    rate_code: Callable[..., torch.Tensor]


def _spikebench_loss(spec: NetworkSpec, output, targets, n_steps=None):
    spec = as_spec(spec)
    return models.network_loss(spec.kind, output, targets, n_steps, spec)


def _predict(spec: NetworkSpec, output, n_steps=None):
    return models.predict(as_spec(spec).kind, output, n_steps)


def _spikebench() -> Implementation:
    from spikebench.data.device import rate_code

    return Implementation("spikebench", models.build_network, _spikebench_loss, _predict, rate_code)


def _snntorch() -> Implementation:
    from spikebench.models import snntorch_twin as m  # imports snntorch only for the networks that use it

    return Implementation("snntorch", m.build_snntorch_network, m.snntorch_loss, _predict, m.rate_code)


_CHOICES = {"spikebench": _spikebench, "snntorch": _snntorch}


def implementation_of(spec: NetworkSpec | dict) -> Implementation:
    """The implementation that ``spec.implementation`` names (its default is the schema's, ``spikebench``)."""
    spec = as_spec(spec)
    if spec.implementation not in _CHOICES:
        raise NetworkSpecError(
            f"{spec.name}: implementation {spec.implementation!r}: expected one of {', '.join(IMPLEMENTATIONS)}"
        )
    if spec.implementation == "snntorch" and spec.kind != "snn":
        raise NetworkSpecError(
            f"{spec.name}: implementation 'snntorch' is for SNNs (kind {spec.kind!r}); use implementation: spikebench"
        )
    return _CHOICES[spec.implementation]()


def encode_batch(
    spec: NetworkSpec | dict, data, idx: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Network input for samples ``idx`` of ``data``, rate-coded (SNN on images) by the network's implementation:
    :func:`spikebench.data.device.encode_batch` with :attr:`Implementation.rate_code`. The rate-coding dispatch
    lives here, so that ``spikebench.data`` imports no model code."""
    from spikebench.data.device import encode_batch as encode

    spec = as_spec(spec)
    return encode(spec, data, idx, generator, implementation_of(spec).rate_code)
