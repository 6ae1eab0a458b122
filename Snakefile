# spikebench: what does a spiking neural network cost on ordinary GPUs, compared with the
# ANN/CNN that does the same job? Reproduces the study's three experiments (six networks)
# and records hardware telemetry for every training and test phase. See README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/training.smk"
include: "rules/evaluation.smk"
include: "rules/results_common.smk"
include: "rules/results.smk"
include: "rules/tracking.smk"
include: "rules/nir.smk"
include: "rules/profile.smk"


rule all:
    default_target: True
    input:
        all_targets(),
    localrule: True
