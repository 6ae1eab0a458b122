# Evaluation stage: the official test set through the trained weights (last epoch, as the
# study, or best validation: config evaluation.weights), with its own telemetry sidecar.


rule evaluate:
    input:
        unpack(test_inputs),
    output:
        test=f"{RESULTS}/{{network}}/test.json",
        telemetry=f"{RESULTS}/{{network}}/telemetry_test.parquet",
        layers=f"{RESULTS}/{{network}}/layers.parquet",
    log:
        f"{RESULTS}/logs/evaluate/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{network}}.tsv"
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
        telemetry=config["telemetry"],
        numerics=NUMERICS,
        code=code("evaluate"),
    script:
        "../scripts/evaluate.py"
