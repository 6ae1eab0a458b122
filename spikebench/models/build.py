"""``build_network(spec)``: the network one ``networks:`` entry describes, Kaiming-initialised."""

from __future__ import annotations

from torch import nn

from spikebench.models.ann import ANN
from spikebench.models.base import kaiming_init_
from spikebench.models.conv2 import build_conv2
from spikebench.models.conv5 import build_conv5
from spikebench.models.fc import build_fc
from spikebench.models.lif import Leaky
from spikebench.models.snn import SNN
from spikebench.spec import NetworkSpec, NetworkSpecError, as_spec

# One builder per architecture: spikebench.provenance hashes a network's builder (not the others),
# so editing one architecture reruns only the jobs of the networks that use it.
ARCHITECTURES = {"fc": build_fc, "conv5": build_conv5, "conv2": build_conv2}


def build_network(spec: NetworkSpec | dict, name: str | None = None) -> ANN | SNN:
    """Build the network that one ``networks:`` entry of config.yaml describes (Kaiming-initialised).

    ``spec``: the run's :class:`spikebench.spec.NetworkSpec` (a plain entry is turned into one); ``name``
    overrides its name."""
    spec = as_spec(spec, name)
    lif = None
    if spec.kind == "snn":
        if spec.surrogate != "atan":
            raise NetworkSpecError(f"{spec.name}: only the 'atan' surrogate is implemented, got {spec.surrogate!r}")
        beta, threshold = spec.beta, spec.threshold

        def lif() -> Leaky:
            return Leaky(beta, threshold)

    shape = spec.input_shape
    layers = ARCHITECTURES[spec.architecture](spec, spec.name, shape, lif)
    net: ANN | SNN = SNN(spec.name, shape, layers) if lif is not None else ANN(spec.name, shape, nn.Sequential(*layers))
    kaiming_init_(net)
    return net
