"""Overhead of operation counting (spikebench.opcounts) on the evaluation of each network (target: under 10 %).

For each network the script builds it (Kaiming-initialised: counting reads the tensors, whatever the weights),
loads its official test set with the evaluate job's own loader, and times ``run_batches`` (what
``evaluate_network`` runs) alternately without and with an :class:`~spikebench.opcounts.OperationCounter`, in
ABBA order over ``--rounds`` rounds (slow drifts of a shared machine cancel). The "with" side includes reading
the counts back (``layer_rows``), so it is the whole cost counting adds to an evaluate job. It prints the median
seconds of each side and the overhead, (with - without) / without, and checks that the predictions are identical.

Run from the repository root after the demo has made its data (``snakemake ... --configfile config.demo.yaml``)::

    PYTHONPATH=. python benchmarks/bench_opcounts.py
    PYTHONPATH=. python benchmarks/bench_opcounts.py --configs config.yaml --networks exp1_snn --device cuda

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from spikebench.config import load_config
from spikebench.data import catalog
from spikebench.data.device import load_test_data
from spikebench.models import build_network
from spikebench.opcounts import OperationCounter
from spikebench.training import run_batches, synchronize


def timed(net, spec, test, device, counting: bool) -> tuple[float, torch.Tensor]:
    generator = torch.Generator(device=device).manual_seed(0)
    counter = OperationCounter(net) if counting else None
    synchronize(device)
    t0 = time.perf_counter()
    _, _, preds = run_batches(
        net, spec, test, int(spec["batch_size"]), generator, want_predictions=True, counter=counter
    )
    if counter is not None:
        counter.close()
        counter.layer_rows()
    synchronize(device)
    return time.perf_counter() - t0, preds


def bench(network: str, config: dict, device: torch.device, rounds: int) -> dict:
    spec = {**config["networks"][network], "_name": network}
    files = catalog.nmnist_frames(config["results"], "test") if spec["dataset"] == "nmnist" else None
    test = load_test_data(
        spec, Path(config["data"]["root"]), files, device, verify_md5=config["data"]["source"] == "download"
    )
    net = build_network(spec, network).to(device)
    timed(net, spec, test, device, False)  # warm-up (numba compilation, caches)
    times: dict[bool, list[float]] = {False: [], True: []}
    preds = {}
    for r in range(rounds):
        for counting in (False, True) if r % 2 == 0 else (True, False):
            seconds, preds[counting] = timed(net, spec, test, device, counting)
            times[counting].append(seconds)
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    return {
        "network": network,
        "n_test": len(test),
        "without_s": without,
        "with_s": with_,
        "overhead_pct": 100.0 * (with_ - without) / without,
        "same_predictions": torch.equal(preds[0], preds[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["config.yaml", "config.demo.yaml"])
    parser.add_argument("--networks", nargs="*", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(*args.configs)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, configs {args.configs}")
    print("| network | test samples | without (s) | with counting (s) | overhead | predictions identical |")
    print("|---|---|---|---|---|---|")
    for network in args.networks or list(config["networks"]):
        r = bench(network, config, device, args.rounds)
        print(
            f"| {r['network']} | {r['n_test']} | {r['without_s']:.3f} | {r['with_s']:.3f} | "
            f"{r['overhead_pct']:+.1f}% | {r['same_predictions']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
