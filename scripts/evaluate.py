"""Rule evaluate: the official test set through the trained weights, with telemetry."""

from spikebench.jobs import evaluate_job, job_logging
from spikebench.spec import NetworkSpec

with job_logging(snakemake.log[0]) as log:
    evaluate_job(
        snakemake.wildcards.network,
        NetworkSpec.from_config(snakemake.params.network, snakemake.wildcards.network),
        inputs=dict(snakemake.input),
        outputs=dict(snakemake.output),
        data_root=snakemake.params.data_root,
        which=snakemake.params.weights,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        telemetry=snakemake.params.telemetry,
        data_source=snakemake.params.data_source,
        numerics=snakemake.params.numerics,
        log=log,
    )
