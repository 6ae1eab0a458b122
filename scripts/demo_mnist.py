"""Rule demo_mnist: make only the missing files of the demo mnist (DEMO DATA), write its manifest."""
from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("mnist", snakemake.params.root, snakemake.params.demo, snakemake.output.manifest)
