# Results stage: the study's Tables I and II, the comparison with the study, the cost of spiking,
# and the study's figures, all marked for the Snakemake report (`snakemake --report`).
# Each rule's params carry only the config it depends on: a figure style change reruns only
# `figures`, a telemetry or network change reruns both.


rule tables:
    input:
        epochs=per_network("epochs.parquet"),
        tests=per_network("test.json"),
        paper=PAPER_VALUES,
    output:
        **table_outputs(),
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
    log:
        f"{RESULTS}/logs/tables.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    input:
        epochs=per_network("epochs.parquet"),
        tests=per_network("test.json"),
        telemetry_train=per_network("telemetry_train.parquet"),
        telemetry_test=per_network("telemetry_test.parquet"),
        paper=PAPER_VALUES,
    output:
        **figure_outputs(),
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
        style=config["figures"],
    log:
        f"{RESULTS}/logs/figures.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    script:
        "../scripts/figures.py"


# Neuromorphic estimate (README "Operation counts and the neuromorphic estimate"): the measured energy
# per test sample next to the energy of the counted operations on config `energy_model`; the per-layer
# counts; a figure (outputs: rules/common.smk). Changing the energy model reruns only this rule.
rule neuromorphic:
    input:
        tests=per_network("test.json"),
        layers=per_network("layers.parquet"),
    output:
        **neuromorphic_outputs(),
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
        energy_model=ENERGY_MODEL,
        style=config["figures"],
    log:
        f"{RESULTS}/logs/neuromorphic.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    script:
        "../scripts/neuromorphic.py"
