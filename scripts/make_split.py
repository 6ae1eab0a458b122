"""Rule split: the seeded random train/validation split of one training set."""

from spikebench.jobs import job_logging, split_job

with job_logging(snakemake.log[0]):
    split_job(
        snakemake.wildcards.dataset,
        snakemake.params.root,
        snakemake.output[0],
        val_fraction=snakemake.params.val_fraction,
        seed=snakemake.params.seed,
        data_source=snakemake.params.data_source,
        manifest=snakemake.input[0],
    )
