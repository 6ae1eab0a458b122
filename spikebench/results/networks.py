"""The networks of a run as the study names, orders and pairs them.

:func:`network_label` is the study's name (ANN / CNN / SNN, with the dataset where an experiment has two
of a kind), :func:`network_order` the study's order (by experiment, then as configured) and
:func:`spiking_pairs` which network each experiment's cost-of-spiking summary compares with which.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spikebench.results.reading import ResultsInputError

DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "nmnist": "N-MNIST"}


def network_label(network: str, networks: Mapping[str, Mapping]) -> str:
    """The study's name of a network: ANN / CNN / SNN, with the dataset where an experiment has two of a kind
    (of the same implementation), and " (snnTorch)" for ``implementation: snntorch``."""
    spec = networks[network]
    kind = str(spec.get("kind", "")).lower()
    base = "CNN" if kind == "ann" and str(spec.get("architecture", "")).startswith("conv") else kind.upper() or network
    suffix = " (snnTorch)" if implementation(spec) == "snntorch" else ""
    same = [
        n
        for n, s in networks.items()
        if s.get("experiment") == spec.get("experiment")
        and str(s.get("kind", "")).lower() == kind
        and implementation(s) == implementation(spec)
    ]
    if len(same) > 1:
        return f"{base}: {DATASET_NAMES.get(spec.get('dataset'), str(spec.get('dataset')))}{suffix}"
    return base + suffix


# --- implementation column (network setting `implementation`) -------------------------------
def implementation(spec: Mapping) -> str:
    """The network's ``implementation`` setting (schema default ``spikebench``)."""
    return str(spec.get("implementation", "spikebench"))


# --- end implementation column ---------------------------------------------------------------


def network_order(networks: Mapping[str, Mapping], present: Iterable[str]) -> list[str]:
    """Networks in the study's order: by experiment, then as listed in the config."""
    present = list(present)
    unknown = [n for n in present if n not in networks]
    if unknown:
        raise ResultsInputError(f"networks {unknown} have results but no config entry under 'networks'")
    listed = [n for n in networks if n in present]
    return sorted(listed, key=lambda n: (int(networks[n].get("experiment", 0)), listed.index(n)))


def spiking_pairs(networks: Mapping[str, Mapping]) -> list[dict[str, Any]]:
    """Per experiment, which network is compared with which in the cost-of-spiking summary.

    With an ANN in the experiment: every SNN against it (the cost of spiking), each SNN under its own
    implementation (``implementation``: spikebench or snntorch) against the same ANN. Without one
    (experiment 3): per implementation, the second SNN against the first (N-MNIST against MNIST in
    the study), the cost of event data; an SNN/ANN ratio is n/a there.
    """
    pairs = []
    experiments = sorted({int(s["experiment"]) for s in networks.values()})
    for experiment in experiments:
        members = [n for n, s in networks.items() if int(s["experiment"]) == experiment]
        anns = [n for n in members if str(networks[n].get("kind")).lower() == "ann"]
        snns = [n for n in members if str(networks[n].get("kind")).lower() == "snn"]
        if anns:
            for snn in snns:
                pairs.append(
                    {
                        "experiment": experiment,
                        "implementation": implementation(networks[snn]),
                        "numerator": snn,
                        "denominator": anns[0],
                        "comparison": f"{network_label(snn, networks)} / {network_label(anns[0], networks)}",
                        "note": "cost of spiking: the SNN over the ANN of the same architecture and data",
                    }
                )
            continue
        for impl in dict.fromkeys(implementation(networks[n]) for n in snns):
            same = [n for n in snns if implementation(networks[n]) == impl]
            for snn in same[1:]:
                pairs.append(
                    {
                        "experiment": experiment,
                        "implementation": impl,
                        "numerator": snn,
                        "denominator": same[0],
                        "comparison": f"{network_label(snn, networks)} / {network_label(same[0], networks)}",
                        "note": (
                            "no ANN in this experiment, so SNN/ANN is n/a: shown instead is the same SNN on "
                            "event data over static rate-coded data (the cost of event data)"
                        ),
                    }
                )
    return pairs
