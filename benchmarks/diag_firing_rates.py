"""Per-layer firing rates of a trained SNN on its test set (a diagnostic, not shipped logic).

A deep SNN whose later layers stop firing passes no gradient through their surrogate and cannot learn.
Usage (after the demo ran)::

    python benchmarks/diag_firing_rates.py --configfile config.demo.yaml --network exp2_snn [--untrained]

Prints, per stage, the fraction of neuron-steps that spiked and the fraction of neurons that never spiked
over the batch, plus the membrane potential's mean and 99th percentile against the threshold.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from spikebench.config import load_config
from spikebench.data.device import encode_batch, load_test_data
from spikebench.evaluation import load_weights
from spikebench.models import build_network


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configfile", nargs="+", default=["config.yaml", "config.demo.yaml"])
    ap.add_argument("--network", default="exp2_snn")
    ap.add_argument("--untrained", action="store_true", help="the Kaiming-initialised network instead")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override the network's settings, e.g. threshold=0.5 num_steps=10 (values as YAML)",
    )
    args = ap.parse_args()
    config = load_config(*args.configfile)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    spec = {**config["networks"][args.network], **overrides, "_name": args.network}
    if args.untrained:
        torch.manual_seed(config["seed"])
        net = build_network(spec, args.network)
    else:
        net, _ = load_weights(Path(config["results"]) / args.network / "weights.pt", spec, network_id=args.network)
    net.eval()
    test = load_test_data(spec, Path(config["data"]["root"]), None, torch.device("cpu"))
    x, n_steps = encode_batch(spec, test, torch.arange(min(args.samples, len(test))), torch.Generator().manual_seed(1))
    print(
        f"{args.network} ({'untrained' if args.untrained else 'trained'}), T={x.shape[0]}, "
        f"input spike rate {x.float().mean():.3f}, threshold {net.stages[0].lif.threshold}"
    )
    z = x.reshape(x.shape[0], x.shape[1], *net.input_shape)
    with torch.no_grad():
        for i, stage in enumerate(net.stages):
            z, mem = stage(z)
            per_neuron = z.float().mean(dim=(0, 1))
            print(
                f"stage {i} {type(stage.synapse).__name__:7s} out {tuple(z.shape[2:])}: "
                f"rate {z.float().mean():.4f}, silent neurons {(per_neuron == 0).float().mean():.1%}, "
                f"membrane mean {mem.mean():+.3f}, p99 {torch.quantile(mem.flatten()[:2_000_000], 0.99):+.3f}"
            )
    counts = z.sum(0)
    print("output spike counts per class (mean over samples):", [round(v, 2) for v in counts.mean(0).tolist()])
    print("samples with no output spike:", f"{(counts.sum(1) == 0).float().mean():.1%}")


if __name__ == "__main__":
    main()
