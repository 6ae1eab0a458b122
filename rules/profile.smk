# Where the time goes (config `profile`, docs/profile.md): per run, one profiled training batch
# of the trained weights on its test data (rule profile: spikebench.profiling), time per phase, layer and op
# kind beside the arithmetic floor (the same matmuls and convolutions timed alone); one figure and one table
# over the study's networks (rule profile_summary), both in the report. It reads the weights only: turning
# it on trains and evaluates nothing again. Uses rules/results_common.smk's TABLES and FIGURES.
import glob as _glob
import hashlib as _hashlib

# Config `profile` with the schema's defaults (_SCHEMA: rules/training.smk); no torch import to plan.
PROFILE = {
    key: value.get("default") for key, value in _SCHEMA["properties"]["profile"]["properties"].items()
} | config.get("profile", {})
# Digests of the profile's own code (spikebench/profiling/), beside the train stage's digest of what its step
# runs: the job's modules, and the summary's (report.py) apart, so a figure change reruns only the summary.
_PROFILING_FILES = sorted(_glob.glob(os.path.join(workflow.basedir, "spikebench", "profiling", "*.py")))
PROFILING_CODE = _hashlib.sha256(
    b"".join(open(path, "rb").read() for path in _PROFILING_FILES if not path.endswith("report.py"))
).hexdigest()
PROFILE_REPORT_CODE = _hashlib.sha256(
    b"".join(open(path, "rb").read() for path in _PROFILING_FILES if path.endswith("report.py"))
).hexdigest()
# One run per configured network (its first seed, as the study's tables), none when profile.enabled is false.
PROFILE_RUNS = list(BASE_RUNS.values()) if PROFILE["enabled"] else []
PROFILE_ITEMS = {
    "figure": f"{FIGURES}/profile.svg",
    "table": f"{TABLES}/profile.csv",
}
# What `all_targets()` adds.
PROFILE_TARGETS = list(PROFILE_ITEMS.values()) if PROFILE_RUNS else []


rule profile:
    input:
        unpack(test_inputs),
    output:
        f"{RESULTS}/{{network}}/profile.parquet",
    log:
        f"{RESULTS}/logs/profile/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/profile/{{network}}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    params:
        network=spec,
        dataset=network_dataset,
        data_root=DATA,
        data_source=config["data"]["source"],
        weights=config["evaluation"]["weights"],
        seed=run_seed,
        device=config["device"],
        numerics=NUMERICS,
        profile=PROFILE,
        code=code("train"),
        profiling_code=PROFILING_CODE,
    script:
        "../scripts/profile.py"


rule profile_summary:
    input:
        profiles=expand(f"{RESULTS}/{{network}}/profile.parquet", network=PROFILE_RUNS),
    output:
        png=f"{FIGURES}/profile.png",
        svg=report(
            PROFILE_ITEMS["figure"],
            category="Where the time goes",
            subcategory="Figures",
            labels={"item": "One training step by phase, layer and op kind", "format": "SVG"},
            caption="../report/profile.rst",
        ),
        table=report(
            PROFILE_ITEMS["table"],
            category="Where the time goes",
            subcategory="Tables",
            labels={"item": "Step time, arithmetic floor and shares by op kind", "format": "download (CSV)"},
            caption="../report/profile_table.rst",
        ),
    log:
        f"{RESULTS}/logs/profile_summary.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        networks=PROFILE_RUNS,
        demo=DEMO,
        style=config["figures"],
        code=PROFILE_REPORT_CODE,
    script:
        "../scripts/profile_summary.py"
