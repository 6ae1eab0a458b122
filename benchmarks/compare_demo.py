"""Are two demo results folders the same results? Compares what must be bitwise identical between a reference
run and a new one on the CPU (a restructuring must not change what is computed), and exits non-zero on any
difference.

Compared, per run (a folder with ``epochs.parquet``, ``test.json`` or ``layers.parquet``):

- ``epochs.parquet``: the deterministic columns (network, epoch, train_loss, train_acc, val_loss, val_acc),
  bitwise; not the times, samples/s, memory, power or energy;
- ``test.json``: the metrics (accuracy, macro precision/recall/F1, the per-class lists, the confusion
  matrix), exactly; not the timing, telemetry, hardware or provenance;
- ``layers.parquet``: the whole table (the per-layer operation counts), bitwise;

and in ``data/``: the N-MNIST frames and samples files and the splits, as tables (values and types,
bitwise). Their file bytes may also differ through the key-value metadata (library versions); that is
reported, not counted as a difference. A file present on one side only is a difference.

Compare two existing folders::

    python benchmarks/compare_demo.py --reference /path/to/old/results-demo --new results-demo

or run the demo of a reference commit in a temporary git worktree first (about 5 minutes on 2 cores; the
worktree gets ``PYTHONPATH=<worktree>``, ``SPIKEBENCH_SHARED_DATA`` passes through) and compare with it::

    python benchmarks/compare_demo.py --reference-commit 082f921 --new results-demo

Exit status: 0 when everything compared matched, 1 on any difference, 2 when there was nothing to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: The columns of epochs.parquet that do not depend on the machine's speed or load.
EPOCH_COLUMNS = ("network", "epoch", "train_loss", "train_acc", "val_loss", "val_acc")
#: The metrics of test.json (no timing, telemetry, hardware or provenance).
TEST_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "per_class_recall",
    "per_class_precision",
    "per_class_f1",
    "confusion_matrix",
)
#: Files of results/data/ compared as tables.
DATA_FILES = (
    "nmnist_train_frames.parquet",
    "nmnist_train_samples.parquet",
    "nmnist_test_frames.parquet",
    "nmnist_test_samples.parquet",
    "split_mnist.parquet",
    "split_cifar10.parquet",
    "split_nmnist.parquet",
)
#: Folders of a results folder that are not runs.
NOT_RUNS = {"data", "logs", "benchmarks", "tables", "figures", "tracking"}
RUN_FILES = ("epochs.parquet", "test.json", "layers.parquet")
DEMO_COMMAND = ("--cores", "2", "--resources", "gpu=1", "--configfile", "config.demo.yaml")


@dataclass
class Row:
    """One line of the report: what was compared and how it came out."""

    where: str
    what: str
    ok: bool
    detail: str = ""


def same_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Bitwise equality of two Arrow columns: same type, same nulls, and for floats the same bit patterns
    (so NaN equals NaN and 0.0 differs from -0.0); other types by Arrow's equality."""
    if a.type != b.type or len(a) != len(b):
        return False
    if not pa.types.is_floating(a.type):
        return a.equals(b)
    a, b = a.combine_chunks(), b.combine_chunks()
    nulls = a.is_null().to_numpy(zero_copy_only=False)
    if not np.array_equal(nulls, b.is_null().to_numpy(zero_copy_only=False)):
        return False
    x, y = (c.fill_null(0).to_numpy(zero_copy_only=False) for c in (a, b))
    return x.tobytes() == y.tobytes()


def first_difference(a: pa.ChunkedArray, b: pa.ChunkedArray) -> int:
    """Row of the first differing value of two equal-length columns (as in same_column)."""
    return next(i for i in range(len(a)) if not same_column(a.slice(i, 1), b.slice(i, 1)))


def compare_epochs(ref: Path, new: Path) -> tuple[bool, str]:
    """The deterministic columns of two epochs.parquet files, bitwise."""
    a, b = pq.read_table(ref), pq.read_table(new)
    missing = [c for c in EPOCH_COLUMNS if c not in a.column_names or c not in b.column_names]
    if missing:
        return False, f"column(s) missing: {', '.join(missing)}"
    if a.num_rows != b.num_rows:
        return False, f"{a.num_rows} rows in the reference, {b.num_rows} in the new"
    differ = [c for c in EPOCH_COLUMNS if not same_column(a.column(c), b.column(c))]
    if differ:
        c = differ[0]
        row = first_difference(a.column(c), b.column(c)) if a.column(c).type == b.column(c).type else 0
        return False, (
            f"column(s) {', '.join(differ)} differ; first: {c} at row {row} "
            f"(epoch {a.column('epoch')[row]}): {a.column(c)[row]} vs {b.column(c)[row]}"
        )
    return True, f"{a.num_rows} epochs x {len(EPOCH_COLUMNS)} columns"


def compare_test_json(ref: Path, new: Path) -> tuple[bool, str]:
    """The metrics of two test.json files, exactly (compared as JSON text, so every float bit for bit)."""
    a, b = json.loads(ref.read_text()), json.loads(new.read_text())
    missing = [k for k in TEST_METRICS if k not in a or k not in b]
    if missing:
        return False, f"key(s) missing: {', '.join(missing)}"
    differ = [k for k in TEST_METRICS if json.dumps(a[k]) != json.dumps(b[k])]
    if differ:
        k = differ[0]
        return False, f"key(s) {', '.join(differ)} differ; first: {k}: {a[k]!r} vs {b[k]!r}"
    return True, f"{len(TEST_METRICS)} metrics"


def compare_tables(ref: Path, new: Path) -> tuple[bool, str]:
    """Two Parquet files as Arrow tables (schema and values, bitwise); metadata differences are reported only."""
    a, b = pq.read_table(ref), pq.read_table(new)
    if not a.schema.equals(b.schema, check_metadata=False):
        return False, f"schemas differ: {a.schema.remove_metadata()} vs {b.schema.remove_metadata()}"
    if a.num_rows != b.num_rows:
        return False, f"{a.num_rows} rows in the reference, {b.num_rows} in the new"
    differ = [name for name in a.column_names if not same_column(a.column(name), b.column(name))]
    if differ:
        first = first_difference(a.column(differ[0]), b.column(differ[0]))
        return False, f"column(s) {', '.join(differ)} differ; first: {differ[0]} at row {first}"
    detail = f"{a.num_rows} rows x {a.num_columns} columns"
    if ref.read_bytes() != new.read_bytes():
        meta_a, meta_b = a.schema.metadata or {}, b.schema.metadata or {}
        keys = sorted(k.decode() for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k))
        detail += "; file bytes differ" + (f" (metadata: {', '.join(keys)})" if keys else " (encoding)")
    return True, detail


def find_runs(folder: Path) -> set[str]:
    """Names of the run folders in a results folder (those holding any of RUN_FILES)."""
    return {
        p.name
        for p in folder.iterdir()
        if p.is_dir() and p.name not in NOT_RUNS and any((p / f).exists() for f in RUN_FILES)
    }


def compare_file(where: str, name: str, ref: Path, new: Path, compare: Callable) -> Row | None:
    """One file of both folders through ``compare``; a file on one side only is a difference; on neither, None."""
    if not ref.exists() and not new.exists():
        return None
    if not (ref.exists() and new.exists()):
        return Row(where, name, False, f"only in the {'reference' if ref.exists() else 'new'} folder")
    ok, detail = compare(ref, new)
    return Row(where, name, ok, detail)


def compare_folders(reference: Path, new: Path) -> list[Row]:
    """Every comparison of the two results folders, runs first (sorted), then data/."""
    checks = {"epochs.parquet": compare_epochs, "test.json": compare_test_json, "layers.parquet": compare_tables}
    rows: list[Row | None] = []
    for run in sorted(find_runs(reference) | find_runs(new)):
        if not (reference / run).is_dir() or not (new / run).is_dir():
            side = "reference" if (reference / run).is_dir() else "new"
            rows.append(Row(run, "(run folder)", False, f"only in the {side} folder"))
            continue
        rows += [compare_file(run, f, reference / run / f, new / run / f, check) for f, check in checks.items()]
    rows += [compare_file("data", f, reference / "data" / f, new / "data" / f, compare_tables) for f in DATA_FILES]
    return [r for r in rows if r is not None]


def print_table(rows: list[Row], reference: Path, new: Path) -> None:
    """The report: one line per comparison, then the totals."""
    print(f"reference: {reference}\nnew:       {new}\n")
    width = max([len(r.where) for r in rows] + [3])
    print(f"{'run':<{width}}  {'file':<28}  {'result':<7}  detail")
    for r in rows:
        print(f"{r.where:<{width}}  {r.what:<28}  {'match' if r.ok else 'DIFFER':<7}  {r.detail}")
    n_bad = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - n_bad} matched, {n_bad} differ")


def demo_command() -> list[str]:
    """The README's demo command, with this interpreter's Snakemake."""
    return [sys.executable, "-m", "snakemake", *DEMO_COMMAND]


def run_reference_demo(commit: str, workdir: Path, repo: Path) -> Path:
    """The demo of ``commit`` run in a git worktree at ``workdir``; returns its results folder."""
    added = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(workdir), commit])
    if added.returncode != 0:
        sys.exit(f"could not make a git worktree of {commit!r} in {repo} (is it a commit there?)")
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    log = workdir / "compare_demo_reference.log"
    print(f"running the demo of {commit} in {workdir} (log: {log}) ...", flush=True)
    with log.open("w") as out:
        run = subprocess.run(demo_command(), cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    if run.returncode != 0:
        sys.exit(f"the reference demo of {commit} failed (exit {run.returncode}); see {log}")
    return workdir / "results-demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new", type=Path, default=Path("results-demo"), help="new results (default: results-demo)")
    side = parser.add_mutually_exclusive_group(required=True)
    side.add_argument("--reference", type=Path, help="reference results folder")
    side.add_argument("--reference-commit", help="run the demo of this commit in a temporary git worktree")
    parser.add_argument("--keep", action="store_true", help="keep the reference commit's worktree")
    args = parser.parse_args(argv)
    for folder in [args.new] + ([args.reference] if args.reference else []):
        if not folder.is_dir():
            parser.error(f"{folder}: no such results folder")
    if args.reference_commit is None:
        return report(args.reference, args.new)
    repo = Path(__file__).resolve().parents[1]
    workdir = Path(tempfile.mkdtemp(prefix="spikebench-ref-")) / "worktree"
    try:
        return report(run_reference_demo(args.reference_commit, workdir, repo), args.new)
    finally:
        if args.keep:
            print(f"kept the reference worktree: {workdir}")
        else:
            if workdir.exists():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(workdir)], check=False)
            shutil.rmtree(workdir.parent, ignore_errors=True)  # the temporary folder made for it


def report(reference: Path, new: Path) -> int:
    """Compare, print the table, and give the exit status (0 all matched, 1 a difference, 2 nothing compared)."""
    rows = compare_folders(reference, new)
    if not rows:
        print(f"nothing to compare: no runs and no data files in {reference} or {new}", file=sys.stderr)
        return 2
    print_table(rows, reference, new)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
