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
