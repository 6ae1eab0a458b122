"""Rule tables: Tables I and II, the comparison with the study and the cost of spiking (CSV + HTML)."""

from spikebench.jobs import job_logging
from spikebench.results import write_tables

with job_logging(snakemake.log[0]) as log:
    networks = snakemake.params.networks
    write_tables(
        dict(zip(networks, snakemake.input.epochs)),
        dict(zip(networks, snakemake.input.tests)),
        networks,
        dict(snakemake.output),
        demo=snakemake.params.demo,
        telemetry_enabled=snakemake.params.telemetry_enabled,
        paper_path=snakemake.input.paper,
        difference_path=snakemake.input.difference,
        summary_path=snakemake.input.summary,
    )
    log.info("tables written: %s", ", ".join(snakemake.output))
