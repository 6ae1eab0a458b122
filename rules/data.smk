# Data stage: datasets in the libraries' own layouts under data.root (downloaded, or made
# offline for the demo), the N-MNIST frames as sparse Parquet, and the train/validation splits.
# Downloads are local rules: cluster compute nodes often have no internet.

if DEMO:

    rule demo_mnist:
        output:
            catalog.mnist_files(DATA),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
            demo=config["data"].get("demo", {}),
        log:
            f"{RESULTS}/logs/demo_mnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/demo_mnist.py"

    rule demo_cifar10:
        output:
            catalog.cifar10_files(DATA),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
            demo=config["data"].get("demo", {}),
        log:
            f"{RESULTS}/logs/demo_cifar10.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/demo_cifar10.py"

    rule demo_nmnist:
        input:
            catalog.mnist_files(DATA),
        output:
            train=directory(catalog.nmnist_folder(DATA, "train")),
            test=directory(catalog.nmnist_folder(DATA, "test")),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
            demo=config["data"].get("demo", {}),
        log:
            f"{RESULTS}/logs/demo_nmnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/demo_nmnist.py"

else:

    rule download_mnist:
        output:
            catalog.mnist_files(DATA),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
        log:
            f"{RESULTS}/logs/download_mnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/download_mnist.py"

    rule download_cifar10:
        output:
            catalog.cifar10_files(DATA),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
        log:
            f"{RESULTS}/logs/download_cifar10.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/download_cifar10.py"

    rule download_nmnist:
        output:
            train=directory(catalog.nmnist_folder(DATA, "train")),
            test=directory(catalog.nmnist_folder(DATA, "test")),
        params:
            root=lambda wildcards, output: catalog.root_of(output[0]),
        log:
            f"{RESULTS}/logs/download_nmnist.log",
        localrule: True
        conda:
            "../envs/data.yaml"
        script:
            "../scripts/download_nmnist.py"


rule preprocess_nmnist:
    input:
        recordings=lambda wildcards: catalog.nmnist_folder(DATA, wildcards.split),
    output:
        **catalog.nmnist_frames(RESULTS, "{split}"),
    params:
        denoise_filter_us=config["nmnist"]["denoise_filter_us"],
        time_window_us=config["nmnist"]["time_window_us"],
    log:
        f"{RESULTS}/logs/preprocess_nmnist_{{split}}.log",
    # one thread writes Parquet while the other reads and frames the next recordings; a third would
    # wait on the single Parquet writer. Snakemake lowers it to --cores; the files are the same for any.
    threads: 2
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/preprocess_nmnist.py"


rule split:
    input:
        split_inputs,
    output:
        catalog.split_file(RESULTS, "{dataset}"),
    params:
        root=lambda wildcards, input: catalog.root_of(input[0]),
        val_fraction=config["split"]["val_fraction"],
        seed=config["split"]["seed"],
    log:
        f"{RESULTS}/logs/split_{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/make_split.py"
