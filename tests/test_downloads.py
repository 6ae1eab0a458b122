"""The download and demo-data jobs never move, rewrite or delete a dataset file (issue 10, item 1).

Each partial layout of a data root (N-MNIST Train without Test, five of six CIFAR-10 batches,
uncompressed MNIST files without their .gz) keeps every existing byte, both when the functions are
called and when the real Snakemake rule runs; a full existing download fetches nothing; a damaged
file is reported by name and kept; a failed fetch leaves no partial file and no removed folder.
Nothing here needs the network: the fetch function is spied on or faked, or the missing part is
pre-provided.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tonic
import torchvision.datasets.utils as tv_utils
import yaml
from PIL import Image
from torchvision.datasets import CIFAR10

from conftest import copy_workflow, snakemake_cmd
from spikebench.data import cifar10, fetch
from spikebench.data.cifar10 import cifar10_folder, write_cifar_batch
from spikebench.data.mnist import MNIST_FILES, DataIntegrityError, mnist_raw_folder, write_idx
from spikebench.jobs import demo_job, download_job


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (md5, inode, mtime) and folder under ``root``: equal snapshots = nothing moved, rewritten, deleted."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            state[rel] = ("dir",)
        else:
            st = path.stat()
            state[rel] = (hashlib.md5(path.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
    return state


def kept(before: dict, after: dict) -> bool:
    """Everything in ``before`` is still there, unchanged (new files may have been added)."""
    return all(after.get(rel) == value for rel, value in before.items())


@pytest.fixture
def fetches(monkeypatch) -> list[tuple[str, Path]]:
    """Spy on (and refuse) every fetch: a test that expects no download asserts this stays empty."""
    calls: list[tuple[str, Path]] = []

    def refuse(url, dest, md5):
        calls.append((url, Path(dest)))
        raise OSError(f"network disabled in this test: {url}")

    monkeypatch.setattr(fetch, "fetch_url", refuse)
    return calls


def serve(monkeypatch, files: dict[str, Path]) -> list[str]:
    """Fake the fetch: a URL ending in a key of ``files`` gets that local file (other URLs fail)."""
    calls: list[str] = []

    def fake(url, dest, md5):
        calls.append(url)
        assert not Path(dest).exists(), "a fetch must never overwrite a file"
        for suffix, source in files.items():
            if url.endswith(suffix):
                shutil.copyfile(source, dest)
                return Path(dest)
        raise OSError(f"not served in this test: {url}")

    monkeypatch.setattr(fetch, "fetch_url", fake)
    return calls


# --- layouts ------------------------------------------------------------------------------------


def mnist_uncompressed_train(shared_data: Path, root: Path) -> None:
    """MNIST train files uncompressed, without their .gz: the real labels, synthetic images of MNIST's shape."""
    raw = mnist_raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    labels = gzip.decompress((shared_data / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    (raw / "train-labels-idx1-ubyte").write_bytes(labels)
    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", images)


def mnist_test_gz(shared_data: Path, root: Path) -> None:
    raw = mnist_raw_folder(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES["test"]:
        shutil.copyfile(shared_data / "mnist" / f"{name}.gz", raw / f"{name}.gz")


def cifar_batches(shared_data: Path, folder: Path, names=(*cifar10.TRAIN_BATCHES, *cifar10.TEST_BATCHES)) -> None:
    """CIFAR-10 batches made of the ten real test images (distinct per batch), and the real batches.meta."""
    pngs = sorted((shared_data / "cifar10" / "test_png").glob("cifar10_*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in pngs])
    labels = np.array([int(f.stem.split("_")[2]) for f in pngs])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared_data / "cifar10" / "cifar-10-batches-py" / "batches.meta", folder / "batches.meta")
    for i, name in enumerate(names):
        write_cifar_batch(folder / name, np.roll(images, i, axis=0), np.roll(labels, i), name)


def nmnist_split(shared_data: Path, root: Path, split: str) -> None:
    shutil.copytree(shared_data / "nmnist" / split, root / "NMNIST" / split)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- a full existing download fetches nothing ---------------------------------------------------


def test_full_existing_download_fetches_nothing_and_the_manifest_is_stable(
    shared_data: Path, tmp_path: Path, monkeypatch, fetches
):
    root = tmp_path / "data"
    mnist_uncompressed_train(shared_data, root)
    mnist_test_gz(shared_data, root)
    raw = mnist_raw_folder(root)
    for name in MNIST_FILES["test"]:
        (raw / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    cifar_batches(shared_data, cifar10_folder(root))
    fake_md5s = {name: md5_of(cifar10_folder(root) / name) for name in cifar10._expected_md5()}
    assert fake_md5s["batches.meta"] == cifar10._expected_md5()["batches.meta"]  # the real file
    monkeypatch.setattr(cifar10, "_expected_md5", lambda: fake_md5s)
    for split in ("Train", "Test"):
        nmnist_split(shared_data, root, split)
    before = snapshot(root)

    manifests = {}
    for dataset in ("mnist", "cifar10", "nmnist"):
        path = tmp_path / "results" / "data" / f"manifest_{dataset}.json"
        download_job(dataset, root, path)
        first = path.read_bytes()
        download_job(dataset, root, path)
        assert path.read_bytes() == first  # deterministic: no timestamps
        manifests[dataset] = json.loads(first)
    assert fetches == [] and snapshot(root) == before

    mnist = {r["path"]: r for r in manifests["mnist"]["files"]}
    assert set(mnist) == {f"MNIST/raw/{n}" for s in MNIST_FILES.values() for n in s} | {
        f"MNIST/raw/{n}.gz" for n in MNIST_FILES["test"]
    }
    assert mnist["MNIST/raw/t10k-images-idx3-ubyte.gz"]["expected_md5"] == "9fb629c4189551a2d022fa330f9573f3"
    assert mnist["MNIST/raw/train-images-idx3-ubyte"]["size_bytes"] == 16 + 60000 * 784
    assert manifests["mnist"]["data_root"] == str(root) and manifests["mnist"]["source"] == "download"
    assert set(manifests["mnist"]["versions"]) >= {"torchvision", "tonic", "numpy", "spikebench"}
    assert len(manifests["cifar10"]["files"]) == 7
    splits = manifests["nmnist"]["splits"]
    assert splits["train"]["recordings_per_class"] == {
        "0": 50,
        "1": 66,
        "2": 52,
        "3": 50,
        "4": 52,
        "5": 39,
        "6": 45,
        "7": 52,
        "8": 39,
        "9": 55,
    }
    assert splits["test"]["n_recordings"] == 50 and splits["train"]["n_recordings_official"] == 60000
    assert len(splits["train"]["sample"]) == 20 and all(s["n_events"] > 0 for s in splits["train"]["sample"])


# --- partial layouts: only what is missing is fetched, every existing byte is kept ---------------


def test_mnist_uncompressed_without_gz_is_kept_and_only_the_missing_split_fetched(
    shared_data: Path, tmp_path: Path, monkeypatch
):
    root = tmp_path / "data"
    mnist_uncompressed_train(shared_data, root)
    before = snapshot(root)
    calls = serve(monkeypatch, {f"{n}.gz": shared_data / "mnist" / f"{n}.gz" for n in MNIST_FILES["test"]})
    download_job("mnist", root, tmp_path / "manifest.json")
    assert sorted(url.rsplit("/", 1)[1] for url in calls) == sorted(f"{n}.gz" for n in MNIST_FILES["test"])
    assert kept(before, snapshot(root))
    raw = mnist_raw_folder(root)
    assert md5_of(raw / "t10k-images-idx3-ubyte") == "2646ac647ad5339dbf082846283269ea"
    assert not (raw / "train-images-idx3-ubyte.gz").exists()  # a verified uncompressed file needs no .gz
    assert sorted(p.name for p in raw.iterdir() if p.name.startswith(".")) == []


def test_five_of_six_cifar_batches_are_kept_and_only_the_missing_one_extracted(
    shared_data: Path, tmp_path: Path, monkeypatch
):
    source = tmp_path / "source" / "cifar-10-batches-py"
    cifar_batches(shared_data, source)
    tarball = tmp_path / "source" / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(source, arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar10, "_expected_md5", lambda: {p.name: md5_of(p) for p in source.iterdir()})
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5_of(tarball))

    root = tmp_path / "data"
    folder = cifar10_folder(root)
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "test_batch", "batches.meta"):
        shutil.copyfile(source / name, folder / name)
    before = snapshot(root)
    calls = serve(monkeypatch, {"cifar-10-python.tar.gz": tarball})
    download_job("cifar10", root, tmp_path / "manifest.json")
    assert calls == [CIFAR10.url]
    assert kept(before, snapshot(root))
    assert (folder / "data_batch_5").read_bytes() == (source / "data_batch_5").read_bytes()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    # now complete: a second run fetches nothing and changes nothing
    before = snapshot(root)
    download_job("cifar10", root, tmp_path / "manifest.json")
    assert calls == [CIFAR10.url] and snapshot(root) == before


def test_nmnist_train_without_test_is_kept_and_only_test_fetched(shared_data: Path, tmp_path: Path, monkeypatch):
    archive = tmp_path / "source" / "test.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((shared_data / "nmnist" / "Test").glob("*/*.bin")):
            zf.write(f, f"Test/{f.parent.name}/{f.name}")
    monkeypatch.setattr(tonic.datasets.NMNIST, "test_md5", md5_of(archive))
    root = tmp_path / "data"
    nmnist_split(shared_data, root, "Train")
    before = snapshot(root)
    calls = serve(monkeypatch, {"file_downloaded": archive})
    download_job("nmnist", root, tmp_path / "manifest.json")
    assert calls == [tonic.datasets.NMNIST.test_url]
    assert kept(before, snapshot(root))
    assert len(list((root / "NMNIST" / "Test").glob("*/*.bin"))) == 50
    assert sorted(p.name for p in (root / "NMNIST").iterdir()) == ["Test", "Train", "test.zip"]


# --- damaged files: reported by name, kept, the job fails ------------------------------------------


@pytest.mark.parametrize("dataset", ["mnist", "nmnist"])
def test_a_damaged_file_is_reported_by_name_kept_and_the_job_fails(
    shared_data: Path, tmp_path: Path, dataset: str, fetches
):
    root = tmp_path / "data"
    if dataset == "mnist":
        mnist_uncompressed_train(shared_data, root)
        damaged = mnist_raw_folder(root) / "train-labels-idx1-ubyte"
        damaged.write_bytes(damaged.read_bytes()[:-100])  # truncated
    else:
        nmnist_split(shared_data, root, "Train")
        damaged = sorted((root / "NMNIST" / "Train").glob("*/*.bin"))[-1]  # always in the sample read
        damaged.write_bytes(damaged.read_bytes()[:-2])  # not a multiple of 5 bytes
    before = snapshot(root)
    manifest = tmp_path / "manifest.json"
    with pytest.raises(DataIntegrityError) as error:
        download_job(dataset, root, manifest)
    message = str(error.value)
    assert str(damaged) in message and "delete" in message and "never moves, rewrites or deletes" in message
    assert snapshot(root) == before and fetches == []  # nothing fetched while a damaged file is there
    assert not manifest.exists()


# --- a failed fetch leaves no partial file and no removed folder -----------------------------------


def test_a_failed_fetch_leaves_no_partial_file_and_no_removed_folder(shared_data: Path, tmp_path: Path, monkeypatch):
    def partial_then_fail(url, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a download")
        raise OSError(f"connection reset: {url}")

    monkeypatch.setattr(tv_utils, "_urlretrieve", partial_then_fail)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    root = tmp_path / "data"
    mnist_uncompressed_train(shared_data, root)
    nmnist_split(shared_data, root, "Train")
    (root / "cifar-10-batches-py").mkdir()
    before = snapshot(root)
    for dataset, error in (("mnist", RuntimeError), ("cifar10", OSError), ("nmnist", RuntimeError)):
        with pytest.raises(error):
            download_job(dataset, root, tmp_path / f"manifest_{dataset}.json")
        assert snapshot(root) == before, dataset  # no partial file, nothing removed, nothing renamed
    assert not list(tmp_path.glob("manifest_*.json"))


def test_fetch_url_renames_a_complete_download_and_never_overwrites(tmp_path: Path, monkeypatch):
    def serve_bytes(url, filename, *args, **kwargs):
        Path(filename).write_bytes(b"the whole file")

    monkeypatch.setattr(tv_utils, "_urlretrieve", serve_bytes)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    dest = tmp_path / "file.gz"
    fetch.fetch_url("https://example.org/file.gz", dest, hashlib.md5(b"the whole file").hexdigest())
    assert dest.read_bytes() == b"the whole file" and sorted(os.listdir(tmp_path)) == ["file.gz"]
    with pytest.raises(FileExistsError):
        fetch.fetch_url("https://example.org/file.gz", dest, None)
    with pytest.raises(DataIntegrityError, match="md5"):
        fetch.fetch_url("https://example.org/other.gz", tmp_path / "other.gz", "0" * 32)
    assert sorted(os.listdir(tmp_path)) == ["file.gz"]


def test_fetch_url_without_an_md5_downloads_into_its_temporary_name(tmp_path: Path, monkeypatch):
    """torchvision's download_url skips a file that exists when no md5 is given: the temporary name that
    atomic_output reserves must not count as the download (else an empty file would be renamed into place)."""

    def serve_bytes(url, filename, *args, **kwargs):
        Path(filename).write_bytes(b"served")

    monkeypatch.setattr(tv_utils, "_urlretrieve", serve_bytes)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    dest = tmp_path / "sub" / "file.bin"
    fetch.fetch_url("https://example.org/file.bin", dest, None)
    assert dest.read_bytes() == b"served" and sorted(os.listdir(dest.parent)) == ["file.bin"]


# --- demo data: the same design -------------------------------------------------------------------


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_demo_makes_only_what_is_missing(tmp_path: Path):
    root = tmp_path / "data"
    settings = {
        "seed": 0,
        "mnist_test": 1000,
        "nmnist_train": 30,
        "nmnist_test": 10,
        "cifar10_train": 50,
        "cifar10_test": 10,
    }
    demo_job("mnist", root, settings, tmp_path / "m.json")
    demo_job("nmnist", root, settings, tmp_path / "n0.json")
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").unlink()  # the user removed a file and a folder
    shutil.rmtree(root / "NMNIST" / "Test")
    before = snapshot(root)
    demo_job("mnist", root, settings, tmp_path / "m2.json")
    demo_job("nmnist", root, settings, tmp_path / "n.json")
    assert kept(before, snapshot(root))
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "m2.json").read_bytes()  # the same file remade
    assert json.loads((tmp_path / "n.json").read_text())["splits"]["test"]["n_recordings"] == 10
    # a changed demo file is reported, not replaced
    label_file = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    label_file.write_bytes(label_file.read_bytes()[:-1] + b"\x00")
    before = snapshot(root)
    with pytest.raises(DataIntegrityError, match="t10k-labels-idx1-ubyte: md5"):
        demo_job("mnist", root, settings, tmp_path / "m3.json")
    assert snapshot(root) == before and not (tmp_path / "m3.json").exists()


# --- the real Snakemake rules on a partial data root ------------------------------------------------


def run_until(workdir: Path, rule: str, overlay: dict, *configfiles: str) -> subprocess.CompletedProcess:
    (workdir / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    return subprocess.run(
        snakemake_cmd("--cores", "1", "--until", rule, "--configfile", *configfiles, "overlay.yaml"),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_snakemake_download_rules_keep_every_byte_of_a_partial_data_root(shared_data: Path, tmp_path: Path):
    """Fails with the old rules, which declared the dataset files as outputs (Snakemake deleted them)."""
    workdir = copy_workflow(tmp_path / "workflow")
    root = tmp_path / "data"
    mnist_uncompressed_train(shared_data, root)  # uncompressed, without the .gz
    mnist_test_gz(shared_data, root)  # the missing test files come from these: nothing to fetch
    cifar_batches(shared_data, cifar10_folder(root), cifar10.TRAIN_BATCHES[:4] + cifar10.TEST_BATCHES)
    nmnist_split(shared_data, root, "Train")
    (root / "NMNIST" / "test.zip").write_bytes(b"PK\x03\x04 a broken archive")  # damaged: reported, no fetch
    before = snapshot(root)

    run = run_until(workdir, "download_mnist", {"data": {"root": str(root)}})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    manifest = json.loads((workdir / "results" / "data" / "manifest_mnist.json").read_text())
    assert len(manifest["files"]) == 6  # four uncompressed files, two .gz
    for rule, damaged in (("download_cifar10", "data_batch_1: md5"), ("download_nmnist", "test.zip: md5")):
        run = run_until(workdir, rule, {"data": {"root": str(root)}})
        log = run.stdout + run.stderr
        assert run.returncode != 0 and damaged in log, log[-4000:]
    after = snapshot(root)
    assert kept(before, after), sorted(set(before) - set(after))
    assert not (root / "NMNIST" / "Test").exists()


@pytest.mark.slow
def test_snakemake_demo_rule_keeps_an_existing_split_and_makes_the_missing_one(tmp_path: Path):
    from spikebench.data import demo

    workdir = copy_workflow(tmp_path / "workflow")
    root = tmp_path / "data"
    settings = {
        "seed": 0,
        "mnist_test": 1000,
        "nmnist_train": 30,
        "nmnist_test": 10,
        "cifar10_train": 50,
        "cifar10_test": 10,
    }
    digits = demo.make_demo_mnist(root, n_test=1000, seed=0)
    images, labels = digits["train"]
    demo.make_demo_nmnist(root, images[:30], labels[:30], "train", seed=0)
    before = snapshot(root)
    run = run_until(workdir, "demo_nmnist", {"data": {"root": str(root), "demo": settings}}, "config.demo.yaml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert kept(before, snapshot(root))
    assert len(list((root / "NMNIST" / "Test").glob("*/*.bin"))) == 10
    assert (workdir / "results-demo" / "data" / "manifest_nmnist.json").exists()
