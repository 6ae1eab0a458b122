"""Rule demo_nmnist: N-MNIST recordings simulated from the demo digits, in tonic's layout."""
from spikebench.jobs import demo_job, job_logging

with job_logging(snakemake.log[0]):
    demo_job("nmnist", snakemake.params.root, snakemake.params.demo)
