"""Rule download_mnist: verify mnist under data.root, fetch only what is missing, write its manifest."""
from spikebench.jobs import download_job, job_logging

with job_logging(snakemake.log[0]):
    download_job("mnist", snakemake.params.root, snakemake.output.manifest)
