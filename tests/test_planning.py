"""Planning a large sweep (benchmarks/bench_planning.py times it): the `network` wildcard is a run id by its
pattern (spikebench.config.run_id_pattern), not a list of every id, whose length made each of Snakemake's
wildcard substitutions, and so the plan, grow with the number of runs. The pattern matches every run id, never
crosses a `/` nor names one of the results folder's own folders, and a variant id still plans its own jobs."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT, snakemake_cmd
from spikebench.config import expand_runs, load_config, merge, run_id_errors, run_id_pattern, validate_config

sys.path.insert(0, str(PROJECT / "benchmarks"))
import bench_planning  # noqa: E402


def results_folders() -> tuple[str, ...]:
    """RESULTS_FOLDERS of rules/common.smk (a Snakemake file: read, not imported)."""
    text = (PROJECT / "rules" / "common.smk").read_text()
    return ast.literal_eval(re.search(r"^RESULTS_FOLDERS = (\(.*?\))$", text, re.M).group(1))


def sweep_config(overlay: dict) -> dict:
    config = merge(load_config(PROJECT / "config.yaml"), overlay)
    validate_config(config)
    return config


def test_every_run_id_matches_the_pattern_and_no_folder_of_the_results_folder_does():
    config = sweep_config(
        {
            "repeats": 2,
            "sweeps": {
                "lr": {"networks": ["exp1_ann", "exp1_snn"], "lr": [1e-05, 0.002, 2.5e-07]},
                "width": {"networks": ["exp1_ann"], "hidden": [[8, 16], [1000]]},
                "steps": {"networks": ["exp1_snn"], "num_steps": [2, 50]},
            },
        }
    )
    runs = expand_runs(config)
    assert {"exp1_ann-lr1e-05", "exp1_snn-lr2.5e-07-seed1", "exp1_ann-hidden8_16", "exp1_snn_snntorch"} <= set(runs)
    folders = results_folders()
    pattern = re.compile(run_id_pattern(folders))
    assert [r for r in runs if not pattern.fullmatch(r)] == []
    assert run_id_errors(runs, folders) == []
    for name in (*folders, "", "1abc", "a/b", "exp1_ann/../data", "a b", "a\n", "-x"):
        assert not pattern.fullmatch(name), name
    # a folder's name inside a longer id is no folder: only the name itself is refused
    for name in ("data_x", "tables2", "logs-lr0.1", "figures.old"):
        assert pattern.fullmatch(name), name


def test_a_run_id_the_pattern_refuses_is_named():
    folders = results_folders()
    problems = run_id_errors(["exp1_ann", "logs", "exp1_ann-x/y"], folders)
    assert len(problems) == 2
    assert "'logs'" in problems[0] and "folder of the results folder" in problems[0]
    assert "'exp1_ann-x/y'" in problems[1] and "letters, digits" in problems[1]


def test_the_benchmark_sweep_has_as_many_variants_as_asked():
    overlay = bench_planning.sweep_overlay(300, "exp1_ann", base_value=1e-3)
    runs = expand_runs(sweep_config(overlay))
    assert len([r for r in runs if r.startswith("exp1_ann-lr")]) == 300
    assert "exp1_ann-lr1e-05" in runs and "exp1_ann-lr0.001" not in runs  # the base's own value is the base
    assert bench_planning.planned_jobs("Job stats:\njob count\n----- -----\ntrain 3\ntotal 34\n") == 34


# What the workflow makes of its rules, loaded through Snakemake's API in a subprocess (it changes the
# working directory): each rule's output, log and benchmark patterns, with the constraints Snakemake put
# into them, and whether the regex of each pattern with a `network` wildcard matches some paths.
PROBE = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

paths = json.loads(sys.argv[1])
with SnakemakeApi(OutputSettings()) as api:
    configs = ConfigSettings(configfiles=[Path(p) for p in sys.argv[2:]])
    workflow = api.workflow(ResourceSettings(cores=1), configs, snakefile=Path("Snakefile"))._workflow
    patterns, matches = {}, {}
    for rule in workflow.rules:
        files = [*rule.output, *rule.log, *([rule.benchmark] if rule.benchmark else [])]
        patterns[rule.name] = [str(f) for f in files]
        for f in files:
            if "{network" in str(f):
                matches[str(f)] = [p for p in paths if f.regex().match(p)]
    print("PROBE", json.dumps({"results": workflow.config["results"], "patterns": patterns, "matches": matches}))
"""


def probe(workflow_dir: Path, n_variants: int, paths: list[str]) -> dict:
    overlay = workflow_dir / f"planning_{n_variants}.yaml"
    overlay.write_text(yaml.safe_dump(bench_planning.sweep_overlay(n_variants, "exp1_ann", base_value=1e-3)))
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(paths), overlay.name],
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return json.loads(next(line for line in run.stdout.splitlines() if line.startswith("PROBE "))[6:])


@pytest.mark.slow  # loads the workflow twice through Snakemake (~10 s)
def test_the_network_wildcard_is_a_pattern_not_a_list_of_the_run_ids(workflow_dir):
    folders = results_folders()
    files = ("weights.pt", "test.json", "epochs.parquet", "network.nir")
    # the results folder's own folders, a path two folders deep, and real run ids
    refused = [f"results/{folder}/{name}" for folder in folders for name in files] + ["results/a/b/weights.pt"]
    accepted = ["results/exp1_ann-lr1e-05/weights.pt", "results/exp1_ann-lr0.0003/test.json"]
    small, large = probe(workflow_dir, 3, refused + accepted), probe(workflow_dir, 300, refused + accepted)
    assert large["results"] == "results"
    # the constraint is the same whatever the number of runs, and names none of them
    assert small["patterns"] == large["patterns"]
    assert not any("exp1_ann" in p for patterns in large["patterns"].values() for p in patterns)
    # each of the results folder's own folders is in RESULTS_FOLDERS, which RUN_ID refuses
    top = {p.split("/")[1] for patterns in large["patterns"].values() for p in patterns if p.startswith("results/")}
    assert {t for t in top if not t.startswith("{network,")} <= set(folders)
    network_patterns = {p: m for p, m in large["matches"].items() if p.startswith("results/{network,")}
    assert len(network_patterns) >= 6  # train's and evaluate's outputs (and nir_export's)
    for pattern, matched in network_patterns.items():
        assert not set(matched) & set(refused), pattern
    assert any(matched == [accepted[0]] for matched in network_patterns.values())  # weights.pt of rule train


@pytest.mark.slow  # a dry run (~10 s)
def test_a_variant_id_plans_its_own_train_and_evaluate_jobs(workflow_dir):
    (workflow_dir / "variants.yaml").write_text(
        yaml.safe_dump({"repeats": 2, "sweeps": {"lr": {"networks": ["exp1_ann"], "lr": [0.002, 1e-05]}}})
    )
    targets = ["results/exp1_ann-lr0.002/test.json", "results/exp1_ann-lr1e-05-seed1/test.json"]
    run = subprocess.run(
        snakemake_cmd(*targets, "-n", "--cores", "1", "--configfile", "variants.yaml"),
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    table = run.stdout.split("Job stats:")[1].split("total")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert counts == {"download_mnist": 1, "split": 1, "train": 2, "evaluate": 2}
    wildcards = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: network=(\S+)$", run.stdout, re.M)
    assert sorted(wildcards) == sorted(
        (rule, run_id) for rule in ("train", "evaluate") for run_id in ("exp1_ann-lr0.002", "exp1_ann-lr1e-05-seed1")
    )
    # an id that is no run of this config matches the pattern but is named, not planned
    unknown = subprocess.run(
        snakemake_cmd("results/exp1_ann-lr9/test.json", "-n", "--cores", "1", "--configfile", "variants.yaml"),
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unknown.returncode != 0
    assert "'exp1_ann-lr9' is not a run id of this configuration" in unknown.stdout + unknown.stderr


@pytest.mark.slow  # two dry runs of a tiny workflow (~25 s, most of it Snakemake's start-up)
def test_the_floor_workflow_plans_as_many_jobs_as_the_sweep(tmp_path):
    """bench_planning's reference: 3 runs are 3 train + 3 evaluate jobs + the target rule, like 3 variants of the
    sweep; and its rows print the ratio to the floor."""
    floor = bench_planning.floor_workflow(tmp_path / "floor")
    planned = bench_planning.dry_run(floor, ["--config", "runs=3"], timeout=300)
    assert planned["returncode"] == 0, planned["output"][-3000:]
    assert planned["jobs"] == 7
    assert re.search(r"^train\s+3$", planned["output"], re.M) and re.search(r"^evaluate\s+3$", planned["output"], re.M)
    row = {"variants": 3, "jobs": 7, "seconds": 12.0, "rss_mib": 150.0, "returncode": 0, "floor_seconds": 8.0}
    assert bench_planning.format_row(row).split()[-3:] == ["8.0", "1.50", "ok"]
    assert bench_planning.format_row({**row, "floor_seconds": None}).split()[-3:] == ["-", "-", "ok"]
