"""NIR export: a trained spikebench SNN as a graph of the Neuromorphic Intermediate Representation (NIR).

NIR (the ``nir`` package) is the graph format that snnTorch, Norse, SpikingJelly, Sinabs, Lava and the toolchains of
neuromorphic chips read and write. Rule ``nir_export`` (rules/nir.smk, config ``nir.enabled``) writes two graphs of
every exportable SNN from its weights file (docs/exploring.md "NIR export"):

- ``network.nir``, exact: each layer's synapses (``nir.Affine``) and its LIF neurons as NIR's leaky integrator
  ``nir.LI`` followed by ``nir.Threshold``, the subtract reset a recurrent edge ``Threshold -> nir.Scale(-threshold)
  -> LI``. Run in discrete time (forward-Euler steps of :data:`DT`; a recurrent edge carries the previous step's
  value, as nirtorch runs it) this is spikebench's LIF (:mod:`spikebench.models.lif`)::

      U[t] = beta * U[t-1] + I[t] - threshold * S[t-1],    S[t] = H(U[t] - threshold),    U[-1] = S[-1] = 0

- ``network_lif.nir``, portable: the same synapses, each layer's neurons one ``nir.LIF`` node, the neuron every NIR
  reader and chip toolchain maps. NIR's LIF sets the membrane *to* ``v_reset`` (0) in the step it fires; spikebench
  subtracts the threshold in the next step, so a reader that follows NIR runs a different network once a neuron has
  fired. snnTorch reads it (``import_from_nir``) as ``snntorch.Leaky(reset_mechanism="zero")``;
  :func:`snntorch_subtract_reset` makes those Leaky spikebench's again.

The LIF parameters follow snnTorch's NIR convention (``snntorch.export_nir``): ``tau = DT / (1 - beta)``,
``r = tau / DT``, ``v_leak = 0``, so that one Euler step ``v += DT / tau * (v_leak - v + r * I)`` is
``v = beta * v + I``, and ``import_from_nir`` reads ``beta = 1 - DT / tau`` back. ``beta = 1`` (no leak) is ``nir.I``
(``nir.IF``) with ``r = 1 / DT``.

Not in the graphs: the rate coding of the images (the graphs' input is one time step's input spikes, the image
flattened in C-order, as ``torch.flatten``), the prediction from the output spike counts, dropout and the surrogate
gradient (training only). The convolutional SNNs (experiments 2 and 3) are not exported: each of their convolutions
is followed by a 2x2 max-pool of the synaptic currents, and NIR (1.0) has no max-pool node (``SumPool2d`` and
``AvgPool2d`` sum and average) nor a node that computes a maximum of real values, so no NIR graph computes them.

:func:`from_nir` runs a graph in PyTorch through ``nirtorch.nir_to_torch`` with NIR's nodes stepped by forward Euler
(:func:`node_map`). The functions the workflow calls while it builds its DAG (:func:`enabled`,
:func:`not_exportable`, :func:`targets`, :func:`check_installed`, :func:`code_digest`) import no torch, nir or
nirtorch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikebench import provenance
from spikebench.spec import NetworkSpec, as_spec

#: The time step (seconds) that the graphs' time constants are written for: snnTorch's NIR convention.
DT = 1e-4
#: The two graphs (neuron mapping: file name in ``<results>/<network>/``).
FILES = {"exact": "network.nir", "lif": "network_lif.nir"}
#: What the export needs; the extra ``.[nir]`` of pyproject.toml installs it.
MODULES = ("nir", "nirtorch")
#: Files of spikebench/ an export job runs besides its network's model code (``provenance.model_files``).
STAGE_FILES = ("nir_export.py", "evaluation.py", "implementation.py", "atomic.py")


class NIRExportError(ValueError):
    """A network that no NIR graph represents."""


MAX_POOL = (
    "its convolutions are followed by a 2x2 max-pool of the synaptic currents, and NIR has no max-pool node "
    "(SumPool2d and AvgPool2d sum and average) nor any node that computes a maximum: no NIR graph computes it"
)


# ---- what the workflow asks while it builds its DAG (no torch, nir or nirtorch) -------------------------


def enabled(config: Mapping[str, Any]) -> bool:
    """Config ``nir.enabled`` (default false, the schema's)."""
    return bool((config.get("nir") or {}).get("enabled", False))


def not_exportable(spec: NetworkSpec | Mapping[str, Any]) -> str | None:
    """Why the network of ``spec`` has no NIR graph, or None when it has one."""
    spec = as_spec(spec)
    if spec.kind != "snn":
        return f"{spec.name} is an {spec.kind.upper()}: only SNNs are exported to NIR"
    if spec.architecture != "fc":
        return f"{spec.name}: {MAX_POOL}"
    return None


def targets(config: Mapping[str, Any], results: str, runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Both graphs of every exportable run (``runs``: spikebench.config.expand_runs); none unless ``nir.enabled``."""
    if not enabled(config):
        return []
    return [
        f"{results}/{run_id}/{name}"
        for run_id, run in runs.items()
        if not_exportable(as_spec(run["spec"], run_id)) is None
        for name in FILES.values()
    ]


def missing_modules() -> list[str]:
    """The packages of :data:`MODULES` that cannot be imported here."""

    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    return [m for m in MODULES if absent(m)]


def check_installed() -> None:
    """Raise :class:`ModuleNotFoundError` naming the extra to install when nir or nirtorch is absent."""
    missing = missing_modules()
    if missing:
        raise ModuleNotFoundError(
            f"config key 'nir.enabled' is true, but the Python package(s) {', '.join(missing)} are not installed. "
            'Install them with: pip install -e ".[nir]" (or set nir.enabled: false)'
        )


def code_digest(spec: NetworkSpec | Mapping[str, Any]) -> str:
    """SHA-256 of the code an export job of this network runs: its model code, this module, the weights loader."""
    digest = hashlib.sha256()
    for module in (*provenance.model_files(spec), *STAGE_FILES):
        digest.update(f"{module}\n".encode() + (provenance.PACKAGE / module).read_bytes())
    digest.update(json.dumps(provenance.network_defaults(), sort_keys=True).encode())
    return digest.hexdigest()


# ---- spikebench SNN -> NIR graph ----------------------------------------------------------------------


def _layers(net) -> list[tuple[Any, float, float]]:
    """(synapse, beta, threshold) of each layer of a spikebench SNN or of its snnTorch twin."""
    from torch import nn

    from spikebench.models.lif import Leaky

    name = getattr(net, "name", type(net).__name__)
    layers = []
    for i, stage in enumerate(getattr(net, "stages", None) or [], start=1):
        lif = stage.lif
        if stage.pool:
            raise NIRExportError(f"{name} layer {i}: {MAX_POOL}")
        if not isinstance(stage.synapse, nn.Linear):
            raise NIRExportError(
                f"{name} layer {i}: only Linear synapses are mapped, not {type(stage.synapse).__name__}"
            )
        if stage.flatten and i > 1:
            raise NIRExportError(f"{name} layer {i}: a flatten after the first layer is not mapped")
        if not isinstance(lif, Leaky) and (
            getattr(lif, "reset_mechanism", None) != "subtract" or not getattr(lif, "reset_delay", False)
        ):
            raise NIRExportError(f"{name} layer {i}: only spikebench's LIF (delayed subtract reset) is mapped")
        beta, threshold = (float(v.item() if hasattr(v, "item") else v) for v in (lif.beta, lif.threshold))
        layers.append((stage.synapse, beta, threshold))
    if not layers:
        raise NIRExportError(f"{name} is no spikebench SNN: nothing to export")
    return layers


def lif_parameters(beta: float, threshold: float, n: int) -> dict:
    """NIR's LIF parameters of spikebench's ``beta`` and ``threshold`` for ``n`` neurons (float64 arrays):
    ``tau = DT / (1 - beta)`` (None for ``beta = 1``: no leak), ``r = tau / DT`` (then ``1 / DT``), ``v_leak = 0``,
    ``v_threshold = threshold``, ``v_reset = 0``."""
    import numpy as np

    ones = np.ones(n, dtype=np.float64)
    tau = None if beta >= 1.0 else DT / (1.0 - beta) * ones
    return {
        "tau": tau,
        "r": ones / DT if tau is None else tau / DT,
        "v_leak": 0.0 * ones,
        "v_threshold": threshold * ones,
        "v_reset": 0.0 * ones,
    }


def _synapse_node(synapse):
    import nir

    weight = synapse.weight.detach().cpu().float().numpy()
    if synapse.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=synapse.bias.detach().cpu().float().numpy())


def _neuron_nodes(i: int, beta: float, threshold: float, n: int, neuron: str) -> tuple[dict, list, str, str]:
    """(nodes, edges, entry node, exit node) of layer ``i``'s neurons: LI + Threshold + reset, or one LIF."""
    import nir
    import numpy as np

    p = lif_parameters(beta, threshold, n)
    if neuron == "lif":
        if p["tau"] is None:
            node = nir.IF(r=p["r"], v_threshold=p["v_threshold"], v_reset=p["v_reset"])
        else:
            node = nir.LIF(**p)
        return {f"lif{i}": node}, [], f"lif{i}", f"lif{i}"
    membrane, spike, reset = f"membrane{i}", f"spike{i}", f"reset{i}"
    nodes = {
        membrane: nir.I(r=p["r"]) if p["tau"] is None else nir.LI(tau=p["tau"], r=p["r"], v_leak=p["v_leak"]),
        spike: nir.Threshold(threshold=p["v_threshold"]),
        reset: nir.Scale(scale=-p["v_threshold"].astype(np.float32)),
    }
    return nodes, [(membrane, spike), (spike, reset), (reset, membrane)], membrane, spike


def to_nir(net, neuron: str = "exact"):
    """The ``nir.NIRGraph`` of a spikebench SNN (or its snnTorch twin); ``neuron``: ``exact`` (LI + Threshold +
    subtract-reset edge) or ``lif`` (NIR's LIF, reset to zero). A network that NIR cannot represent (a max-pool,
    :func:`not_exportable`) raises :class:`NIRExportError`."""
    import nir
    import numpy as np

    if neuron not in FILES:
        raise ValueError(f"neuron {neuron!r}: expected one of {', '.join(FILES)}")
    layers = _layers(net)
    size = np.array([layers[0][0].in_features], dtype=np.int64)  # the image, flattened
    nodes: dict = {"input": nir.Input(input_type={"input": size})}
    edges: list = []
    last = "input"
    for i, (synapse, beta, threshold) in enumerate(layers, start=1):
        nodes[f"synapse{i}"] = _synapse_node(synapse)
        layer_nodes, layer_edges, entry, last_node = _neuron_nodes(i, beta, threshold, synapse.out_features, neuron)
        nodes.update(layer_nodes)
        edges += [(last, f"synapse{i}"), (f"synapse{i}", entry), *layer_edges]
        last = last_node
    nodes["output"] = nir.Output(output_type={"output": np.array([layers[-1][0].out_features], dtype=np.int64)})
    edges.append((last, "output"))
    metadata = {"source": "spikebench", "network": net.name, "neuron": neuron, "dt": DT}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write(graph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` (NIR's HDF5 file) atomically: a temporary file beside it, then renamed."""
    import nir

    from spikebench.atomic import atomic_output

    with atomic_output(path) as tmp:
        nir.write(tmp, graph)


def export_job(network_id: str, spec: NetworkSpec, weights: str | Path, outputs: Mapping[str, str], which: str, log):
    """Rule nir_export: the ``which`` (last | best_val) weights of ``weights`` as both graphs (``outputs``, keyed
    like :data:`FILES`)."""
    from spikebench.evaluation import load_weights

    reason = not_exportable(spec)
    if reason is not None:
        raise NIRExportError(reason)
    net, epoch = load_weights(Path(weights), spec, network_id=network_id, which=which)
    log.info("%s: %s weights (epoch %s) of %s", network_id, which, epoch, weights)
    for neuron in FILES:
        graph = to_nir(net.eval(), neuron)
        graph.metadata.update({"weights": which, "epoch": -1 if epoch is None else int(epoch)})
        write(graph, outputs[neuron])
        nodes, edges = len(graph.nodes), len(graph.edges)
        log.info("wrote %s (%s neurons: %d nodes, %d edges; dt %g s)", outputs[neuron], neuron, nodes, edges, DT)


# ---- NIR graph -> PyTorch (forward Euler, one call per time step) -------------------------------------


@functools.cache
def _neuron_modules() -> dict:
    """The PyTorch modules of NIR's neuron and threshold nodes (defined on first use: importing this module
    imports no torch)."""
    import torch
    from torch import nn

    class Integrator(nn.Module):
        """``nir.LI`` / ``nir.I``, one Euler step: ``v = decay * v + gain * x`` (a factor 1 or None is skipped)."""

        def __init__(self, decay, gain) -> None:
            super().__init__()
            self.register_buffer("decay", decay)
            self.register_buffer("gain", gain)

        def integrate(self, x, v):
            x = x if self.gain is None else x * self.gain
            if v is None:
                return x
            return x + v if self.decay is None else torch.mul(v, self.decay).add_(x)

        def forward(self, x, state=None):
            v = self.integrate(x, state)
            return v, v

    class Firing(Integrator):
        """``nir.LIF`` / ``nir.IF``: integrate, spike where ``v > v_threshold``, set those to ``v_reset``."""

        def __init__(self, decay, gain, threshold, v_reset) -> None:
            super().__init__(decay, gain)
            self.register_buffer("threshold", threshold)
            self.register_buffer("v_reset", v_reset)

        def forward(self, x, state=None):
            v = self.integrate(x, state)
            z = (v > self.threshold).to(x.dtype)
            return z, torch.where(z > 0, self.v_reset, v)

    class Heaviside(nn.Module):
        """``nir.Threshold``: 1 where ``x > threshold``, else 0."""

        def __init__(self, threshold) -> None:
            super().__init__()
            self.register_buffer("threshold", threshold)

        def forward(self, x):
            return (x > self.threshold).to(x.dtype)

    class Scale(nn.Module):
        """``nir.Scale``: ``x * scale``."""

        def __init__(self, scale) -> None:
            super().__init__()
            self.register_buffer("scale", scale)

        def forward(self, x):
            return x * self.scale

    return {"Integrator": Integrator, "Firing": Firing, "Heaviside": Heaviside, "Scale": Scale}


def _f32(value):
    import numpy as np
    import torch

    return torch.from_numpy(np.array(value, dtype=np.float32))


def euler_step(tau, r) -> tuple[Any, Any]:
    """(decay, gain) of one forward-Euler step of ``DT`` of ``tau dv/dt = -v + r I`` (``tau`` None:
    ``dv/dt = r I``): ``1 - DT / tau`` and ``DT r / tau``, computed in float64 and rounded once to float32 tensors,
    None where they are 1 (so that the step is ``v = beta * v + I``, as spikebench computes it)."""
    import numpy as np

    def factor(value):
        return None if np.all(value == 1.0) else _f32(value)

    r = np.asarray(r, dtype=np.float64)
    if tau is None:
        return None, factor(DT * r)
    tau = np.asarray(tau, dtype=np.float64)
    return factor(1.0 - DT / tau), factor(DT * r / tau)


def node_map() -> dict:
    """nirtorch's node map of the nodes spikebench writes (and ``nir.IF``), NIR's definitions stepped by forward Euler.
    Affine is mapped here too: nirtorch 2.6's default mapping leaves its bias unset."""
    import nir
    import torch

    m = _neuron_modules()

    def affine(node):
        module = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
        module.weight.data, module.bias.data = _f32(node.weight), _f32(node.bias)
        return module

    return {
        nir.Affine: affine,
        nir.LI: lambda n: m["Integrator"](*euler_step(n.tau, n.r)),
        nir.I: lambda n: m["Integrator"](*euler_step(None, n.r)),
        nir.LIF: lambda n: m["Firing"](*euler_step(n.tau, n.r), _f32(n.v_threshold), _f32(n.v_reset)),
        nir.IF: lambda n: m["Firing"](*euler_step(None, n.r), _f32(n.v_threshold), _f32(n.v_reset)),
        nir.Threshold: lambda n: m["Heaviside"](_f32(n.threshold)),
        nir.Scale: lambda n: m["Scale"](_f32(n.scale)),
    }


def read(path: str | Path):
    """The ``nir.NIRGraph`` of a .nir file."""
    import nir

    return nir.read(path)


def from_nir(graph):
    """A NIR graph (or a .nir file) as a PyTorch module ``forward(x [T, B, ...]) -> output spikes [T, B, N]``:
    ``nirtorch.nir_to_torch`` with :func:`node_map`, called once per time step from a zero state."""
    import nirtorch
    import torch

    if isinstance(graph, (str, Path)):
        graph = read(graph)
    step = nirtorch.nir_to_torch(graph, node_map())
    size = [int(d) for d in next(iter(graph.inputs.values())).input_type["input"]]

    class NIRNetwork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.step = step

        def forward(self, x):
            x = x.reshape(x.shape[0], x.shape[1], *size)
            state, out = None, []
            for t in range(x.shape[0]):
                z, state = self.step(x[t], state)
                out.append(z)
            return torch.stack(out)

    return NIRNetwork()


def snntorch_subtract_reset(module):
    """Give every ``snntorch.Leaky`` of ``module`` (what ``snntorch.import_nir.import_from_nir`` made of
    ``network_lif.nir``: reset to zero, no reset delay) spikebench's reset: subtract the threshold, one step later.
    Returns ``module``, its Leaky replaced by ones with the same beta, threshold and ``init_hidden``."""
    import snntorch

    for name, child in list(module.named_children()):
        if isinstance(child, snntorch.Leaky):
            leaky = snntorch.Leaky(
                beta=child.beta.detach().clone(),
                threshold=child.threshold.detach().clone(),
                reset_mechanism="subtract",
                reset_delay=True,
                init_hidden=child.init_hidden,
            )
            setattr(module, name, leaky)
        else:
            snntorch_subtract_reset(child)
    return module
