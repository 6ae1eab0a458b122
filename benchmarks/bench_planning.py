"""Planning time of a sweep: wall time and peak memory of ``snakemake -n`` with N sweep variants.

For each size N the script writes a config overlay that sweeps one setting of one network over N values
(by default ``sweeps: {bench: {networks: [exp1_ann], lr: [1e-05, 2e-05, ...]}}`` over the paper config.yaml:
N variants, one seed each, two jobs each, train and evaluate; ``--configfile config.demo.yaml`` plans three seeds
of each, as the demo repeats exp1_ann three times), in a temporary copy of the workflow (the files that
tests/conftest.py ``copy_workflow`` copies; no results there, so every job is planned), and times one dry run::

    snakemake -n --cores 1 --configfile [<--configfile>] planning_<N>.yaml

in its own subprocess, whose peak resident set size (``ru_maxrss`` of that child, from ``os.wait4``) is the
planning's memory. It prints one row per size: variants, planned jobs, seconds, ms per job, peak RSS, and the
reference timed right after it: the floor workflow (``FLOOR_SNAKEFILE``: Snakemake alone, the same number of
train/evaluate jobs and nothing of spikebench) and the ratio of the two; first the start-up every snakemake
command pays (the floor workflow with no jobs).

Run from the repository root::

    PYTHONPATH=. python benchmarks/bench_planning.py                        # 100, 1000, 3000, 10000 variants
    PYTHONPATH=. python benchmarks/bench_planning.py --sizes 100,1000 --json planning.json
    PYTHONPATH=. python benchmarks/bench_planning.py --quiet                # snakemake -n --quiet rules progress
    PYTHONPATH=. python benchmarks/bench_planning.py --workflow /path/to/other/checkout --sizes 100,1000

This is a benchmark, not a test: nothing here asserts a speed (tests/test_planning.py checks the growth).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
#: What a workflow copy needs (as tests/conftest.py WORKFLOW_FILES).
WORKFLOW_FILES = (
    "Snakefile",
    "rules",
    "scripts",
    "schemas",
    "envs",
    "report",
    "profiles",
    "config.yaml",
    "config.demo.yaml",
    "spikebench",
)


def copy_workflow(source: Path, dest: Path) -> Path:
    """A copy of the workflow at `source` (and its package) in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


#: Snakemake's own floor: a workflow with spikebench's job graph (per run a train job and an evaluate job on its
#: output, each with a script, a log, one params function and the gpu resource; one target rule) and nothing
#: else: no config validation, no input functions, no conda envs, no profile. Planned for as many runs as a
#: sweep has, it says how much of a dry run is Snakemake's per-job work on this machine.
FLOOR_SNAKEFILE = """\
RUNS = [f"v{i}" for i in range(int(config["runs"]))]


wildcard_constraints:
    network="[A-Za-z][A-Za-z0-9_.+-]*",


rule all:
    input:
        expand("results/{network}/test.json", network=RUNS),


rule train:
    output:
        "results/{network}/weights.pt",
    log:
        "results/logs/train/{network}.log",
    resources:
        gpu=1,
    params:
        network=lambda wildcards: wildcards.network,
    script:
        "job.py"


rule evaluate:
    input:
        "results/{network}/weights.pt",
    output:
        "results/{network}/test.json",
    log:
        "results/logs/evaluate/{network}.log",
    resources:
        gpu=1,
    params:
        network=lambda wildcards: wildcards.network,
    script:
        "job.py"
"""


def floor_workflow(dest: Path) -> Path:
    """The floor workflow (FLOOR_SNAKEFILE and an empty job script) in `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Snakefile").write_text(FLOOR_SNAKEFILE)
    (dest / "job.py").write_text("")
    return dest


def sweep_values(n: int, base_value: float | None = None) -> list[float]:
    """`n` distinct learning rates 1e-05, 2e-05, ... (distinct variant ids; the base's own value left out)."""
    values, k = [], 1
    while len(values) < n:
        value = round(k * 1e-5, 10)
        if value != base_value:
            values.append(value)
        k += 1
    return values


def sweep_overlay(n: int, network: str = "exp1_ann", base_value: float | None = None) -> dict:
    """A config overlay with `n` variants of `network`: one sweep of its `lr` over `n` values."""
    return {"sweeps": {"bench": {"networks": [network], "lr": sweep_values(n, base_value)}}}


def base_lr(workdir: Path, configfile: str, network: str) -> float | None:
    """The learning rate of `network` in the config a dry run of `configfile` sees (config.yaml + overlay)."""
    lr = None
    for name in ("config.yaml", configfile) if configfile else ("config.yaml",):
        spec = (yaml.safe_load((workdir / name).read_text()) or {}).get("networks", {}).get(network, {})
        lr = spec.get("lr", lr)
    return lr


def planned_jobs(output: str) -> int | None:
    """The job count of a dry run's "Job stats" table (its ``total`` row)."""
    found = re.findall(r"^total\s+(\d+)", output, flags=re.MULTILINE)
    return int(found[-1]) if found else None


def dry_run(workdir: Path, args: list[str], timeout: float) -> dict:
    """One ``snakemake -n`` in `workdir`: its wall seconds, peak RSS (MiB), exit status and output."""
    import subprocess

    log = workdir / "planning.log"
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args]
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    output = log.read_text()
    return {
        "seconds": seconds,
        "rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
        "returncode": proc.returncode,
        "jobs": planned_jobs(output),
        "output": output,
    }


def bench(
    sizes: list[int],
    source: Path,
    configfile: str,
    network: str,
    timeout: float,
    keep: Path | None,
    extra=(),
    floor: bool = True,
) -> list:
    """One row per size: the workflow's dry run and, with `floor`, the floor workflow's for as many jobs, timed
    one after the other (the same load for both)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_planning_") as tmp:
        workdir = copy_workflow(source, Path(keep or tmp) / "workflow")
        floordir = floor_workflow(Path(keep or tmp) / "floor")
        lr = base_lr(workdir, configfile, network)
        if floor:  # what every snakemake command pays before planning anything (imports, executor plugins)
            start = dry_run(floordir, [*extra, "--config", "runs=0"], timeout)
            print(f"{'start-up':>9} {0:>7} {start['seconds']:>9.1f}  (the floor workflow with no jobs)", flush=True)
        for n in sizes:
            overlay = workdir / f"planning_{n}.yaml"
            overlay.write_text(yaml.safe_dump(sweep_overlay(n, network, lr)))
            configs = [configfile, overlay.name] if configfile else [overlay.name]
            result = dry_run(workdir, [*extra, "--configfile", *configs], timeout)
            if result["returncode"] != 0:
                print(result["output"][-3000:], file=sys.stderr)
            row = {k: v for k, v in result.items() if k != "output"}
            row["variants"] = n
            if floor and row["jobs"]:
                # as many runs as make the same number of jobs (2 per run, plus the target rule)
                floor_run = dry_run(floordir, [*extra, "--config", f"runs={(row['jobs'] - 1) // 2}"], timeout)
                row["floor_seconds"] = floor_run["seconds"] if floor_run["returncode"] == 0 else None
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


HEADER = (
    f"{'variants':>9} {'jobs':>7} {'seconds':>9} {'ms/job':>8} {'peak RSS MiB':>13} {'floor s':>8} {'x floor':>8}"
    "  status"
)


def format_row(row: dict) -> str:
    jobs = f"{row['jobs']:>7}" if row["jobs"] else f"{'-':>7}"
    per_job = f"{1000 * row['seconds'] / row['jobs']:>8.2f}" if row["jobs"] else f"{'-':>8}"
    floor = row.get("floor_seconds")
    floor_cols = f"{floor:>8.1f} {row['seconds'] / floor:>8.2f}" if floor else f"{'-':>8} {'-':>8}"
    status = "ok" if row["returncode"] == 0 else f"FAILED (exit {row['returncode']})"
    return (
        f"{row['variants']:>9} {jobs} {row['seconds']:>9.1f} {per_job} {row['rss_mib']:>13.0f} {floor_cols}  {status}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,3000,10000", help="comma list of variant counts")
    parser.add_argument("--workflow", type=Path, default=PROJECT, help="the checkout to time (default: this one)")
    parser.add_argument(
        "--configfile", default="", help="a config overlay under the sweep (default: none, the paper config.yaml)"
    )
    parser.add_argument("--network", default="exp1_ann", help="the network whose lr is swept")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per dry run before it is killed")
    parser.add_argument("--keep", type=Path, help="make the workflow copy here and keep it (its planning.log)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the floor workflow (Snakemake alone, the same number of jobs)"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="snakemake -n --quiet rules progress: builds the DAG and stops (no job printed, nor their count)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    load = os.getloadavg()
    base = f"config.yaml + {args.configfile}" if args.configfile else "config.yaml"
    quiet = " --quiet rules progress" if args.quiet else ""
    print(f"snakemake -n{quiet}: {args.workflow}, {base} + sweep of {args.network} lr; {os.cpu_count()} CPUs,")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(HEADER, flush=True)
    extra = ["--quiet", "rules", "progress"] if args.quiet else []
    rows = bench(
        sizes, args.workflow.resolve(), args.configfile, args.network, args.timeout, args.keep, extra, not args.no_floor
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
