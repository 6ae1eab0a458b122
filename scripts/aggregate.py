"""Rule aggregate: every run (network or sweep variant, seed), their means and intervals, SNN - ANN."""

from spikebench.aggregate import write_aggregate
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]) as log:
    runs = snakemake.params.runs
    write_aggregate(
        dict(zip(runs, snakemake.input.epochs)),
        dict(zip(runs, snakemake.input.tests)),
        runs,
        snakemake.params.networks,
        dict(snakemake.output),
        demo=snakemake.params.demo,
        target=snakemake.params.target_accuracy,
    )
    log.info("aggregate tables written: %s", ", ".join(snakemake.output))
