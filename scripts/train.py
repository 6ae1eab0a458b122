"""Rule train: one network, its epochs table, weights and telemetry sidecar."""

from spikebench.jobs import job_logging, train_job
from spikebench.spec import NetworkSpec

with job_logging(snakemake.log[0]) as log:
    train_job(
        snakemake.wildcards.network,
        NetworkSpec.from_config(snakemake.params.network, snakemake.wildcards.network),
        inputs=dict(snakemake.input),
        outputs=dict(snakemake.output),
        data_root=snakemake.params.data_root,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        telemetry=snakemake.params.telemetry,
        numerics=snakemake.params.numerics,
        checkpoint=snakemake.params.checkpoint,
        data_source=snakemake.params.data_source,
        log=log,
    )
