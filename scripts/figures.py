"""Rule figures: the cost of spiking (headline), four panels per experiment, energy and accuracy (PNG + SVG)."""

from spikebench.figures import write_figures
from spikebench.jobs import job_logging

with job_logging(snakemake.log[0]) as log:
    networks = snakemake.params.networks
    style = snakemake.params.style
    write_figures(
        dict(zip(networks, snakemake.input.epochs)),
        dict(zip(networks, snakemake.input.tests)),
        dict(zip(networks, snakemake.input.telemetry_train)),
        dict(zip(networks, snakemake.input.telemetry_test)),
        networks,
        dict(snakemake.output),
        style=style.get("style", "whitegrid"),
        context=style.get("context", "paper"),
        dpi=int(style.get("dpi", 150)),
        demo=snakemake.params.demo,
        telemetry_enabled=snakemake.params.telemetry_enabled,
        paper_path=snakemake.input.paper,
        summary_path=snakemake.input.summary,
    )
    log.info("figures written: %s", ", ".join(snakemake.output))
