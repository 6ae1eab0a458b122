"""Rule demo_cifar10: a synthetic 10-class CIFAR-10 stand-in in the real pickled-batch format."""
from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("cifar10", snakemake.params.root, snakemake.params.demo)
