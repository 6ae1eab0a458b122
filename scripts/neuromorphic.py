"""Rule neuromorphic: measured vs estimated energy, per-layer operation counts (CSV + HTML) and their figure."""

from spikebench.jobs import job_logging
from spikebench.neuromorphic import write_neuromorphic

with job_logging(snakemake.log[0]) as log:
    networks = snakemake.params.networks
    write_neuromorphic(
        dict(zip(networks, snakemake.input.tests)),
        dict(zip(networks, snakemake.input.layers)),
        networks,
        dict(snakemake.output),
        model=snakemake.params.energy_model,
        demo=snakemake.params.demo,
        telemetry_enabled=snakemake.params.telemetry_enabled,
        style=snakemake.params.style,
    )
    log.info("neuromorphic estimate written: %s", ", ".join(snakemake.output))
