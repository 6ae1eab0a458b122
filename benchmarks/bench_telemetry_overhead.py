"""Overhead of the telemetry sidecar on a training epoch (target: under 1 % at the default interval).

The script times a fixed CPU workload, a small PyTorch training loop (an MLP on random data,
calibrated to about ``--epoch-s`` seconds per "epoch"), alternately without and with a
:class:`spikebench.telemetry.TelemetrySampler` running at ``--interval-s`` (default 0.1 s, the
config's default), in the same process, in ABBA order (so slow drifts of a shared machine cancel),
for ``--rounds`` rounds. It prints

1. the median epoch wall time of each side and the end-to-end overhead, (with - without) / without,
   plus the spread of the paired differences (on a shared machine the noise can exceed the effect),
   and the same for the process's CPU time per epoch (all its threads, the sampler's included),
   which other tenants of a shared machine disturb far less than wall time;
2. the sampling thread's own CPU time per epoch (its pthread CPU clock, ns resolution)
   as % of the epoch: a low-noise measure of what the sampler takes from the job;
3. the cost of one sample (µs), timed directly, and that cost times the sampling rate.

Run from the repository root (about 1 minute with the defaults)::

    PYTHONPATH=. python benchmarks/bench_telemetry_overhead.py
    PYTHONPATH=. python benchmarks/bench_telemetry_overhead.py --rounds 6 --epoch-s 5 --device cuda

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spikebench.hardware import hardware_info
from spikebench.telemetry import TelemetrySampler


def make_workload(device: torch.device, seed: int = 0):
    """A small training loop: MLP 784-256-256-10, batch 128, Adam; returns step()."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(128, 784, device=device)
    y = torch.randint(0, 10, (128,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_epoch(step, steps: int, device: torch.device) -> tuple[float, float]:
    """Run one epoch; returns (wall seconds, process CPU seconds: all threads, the sampler's too)."""
    sync(device)
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def thread_cpu_s(ident: int | None) -> float:
    """CPU time of one thread (CLOCK_THREAD_CPUTIME_ID of that pthread: ns resolution, Unix)."""
    if ident is None:
        return float("nan")
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--interval-s", type=float, default=0.1)
    parser.add_argument("--epoch-s", type=float, default=3.0, help="target seconds per epoch")
    parser.add_argument("--rounds", type=int, default=4, help="ABBA rounds (each: 2 epochs without, 2 with)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    info = hardware_info(device)
    print(
        f"device {device} ({info['device_name']}), torch {info['torch_version']}, "
        f"{torch.get_num_threads()} torch threads, "
        f"{info['cpu_count']} CPUs, host {info['host_name']}"
    )
    step = make_workload(device)
    for _ in range(20):  # warm-up
        step()
    probe = max(1, int(0.5 / max(run_epoch(step, 20, device)[0] / 20, 1e-6)))
    per_step = run_epoch(step, probe, device)[0] / probe
    steps = max(1, round(args.epoch_s / per_step))
    print(f"workload: {steps} training steps per epoch (~{steps * per_step:.2f} s); interval {args.interval_s} s")

    without: list[tuple[float, float]] = []
    with_sampler: list[tuple[float, float]] = []
    thread_share: list[float] = []
    n_samples: list[int] = []
    for r in range(args.rounds):
        for use in (False, True, True, False) if r % 2 == 0 else (True, False, False, True):
            if not use:
                without.append(run_epoch(step, steps, device))
                continue
            with TelemetrySampler(device, interval_s=args.interval_s) as sampler:
                sampler.phase("train", r)
                ident = sampler.thread.ident if sampler.thread else None
                cpu0 = thread_cpu_s(ident)
                wall, cpu = run_epoch(step, steps, device)
                cpu1 = thread_cpu_s(ident)
                sampler.phase("idle")
            with_sampler.append((wall, cpu))
            thread_share.append((cpu1 - cpu0) / wall * 100)
            n_samples.append(sampler.phase_summary("train", r)["n_samples"])
        w_o = statistics.median(w for w, _ in without[-2:])
        w_s = statistics.median(w for w, _ in with_sampler[-2:])
        print(f"round {r}: without {w_o:.3f} s, with {w_s:.3f} s")

    # Cost of one sample, timed directly (the sampler's own sampling routine, lock held).
    sampler = TelemetrySampler(device, interval_s=3600.0).start()
    batches = []
    for _ in range(5):  # the best of 5 batches of 200: the cost itself, not the neighbours' load
        start = time.perf_counter()
        for _ in range(200):
            with sampler._lock:
                sampler._sample_locked(torch_peak=False)
        batches.append((time.perf_counter() - start) / 200 * 1e6)
    per_sample_us = min(batches)
    source = sampler.source
    sampler.stop()

    def report(label: str, k: int) -> None:
        off = [x[k] for x in without]
        on = [x[k] for x in with_sampler]
        m_off, m_on = statistics.median(off), statistics.median(on)
        pairs = [(a - b) / b * 100 for a, b in zip(on, off)]
        print(
            f"{label}: median without {m_off:.4f} s, with {m_on:.4f} s "
            f"-> overhead {(m_on - m_off) / m_off * 100:+.2f} % "
            f"(paired: median {statistics.median(pairs):+.2f} %, range {min(pairs):+.2f} .. {max(pairs):+.2f} %)"
        )

    print()
    print(
        f"epochs: {len(without)} without, {len(with_sampler)} with the sampler "
        f"({statistics.median(n_samples)} samples per epoch)"
    )
    report("epoch wall time       ", 0)
    report("epoch process CPU time", 1)
    print(f"sampling thread CPU time: {statistics.median(thread_share):.3f} % of epoch time (median)")
    print(
        f"one sample ({source}): {per_sample_us:.1f} us -> {per_sample_us / (args.interval_s * 1e6) * 100:.3f} % "
        f"of one core at {args.interval_s} s"
    )


if __name__ == "__main__":
    main()
