# Results stage: the study's Tables I and II, the comparison with the study, the cost of spiking,
# and the study's figures, all marked for the Snakemake report (`snakemake --report`).
# Each rule's params carry only the config it depends on: a figure style change reruns only
# `figures`, a telemetry or network change reruns both. With the aggregate tables (rule aggregate) as
# inputs, the cost and comparison tables say whether SNN - ANN exceeds its interval, and the headline
# figure draws the 95% interval of the ratio where there are repeats.
# Outputs, captions and input functions: rules/results_common.smk.


rule tables:
    input:
        epochs=per_network("epochs.parquet"),
        tests=per_network("test.json"),
        paper=PAPER_VALUES,
        difference=f"{TABLES}/difference.csv",
        summary=f"{TABLES}/summary.csv",
    output:
        **table_outputs(),
    log:
        f"{RESULTS}/logs/tables.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
    script:
        "../scripts/tables.py"


rule figures:
    input:
        epochs=per_network("epochs.parquet"),
        tests=per_network("test.json"),
        telemetry_train=per_network("telemetry_train.parquet"),
        telemetry_test=per_network("telemetry_test.parquet"),
        paper=PAPER_VALUES,
        summary=f"{TABLES}/summary.csv",
    output:
        **figure_outputs(),
    log:
        f"{RESULTS}/logs/figures.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
        style=config["figures"],
    script:
        "../scripts/figures.py"


# Neuromorphic estimate (docs/operations.md): the measured energy
# per test sample next to the energy of the counted operations on config `energy_model`; the per-layer
# counts; a figure (outputs: rules/common.smk). Changing the energy model reruns only this rule.
rule neuromorphic:
    input:
        tests=per_network("test.json"),
        layers=per_network("layers.parquet"),
    output:
        **neuromorphic_outputs(),
    log:
        f"{RESULTS}/logs/neuromorphic.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        networks=results_networks(),
        demo=DEMO,
        telemetry_enabled=config["telemetry"]["enabled"],
        energy_model=ENERGY_MODEL,
        style=config["figures"],
    script:
        "../scripts/neuromorphic.py"


# Every run (networks, sweep variants, seeds): its status, the means and 95% intervals over seeds,
# SNN - ANN with Welch's interval (spikebench.aggregate). Adding a sweep point or a seed reruns
# its own train/evaluate jobs and these aggregation jobs only.
rule aggregate:
    input:
        epochs=per_run("epochs.parquet"),
        tests=per_run("test.json"),
    output:
        **aggregate_outputs(),
    log:
        f"{RESULTS}/logs/aggregate.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        runs=run_info(),
        networks=results_networks(),
        demo=DEMO,
        target_accuracy=config.get("target_accuracy", {}),
    script:
        "../scripts/aggregate.py"


# One figure per swept setting (spikebench.sweep_figures), from the summary table above.
rule sweep_figures:
    input:
        summary=f"{TABLES}/summary.csv",
    output:
        **sweep_figure_outputs(),
    log:
        f"{RESULTS}/logs/sweep_figures.log",
    localrule: True
    conda:
        "../envs/results.yaml"
    params:
        sweeps=sweep_points(),
        networks=results_networks(),
        style=config["figures"],
        demo=DEMO,
    script:
        "../scripts/sweep_figures.py"
