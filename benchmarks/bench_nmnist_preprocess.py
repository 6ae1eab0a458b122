"""N-MNIST frames: tonic's per-sample pipeline vs spikebench's compiled core and whole preprocess job.

    python benchmarks/bench_nmnist_preprocess.py [--data DIR] [--filter-us 10000] [--window-us 1000]
                                                 [--rounds 3] [--threads 1 2]

tonic: ``tonic.io.read_mnist_file`` (what ``tonic.datasets.NMNIST.__getitem__`` does) followed by
``Compose([Denoise(filter_time), ToFrame((34, 34, 2), time_window)])``, one recording at a time.

1. Per recording: ``spikebench.data.nmnist.recording_frames`` (read + decode + denoise + frames,
   sparse cells), and the same followed by ``to_dense()`` (tonic's dense int16 frames). Both include
   reading the files. Timed interleaved with tonic, 50 recordings at a time, so a busy machine slows
   both alike. Afterwards every recording's frames are compared (untimed): they must be identical.
2. The job: ``preprocess_split`` exactly as ``scripts/preprocess_nmnist.py`` calls it for the rule
   ``preprocess_nmnist`` (every split folder under --data, reading the files from disk, writing the
   frames and samples Parquet to a temporary folder), with each of --threads. Each round times tonic
   on the same files, then the job with each thread count, so each ratio compares runs seconds apart;
   the table gives the median ratio and the range over the rounds, the load average, and the CPU
   time per sample (the job's: all its threads) with its ratio, which a busy machine disturbs less. The job's
   one-time costs (numba's cache load, pyarrow's first use) are
   paid once before the rounds and reported; a last line times the whole job script in a fresh
   Python process (interpreter, imports, numba cache load included), for reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from spikebench.data import nmnist  # noqa: E402


def recordings(data: Path) -> list[Path]:
    """``<split>/<digit>/*.bin`` (or ``<digit>/*.bin``) under data, in tonic's order per split."""
    files = sorted(data.glob("*/[0-9]/*.bin")) or sorted(data.glob("[0-9]/*.bin"))
    if not files:
        raise SystemExit(f"no N-MNIST recordings (<split>/<digit>/*.bin) under {data}")
    return files


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min) on {len(os.sched_getaffinity(0))} cores"


def per_recording(files: list[Path], args, run_tonic) -> None:
    """Section 1: tonic vs recording_frames (+ to_dense), interleaved 50 recordings at a time."""

    def run_core(f: Path) -> nmnist.RecordingFrames:
        return nmnist.recording_frames(f, args.filter_us, args.window_us)

    def run_core_dense(f: Path) -> np.ndarray:
        return nmnist.recording_frames(f, args.filter_us, args.window_us).to_dense()

    start = time.perf_counter()
    run_core(files[0])  # numba: compile, or load the on-disk cache
    print(f"numba compile/cache load (first call, untimed below): {time.perf_counter() - start:.2f} s")
    run_tonic(files[0])
    totals = {"tonic": 0.0, "core": 0.0, "core_dense": 0.0}
    runners = {"tonic": run_tonic, "core": run_core, "core_dense": run_core_dense}
    for lo in range(0, len(files), 50):
        for name, fn in runners.items():
            chunk = files[lo : lo + 50]
            start = time.perf_counter()
            for f in chunk:
                fn(f)
            totals[name] += time.perf_counter() - start
    n = len(files)
    rate = {name: n / seconds for name, seconds in totals.items()}
    labels = {
        "tonic": "tonic read_mnist_file + Denoise + ToFrame",
        "core": "spikebench recording_frames (sparse cells)",
        "core_dense": "spikebench recording_frames + to_dense",
    }
    print(f"{'per recording':<44}{'samples/s':>12}{'ms/sample':>12}{'vs tonic':>10}")
    for name in totals:
        print(
            f"{labels[name]:<44}{rate[name]:>12.1f}{1e3 * totals[name] / n:>12.3f}{rate[name] / rate['tonic']:>9.1f}x"
        )
    if not args.no_check:
        mismatches = [f for f in files if not same_frames(run_tonic(f), run_core_dense(f))]
        status = "identical" if not mismatches else f"{len(mismatches)} DIFFER, e.g. {mismatches[0]}"
        print(f"check: frames of all {n} recordings vs tonic (shape, dtype int16, every cell): {status}")
        if mismatches:
            raise SystemExit(1)


def same_frames(ref: np.ndarray, mine: np.ndarray) -> bool:
    return ref.shape == mine.shape and ref.dtype == mine.dtype and bool(np.array_equal(ref, mine))


def run_job(split_dirs: list[Path], out: Path, args, threads: int) -> tuple[float, float, int]:
    """preprocess_split on every split as the rule's script calls it; (wall s, CPU s of all threads, cells)."""
    wall, cpu, cells = time.perf_counter(), time.process_time(), 0
    for split_dir in split_dirs:
        summary = nmnist.preprocess_split(
            split_dir,
            out / f"{split_dir.name}_frames.parquet",
            out / f"{split_dir.name}_samples.parquet",
            denoise_filter_us=args.filter_us,
            time_window_us=args.window_us,
            log=None,
            threads=threads,
        )
        cells += summary["n_cells"]
    return time.perf_counter() - wall, time.process_time() - cpu, cells


def job_rounds(files: list[Path], args, run_tonic) -> None:
    """Section 2: the whole preprocess job vs tonic on the same files, --rounds times."""
    import pyarrow as pa

    split_dirs = sorted({f.parents[1] for f in files})
    files = [f for split_dir in split_dirs for f in nmnist.list_recordings(split_dir)[0]]  # what the job reads
    n = len(files)
    tmp = Path(tempfile.mkdtemp(prefix="bench-nmnist-"))
    try:
        start = time.perf_counter()
        pa.array(np.zeros(1))  # pyarrow imports pandas on its first use: once per job process
        run_job(split_dirs, tmp, args, 1)  # numba cache load, page cache of the files
        print(
            f"job one-time costs (pyarrow first use, numba cache load, first pass), untimed below: "
            f"{time.perf_counter() - start:.2f} s"
        )
        ratios: dict[int, list[float]] = {t: [] for t in args.threads}
        walls: dict[int, list[float]] = {t: [] for t in args.threads}
        cpus: dict[int, list[float]] = {t: [] for t in args.threads}
        tonic_walls, tonic_cpus, loads = [], [], [load()]
        for _ in range(args.rounds):
            start, cpu = time.perf_counter(), time.process_time()
            for f in files:
                run_tonic(f)
            tonic_s = time.perf_counter() - start
            tonic_walls.append(tonic_s)
            tonic_cpus.append(time.process_time() - cpu)
            for threads in args.threads:
                wall, cpu, cells = run_job(split_dirs, tmp, args, threads)
                ratios[threads].append(tonic_s / wall)
                walls[threads].append(wall)
                cpus[threads].append(cpu)
            loads.append(load())
        print(
            f"job: preprocess_split on {', '.join(d.name for d in split_dirs)} ({n} recordings, {cells} cells), "
            f"{args.rounds} rounds; {loads[0]} before, {loads[-1]} after"
        )
        print(
            f"{'whole job (median of rounds)':<44}{'samples/s':>12}{'ms/sample':>12}{'vs tonic':>10}"
            f"{'range':>12}{'CPU ms/sample':>15}{'CPU vs tonic':>14}"
        )
        tonic_med, tonic_cpu = statistics.median(tonic_walls), statistics.median(tonic_cpus)
        print(
            f"{'tonic read_mnist_file + Denoise + ToFrame':<44}{n / tonic_med:>12.1f}{1e3 * tonic_med / n:>12.3f}"
            f"{1.0:>9.1f}x{'':>12}{1e3 * tonic_cpu / n:>15.3f}{1.0:>13.1f}x"
        )
        for threads in args.threads:
            wall, cpu = statistics.median(walls[threads]), statistics.median(cpus[threads])
            lo, hi = min(ratios[threads]), max(ratios[threads])
            print(
                f"{f'spikebench preprocess job, threads={threads}':<44}{n / wall:>12.1f}{1e3 * wall / n:>12.3f}"
                f"{statistics.median(ratios[threads]):>9.1f}x{f'{lo:.0f}-{hi:.0f}x':>12}"
                f"{1e3 * cpu / n:>15.3f}{tonic_cpu / cpu:>13.1f}x"
            )
        cold_job(split_dirs, tmp, args, max(args.threads))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


COLD_JOB = """
import runpy, sys, types
from pathlib import Path
out, filter_us, window_us, threads, *splits = sys.argv[1:]
for split in splits:
    name = Path(split).name
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(),
        output=types.SimpleNamespace(frames=f"{out}/{name}_frames.parquet", samples=f"{out}/{name}_samples.parquet"),
        params=types.SimpleNamespace(recordings=split, denoise_filter_us=int(filter_us), time_window_us=int(window_us)),
        log=[f"{out}/{name}.log"], threads=int(threads),
    )
    runpy.run_path("scripts/preprocess_nmnist.py", init_globals={"snakemake": snakemake})
"""


def cold_job(split_dirs: list[Path], out: Path, args, threads: int) -> None:
    """The job script in a fresh interpreter (all splits in one process), as a rule's job starts."""
    command = [
        sys.executable,
        "-c",
        COLD_JOB,
        str(out),
        str(args.filter_us),
        str(args.window_us),
        str(threads),
        *map(str, split_dirs),
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    start = time.perf_counter()
    subprocess.run(command, cwd=PROJECT, env=env, check=True, capture_output=True)
    print(
        f"the job script in a fresh Python process (threads={threads}, interpreter + imports + numba cache "
        f"load included): {time.perf_counter() - start:.2f} s wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared" / "data" / "nmnist")
    parser.add_argument("--filter-us", type=int, default=10000, help="Denoise filter_time (µs)")
    parser.add_argument("--window-us", type=int, default=1000, help="ToFrame time_window (µs)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N recordings (0: all)")
    parser.add_argument("--no-check", action="store_true", help="skip the (untimed) identity check")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the job-level comparison")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="job thread counts to time")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    import tonic

    files = recordings(args.data)
    if args.limit:
        files = files[: args.limit]
    transform = tonic.transforms.Compose(
        [
            tonic.transforms.Denoise(filter_time=args.filter_us),
            tonic.transforms.ToFrame(sensor_size=tonic.datasets.NMNIST.sensor_size, time_window=args.window_us),
        ]
    )

    def run_tonic(f: Path) -> np.ndarray:
        return transform(tonic.io.read_mnist_file(str(f), dtype=tonic.datasets.NMNIST.dtype))

    print(f"N-MNIST frames, {len(files)} recordings from {args.data}; {load()}")
    print(f"Denoise(filter_time={args.filter_us}) + ToFrame(time_window={args.window_us}), reading the files included")
    per_recording(files, args, run_tonic)
    job_rounds(files, args, run_tonic)


if __name__ == "__main__":
    main()
