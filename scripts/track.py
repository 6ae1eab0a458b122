"""Rule track: one finished train/evaluate job's results logged as one run of the experiment tracker."""

from spikebench.jobs import job_logging
from spikebench.tracking import track_job

with job_logging(snakemake.log[0]) as log:
    track_job(
        snakemake.wildcards.network,
        snakemake.params.network,
        snakemake.wildcards.stage,
        result=snakemake.input.result,
        output=snakemake.output[0],
        tracking=snakemake.params.tracking,
        folder=snakemake.params.folder,
        seed=snakemake.params.seed,
        log=log,
    )
