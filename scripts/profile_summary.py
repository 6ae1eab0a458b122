"""Rule profile_summary: the figure and table of where one training step's time goes, over the networks."""

from spikebench.jobs import job_logging
from spikebench.profiling.report import write_profile_summary

with job_logging(snakemake.log[0]) as log:
    write_profile_summary(
        dict(zip(snakemake.params.networks, snakemake.input.profiles)),
        dict(snakemake.output),
        demo=snakemake.params.demo,
        style=snakemake.params.style,
    )
    log.info("profile summary written: %s", ", ".join(snakemake.output))
