# Data stage: datasets in the libraries' own layouts under data.root (downloaded, or made
# offline for the demo), the N-MNIST frames as sparse Parquet, and the train/validation splits.
# A dataset's own files are never declared to Snakemake (so it can never delete them): each
# download/demo job verifies what is there, fetches or makes only what is missing, and writes a
# small verified manifest, <results>/data/manifest_<dataset>.json, which the jobs reading that
# dataset take as input (they get the data root through params). Downloads are local rules:
# cluster compute nodes often have no internet.

if DEMO:

    rule demo_mnist:
        output:
            manifest=catalog.manifest_file(RESULTS, "mnist"),
        log:
            f"{RESULTS}/logs/demo_mnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
            demo=config["data"].get("demo", {}),
        script:
            "../scripts/demo_mnist.py"

    rule demo_cifar10:
        output:
            manifest=catalog.manifest_file(RESULTS, "cifar10"),
        log:
            f"{RESULTS}/logs/demo_cifar10.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
            demo=config["data"].get("demo", {}),
        script:
            "../scripts/demo_cifar10.py"

    rule demo_nmnist:
        input:
            catalog.manifest_file(RESULTS, "mnist"),  # simulated from the demo MNIST digits
        output:
            manifest=catalog.manifest_file(RESULTS, "nmnist"),
        log:
            f"{RESULTS}/logs/demo_nmnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
            demo=config["data"].get("demo", {}),
        script:
            "../scripts/demo_nmnist.py"

else:

    rule download_mnist:
        output:
            manifest=catalog.manifest_file(RESULTS, "mnist"),
        log:
            f"{RESULTS}/logs/download_mnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
        script:
            "../scripts/download_mnist.py"

    rule download_cifar10:
        output:
            manifest=catalog.manifest_file(RESULTS, "cifar10"),
        log:
            f"{RESULTS}/logs/download_cifar10.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
        script:
            "../scripts/download_cifar10.py"

    rule download_nmnist:
        output:
            manifest=catalog.manifest_file(RESULTS, "nmnist"),
        log:
            f"{RESULTS}/logs/download_nmnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        params:
            root=DATA,
        script:
            "../scripts/download_nmnist.py"


rule preprocess_nmnist:
    input:
        manifest=catalog.manifest_file(RESULTS, "nmnist"),
    output:
        **catalog.nmnist_frames(RESULTS, "{split}"),
    log:
        f"{RESULTS}/logs/preprocess_nmnist_{{split}}.log",
    conda:
        "../envs/data.yaml"
    # one thread writes Parquet while the other reads and frames the next recordings; a third would
    # wait on the single Parquet writer. Snakemake lowers it to --cores; the files are the same for any.
    threads: 2
    params:
        recordings=lambda wildcards: catalog.nmnist_folder(DATA, wildcards.split),
        denoise_filter_us=config["nmnist"]["denoise_filter_us"],
        time_window_us=config["nmnist"]["time_window_us"],
    script:
        "../scripts/preprocess_nmnist.py"


rule split:
    input:
        split_inputs,
    output:
        catalog.split_file(RESULTS, "{dataset}"),
    log:
        f"{RESULTS}/logs/split_{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    params:
        root=DATA,
        val_fraction=config["split"]["val_fraction"],
        seed=config["split"]["seed"],
        data_source=config["data"]["source"],
    script:
        "../scripts/make_split.py"
