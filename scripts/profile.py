"""Rule profile: one profiled training batch of the trained weights, beside its arithmetic floor."""

from spikebench.jobs import job_logging
from spikebench.profiling.job import profile_job
from spikebench.spec import NetworkSpec

with job_logging(snakemake.log[0]) as log:
    profile_job(
        snakemake.wildcards.network,
        NetworkSpec.from_config(snakemake.params.network, snakemake.wildcards.network),
        inputs=dict(snakemake.input),
        output=snakemake.output[0],
        data_root=snakemake.params.data_root,
        which=snakemake.params.weights,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        profile=snakemake.params.profile,
        data_source=snakemake.params.data_source,
        numerics=snakemake.params.numerics,
        log=log,
    )
