"""Rule download_mnist (MNIST, torchvision's files and md5s): check what is under data.root, fetch only what
is missing, write the verified manifest. Existing files are never moved, rewritten or deleted."""

from spikebench.jobs import download_job, job_logging

with job_logging(snakemake.log[0]):
    download_job("mnist", snakemake.params.root, snakemake.output.manifest)
