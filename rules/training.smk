# Training stage: one GPU job per network. Every setting of the network (its config entry),
# the seed, the device and the telemetry settings reach the job through params, so editing one
# network's entry reruns only that network. The per-epoch checkpoint that makes a killed job
# resumable (`--rerun-incomplete`) is deliberately not a declared output.
# `numerics` (precision, cudnn_benchmark, lif_backend; defaults from the schema) is set by every
# train and evaluate job explicitly and recorded with its hardware.

from spikebench.config import load_schema as _load_schema

_SCHEMA = _load_schema()
NUMERICS = {
    key: config.get(key, _SCHEMA["properties"][key]["default"])
    for key in ("precision", "cudnn_benchmark", "lif_backend")
}


rule train:
    input:
        unpack(train_inputs),
    output:
        weights=f"{RESULTS}/{{network}}/weights.pt",
        epochs=f"{RESULTS}/{{network}}/epochs.parquet",
        telemetry=f"{RESULTS}/{{network}}/telemetry_train.parquet",
    log:
        f"{RESULTS}/logs/train/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{network}}.tsv"
    conda:
        "../envs/train.yaml"
    resources:
        gpu=1,
    params:
        network=spec,
        dataset=network_dataset,
        data_root=DATA,
        data_source=config["data"]["source"],
        seed=run_seed,
        device=config["device"],
        telemetry=config["telemetry"],
        numerics=NUMERICS,
        code=code("train"),
        checkpoint=lambda wildcards: f"{RESULTS}/{wildcards.network}/checkpoint.pt",
    script:
        "../scripts/train.py"
