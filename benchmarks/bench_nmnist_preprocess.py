"""N-MNIST frames: tonic's per-sample pipeline vs spikebench's compiled core, on the same recordings.

    python benchmarks/bench_nmnist_preprocess.py [--data DIR] [--filter-us 10000] [--window-us 1000]

tonic: ``tonic.io.read_mnist_file`` (what ``tonic.datasets.NMNIST.__getitem__`` does) followed by
``Compose([Denoise(filter_time), ToFrame((34, 34, 2), time_window)])``. spikebench:
``spikebench.data.nmnist.recording_frames`` (read + decode + denoise + frames, sparse cells), and the
same followed by ``to_dense()`` (tonic's dense int16 frames). Both include reading the files.
The two are timed interleaved, 50 recordings at a time, so a busy machine slows both alike.
Afterwards every recording's frames are compared (untimed): they must be identical.
Finally ``preprocess_split`` is timed end to end (Parquet written to a temporary folder).
"""

from __future__ import annotations

import argparse
import shutil
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=PROJECT.parent / "shared" / "data" / "nmnist")
    parser.add_argument("--filter-us", type=int, default=10000, help="Denoise filter_time (µs)")
    parser.add_argument("--window-us", type=int, default=1000, help="ToFrame time_window (µs)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N recordings (0: all)")
    parser.add_argument("--no-check", action="store_true", help="skip the (untimed) identity check")
    args = parser.parse_args()

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

    def run_core(f: Path) -> nmnist.RecordingFrames:
        return nmnist.recording_frames(f, args.filter_us, args.window_us)

    def run_core_dense(f: Path) -> np.ndarray:
        return nmnist.recording_frames(f, args.filter_us, args.window_us).to_dense()

    start = time.perf_counter()
    run_core(files[0])  # numba: compile, or load the on-disk cache
    warmup_s = time.perf_counter() - start
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
    print(f"N-MNIST frames, {n} recordings from {args.data}")
    print(f"Denoise(filter_time={args.filter_us}) + ToFrame(time_window={args.window_us}), reading the files included")
    print(f"numba compile/cache load (first call, untimed below): {warmup_s:.2f} s")
    rate = {name: n / seconds for name, seconds in totals.items()}
    print(f"{'pipeline':<44}{'samples/s':>12}{'ms/sample':>12}{'vs tonic':>10}")
    labels = {
        "tonic": "tonic read_mnist_file + Denoise + ToFrame",
        "core": "spikebench recording_frames (sparse cells)",
        "core_dense": "spikebench recording_frames + to_dense",
    }
    for name in totals:
        print(
            f"{labels[name]:<44}{rate[name]:>12.1f}{1e3 * totals[name] / n:>12.3f}"
            f"{rate[name] / rate['tonic']:>9.1f}x"
        )

    if not args.no_check:
        mismatches = []
        for f in files:
            ref = run_tonic(f)
            mine = run_core_dense(f)
            if ref.shape != mine.shape or ref.dtype != mine.dtype or not np.array_equal(ref, mine):
                mismatches.append(f)
        status = "identical" if not mismatches else f"{len(mismatches)} DIFFER, e.g. {mismatches[0]}"
        print(f"check: frames of all {n} recordings vs tonic (shape, dtype int16, every cell): {status}")
        if mismatches:
            raise SystemExit(1)

    import pyarrow as pa

    pa.array(np.zeros(1))  # pyarrow imports pandas on first use (~1-2 s once per process): keep it out of the timing
    split_dirs = sorted({f.parents[1] for f in files})
    tmp = Path(tempfile.mkdtemp(prefix="bench-nmnist-"))
    try:
        for split_dir in split_dirs:
            summary = nmnist.preprocess_split(
                split_dir, tmp / "frames.parquet", tmp / "samples.parquet", args.filter_us, args.window_us
            )
            size_mib = (tmp / "frames.parquet").stat().st_size / 2**20
            print(
                f"preprocess_split {split_dir.name}: {summary['n_samples']} samples, {summary['n_cells']} cells "
                f"in {summary['seconds']:.2f} s ({summary['n_samples'] / summary['seconds']:.0f} samples/s, "
                f"frames Parquet {size_mib:.1f} MiB)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
