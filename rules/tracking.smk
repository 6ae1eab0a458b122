# Experiment tracking (config `tracking`, docs/results.md "Experiment tracking"): once a network's train or
# evaluate job has finished, a short local job logs what it wrote (epochs.parquet, test.json) as
# one run of W&B (offline by default), TensorBoard or MLflow. It only reads finished results, so
# turning tracking on or changing its backend reruns these jobs and nothing else, and changes no
# result file. Local: compute nodes often cannot reach a tracking server.
from snakemake.settings.types import DeploymentMethod
from spikebench import tracking

TRACKING = tracking.settings(config)
TRACKING_FOLDER = f"{RESULTS}/tracking"
# What `all_targets()` adds: one record per train/evaluate job, none when the backend is none.
TRACKING_TARGETS = tracking.targets(TRACKING, TRACKING_FOLDER, NETWORKS, config["seed"])
# A missing backend package stops the run before any job starts (with --sdm conda the track
# jobs get envs/tracking.yaml instead).
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    tracking.check_installed(TRACKING)


rule track:
    input:
        result=lambda wildcards: f"{RESULTS}/{wildcards.network}/{tracking.STAGES[wildcards.stage]}",
    output:
        tracking.record_path(TRACKING_FOLDER, TRACKING["backend"], "{network}", config["seed"], "{stage}"),
    log:
        f"{RESULTS}/logs/track/{{network}}-{{stage}}.log",
    wildcard_constraints:
        stage="train|evaluate",
    localrule: True
    conda:
        "../envs/tracking.yaml"
    params:
        network=spec,
        seed=run_seed,
        tracking=TRACKING,
        # <results>/tracking, from the output's path (<results>/tracking/runs/<backend>/<run>.json)
        folder=lambda wildcards, output: os.path.dirname(os.path.dirname(os.path.dirname(output[0]))),
    script:
        "../scripts/track.py"
