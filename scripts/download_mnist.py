"""Rule download_mnist: torchvision's MNIST files, md5-verified, in torchvision's layout."""
from spikebench.data.mnist import download_mnist
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]):
    download_mnist(snakemake.params.root)
