"""Rule demo_cifar10 (demo CIFAR-10: a synthetic stand-in; DEMO DATA): make only the missing files, write the
verified manifest. Existing files are never moved, rewritten or deleted."""

from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("cifar10", snakemake.params.root, snakemake.params.demo, snakemake.output.manifest)
