"""Rule sweep_figures: per swept setting, time, energy, activation memory and test accuracy vs its value."""

from spikebench.jobs import job_logging
from spikebench.sweep_figures import write_sweep_figures

with job_logging(snakemake.log[0]) as log:
    write_sweep_figures(
        snakemake.input.summary,
        snakemake.params.sweeps,
        snakemake.params.networks,
        dict(snakemake.output),
        style=snakemake.params.style,
        demo=snakemake.params.demo,
    )
    log.info("sweep figures written: %s", ", ".join(snakemake.output))
