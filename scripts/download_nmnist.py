"""Rule download_nmnist: verify nmnist under data.root, fetch only what is missing, write its manifest."""
from spikebench.jobs import download_job, job_logging

with job_logging(snakemake.log[0]):
    download_job("nmnist", snakemake.params.root, snakemake.output.manifest)
