"""Rule download_cifar10: torchvision's CIFAR-10 archive, md5-verified, extracted in place."""
from spikebench.data.cifar10 import download_cifar10
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]):
    download_cifar10(snakemake.params.root)
