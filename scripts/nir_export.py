"""Rule nir_export: a trained SNN's weights as NIR graphs (spikebench.nir_export)."""

from spikebench.jobs import job_logging
from spikebench.nir_export import export_job
from spikebench.spec import NetworkSpec

with job_logging(snakemake.log[0]) as log:
    export_job(
        snakemake.wildcards.network,
        NetworkSpec.from_config(snakemake.params.network, snakemake.wildcards.network),
        snakemake.input.weights,
        outputs=dict(snakemake.output),
        which=snakemake.params.weights,
        log=log,
    )
