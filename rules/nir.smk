# NIR export (config `nir`, docs/exploring.md "NIR export"): once an SNN is trained, a short local job writes its
# weights as two NIR graphs, the exact one (network.nir) and the portable one with NIR's LIF nodes
# (network_lif.nir); spikebench.nir_export says what maps exactly and what does not. It only reads
# the weights file, so turning it on trains and evaluates nothing again. The convolutional SNNs have
# no targets: NIR has no max-pool (spikebench.nir_export.not_exportable).
from snakemake.settings.types import DeploymentMethod
from spikebench import nir_export

# What `all_targets()` adds: both graphs of every exportable run, none when nir.enabled is false.
NIR_TARGETS = nir_export.targets(config, RESULTS, RUNS)
# Missing nir/nirtorch stops the run before any job starts (with --sdm conda the jobs get envs/nir.yaml).
if NIR_TARGETS and DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    nir_export.check_installed()


rule nir_export:
    input:
        weights=f"{RESULTS}/{{network}}/weights.pt",
    output:
        exact=f"{RESULTS}/{{network}}/{nir_export.FILES['exact']}",
        lif=f"{RESULTS}/{{network}}/{nir_export.FILES['lif']}",
    log:
        f"{RESULTS}/logs/nir_export/{{network}}.log",
    localrule: True
    conda:
        "../envs/nir.yaml"
    params:
        network=spec,
        weights=config["evaluation"]["weights"],
        code=lambda wildcards: nir_export.code_digest(spec(wildcards)),
    script:
        "../scripts/nir_export.py"
