"""Rule download_nmnist: the N-MNIST recordings through tonic, in tonic's layout."""
from spikebench.data.nmnist import download_nmnist
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]):
    download_nmnist(snakemake.params.root)
