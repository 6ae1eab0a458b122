"""``build_network(spec)``: the network one ``networks:`` entry describes, Kaiming-initialised."""

from __future__ import annotations

from torch import nn

from spikebench.models.ann import ANN
from spikebench.models.base import NetworkSpecError, input_shape, kaiming_init_, require
from spikebench.models.conv2 import build_conv2
from spikebench.models.conv5 import build_conv5
from spikebench.models.fc import build_fc
from spikebench.models.lif import Leaky
from spikebench.models.snn import SNN

# One builder per architecture: spikebench.provenance hashes a network's builder (not the others),
# so editing one architecture reruns only the jobs of the networks that use it.
ARCHITECTURES = {"fc": build_fc, "conv5": build_conv5, "conv2": build_conv2}

def build_network(spec: dict, name: str | None = None) -> ANN | SNN:
    """Build the network that one ``networks:`` entry of config.yaml describes (Kaiming-initialised)."""
    name = name or spec.get("_name") or f"{spec.get('architecture')}_{spec.get('kind')}"
    kind, arch = spec.get("kind"), spec.get("architecture")
    if kind not in ("ann", "snn"):
        raise NetworkSpecError(f"{name}: unknown kind {kind!r}; expected 'ann' or 'snn'")
    if arch not in ARCHITECTURES:
        raise NetworkSpecError(f"{name}: unknown architecture {arch!r}; expected 'fc', 'conv5' or 'conv2'")
    shape = input_shape({**spec, "_name": name})
    lif = None
    if kind == "snn":
        if spec.get("surrogate", "atan") != "atan":
            raise NetworkSpecError(f"{name}: only the 'atan' surrogate is implemented, got {spec.get('surrogate')!r}")
        beta, threshold = float(require(spec, "beta", name)), float(require(spec, "threshold", name))

        def lif() -> Leaky:
            return Leaky(beta, threshold)

    layers = ARCHITECTURES[arch](spec, name, shape, lif)
    net: ANN | SNN = SNN(name, shape, layers) if lif is not None else ANN(name, shape, nn.Sequential(*layers))
    kaiming_init_(net)
    return net
