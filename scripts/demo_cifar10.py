"""Rule demo_cifar10: make only the missing files of the demo cifar10 (DEMO DATA), write its manifest."""
from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("cifar10", snakemake.params.root, snakemake.params.demo, snakemake.output.manifest)
