"""Rule preprocess_nmnist: denoise + frames (exactly tonic's), written as sparse Parquet."""

from spikebench.data.nmnist import preprocess_split
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]) as log:
    preprocess_split(
        snakemake.params.recordings,
        snakemake.output.frames,
        snakemake.output.samples,
        denoise_filter_us=snakemake.params.denoise_filter_us,
        time_window_us=snakemake.params.time_window_us,
        log=log,
        threads=snakemake.threads,  # the rule's threads: (capped by --cores); the output does not depend on it
    )
